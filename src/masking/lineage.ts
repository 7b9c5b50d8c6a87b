/**
 * Where each output column of a SELECT comes from, read from PostgreSQL's parse tree. Used for
 * result columns the server reports without a table (expressions: table OID 0 in
 * RowDescription) and for view columns.
 *
 * Lineage goes by column NAME, which is only sound when every name refers to a base table's
 * column directly. So the analysis reports `direct: false` whenever a name could stand for
 * something renamed in between (a subquery or function in FROM, a CTE, a set operation), and
 * callers then mask every expression column (fail closed).
 */
export interface OutputLineage {
  /** Column names the expression references (the last part of each ColumnRef). */
  refs: string[];
  /** A whole-row reference (`c`, `c.*` inside a function, row_to_json(c) …). */
  wholeRow: boolean;
  /** The whole expression is count(…): it reveals a number of rows, not values. */
  countOnly: boolean;
  /**
   * The expression is a bare column reference, so the column's own strategy may apply to it.
   * Anything computed from a masked column (substr(ssn, 1, 5), upper(email)) is redacted
   * instead: a partial strategy over a transformed value would show what the rule hides.
   */
  plain: boolean;
}

export interface SelectLineage {
  /** One entry per target list entry; null when a top-level `*` makes positions unknowable. */
  outputs: OutputLineage[] | null;
  /** Every name refers to a FROM item that is a plain table/view (no subquery, CTE, function, set operation). */
  direct: boolean;
}

type Node = Record<string, unknown>;

const isObj = (v: unknown): v is Node => typeof v === 'object' && v !== null && !Array.isArray(v);

function fieldNames(fields: unknown): (string | '*')[] {
  if (!Array.isArray(fields)) return [];
  return fields.map((f) => (isObj(f) && isObj(f.String) ? String(f.String.sval ?? '') : isObj(f) && 'A_Star' in f ? '*' : ''));
}

/** Names a FROM clause binds (tables and their aliases), and whether it holds only plain relations. */
function fromItems(from: unknown, names: Set<string>): boolean {
  let direct = true;
  const visit = (n: unknown): void => {
    if (Array.isArray(n)) return n.forEach(visit);
    if (!isObj(n)) return;
    if (isObj(n.RangeVar)) {
      const rv = n.RangeVar;
      if (typeof rv.relname === 'string') names.add(rv.relname);
      if (isObj(rv.alias) && typeof rv.alias.aliasname === 'string') names.add(rv.alias.aliasname);
      // `customers AS t(a, b, c)` renames the columns: names no longer say where values come from.
      if (isObj(rv.alias) && Array.isArray(rv.alias.colnames)) direct = false;
      return;
    }
    if (isObj(n.JoinExpr)) {
      visit(n.JoinExpr.larg);
      visit(n.JoinExpr.rarg);
      if (isObj(n.JoinExpr.alias)) direct = false;
      return;
    }
    // RangeSubselect, RangeFunction, RangeTableFunc, JSON_TABLE …: names inside may be renamed.
    direct = false;
    for (const v of Object.values(n)) {
      if (isObj(v) && isObj(v.alias) && typeof v.alias.aliasname === 'string') names.add(v.alias.aliasname);
    }
  };
  visit(from);
  return direct;
}

function exprLineage(val: unknown, relationNames: ReadonlySet<string>): OutputLineage {
  const refs = new Set<string>();
  let wholeRow = false;
  const visit = (n: unknown): void => {
    if (Array.isArray(n)) return n.forEach(visit);
    if (!isObj(n)) return;
    if (isObj(n.ColumnRef)) {
      const parts = fieldNames(n.ColumnRef.fields);
      const last = parts[parts.length - 1];
      if (last === '*' || last === undefined) wholeRow = true;
      else if (parts.length === 1 && relationNames.has(last)) wholeRow = true;
      else refs.add(last);
      return;
    }
    for (const v of Object.values(n)) visit(v);
  };
  visit(val);
  const fc = isObj(val) && isObj(val.FuncCall) ? val.FuncCall : null;
  const fname = fc ? fieldNames(fc.funcname) : [];
  const countOnly = fc !== null && fname[fname.length - 1] === 'count' && (fname.length === 1 || fname[0] === 'pg_catalog') && fc.over === undefined;
  const plain = isObj(val) && isObj(val.ColumnRef) && !wholeRow && refs.size === 1;
  return { refs: [...refs], wholeRow, countOnly, plain };
}

/** Lineage of a SelectStmt parse node (the value under `SelectStmt`). */
export function selectLineage(select: Node): SelectLineage {
  if (select.op !== undefined && select.op !== 'SETOP_NONE') {
    // UNION / INTERSECT / EXCEPT: an output column is PII if any branch's is.
    const l = isObj(select.larg) ? selectLineage(select.larg) : { outputs: null, direct: false };
    const r = isObj(select.rarg) ? selectLineage(select.rarg) : { outputs: null, direct: false };
    if (!l.outputs || !r.outputs || l.outputs.length !== r.outputs.length) return { outputs: null, direct: false };
    return {
      outputs: l.outputs.map((o, i) => {
        const p = r.outputs![i]!;
        const refs = [...new Set([...o.refs, ...p.refs])];
        return { refs, wholeRow: o.wholeRow || p.wholeRow, countOnly: o.countOnly && p.countOnly, plain: o.plain && p.plain && refs.length === 1 };
      }),
      direct: false,
    };
  }
  if (Array.isArray(select.valuesLists)) return { outputs: null, direct: false };
  const relationNames = new Set<string>();
  let direct = fromItems(select.fromClause, relationNames);
  if (select.withClause !== undefined) direct = false;
  const targets = Array.isArray(select.targetList) ? select.targetList : [];
  const outputs: OutputLineage[] = [];
  for (const t of targets) {
    const rt = isObj(t) && isObj(t.ResTarget) ? t.ResTarget : null;
    if (!rt) return { outputs: null, direct: false };
    if (isObj(rt.val) && isObj(rt.val.ColumnRef)) {
      const parts = fieldNames(rt.val.ColumnRef.fields);
      if (parts[parts.length - 1] === '*') return { outputs: null, direct };
    }
    outputs.push(exprLineage(rt.val, relationNames));
  }
  return { outputs, direct };
}
