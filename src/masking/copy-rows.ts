import type { CopyFormat } from './copy-format.js';
import { DEFAULT_REDACTION } from './mask-rules.js';
import { maskText, type MaskStrategy } from './strategies.js';

/**
 * Masks the rows of a COPY … TO STDOUT in text or CSV format (pure: payloads in, payloads out).
 *
 * The server sends one CopyData message per row ("COPY Operations": "followed by zero or more
 * CopyData messages (always one per row)"), each row ending in a newline. A payload that ends
 * mid-row is still handled: the unfinished tail waits for the next payload, and whatever is left
 * at CopyDone is masked as a last row, so bytes of a masked column are never forwarded as is.
 *
 * Text format: columns are split at the delimiter byte (the server escapes it inside values as
 * backslash + delimiter), NULL is the null string, and values use backslash escapes (\b \f \n
 * \r \t \v \\, octal \ooo, hex \xhh, and backslash + any other character for that character).
 * CSV: a quoted value ends at an unescaped quote; an unquoted value equal to the null string is
 * NULL. Masked values are written back quoted (CSV) or escaped (text); the other columns are
 * copied byte for byte.
 */
const NL = 0x0a;
const NEWLINE = Buffer.of(NL);
const BACKSLASH = 0x5c;
const REDACTED = Buffer.from(DEFAULT_REDACTION);

const TEXT_ESCAPES: Record<number, number> = { 0x62: 0x08, 0x66: 0x0c, 0x6e: 0x0a, 0x72: 0x0d, 0x74: 0x09, 0x76: 0x0b };
const TEXT_ESCAPE_OUT: Record<number, number> = { 0x08: 0x62, 0x0c: 0x66, 0x0a: 0x6e, 0x0d: 0x72, 0x09: 0x74, 0x0b: 0x76 };

/** One column of the output: [start, end) in the row, whether it was quoted (CSV). */
interface Field {
  start: number;
  end: number;
  quoted: boolean;
}

export class CopyRowMasker {
  private pending: Buffer | null = null;
  private headerLeft: boolean;
  private readonly nullText: Buffer;
  /** The delimiter as a Buffer, to join fields with. */
  private readonly delimiter: Buffer;
  /** Rows whose column count did not match the plan (fully redacted). */
  mismatched = 0;

  constructor(
    private readonly format: CopyFormat,
    /** Per output column: its mask, or null to copy it as is. */
    private readonly plan: readonly (MaskStrategy | null)[],
    private readonly key: Buffer,
  ) {
    this.headerLeft = format.header;
    this.nullText = Buffer.from(format.null, 'utf8');
    this.delimiter = Buffer.of(format.delimiter);
  }

  /** One CopyData payload → what to forward (possibly empty while a row is unfinished). */
  push(payload: Buffer): Buffer {
    const data = this.pending ? Buffer.concat([this.pending, payload]) : payload;
    this.pending = null;
    const out: Buffer[] = [];
    let pos = 0;
    while (pos < data.length) {
      const end = this.format.kind === 'csv' ? this.csvRowEnd(data, pos) : data.indexOf(NL, pos);
      if (end < 0) {
        this.pending = Buffer.from(data.subarray(pos));
        break;
      }
      out.push(this.row(data.subarray(pos, end)), NEWLINE);
      pos = end + 1;
    }
    return Buffer.concat(out);
  }

  /** The copy ended: an unfinished last row, masked (empty when there is none). */
  end(): Buffer {
    const rest = this.pending;
    this.pending = null;
    return rest && rest.length > 0 ? this.row(rest) : Buffer.alloc(0);
  }

  private row(line: Buffer): Buffer {
    if (this.headerLeft) {
      this.headerLeft = false;
      return line;
    }
    const fields = this.format.kind === 'csv' ? this.csvFields(line) : this.textFields(line);
    if (!fields || fields.length !== this.plan.length) {
      this.mismatched++;
      return this.redactedRow();
    }
    const parts: Buffer[] = [];
    fields.forEach((f, i) => {
      if (i > 0) parts.push(this.delimiter);
      const raw = line.subarray(f.start, f.end);
      const strategy = this.plan[i];
      if (!strategy || this.isNull(raw, f.quoted)) {
        parts.push(raw);
        return;
      }
      const value = this.format.kind === 'csv' ? this.csvValue(raw, f.quoted) : textValue(raw);
      const masked = maskText(strategy, value, this.key);
      parts.push(masked === null ? this.nullText : this.format.kind === 'csv' ? this.csvQuote(masked) : this.textEscape(masked));
    });
    return Buffer.concat(parts);
  }

  private isNull(raw: Buffer, quoted: boolean): boolean {
    return !quoted && raw.equals(this.nullText);
  }

  private redactedRow(): Buffer {
    const value = this.format.kind === 'csv' ? this.csvQuote(REDACTED) : REDACTED;
    const parts: Buffer[] = [];
    this.plan.forEach((_, i) => {
      if (i > 0) parts.push(this.delimiter);
      parts.push(value);
    });
    return Buffer.concat(parts);
  }

  // --- text format ---

  private textFields(line: Buffer): Field[] {
    const fields: Field[] = [];
    let start = 0;
    for (;;) {
      const d = line.indexOf(this.format.delimiter, start);
      // A delimiter right after a backslash is part of the value (the server escapes it so).
      let at = d;
      while (at >= 0 && escapedAt(line, start, at)) at = line.indexOf(this.format.delimiter, at + 1);
      if (at < 0) {
        fields.push({ start, end: line.length, quoted: false });
        return fields;
      }
      fields.push({ start, end: at, quoted: false });
      start = at + 1;
    }
  }

  private textEscape(value: Buffer): Buffer {
    const out: number[] = [];
    for (const b of value) {
      const e = TEXT_ESCAPE_OUT[b];
      if (e !== undefined) out.push(BACKSLASH, e);
      else if (b === BACKSLASH || b === this.format.delimiter) out.push(BACKSLASH, b);
      else out.push(b);
    }
    return Buffer.from(out);
  }

  // --- CSV ---

  /**
   * Scans one CSV field from `i`: up to the delimiter or newline outside quotes, or the end of
   * `data`. `out`, when given, receives the field's value (quotes removed, escapes resolved).
   * The one CSV state machine here: rows, fields and values all go through it.
   */
  private csvField(data: Buffer, i: number, out?: number[]): { end: number; quoted: boolean; open: boolean } {
    const { quote, escape, delimiter } = this.format;
    let quoted = false;
    let inQuotes = false;
    for (; i < data.length; i++) {
      const b = data[i]!;
      if (inQuotes) {
        const next = data[i + 1];
        if ((b === escape && escape !== quote && (next === quote || next === escape)) || (b === quote && escape === quote && next === quote)) {
          // An escaped character (or a doubled quote): the next byte is data. (Not `out?.push(data[++i])`:
          // optional chaining would skip the increment when there is no `out`.)
          i++;
          out?.push(next!);
        } else if (b === quote) inQuotes = false;
        else out?.push(b);
      } else if (b === quote) {
        inQuotes = quoted = true;
      } else if (b === delimiter || b === NL) {
        break;
      } else out?.push(b);
    }
    return { end: i, quoted, open: inQuotes };
  }

  /** Index of the newline that ends the row starting at `pos` (outside quotes), or -1. */
  private csvRowEnd(data: Buffer, pos: number): number {
    for (let i = pos; ; i++) {
      const f = this.csvField(data, i);
      if (f.open || f.end >= data.length) return -1;
      if (data[f.end] === NL) return f.end;
      i = f.end;
    }
  }

  private csvFields(line: Buffer): Field[] | null {
    const fields: Field[] = [];
    for (let i = 0; ; i++) {
      const f = this.csvField(line, i);
      if (f.open) return null;
      fields.push({ start: i, end: f.end, quoted: f.quoted });
      if (f.end >= line.length) return fields;
      i = f.end;
    }
  }

  /** The value of a CSV field: quotes removed, escapes resolved. */
  private csvValue(raw: Buffer, quoted: boolean): Buffer {
    if (!quoted) return raw;
    const out: number[] = [];
    this.csvField(raw, 0, out);
    return Buffer.from(out);
  }

  private csvQuote(value: Buffer): Buffer {
    const { quote, escape } = this.format;
    const out: number[] = [quote];
    for (const b of value) {
      if (b === quote || b === escape) out.push(escape);
      out.push(b);
    }
    out.push(quote);
    return Buffer.from(out);
  }
}

/** Whether the byte at `at` is escaped by an odd run of backslashes before it (within the field). */
function escapedAt(line: Buffer, fieldStart: number, at: number): boolean {
  let n = 0;
  for (let i = at - 1; i >= fieldStart && line[i] === BACKSLASH; i--) n++;
  return n % 2 === 1;
}

/** A text-format value with its backslash escapes resolved. */
function textValue(raw: Buffer): Buffer {
  if (raw.indexOf(BACKSLASH) < 0) return raw;
  const out: number[] = [];
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i]!;
    if (b !== BACKSLASH || i + 1 >= raw.length) {
      out.push(b);
      continue;
    }
    const c = raw[++i]!;
    const simple = TEXT_ESCAPES[c];
    if (simple !== undefined) out.push(simple);
    else if (c >= 0x30 && c <= 0x37) {
      let v = c - 0x30;
      for (let k = 0; k < 2 && i + 1 < raw.length && raw[i + 1]! >= 0x30 && raw[i + 1]! <= 0x37; k++) v = v * 8 + (raw[++i]! - 0x30);
      out.push(v & 0xff);
    } else if (c === 0x78 && i + 1 < raw.length && isHex(raw[i + 1]!)) {
      let v = hex(raw[++i]!);
      if (i + 1 < raw.length && isHex(raw[i + 1]!)) v = v * 16 + hex(raw[++i]!);
      out.push(v);
    } else out.push(c);
  }
  return Buffer.from(out);
}

const isHex = (b: number) => (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
const hex = (b: number) => (b <= 0x39 ? b - 0x30 : (b | 0x20) - 0x61 + 10);
