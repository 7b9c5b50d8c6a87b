/**
 * ErrorResponse / NoticeResponse of a statement that reads masked columns, with anything that
 * can echo a value removed. PostgreSQL prints values in messages and details: `invalid input
 * syntax for type integer: "alice@example.com"`, `Key (email)=(alice@example.com) already
 * exists.`, `Failing row contains (...)`, and RAISE prints whatever the function formats.
 *
 * Body ("Message Formats", ErrorResponse): pairs of a field-type byte and a C string, ended by a
 * zero byte. Kept: severity (S, V), code (C), position (P), hint (H), source location (F, L, R)
 * and the object names (s, t, c, d, n: names, never values). Dropped: detail (D), context (W),
 * internal query and position (q, p). The message (M) keeps its wording with every quoted or
 * parenthesised part replaced by ***; a RAISE message (user text) is replaced as a whole.
 */
const KEEP = new Set(['S', 'V', 'C', 'P', 'H', 'F', 'L', 'R', 's', 't', 'c', 'd', 'n'].map((c) => c.charCodeAt(0)));
const M = 'M'.charCodeAt(0);
const C = 'C'.charCodeAt(0);

/** Codes whose message is text a user function chose (RAISE ... without a code, or P0001). */
function userText(code: string): boolean {
  return code === 'P0001' || code === '00000' || code === '01000';
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
  const parts: Buffer[] = [];
  for (const [type, value] of fields) {
    if (type === M) {
      const text = userText(code) ? 'pgwarden: message redacted (the statement reads masked columns)' : sanitizeMessage(value);
      parts.push(Buffer.from([type]), Buffer.from(text + '\0', 'utf8'));
    } else if (KEEP.has(type)) {
      parts.push(Buffer.from([type]), Buffer.from(value + '\0', 'utf8'));
    }
  }
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(5);
  head[0] = frame[0]!;
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}
