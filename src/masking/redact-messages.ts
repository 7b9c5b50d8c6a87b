import { KNOWN_SQLSTATES } from './sqlstates.js';

/**
 * ErrorResponse / NoticeResponse of a statement that reads masked columns, with anything that
 * can echo a value removed. PostgreSQL prints values in messages and details: `invalid input
 * syntax for type integer: "alice@example.com"`, `Key (email)=(alice@example.com) already
 * exists.`, `Failing row contains (...)`, and a function prints whatever it formats: PL/pgSQL's
 * `RAISE … USING MESSAGE/HINT/DETAIL/SCHEMA/TABLE/COLUMN/DATATYPE/CONSTRAINT/ERRCODE = v` fills
 * each of those fields from any expression, at any SQLSTATE (`ASSERT false, v` is P0004).
 *
 * Body ("Message Formats", ErrorResponse): pairs of a field-type byte and a C string, ended by a
 * zero byte. Kept: severity (S, V), code (C), position (P) and source location (F, L, R), none of
 * which a function can fill with a value. Dropped: detail (D), hint (H), context (W), internal
 * query and position (q, p), the object names (s, t, c, d, n) and any field type not listed here.
 *
 * The message (M) of a message raised inside a function (it has a CONTEXT, W, which every
 * procedural language adds; or a code of class P0, or the codes RAISE NOTICE / WARNING use by
 * default) is replaced as a whole, and its code is kept only when it is a SQLSTATE PostgreSQL
 * defines (otherwise P0001: `ERRCODE = substr(ssn, 1, 5)` is a five-character channel). The
 * CONTEXT is looked at for presence only: its wording is translated (lc_messages). Any other
 * message keeps its wording with every quoted or parenthesised part replaced by ***.
 */
const KEEP = new Set(['S', 'V', 'C', 'P', 'F', 'L', 'R'].map((c) => c.charCodeAt(0)));
const M = 'M'.charCodeAt(0);
const C = 'C'.charCodeAt(0);
const W = 'W'.charCodeAt(0);

export const REDACTED_MESSAGE = 'pgwarden: message redacted (the statement reads masked columns)';
/** What RAISE uses without a code: the code a function-raised message gets when its own is not one PostgreSQL defines. */
const RAISE_EXCEPTION = 'P0001';

/** Whether the message is text a function chose (fail closed: any sign of one counts). */
function raisedByFunction(code: string, hasContext: boolean): boolean {
  return hasContext || code.startsWith('P0') || code === '00000' || code === '01000';
}

export function sanitizeMessage(message: string): string {
  return message.replace(/"(?:[^"]|"")*"/g, '"***"').replace(/\((?:[^()]|\([^()]*\))*\)/g, '(***)');
}

export function redactMessage(frame: Buffer): Buffer {
  const fields: [number, string][] = [];
  let pos = 5;
  while (pos < frame.length && frame[pos] !== 0) {
    const type = frame[pos]!;
    const end = frame.indexOf(0, pos + 1);
    if (end < 0) break;
    fields.push([type, frame.toString('utf8', pos + 1, end)]);
    pos = end + 1;
  }
  const code = fields.find(([t]) => t === C)?.[1] ?? '';
  const byFunction = raisedByFunction(code, fields.some(([t]) => t === W));
  const parts: Buffer[] = [];
  const push = (type: number, text: string) => parts.push(Buffer.from([type]), Buffer.from(text + '\0', 'utf8'));
  for (const [type, value] of fields) {
    if (type === M) push(type, byFunction ? REDACTED_MESSAGE : sanitizeMessage(value));
    else if (type === C) push(type, byFunction && !KNOWN_SQLSTATES.has(value) ? RAISE_EXCEPTION : value);
    else if (KEEP.has(type)) push(type, value);
  }
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(5);
  head[0] = frame[0]!;
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}
