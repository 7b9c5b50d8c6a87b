import { selectLineage, type SelectLineage } from './lineage.js';

/**
 * What a COPY statement sends and in which layout, read from its parse tree (CopyStmt), so that
 * COPY … TO STDOUT data of masked columns can be masked row by row (copy-rows.ts).
 *
 * Option semantics follow the COPY reference page: text format (default) separates columns by
 * DELIMITER (tab) and writes NULL as `\N`; CSV separates by DELIMITER (comma), writes NULL as the
 * empty unquoted string, quotes with QUOTE (") and escapes with ESCAPE (defaults to QUOTE).
 * Anything whose effect on the bytes we cannot be sure of (binary format, a non-UTF-8 ENCODING,
 * an option we do not know) is reported as `unsupported`, and masked data is then not sent.
 */
export interface CopyFormat {
  kind: 'text' | 'csv';
  /** Column separator (one byte: COPY rejects multi-byte delimiters). */
  delimiter: number;
  /** How NULL is written. */
  null: string;
  /** CSV only. */
  quote: number;
  escape: number;
  /** The first row is a header line of column names (only when certainly so: else it is masked as data). */
  header: boolean;
}

export interface CopyInfo {
  direction: 'to' | 'from';
  /** STDIN/STDOUT (the client) or a server file or program. */
  endpoint: 'client' | 'server';
  format: CopyFormat | { unsupported: string };
  /** COPY table [(columns)]. */
  table?: { schema?: string; name: string; columns?: string[] };
  /** COPY (query): its output lineage; `starOf` when it is exactly `SELECT * FROM one_table`. */
  query?: { lineage?: SelectLineage; starOf?: { schema?: string; name: string } };
}

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A DefElem's argument as text; null when there is none, undefined when it is not a scalar. */
function argText(arg: unknown): string | null | undefined {
  if (arg === undefined) return null;
  if (!isObj(arg)) return undefined;
  if (isObj(arg.String)) return String(arg.String.sval ?? '');
  if (isObj(arg.Boolean)) return arg.Boolean.boolval === true ? 'true' : 'false';
  if (isObj(arg.Integer)) return String(arg.Integer.ival ?? 0);
  return undefined;
}

/** COPY's boolean spelling (defGetBoolean); undefined when it is none of them. */
function boolOf(v: string | null): boolean | undefined {
  if (v === null) return true;
  const s = v.toLowerCase();
  if (['true', 'on', '1', 't', 'yes', 'y'].includes(s)) return true;
  if (['false', 'off', '0', 'f', 'no', 'n'].includes(s)) return false;
  return undefined;
}

function oneByte(v: string | null | undefined): number | undefined {
  if (typeof v !== 'string') return undefined;
  const b = Buffer.from(v, 'utf8');
  return b.length === 1 ? b[0] : undefined;
}

/** Options that change what bytes a COPY TO writes in ways masking does not have to know about. */
const HARMLESS = new Set(['force_quote', 'force_not_null', 'force_null', 'freeze', 'on_error', 'log_verbosity']);

export function copyFormat(options: unknown): CopyInfo['format'] {
  const opts = new Map<string, string | null | undefined>();
  for (const o of Array.isArray(options) ? options : []) {
    const d = isObj(o) && isObj(o.DefElem) ? o.DefElem : null;
    if (!d || typeof d.defname !== 'string') return { unsupported: 'unrecognised COPY option' };
    opts.set(d.defname, argText(d.arg));
  }
  const kind = opts.has('format') ? opts.get('format')?.toLowerCase() : 'text';
  if (kind === 'binary') return { unsupported: 'COPY in binary format cannot be masked' };
  if (kind !== 'text' && kind !== 'csv') return { unsupported: 'unrecognised COPY format' };
  const encoding = opts.get('encoding');
  if (opts.has('encoding') && !(typeof encoding === 'string' && /^utf-?8$/i.test(encoding))) {
    return { unsupported: 'COPY with an ENCODING other than UTF8 cannot be masked' };
  }
  for (const name of opts.keys()) {
    if (!['format', 'encoding', 'delimiter', 'null', 'quote', 'escape', 'header', 'default'].includes(name) && !HARMLESS.has(name)) {
      return { unsupported: `COPY option ${name} is not supported with masked columns` };
    }
  }
  if (opts.has('default')) return { unsupported: 'COPY option default is not supported with masked columns' };
  const delimiter = opts.has('delimiter') ? oneByte(opts.get('delimiter')) : kind === 'csv' ? 0x2c : 0x09;
  const quote = opts.has('quote') ? oneByte(opts.get('quote')) : 0x22;
  const escape = opts.has('escape') ? oneByte(opts.get('escape')) : quote;
  const nullText = opts.has('null') ? opts.get('null') : kind === 'csv' ? '' : '\\N';
  if (delimiter === undefined || quote === undefined || escape === undefined || typeof nullText !== 'string') {
    return { unsupported: 'COPY delimiter, quote, escape or null option cannot be read' };
  }
  // A header the server writes is names only; a header we are unsure of is masked as data.
  const headerArg = opts.get('header');
  const header = opts.has('header') && headerArg !== undefined && boolOf(headerArg) === true;
  return { kind, delimiter, null: nullText, quote, escape, header };
}

/** `SELECT * FROM t` (nothing else): its columns are t's, in order. */
function starOf(select: Json): { schema?: string; name: string } | undefined {
  const targets = select.targetList;
  const from = select.fromClause;
  if (!Array.isArray(targets) || targets.length !== 1 || !Array.isArray(from) || from.length !== 1) return undefined;
  if ((select.op !== undefined && select.op !== 'SETOP_NONE') || select.withClause !== undefined) return undefined;
  const rt = isObj(targets[0]) && isObj(targets[0].ResTarget) ? targets[0].ResTarget : null;
  const fields = rt && isObj(rt.val) && isObj(rt.val.ColumnRef) ? rt.val.ColumnRef.fields : null;
  if (!Array.isArray(fields) || fields.length !== 1 || !isObj(fields[0]) || !('A_Star' in fields[0])) return undefined;
  const rv = isObj(from[0]) && isObj(from[0].RangeVar) ? from[0].RangeVar : null;
  if (!rv || typeof rv.relname !== 'string' || (isObj(rv.alias) && Array.isArray(rv.alias.colnames))) return undefined;
  return { ...(typeof rv.schemaname === 'string' ? { schema: rv.schemaname } : {}), name: rv.relname };
}

/** What a CopyStmt node (the value under `CopyStmt`) copies, where, and how. */
export function copyInfo(n: Json): CopyInfo {
  const info: CopyInfo = {
    direction: n.is_from === true ? 'from' : 'to',
    endpoint: typeof n.filename === 'string' || n.is_program === true ? 'server' : 'client',
    format: copyFormat(n.options),
  };
  const rv = isObj(n.relation) ? n.relation : null;
  if (rv && typeof rv.relname === 'string') {
    const columns = Array.isArray(n.attlist) ? n.attlist.map((a) => (isObj(a) && isObj(a.String) ? String(a.String.sval ?? '') : '')) : undefined;
    info.table = { ...(typeof rv.schemaname === 'string' ? { schema: rv.schemaname } : {}), name: rv.relname, ...(columns ? { columns } : {}) };
  } else if (isObj(n.query)) {
    const select = isObj(n.query.SelectStmt) ? n.query.SelectStmt : null;
    const star = select ? starOf(select) : undefined;
    info.query = { ...(select ? { lineage: selectLineage(select) } : {}), ...(star ? { starOf: star } : {}) };
  }
  return info;
}
