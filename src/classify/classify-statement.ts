import { copyInfo } from '../masking/copy-format.js';
import { selectLineage, type SelectLineage } from '../masking/lineage.js';
import type { Kind, RelationRef, SettingChange, StatementInfo } from './statement-info.js';

/**
 * Classifies one parsed statement (a libpg-query RawStmt.stmt). Pure.
 *
 * The walk visits every node of the tree, so a function call or a data-modifying statement is
 * found wherever it hides (CTEs, subqueries, EXPLAIN ANALYZE, COPY (query), CREATE TABLE AS ...).
 * Unknown statement types are treated as DDL, so new syntax fails closed.
 */

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `[{String:{sval:'a'}}, ...]` → ['a', ...]; A_Star → '*'. */
function names(list: unknown): string[] {
  if (!Array.isArray(list)) return [];
  const out: string[] = [];
  for (const item of list) {
    if (!isObject(item)) continue;
    const s = item.String;
    if (isObject(s) && typeof s.sval === 'string') out.push(s.sval);
    else if ('A_Star' in item) out.push('*');
  }
  return out;
}

/** The string value of an A_Const (or a TypeCast of one), else undefined. */
function isColumnRef(node: unknown, column: string): boolean {
  if (!isObject(node) || !isObject(node.ColumnRef) || !Array.isArray(node.ColumnRef.fields) || node.ColumnRef.fields.length !== 1) return false;
  const f = node.ColumnRef.fields[0];
  return isObject(f) && isObject(f.String) && f.String.sval === column;
}

/**
 * `SELECT … FROM pg_settings WHERE name = '<constant>'` (pg_settings alone, unqualified or in
 * pg_catalog): every row's `name` is that constant. Shadowing pg_settings or `=` through the
 * search_path would take CREATE rights, which the rules hold for review.
 */
function pgSettingsPin(select: Json): string | undefined {
  const from = select.fromClause;
  if (!Array.isArray(from) || from.length !== 1 || !isObject(from[0]) || !isObject(from[0].RangeVar)) return undefined;
  const rv = from[0].RangeVar;
  if (rv.relname !== 'pg_settings' || (rv.schemaname !== undefined && rv.schemaname !== 'pg_catalog')) return undefined;
  const w = isObject(select.whereClause) && isObject(select.whereClause.A_Expr) ? select.whereClause.A_Expr : null;
  if (!w || w.kind !== 'AEXPR_OP' || !Array.isArray(w.name) || w.name.length !== 1 || constString(w.name[0]) !== '=') return undefined;
  if (isColumnRef(w.lexpr, 'name')) return constString(w.rexpr);
  if (isColumnRef(w.rexpr, 'name')) return constString(w.lexpr);
  return undefined;
}

function constString(node: unknown): string | undefined {
  if (!isObject(node)) return undefined;
  if (isObject(node.TypeCast)) return constString(node.TypeCast.arg);
  // Bare value nodes (option arguments); protobuf JSON omits zero values: {Integer: {}} is 0.
  if (isObject(node.Integer)) return String(node.Integer.ival ?? 0);
  if (isObject(node.Boolean)) return node.Boolean.boolval === true ? 'true' : 'false';
  if (isObject(node.String)) return typeof node.String.sval === 'string' ? node.String.sval : '';
  if (isObject(node.Float)) return String(node.Float.fval ?? '0');
  const c = node.A_Const;
  if (!isObject(c)) return undefined;
  if (isObject(c.sval)) return typeof c.sval.sval === 'string' ? c.sval.sval : '';
  if (isObject(c.ival)) return String(c.ival.ival ?? 0);
  if (isObject(c.boolval)) return c.boolval.boolval === true ? 'true' : 'false';
  if (isObject(c.fval)) return String(c.fval.fval);
  return undefined;
}

/** Statement node → its main kind. Anything not listed is DDL (fail closed). */
const KIND_OF: Record<string, Kind> = {
  SelectStmt: 'read',
  InsertStmt: 'write',
  UpdateStmt: 'write',
  DeleteStmt: 'write',
  MergeStmt: 'write',
  CreateTableAsStmt: 'export',
  TransactionStmt: 'transaction',
  ConstraintsSetStmt: 'transaction',
  VariableSetStmt: 'session',
  VariableShowStmt: 'session',
  DiscardStmt: 'session',
  DeallocateStmt: 'session',
  PrepareStmt: 'session',
  ExecuteStmt: 'session',
  DeclareCursorStmt: 'read',
  FetchStmt: 'read',
  ClosePortalStmt: 'session',
  ListenStmt: 'utility',
  UnlistenStmt: 'utility',
  NotifyStmt: 'utility',
  LockStmt: 'utility',
  ExplainStmt: 'utility',
  CallStmt: 'write',
  DoStmt: 'admin',
  GrantStmt: 'privilege',
  GrantRoleStmt: 'privilege',
  CreateRoleStmt: 'privilege',
  AlterRoleStmt: 'privilege',
  AlterRoleSetStmt: 'privilege',
  DropRoleStmt: 'privilege',
  AlterDefaultPrivilegesStmt: 'privilege',
  ReassignOwnedStmt: 'privilege',
  DropOwnedStmt: 'privilege',
  CreatePolicyStmt: 'privilege',
  AlterPolicyStmt: 'privilege',
  AlterSystemStmt: 'admin',
  VacuumStmt: 'admin',
  ClusterStmt: 'admin',
  ReindexStmt: 'admin',
  CheckPointStmt: 'admin',
  LoadStmt: 'admin',
  CreatedbStmt: 'admin',
  DropdbStmt: 'admin',
  AlterDatabaseStmt: 'admin',
  AlterDatabaseSetStmt: 'admin',
  AlterDatabaseRefreshCollStmt: 'admin',
  CreateTableSpaceStmt: 'admin',
  DropTableSpaceStmt: 'admin',
  AlterTableSpaceOptionsStmt: 'admin',
  CreateExtensionStmt: 'admin',
  AlterExtensionStmt: 'admin',
  AlterExtensionContentsStmt: 'admin',
  CreateFdwStmt: 'admin',
  AlterFdwStmt: 'admin',
  CreateForeignServerStmt: 'admin',
  AlterForeignServerStmt: 'admin',
  CreateUserMappingStmt: 'admin',
  AlterUserMappingStmt: 'admin',
  DropUserMappingStmt: 'admin',
  ImportForeignSchemaStmt: 'admin',
  CreateSubscriptionStmt: 'admin',
  AlterSubscriptionStmt: 'admin',
  DropSubscriptionStmt: 'admin',
  CreatePublicationStmt: 'admin',
  AlterPublicationStmt: 'admin',
  AlterEventTrigStmt: 'admin',
  CreateEventTrigStmt: 'admin',
  // TRUNCATE removes every row at once and bypasses DELETE triggers: schema-change grade.
  TruncateStmt: 'ddl',
};

/** Functions that take SQL text or a cursor and run it: their effect cannot be known statically. */
const RUNS_SQL_FROM_STRING = /^(query_to_xml|query_to_xmlschema|query_to_xml_and_xmlschema|cursor_to_xml|cursor_to_xmlschema|dblink.*|ts_stat|ts_rewrite|crosstab\d*|connectby|xpath_table)$/i;

/**
 * A function name as PostgreSQL resolves it, without a database qualifier
 * (`db.pg_catalog.set_config` is `pg_catalog.set_config`; PostgreSQL accepts the current
 * database's name there). Returns the reported name and the bare function name.
 */
function functionName(funcname: unknown): { reported: string; base: string } {
  // No case folding: the parser folded unquoted names; a quoted "LOWER" is another function.
  const parts = names(funcname);
  const kept = parts.length > 2 ? parts.slice(-2) : parts;
  return { reported: kept.join('.'), base: kept[kept.length - 1] ?? '' };
}

/** Settings whose change switches the privileges in force ('all' is RESET ALL). */
const PRIVILEGE_SETTINGS = new Set(['role', 'session_authorization', 'all']);

class Collector {
  kinds = new Set<Kind>();
  relations: RelationRef[] = [];
  functions = new Set<string>();
  columns = new Set<string>();
  settings: SettingChange[] = [];
  unanalysable: string[] = [];
  updatesRows = false;
  /**
   * Inside `SELECT … FROM pg_settings WHERE name = '<constant>'`: the setting a set_config(name, …)
   * of that query changes (pg_dump since 15.8 sets restrict_nonsystem_relation_kind that way).
   */
  private pinnedSetting: string | undefined;
  /** CTE names visible at the current point of the walk (innermost last). */
  private cteScopes: Set<string>[] = [];

  walk(node: unknown, access: RelationRef['access'] = 'read'): void {
    if (Array.isArray(node)) {
      for (const item of node) this.walk(item, access);
      return;
    }
    if (!isObject(node)) return;
    for (const [key, value] of Object.entries(node)) {
      if (!isObject(value)) {
        if (Array.isArray(value)) this.walk(value, access);
        continue;
      }
      // Fields such as `relation`, `rel` and `view` hold a RangeVar's fields without the
      // node wrapper; node keys are capitalised (RangeVar, SelectStmt, ...).
      if (typeof value.relname === 'string' && !/^[A-Z]/.test(key)) this.visit('RangeVar', value, access);
      else this.visit(key, value, access);
    }
  }

  private visit(type: string, n: Json, access: RelationRef['access']): void {
    switch (type) {
      case 'RangeVar':
        this.addRelation(n, access, false);
        return;
      case 'FuncCall': {
        const fn = functionName(n.funcname);
        this.functions.add(fn.reported);
        // Matched on the bare name in any schema: a look-alike in another schema is judged as it.
        if (fn.base === 'set_config') this.setConfig(n.args);
        if (RUNS_SQL_FROM_STRING.test(fn.base)) this.unanalysable.push(`${fn.reported}() runs SQL given as a string`);
        this.walk(n, 'read');
        return;
      }
      case 'ColumnRef':
        this.columns.add(names(n.fields).join('.'));
        return;
      case 'InsertStmt':
      case 'UpdateStmt':
      case 'DeleteStmt':
      case 'MergeStmt':
        this.kinds.add('write');
        if (type === 'UpdateStmt' || type === 'MergeStmt') this.updatesRows = true;
        this.withScope(n.withClause, () => {
          // The target of INSERT/UPDATE/DELETE/MERGE is always a table, never a CTE.
          if (isObject(n.relation)) this.addRelation(n.relation, 'write', true);
          const { relation: _r, withClause: _w, ...rest } = n;
          this.walk(rest, 'read');
        });
        return;
      case 'SelectStmt': {
        if (n.intoClause !== undefined) {
          // SELECT ... INTO creates a table holding the result: an export, and a schema change.
          this.kinds.add('export');
          this.kinds.add('ddl');
        }
        const outerPin = this.pinnedSetting;
        this.pinnedSetting = pgSettingsPin(n);
        this.withScope(n.withClause, () => {
          const { withClause: _w, intoClause, ...rest } = n;
          if (isObject(intoClause) && isObject(intoClause.rel)) this.addRelation(intoClause.rel, 'ddl', true);
          this.walk(rest, 'read');
        });
        this.pinnedSetting = outerPin;
        return;
      }
      case 'IntoClause':
        if (isObject(n.rel)) this.visit('RangeVar', n.rel, 'ddl');
        return;
      default:
        this.walk(n, access);
    }
  }

  private addRelation(n: Json, access: RelationRef['access'], alwaysTable: boolean): void {
    const name = typeof n.relname === 'string' ? n.relname : '';
    const schema = typeof n.schemaname === 'string' ? n.schemaname : undefined;
    if (!alwaysTable && schema === undefined && this.cteScopes.some((s) => s.has(name))) return;
    this.relations.push({ ...(schema !== undefined ? { schema } : {}), name, access });
  }

  /**
   * CTE scoping as PostgreSQL resolves names: in a plain WITH each CTE body sees only the CTEs
   * defined before it (a same-named reference inside its own body is the real table); in WITH
   * RECURSIVE every CTE of the list is visible in every body. The main statement sees them all.
   */
  private withScope(withClause: unknown, body: () => void): void {
    if (!isObject(withClause)) {
      body();
      return;
    }
    const ctes = (Array.isArray(withClause.ctes) ? withClause.ctes : [])
      .map((c) => (isObject(c) && isObject(c.CommonTableExpr) ? c.CommonTableExpr : null))
      .filter((c): c is Json => c !== null);
    const nameOf = (c: Json) => (typeof c.ctename === 'string' ? c.ctename : '');
    const scope = new Set<string>(withClause.recursive === true ? ctes.map(nameOf) : []);
    this.cteScopes.push(scope);
    try {
      for (const cte of ctes) {
        this.walk({ ctequery: cte.ctequery }, 'read');
        scope.add(nameOf(cte));
      }
      body();
    } finally {
      this.cteScopes.pop();
    }
  }

  private setConfig(args: unknown): void {
    const list = Array.isArray(args) ? args : [];
    const name = constString(list[0]) ?? (isColumnRef(list[0], 'name') ? this.pinnedSetting : undefined);
    if (name === undefined) {
      this.unanalysable.push('set_config() with a computed setting name');
      return;
    }
    const value = constString(list[1]);
    const local = constString(list[2]);
    this.settings.push({
      name: name.toLowerCase(),
      ...(value !== undefined ? { value } : {}),
      local: local === 'true',
      via: 'set_config',
    });
    // The name came from a string literal: reasons reach reviewers and the audit log, which never hold literals.
    if (value === undefined) this.unanalysable.push('set_config() with a computed value');
  }
}

function variableSet(n: Json, via: SettingChange['via']): SettingChange[] {
  const name = typeof n.name === 'string' ? n.name.toLowerCase() : '';
  const kind = typeof n.kind === 'string' ? n.kind : '';
  if (kind === 'VAR_RESET_ALL') return [{ name: 'all', local: false, via: 'reset' }];
  if (kind === 'VAR_RESET' || kind === 'VAR_SET_DEFAULT') return [{ name, local: n.is_local === true, via: 'reset' }];
  const args = Array.isArray(n.args) ? n.args : [];
  let values = args.map(constString);
  // List settings keep each argument as one exact element (flatten_set_variable_args quotes them).
  if (name === 'search_path') values = values.map((v) => (v === undefined || /^[a-z_][a-z0-9_$]*$/.test(v) ? v : `"${v.replace(/"/g, '""')}"`));
  const value = values.every((v) => v !== undefined) ? values.join(', ') : undefined;
  return [{ name, ...(value !== undefined ? { value } : {}), local: n.is_local === true, via }];
}

function defElemNames(options: unknown): string[] {
  if (!Array.isArray(options)) return [];
  return options
    .map((o) => (isObject(o) && isObject(o.DefElem) && typeof o.DefElem.defname === 'string' ? o.DefElem.defname : ''))
    .filter(Boolean);
}

/** EXPLAIN's options that make it execute the statement. */
function explainRuns(options: unknown): boolean {
  if (!Array.isArray(options)) return false;
  for (const o of options) {
    if (!isObject(o) || !isObject(o.DefElem) || o.DefElem.defname !== 'analyze') continue;
    const v = constString(o.DefElem.arg);
    // EXPLAIN (ANALYZE) or (ANALYZE true/on/1); (ANALYZE false) does not execute.
    if (v === undefined || !['false', 'off', '0', 'no'].includes(v.toLowerCase())) return true;
  }
  return false;
}

export function classifyStatement(stmt: Json): StatementInfo {
  const node = Object.keys(stmt)[0] ?? 'Unknown';
  const n = (stmt[node] ?? {}) as Json;
  const c = new Collector();
  let kind: Kind = KIND_OF[node] ?? 'ddl';
  let defines: StatementInfo['defines'];
  let uses: StatementInfo['uses'];
  let forgets: StatementInfo['forgets'];
  let serverFileAccess = false;

  switch (node) {
    case 'ExplainStmt': {
      const inner = isObject(n.query) ? classifyStatement(n.query) : undefined;
      if (inner && explainRuns(n.options)) {
        // EXPLAIN ANALYZE runs the statement: it is whatever the statement is.
        return { ...inner, node };
      }
      // Plain EXPLAIN only plans: report what it names, but as a utility statement that reads.
      if (inner) {
        return {
          ...inner,
          node,
          kind: 'utility',
          kinds: ['utility'],
          relations: inner.relations.map((r) => ({ ...r, access: 'read' as const })),
        };
      }
      break;
    }
    case 'CopyStmt': {
      const isFrom = n.is_from === true;
      serverFileAccess = typeof n.filename === 'string' || n.is_program === true;
      if (isFrom) {
        kind = 'write';
        c.walk({ relation: n.relation }, 'write');
      } else {
        kind = 'export';
        c.walk({ relation: n.relation }, 'read');
        c.walk(n.query, 'read');
      }
      if (serverFileAccess) {
        c.kinds.add('admin');
        c.unanalysable.push(n.is_program === true ? 'COPY runs a program on the database server' : 'COPY reads or writes a file on the database server');
      }
      c.walk(n.whereClause);
      break;
    }
    case 'CreateTableAsStmt':
      c.kinds.add('ddl');
      c.walk({ query: n.query }, 'read');
      c.walk({ IntoClause: n.into });
      break;
    case 'VariableSetStmt':
      c.settings.push(...variableSet(n, n.kind === 'VAR_RESET' || n.kind === 'VAR_RESET_ALL' ? 'reset' : 'set'));
      c.walk(n.args);
      // SET ROLE / SET SESSION AUTHORIZATION / RESET ROLE / RESET ALL change whose privileges apply.
      if (c.settings.some((st) => PRIVILEGE_SETTINGS.has(st.name))) kind = 'privilege';
      break;
    case 'AlterRoleSetStmt':
    case 'AlterDatabaseSetStmt':
    case 'AlterSystemStmt': {
      // setstmt holds a VariableSetStmt's fields, with or without the node wrapper.
      const set = isObject(n.setstmt) ? (isObject(n.setstmt.VariableSetStmt) ? n.setstmt.VariableSetStmt : n.setstmt) : undefined;
      const via = node === 'AlterRoleSetStmt' ? 'alter-role' : node === 'AlterDatabaseSetStmt' ? 'alter-database' : 'alter-system';
      if (set) c.settings.push(...variableSet(set, via));
      c.walk(n);
      break;
    }
    case 'PrepareStmt': {
      const inner = isObject(n.query) ? classifyStatement(n.query) : undefined;
      if (inner && typeof n.name === 'string') {
        return { ...inner, node, defines: { type: 'prepared', name: n.name } };
      }
      break;
    }
    case 'ExecuteStmt':
      uses = { type: 'prepared', name: String(n.name ?? '') };
      c.walk(n.params);
      break;
    case 'DeclareCursorStmt': {
      const inner = isObject(n.query) ? classifyStatement(n.query) : undefined;
      if (inner && typeof n.portalname === 'string') {
        return { ...inner, node, defines: { type: 'cursor', name: n.portalname } };
      }
      break;
    }
    case 'FetchStmt':
      uses = { type: 'cursor', name: String(n.portalname ?? '') };
      break;
    case 'ClosePortalStmt':
      forgets = { type: 'cursor', name: typeof n.portalname === 'string' ? n.portalname : null };
      break;
    case 'DeallocateStmt':
      forgets = { type: 'prepared', name: typeof n.name === 'string' && n.isall !== true ? n.name : null };
      break;
    case 'DiscardStmt':
      forgets = { type: 'all', name: null };
      break;
    case 'DoStmt':
      c.unanalysable.push('DO block: procedural code whose statements cannot be judged in advance');
      break;
    case 'CallStmt':
      c.unanalysable.push('CALL runs a procedure whose statements cannot be judged in advance');
      c.walk(n);
      break;
    case 'CreateFunctionStmt': {
      const opts = defElemNames(n.options);
      if (opts.includes('as') || n.sql_body !== undefined) {
        c.unanalysable.push('function or procedure body: its statements run later, unjudged');
      }
      c.walk(n.sql_body);
      break;
    }
    default:
      // Walk the wrapper itself so that nested-statement rules (write targets, CTE scopes,
      // SELECT INTO) apply to the top-level statement too.
      c.walk(stmt, kind === 'ddl' ? 'ddl' : 'read');
  }
  if (node === 'DropStmt') {
    // DROP names its objects as String lists, not RangeVars.
    for (const obj of Array.isArray(n.objects) ? n.objects : []) {
      const parts = isObject(obj) && isObject(obj.List) ? names(obj.List.items) : names([obj]);
      if (parts.length > 0) {
        const name = parts[parts.length - 1]!;
        c.relations.push({ ...(parts.length > 1 ? { schema: parts[parts.length - 2]! } : {}), name, access: 'ddl' });
      }
    }
  }

  if (node === 'CommentStmt' && isObject(n.object) && isObject(n.object.List)) {
    // COMMENT ON TABLE/VIEW/COLUMN names its target as a String list too; a column's table is
    // the part before the column name.
    const parts = names(n.object.List.items);
    const onRelation = ['OBJECT_TABLE', 'OBJECT_VIEW', 'OBJECT_MATVIEW', 'OBJECT_FOREIGN_TABLE', 'OBJECT_SEQUENCE'].includes(String(n.objtype));
    const table = onRelation ? parts : n.objtype === 'OBJECT_COLUMN' ? parts.slice(0, -1) : [];
    if (table.length > 0) {
      const name = table[table.length - 1]!;
      c.relations.push({ ...(table.length > 1 ? { schema: table[table.length - 2]! } : {}), name, access: 'ddl' });
    }
  }

  const kinds = new Set<Kind>([kind, ...c.kinds]);
  for (const st of c.settings) if (PRIVILEGE_SETTINGS.has(st.name)) kinds.add('privilege');
  return {
    node,
    kind,
    kinds: [...kinds],
    relations: dedupeRelations(c.relations),
    functions: [...c.functions],
    columns: [...c.columns],
    settings: c.settings,
    unanalysable: c.unanalysable,
    ...(defines ? { defines } : {}),
    ...(uses ? { uses } : {}),
    ...(forgets ? { forgets } : {}),
    ...(serverFileAccess ? { serverFileAccess } : {}),
    ...(c.updatesRows ? { updatesRows: true } : {}),
    ...lineageOf(node, n),
    ...(node === 'CopyStmt' ? { copy: copyInfo(n) } : {}),
  };
}

/** Output-column lineage for statements that return rows (masking of expression columns). */
function lineageOf(node: string, n: Json): { lineage?: SelectLineage } {
  if (node === 'SelectStmt') return { lineage: selectLineage(n) };
  if (node === 'DeclareCursorStmt' && isObject(n.query) && isObject(n.query.SelectStmt)) return { lineage: selectLineage(n.query.SelectStmt as Json) };
  if ((node === 'InsertStmt' || node === 'UpdateStmt' || node === 'DeleteStmt' || node === 'MergeStmt') && Array.isArray(n.returningList)) {
    // RETURNING reads the target table like a select list over it (plus UPDATE/DELETE's FROM/USING).
    const from = [{ RangeVar: n.relation }, ...(Array.isArray(n.fromClause) ? n.fromClause : []), ...(Array.isArray(n.usingClause) ? n.usingClause : [])];
    return { lineage: selectLineage({ targetList: n.returningList, fromClause: from, ...(n.withClause ? { withClause: n.withClause } : {}) }) };
  }
  return {};
}

function dedupeRelations(rs: RelationRef[]): RelationRef[] {
  const seen = new Map<string, RelationRef>();
  const rank = { read: 0, write: 1, ddl: 2 } as const;
  for (const r of rs) {
    const key = `${r.schema ?? ''}\u0000${r.name}`;
    const prev = seen.get(key);
    if (!prev || rank[r.access] > rank[prev.access]) seen.set(key, r);
  }
  return [...seen.values()];
}
