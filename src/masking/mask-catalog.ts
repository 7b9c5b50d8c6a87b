import type pg from 'pg';
import { parseSync } from 'libpg-query';
import type { Logger } from '../logger.js';
import { sidePool } from '../server/side-pool.js';
import { selectLineage, type OutputLineage } from './lineage.js';
import { REDACT, type MaskRules } from './mask-rules.js';
import type { MaskStrategy } from './strategies.js';

/**
 * Which (table OID, attribute number) pairs of one database are masked: the columns the rules
 * name, and the columns of every view and materialized view built on them (found through
 * pg_depend/pg_rewrite, their lineage read from pg_get_viewdef with PostgreSQL's parser).
 *
 * RowDescription identifies a plain column by table OID + attnum ("Message Formats",
 * RowDescription), so with this map the result masker decides per field synchronously, in the
 * stream. Loaded once per database and rules snapshot on a side connection, refreshed after DDL
 * passed through and every `refreshMs`.
 */
export interface ColumnMask {
  strategy: MaskStrategy;
  /** schema.table.column it shows (for the audit log); a view column names the view. */
  column: string;
  /** The rule tables ("schema.table") it derives from: exemption is per table. */
  sources: readonly string[];
}

export interface DatabaseMasks {
  byOid: ReadonlyMap<number, ReadonlyMap<number, ColumnMask>>;
  /** Views (schema.name) that show masked data: reading them makes a request masked. */
  views: ReadonlySet<string>;
  /** Masked column names (base tables and views) → their mask, for expression lineage. */
  names: ReadonlyMap<string, ColumnMask>;
  /** The rule tables that exist (schema.table): OID and live columns in attnum order (COPY table TO). */
  tables: ReadonlyMap<string, { oid: number; columns: readonly { name: string; attnum: number }[] }>;
}

/**
 * The mask of one output column known only by its lineage (a view column, a COPY (query)
 * column): a bare reference to a masked column keeps that column's strategy; anything computed
 * from one, a whole row, or a name that may have been renamed on the way is redacted. count(…) is
 * clean. `lookup` says which names are masked.
 */
export function lineageMask(o: OutputLineage, direct: boolean, lookup: (name: string) => ColumnMask | undefined, column: string, allSources: readonly string[]): ColumnMask | null {
  if (o.countOnly) return null;
  if (o.wholeRow || !direct) {
    return o.wholeRow || o.refs.length > 0 ? { strategy: REDACT, column, sources: allSources } : null;
  }
  const hits = o.refs.map(lookup).filter((m): m is ColumnMask => m !== undefined);
  if (hits.length === 0) return null;
  return { strategy: o.plain && hits.length === 1 ? hits[0]!.strategy : REDACT, column, sources: [...new Set(hits.flatMap((h) => h.sources))] };
}

/**
 * Adds a masked column to the by-name map that expression lineage goes by. A name that is
 * already there (two tables' `email`, or a view column named like another table's masked
 * column) is masked for the sources of both, and redacted unless both show it the same way (a
 * view column that passes a table's column through keeps that column's strategy). Returns
 * whether the map changed.
 */
function addMaskedName(names: Map<string, ColumnMask>, name: string, m: ColumnMask): boolean {
  const prev = names.get(name);
  if (!prev) {
    names.set(name, m);
    return true;
  }
  const sources = [...new Set([...prev.sources, ...m.sources])];
  const strategy = prev.strategy === m.strategy ? prev.strategy : REDACT;
  if (strategy === prev.strategy && sources.length === prev.sources.length) return false;
  names.set(name, { ...prev, strategy, sources });
  return true;
}

const TABLES_SQL = `
SELECT c.oid::int8 AS oid, n.nspname AS schema, c.relname AS table, a.attnum::int AS attnum, a.attname::text AS column
FROM unnest($1::text[], $2::text[]) AS want(schema, tbl)
JOIN pg_namespace n ON n.nspname = want.schema
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = want.tbl
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped`;

const VIEWS_SQL = `
WITH RECURSIVE deps(oid) AS (
  SELECT r.ev_class FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
   WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
     AND d.refobjid = ANY($1::oid[]) AND r.ev_class <> d.refobjid
  UNION
  SELECT r.ev_class FROM deps JOIN pg_depend d ON d.refobjid = deps.oid
     AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
   JOIN pg_rewrite r ON r.oid = d.objid WHERE r.ev_class <> d.refobjid
)
SELECT c.oid::int8 AS oid, n.nspname AS schema, c.relname AS name, pg_get_viewdef(c.oid) AS def,
       array_agg(a.attname::text ORDER BY a.attnum) AS cols, array_agg(a.attnum::int ORDER BY a.attnum) AS nums
FROM (SELECT DISTINCT oid FROM deps) deps JOIN pg_class c ON c.oid = deps.oid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
GROUP BY 1, 2, 3, 4`;

interface Entry {
  rules: MaskRules;
  at: number;
  value: Promise<DatabaseMasks>;
  /** Set once loaded: later requests decide synchronously. */
  masks?: DatabaseMasks;
}

export class MaskCatalog {
  private readonly pools = new Map<string, pg.Pool>();
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly url: string,
    private readonly log: Logger,
    private readonly refreshMs = 60_000,
  ) {}

  /** The masks of `database` under `rules`, synchronously when loaded and fresh. */
  get(database: string, rules: MaskRules): DatabaseMasks | Promise<DatabaseMasks> {
    let e = this.entries.get(database);
    if (!e || e.rules !== rules || Date.now() - e.at >= this.refreshMs) {
      const entry: Entry = { rules, at: Date.now(), value: this.load(database, rules) };
      entry.value.then(
        (masks) => {
          entry.masks = masks;
        },
        () => {
          if (this.entries.get(database) === entry) this.entries.delete(database);
        },
      );
      this.entries.set(database, entry);
      e = entry;
    }
    return e.masks ?? e.value;
  }

  /** DDL passed through: the next request reloads (new views, renamed columns, new tables). */
  invalidate(database: string): void {
    this.entries.delete(database);
  }

  private pool(database: string): pg.Pool {
    let p = this.pools.get(database);
    if (!p) {
      p = sidePool(this.url, database, 'pgwarden-masking');
      this.pools.set(database, p);
    }
    return p;
  }

  private async load(database: string, rules: MaskRules): Promise<DatabaseMasks> {
    const byOid = new Map<number, Map<number, ColumnMask>>();
    const views = new Set<string>();
    const present = new Map<string, { oid: number; columns: { name: string; attnum: number }[] }>();
    if (rules.tables.size === 0) return { byOid, views, names: new Map(), tables: present };
    const schemas: string[] = [];
    const tables: string[] = [];
    for (const t of rules.tables.values()) {
      schemas.push(t.schema);
      tables.push(t.table);
    }
    const pool = this.pool(database);
    const base = await pool.query<{ oid: string; schema: string; table: string; attnum: number; column: string }>(TABLES_SQL, [schemas, tables]);
    /** masked column name → its strategy and sources, for view lineage */
    const maskedNames = new Map<string, ColumnMask>();
    const baseOids: number[] = [];
    for (const r of base.rows) {
      const key = `${r.schema}.${r.table}`;
      const strategy = rules.tables.get(key)?.columns.get(r.column);
      const oid = Number(r.oid);
      let t = present.get(key);
      if (!t) present.set(key, (t = { oid, columns: [] }));
      t.columns.push({ name: r.column, attnum: r.attnum });
      if (!byOid.has(oid)) {
        byOid.set(oid, new Map());
        baseOids.push(oid);
      }
      if (!strategy) continue;
      const mask: ColumnMask = { strategy, column: `${key}.${r.column}`, sources: [key] };
      byOid.get(oid)!.set(r.attnum, mask);
      addMaskedName(maskedNames, r.column, mask);
    }
    for (const t of present.values()) t.columns.sort((a, b) => a.attnum - b.attnum);
    if (baseOids.length === 0) return { byOid, views, names: maskedNames, tables: present };
    const vs = await pool.query<{ oid: string; schema: string; name: string; def: string; cols: string[]; nums: number[] }>(VIEWS_SQL, [baseOids]);
    const allSources = [...rules.tables.keys()];
    for (const v of vs.rows) views.add(`${v.schema}.${v.name}`);
    // Views on views: a column a view masks is a masked name for the views above it, and a name
    // shared with another masked column gets the sources of both. Names only grow (more names,
    // more sources, REDACT), so this settles; a round settles at least one more level of views,
    // so one round more than there are views is enough unless names collide in circles.
    let settled = false;
    for (let round = 0; round <= vs.rows.length && !settled; round++) {
      settled = true;
      for (const v of vs.rows) {
        const cols = this.viewMasks(v, maskedNames, allSources);
        byOid.set(Number(v.oid), cols);
        for (const [num, m] of cols) {
          if (addMaskedName(maskedNames, v.cols[v.nums.indexOf(num)]!, m)) settled = false;
        }
      }
    }
    if (!settled) {
      // Fail closed: every column of every view on a masked table is redacted.
      this.log.warn({ database, views: vs.rows.length }, 'view lineage did not settle: masking every column of the views on masked tables');
      for (const v of vs.rows) {
        const cols = new Map<number, ColumnMask>();
        v.nums.forEach((num, i) => {
          const m: ColumnMask = { strategy: REDACT, column: `${v.schema}.${v.name}.${v.cols[i]}`, sources: allSources };
          cols.set(num, m);
          addMaskedName(maskedNames, v.cols[i]!, m);
        });
        byOid.set(Number(v.oid), cols);
      }
    }
    this.log.debug({ database, tables: baseOids.length, views: views.size }, 'masking catalog loaded');
    return { byOid, views, names: maskedNames, tables: present };
  }

  /** The masked columns of one view: by lineage when it is direct, otherwise all of them (fail closed). */
  private viewMasks(v: { schema: string; name: string; def: string; cols: string[]; nums: number[] }, maskedNames: ReadonlyMap<string, ColumnMask>, allSources: string[]): Map<number, ColumnMask> {
    const out = new Map<number, ColumnMask>();
    const all = (why: string) => {
      this.log.debug({ view: `${v.schema}.${v.name}`, why }, 'view lineage unknown: masking every column');
      v.nums.forEach((num, i) => out.set(num, { strategy: REDACT, column: `${v.schema}.${v.name}.${v.cols[i]}`, sources: allSources }));
      return out;
    };
    let stmt: Record<string, unknown> | undefined;
    try {
      const tree = parseSync(v.def) as { stmts?: { stmt: Record<string, unknown> }[] };
      stmt = tree.stmts?.[0]?.stmt;
    } catch {
      return all('definition does not parse');
    }
    const select = stmt?.SelectStmt as Record<string, unknown> | undefined;
    if (!select) return all('not a SELECT');
    const lineage = selectLineage(select);
    if (!lineage.outputs || lineage.outputs.length !== v.nums.length) return all('columns cannot be matched to the definition');
    lineage.outputs.forEach((o, i) => {
      const m = lineageMask(o, lineage.direct, (r) => maskedNames.get(r), `${v.schema}.${v.name}.${v.cols[i]}`, allSources);
      if (m) out.set(v.nums[i]!, m);
    });
    return out;
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.end().catch(() => undefined)));
  }
}
