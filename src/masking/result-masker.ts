import type { StatementInfo } from '../classify/statement-info.js';
import { BackendTag } from '../protocol/codes.js';
import type { CopyInfo } from './copy-format.js';
import { CopyRowMasker } from './copy-rows.js';
import { lineageMask, type ColumnMask, type DatabaseMasks } from './mask-catalog.js';
import { DEFAULT_REDACTION, REDACT } from './mask-rules.js';
import { maskBinary, maskText, strategyLabel, type MaskStrategy } from './strategies.js';

/**
 * Masks one request's answer (pure: frames in, frames out).
 *
 * RowDescription ("Message Formats"): Int16 field count, then per field a name (String), table
 * OID (Int32), attribute number (Int16), type OID (Int32), type size (Int16), type modifier
 * (Int32) and format code (Int16). A masked field is rewritten to type text (OID 25, size -1,
 * modifier -1) in text format (0), so no driver tries to parse '***' as an integer or a date,
 * whatever format it asked for.
 *
 * DataRow: Int16 column count, then per column an Int32 length (-1: NULL) and the bytes. Rows
 * without a masked column are returned as the same Buffer; only rows with one are rebuilt.
 *
 * Which fields are masked: a field with a table OID is looked up in the catalog (base tables and
 * the views built on them); an expression (table OID 0) is masked unless the statement's parse
 * tree shows it cannot carry a masked value (fail closed).
 *
 * COPY … TO STDOUT: CopyOutResponse (Int8 overall format, Int16 column count, Int16 format per
 * column) names no tables, so the columns come from the COPY statement: `COPY t (cols)` through
 * the catalog's column list of t, `COPY (query)` through the query's lineage. Each CopyData row
 * is then masked by CopyRowMasker. Whatever cannot be planned is redacted, and rows that cannot
 * be masked (binary format) are not forwarded.
 */
const TEXT_OID = 25;
const REDACTED = Buffer.from(DEFAULT_REDACTION);

export interface MaskContext {
  masks: DatabaseMasks;
  /** Rule tables ("schema.table") this user is exempt from. */
  exempt: ReadonlySet<string>;
  /** Masked column names (base tables and views), for expression lineage. */
  maskedNames: ReadonlySet<string>;
  /** The request's statements, in order. */
  statements: readonly StatementInfo[];
  /** HMAC key of the `hash` strategy. */
  key: Buffer;
  /**
   * The statements run in the order listed (a simple Query): the k-th CopyOutResponse answers
   * the k-th COPY TO STDOUT. Otherwise only a lone COPY statement can be matched to its answer.
   */
  ordered: boolean;
}

interface FieldPlan {
  strategy: MaskStrategy;
  binary: boolean;
  typeOid: number;
}

/** null: the field is not masked. */
type Plan = (FieldPlan | null)[];

export class ResultMasker {
  private plan: Plan | null = null;
  /** A RowDescription planned the current result (possibly with nothing to mask). */
  private described = false;
  /** Masked columns seen, for the audit log: column → strategy label. */
  readonly maskedColumns = new Map<string, string>();
  /** CopyOutResponses seen in this request. */
  private copies = 0;
  /** The COPY being answered: masked row by row, dropped (cannot be masked), or passed through. */
  private copy: CopyRowMasker | 'drop' | null = null;

  constructor(private readonly ctx: MaskContext) {}

  /** The lineage that applies to expression fields, when the request is one statement. */
  private lineage(): StatementInfo['lineage'] | undefined {
    return this.ctx.statements.length === 1 ? this.ctx.statements[0]!.lineage : undefined;
  }

  private columnMask(tableOid: number, attnum: number): ColumnMask | null {
    const table = this.ctx.masks.byOid.get(tableOid);
    if (!table) return null;
    if (attnum === 0) {
      // A whole-row reference (`SELECT c FROM customers c`) is reported with the table and
      // attribute number 0: it carries every column, masked ones included.
      const live = [...table.values()].filter((m) => !m.sources.every((s) => this.ctx.exempt.has(s)));
      return live.length > 0 ? { strategy: REDACT, column: `${live[0]!.column.slice(0, live[0]!.column.lastIndexOf('.'))}.*`, sources: live[0]!.sources } : null;
    }
    const m = table.get(attnum);
    if (!m) return null;
    if (m.sources.every((s) => this.ctx.exempt.has(s))) return null;
    return m;
  }

  private expressionMask(index: number): MaskStrategy | null {
    const lineage = this.lineage();
    const out = lineage?.outputs?.[index];
    if (!lineage || !out) return REDACT;
    if (out.countOnly) return null;
    if (out.wholeRow) return REDACT;
    const hits = out.refs.filter((r) => this.ctx.maskedNames.has(r));
    if (hits.length > 0) return REDACT;
    if (!lineage.direct && out.refs.length > 0) return REDACT;
    return null;
  }

  /** A RowDescription: plan the masks, and return it rewritten when a field is masked. */
  onRowDescription(frame: Buffer): Buffer {
    const count = frame.readInt16BE(5);
    const plan: Plan = [];
    let pos = 7;
    let any = false;
    const fieldPositions: number[] = [];
    for (let i = 0; i < count; i++) {
      const nameEnd = frame.indexOf(0, pos);
      const name = frame.toString('utf8', pos, nameEnd);
      const f = nameEnd + 1;
      fieldPositions.push(f);
      const tableOid = frame.readUInt32BE(f);
      const attnum = frame.readInt16BE(f + 4);
      const typeOid = frame.readUInt32BE(f + 6);
      const format = frame.readInt16BE(f + 16);
      let strategy: MaskStrategy | null = null;
      if (tableOid !== 0) {
        const m = this.columnMask(tableOid, attnum);
        if (m) {
          strategy = m.strategy;
          this.maskedColumns.set(m.column, strategyLabel(m.strategy));
        }
      } else {
        strategy = this.expressionMask(i);
        if (strategy) this.maskedColumns.set(`(expression ${name})`, strategyLabel(strategy));
      }
      plan.push(strategy ? { strategy, binary: format === 1, typeOid } : null);
      if (strategy) any = true;
      pos = f + 18;
    }
    this.plan = any ? plan : null;
    this.described = true;
    if (!any) return frame;
    const out = Buffer.from(frame);
    plan.forEach((p, i) => {
      if (!p) return;
      const f = fieldPositions[i]!;
      out.writeUInt32BE(TEXT_OID, f + 6);
      out.writeInt16BE(-1, f + 10);
      out.writeInt32BE(-1, f + 12);
      out.writeInt16BE(0, f + 16);
    });
    return out;
  }

  /** The result ended (CommandComplete, EmptyQueryResponse, PortalSuspended, NoData, ReadyForQuery). */
  endResult(): void {
    this.plan = null;
    this.described = false;
    this.copy = null;
  }

  /** CopyOutResponse: plan the COPY's columns. */
  onCopyOut(frame: Buffer): Buffer {
    const overallFormat = frame[5];
    const count = frame.readInt16BE(6);
    const copies = this.ctx.statements.filter((s) => s.copy?.direction === 'to' && s.copy.endpoint === 'client');
    const k = this.copies++;
    const st = this.ctx.ordered ? copies[k] : copies.length === 1 ? copies[0] : undefined;
    const plan = this.copyPlan(st?.copy, count);
    if (plan.every((p) => p === null)) {
      this.copy = null;
      return frame;
    }
    const format = st?.copy?.format;
    this.copy = overallFormat !== 0 || !format || 'unsupported' in format ? 'drop' : new CopyRowMasker(format, plan, this.ctx.key);
    return frame;
  }

  /** CopyData of a COPY TO: the masked row, or null when nothing is to be forwarded (yet). */
  onCopyData(frame: Buffer): Buffer | null {
    const copy = this.copy;
    if (copy === null) return frame;
    // A format that cannot be masked: nothing of it is forwarded.
    if (copy === 'drop') return null;
    const out = copy.push(frame.subarray(5));
    return out.length > 0 ? copyData(out) : null;
  }

  /** CopyDone: an unfinished last row is masked and sent before it. */
  onCopyDone(frame: Buffer): Buffer {
    const copy = this.copy;
    this.copy = null;
    if (copy instanceof CopyRowMasker) {
      const rest = copy.end();
      if (rest.length > 0) return Buffer.concat([copyData(rest), frame]);
    }
    return frame;
  }

  /** Per COPY output column: its mask, or null. Unplannable columns are redacted. */
  private copyPlan(info: CopyInfo | undefined, count: number): (MaskStrategy | null)[] {
    const all = (why: string): MaskStrategy[] => {
      this.maskedColumns.set(`(copy: ${why})`, strategyLabel(REDACT));
      return new Array<MaskStrategy>(count).fill(REDACT);
    };
    if (!info) return all('statement not known');
    const table = info.table ?? info.query?.starOf;
    if (table) return this.tableCopyPlan(table, info.table?.columns, count) ?? all('table columns not known');
    const lineage = info.query?.lineage;
    if (!lineage?.outputs || lineage.outputs.length !== count) return all('query columns not known');
    return lineage.outputs.map((o, i) => {
      const m = lineageMask(o, lineage.direct, (r) => (this.ctx.maskedNames.has(r) ? this.ctx.masks.names.get(r) : undefined), `(copy column ${i + 1})`, []);
      if (m) this.maskedColumns.set(m.column, strategyLabel(m.strategy));
      return m?.strategy ?? null;
    });
  }

  /** `COPY t [(cols)]` or `COPY (SELECT * FROM t)`: t's columns through the catalog; null when t is not one known table. */
  private tableCopyPlan(ref: { schema?: string; name: string }, columns: readonly string[] | undefined, count: number): (MaskStrategy | null)[] | null {
    const tables = this.ctx.masks.tables;
    const candidates =
      ref.schema !== undefined
        ? [tables.get(`${ref.schema}.${ref.name}`)].filter((t) => t !== undefined)
        : [...tables].filter(([key]) => key.slice(key.indexOf('.') + 1) === ref.name).map(([, t]) => t);
    // Unqualified and present in several schemas: which one the search_path picks is not known.
    if (candidates.length !== 1) return null;
    const t = candidates[0]!;
    const names = columns ?? t.columns.map((c) => c.name);
    if (names.length !== count) return null;
    return names.map((name) => {
      const col = t.columns.find((c) => c.name === name);
      if (!col) return REDACT;
      const m = this.columnMask(t.oid, col.attnum);
      if (m) this.maskedColumns.set(m.column, strategyLabel(m.strategy));
      return m?.strategy ?? null;
    });
  }

  /** NoData: no rows will follow (any that do are redacted). */
  clearPlan(): void {
    this.plan = null;
    this.described = false;
  }

  /** A DataRow, masked when its RowDescription said so. */
  onDataRow(frame: Buffer): Buffer {
    const plan = this.plan;
    if (!plan) {
      if (this.described) return frame;
      // No RowDescription for this result (cannot happen when the session injects Describe):
      // every value is redacted rather than guessed.
      return this.redactAll(frame);
    }
    // Two passes: mask the values and size the row, then write it into one buffer.
    const count = frame.readInt16BE(5);
    const masked: (Buffer | null | undefined)[] = new Array(count);
    let pos = 7;
    let size = 7;
    for (let i = 0; i < count; i++) {
      const len = frame.readInt32BE(pos);
      const start = pos + 4;
      const end = len < 0 ? start : start + len;
      const p = plan[i];
      // SQL NULL stays NULL: masking it would reveal nothing and break IS NULL checks.
      if (p && len >= 0) {
        const value = frame.subarray(start, end);
        const m = p.binary ? maskBinary(p.strategy, value, p.typeOid, this.ctx.key) : maskText(p.strategy, value, this.ctx.key);
        masked[i] = m;
        size += 4 + (m === null ? 0 : m.length);
      } else {
        size += end - pos;
      }
      pos = end;
    }
    const out = Buffer.allocUnsafe(size);
    out[0] = BackendTag.DataRow;
    out.writeInt32BE(size - 1, 1);
    out.writeInt16BE(count, 5);
    let src = 7;
    let dst = 7;
    for (let i = 0; i < count; i++) {
      const len = frame.readInt32BE(src);
      const end = len < 0 ? src + 4 : src + 4 + len;
      const m = masked[i];
      if (m === undefined) {
        dst += frame.copy(out, dst, src, end);
      } else {
        out.writeInt32BE(m === null ? -1 : m.length, dst);
        dst += 4;
        if (m !== null) dst += m.copy(out, dst);
      }
      src = end;
    }
    return out;
  }

  private redactAll(frame: Buffer): Buffer {
    const count = frame.readInt16BE(5);
    const size = 7 + count * (4 + REDACTED.length);
    const out = Buffer.alloc(size);
    out[0] = BackendTag.DataRow;
    out.writeInt32BE(size - 1, 1);
    out.writeInt16BE(count, 5);
    let pos = 7;
    for (let i = 0; i < count; i++) {
      out.writeInt32BE(REDACTED.length, pos);
      REDACTED.copy(out, pos + 4);
      pos += 4 + REDACTED.length;
    }
    return out;
  }
}

/** A CopyData message ("Message Formats": Byte1('d'), Int32 length, the data). */
function copyData(payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + payload.length);
  out[0] = BackendTag.CopyData;
  out.writeInt32BE(4 + payload.length, 1);
  payload.copy(out, 5);
  return out;
}
