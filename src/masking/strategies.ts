/**
 * Masking strategies for PII columns: pure functions from one field value to its masked form.
 *
 * Contract with callers:
 * - SQL NULL is never passed in. A NULL field stays NULL (masking NULL reveals nothing, and
 *   replacing it would invent data), so callers forward NULL untouched and only call these
 *   functions for non-NULL values.
 * - Text-format values are PostgreSQL TEXT format in UTF-8 (client_encoding UTF8).
 * - The result is always TEXT format (pgwarden sends masked columns as type text); a null result
 *   means the field is sent as SQL NULL.
 *
 * Characters are Unicode code points, never bytes or UTF-16 units, so a multi-byte character is
 * never split and an astral character (e.g. an emoji) counts as one. A grapheme cluster made of
 * several code points (combining accents, ZWJ emoji, flags) can be cut between its code points;
 * the result is still valid UTF-8. Bytes that are not valid UTF-8 are treated as opaque: the
 * value-dependent strategies (keep_first, keep_last, partial_email) then redact fully, because
 * any "part" of an undecodable value is not a well-defined thing to reveal.
 */
import { isUtf8 } from 'node:buffer';
import { hash } from 'node:crypto';

export type MaskStrategy =
  | { kind: 'redact'; text: string } // fixed text, default '***' chosen by the caller
  | { kind: 'partial_email' } // 'alice@example.com' → 'a***@example.com'
  | { kind: 'keep_first'; count: number } // keep first N characters, the rest → exactly '***'
  | { kind: 'keep_last'; count: number } // keep last N characters, the rest → exactly '***'
  | { kind: 'hash' } // keyed HMAC-SHA256, hex: deterministic (joins / GROUP BY still work), not reversible
  | { kind: 'null' } // SQL NULL
  | { kind: 'fixed'; value: string }; // a fixed replacement value

/** What replaces hidden characters: always exactly three, so the hidden length is not revealed. */
const STARS = '***';

/** 32 hex characters = 128 bits of the HMAC: collision-free in practice, shorter in results. */
const HASH_HEX_CHARS = 32;

/** Binary-format types whose wire bytes are the UTF-8 text itself (same bytes as TEXT format). */
const TEXT_LIKE_OIDS: ReadonlySet<number> = new Set([
  25, // text
  1043, // varchar
  1042, // bpchar (padding is part of both the text and the binary form)
  19, // name
]);
// citext and other extension types have installation-specific oids: they are not listed, so they
// are handled as opaque non-text types (full redaction for value-dependent strategies), which is
// the safe direction to be wrong in.

/**
 * The value-dependent strategies work on the UTF-8 bytes directly (no string decoding or
 * re-encoding per value: that was most of their cost on large results). In valid UTF-8 every
 * byte that is not a continuation byte (10xxxxxx) starts a code point, and ASCII bytes such as
 * '@' never occur inside a multi-byte character.
 */
const isContinuation = (b: number): boolean => (b & 0xc0) === 0x80;
const STARS_BYTES = Buffer.from(STARS);

const text = (s: string): Buffer => Buffer.from(s, 'utf8');

/** Constant outputs (redaction texts, fixed values from the rules) are encoded once. */
const encoded = new Map<string, Buffer>();
const constText = (s: string): Buffer => {
  let b = encoded.get(s);
  if (!b) {
    if (encoded.size > 1000) encoded.clear();
    b = Buffer.from(s, 'utf8');
    encoded.set(s, b);
  }
  return b;
};

/** A count that is not a non-negative integer is a configuration bug: fail loudly, reveal nothing. */
function checkCount(count: number): void {
  if (!Number.isSafeInteger(count) || count < 0) {
    throw new RangeError(`mask count must be a non-negative integer, got ${String(count)}`);
  }
}

/** The first `count` code points followed by '***'; just '***' when there are not more than `count`. */
function keepFirst(v: Buffer, count: number): Buffer {
  let i = 0;
  for (let n = 0; n < count && i < v.length; n++) {
    i++;
    while (i < v.length && isContinuation(v[i]!)) i++;
  }
  // Length ≤ count: keeping `count` characters would reveal the whole value.
  if (i >= v.length) return STARS_BYTES;
  const out = Buffer.allocUnsafe(i + 3);
  v.copy(out, 0, 0, i);
  STARS_BYTES.copy(out, i);
  return out;
}

/** '***' followed by the last `count` code points; just '***' when there are not more than `count`. */
function keepLast(v: Buffer, count: number): Buffer {
  let j = v.length;
  for (let n = 0; n < count && j > 0; n++) {
    j--;
    while (j > 0 && isContinuation(v[j]!)) j--;
  }
  if (j <= 0) return STARS_BYTES;
  const out = Buffer.allocUnsafe(3 + v.length - j);
  STARS_BYTES.copy(out, 0);
  v.copy(out, 3, j);
  return out;
}

/**
 * First code point of the local part + '***@' + domain. The last '@' separates the domain (a
 * quoted local part may itself contain '@'; only its first character is shown). No '@' or an
 * empty local part: nothing email-shaped to keep, so '***'.
 */
function partialEmail(v: Buffer): Buffer {
  const at = v.lastIndexOf(0x40);
  if (at <= 0) return STARS_BYTES;
  let first = 1;
  while (first < at && isContinuation(v[first]!)) first++;
  const out = Buffer.allocUnsafe(first + 3 + v.length - at);
  v.copy(out, 0, 0, first);
  STARS_BYTES.copy(out, first);
  v.copy(out, first + 3, at);
  return out;
}

/**
 * HMAC-SHA256 (RFC 2104) computed as two one-shot SHA-256 calls over the padded key blocks:
 * H((K ^ opad) || H((K ^ ipad) || m)), K zero-padded to the 64-byte block. An Hmac (or Hash)
 * object per value cost most of the masking time on large results (docs/benchmarks.md); the
 * one-shot crypto.hash avoids the object. The pads are computed once per key.
 */
interface HmacPads {
  ipad: Buffer;
  opad: Buffer;
}
const padCache = new WeakMap<Buffer, HmacPads>();

function pads(key: Buffer): HmacPads {
  let p = padCache.get(key);
  if (p) return p;
  const block = Buffer.alloc(64);
  (key.length > 64 ? hash('sha256', key, 'buffer') : key).copy(block);
  const ipad = Buffer.alloc(64);
  const opad = Buffer.alloc(64);
  for (let i = 0; i < 64; i++) {
    ipad[i] = block[i]! ^ 0x36;
    opad[i] = block[i]! ^ 0x5c;
  }
  p = { ipad, opad };
  padCache.set(key, p);
  return p;
}

/** HMAC-SHA256 over the given byte chunks, lowercase hex, truncated to HASH_HEX_CHARS. */
function hmacHex(key: Buffer, chunks: readonly Uint8Array[]): string {
  // An empty key would make the "keyed" hash an unkeyed one that anyone can recompute (and so
  // brute-force low-entropy PII like phone numbers): refuse rather than degrade silently.
  if (key.length === 0) throw new Error('hash masking needs a non-empty key');
  const { ipad, opad } = pads(key);
  let length = 64;
  for (const c of chunks) length += c.length;
  const inner = Buffer.allocUnsafe(length);
  ipad.copy(inner, 0);
  let pos = 64;
  for (const c of chunks) {
    inner.set(c, pos);
    pos += c.length;
  }
  const outer = Buffer.allocUnsafe(96);
  opad.copy(outer, 0);
  // A 'binary' (latin1) string is one character per digest byte; crypto.hash returns strings faster
  // than Buffers on Node 20.
  outer.write(hash('sha256', inner, 'binary') as string, 64, 'latin1');
  return (hash('sha256', outer, 'hex') as string).slice(0, HASH_HEX_CHARS);
}

/**
 * Domain-separation prefix for hashing a binary-format value of a non-text type: 0x00 followed by
 * the type oid as a 4-byte big-endian unsigned integer. The oid keeps equal bytes of different
 * types (int4 42 vs oid 42) apart. The leading 0x00 keeps every such input apart from TEXT-format
 * inputs, which never contain a NUL byte in PostgreSQL, so no binary value can hash like a text one.
 */
function binaryHashPrefix(typeOid: number): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(typeOid >>> 0, 1);
  return prefix;
}

function unreachable(s: never): never {
  // Reached only if a strategy from outside the type system (bad config parsing) slips through:
  // throwing fails closed instead of sending the value unmasked.
  throw new Error(`unknown mask strategy: ${JSON.stringify(s)}`);
}

/** Masks one field value in PostgreSQL TEXT format (UTF-8 bytes); null result = SQL NULL. */
export function maskText(strategy: MaskStrategy, value: Buffer, key: Buffer): Buffer | null {
  switch (strategy.kind) {
    case 'redact':
      return constText(strategy.text);
    case 'fixed':
      return constText(strategy.value);
    case 'null':
      return null;
    case 'hash':
      // Hashes the bytes as received, valid UTF-8 or not, so equal values always hash equal.
      return text(hmacHex(key, [value]));
    case 'keep_first':
      checkCount(strategy.count);
      return isUtf8(value) ? keepFirst(value, strategy.count) : STARS_BYTES;
    case 'keep_last':
      checkCount(strategy.count);
      return isUtf8(value) ? keepLast(value, strategy.count) : STARS_BYTES;
    case 'partial_email':
      return isUtf8(value) ? partialEmail(value) : STARS_BYTES;
    default:
      return unreachable(strategy);
  }
}

/**
 * Masks one field value in BINARY format of type `typeOid`; the result is always TEXT format
 * (pgwarden sends masked columns as type text). Text-like types (text 25, varchar 1043, bpchar
 * 1042, name 19) carry UTF-8 bytes and mask exactly like maskText (so a hash is the same in both
 * formats). Every other oid, including unknown ones such as citext, is non-text: the
 * value-dependent strategies cannot see the text form, so keep_first/keep_last/partial_email
 * fall back to '***' (full redaction); hash hashes the raw bytes behind a 0x00 + type-oid prefix;
 * redact/null/fixed behave as usual.
 */
export function maskBinary(strategy: MaskStrategy, value: Buffer, typeOid: number, key: Buffer): Buffer | null {
  if (TEXT_LIKE_OIDS.has(typeOid)) return maskText(strategy, value, key);
  switch (strategy.kind) {
    case 'redact':
    case 'fixed':
    case 'null':
      return maskText(strategy, value, key);
    case 'hash':
      return text(hmacHex(key, [binaryHashPrefix(typeOid), value]));
    case 'keep_first':
    case 'keep_last':
      checkCount(strategy.count); // a bad count is a bug whatever the column type
      return STARS_BYTES;
    case 'partial_email':
      return STARS_BYTES;
    default:
      return unreachable(strategy);
  }
}

/**
 * A short human label for logs/audit: 'redact', 'partial_email', 'keep_first(2)', 'keep_last(4)',
 * 'hash', 'null', 'fixed'. Redact text and fixed values are left out: labels describe the
 * strategy, not data.
 */
export function strategyLabel(s: MaskStrategy): string {
  switch (s.kind) {
    case 'keep_first':
    case 'keep_last':
      return `${s.kind}(${String(s.count)})`;
    case 'redact':
    case 'partial_email':
    case 'hash':
    case 'null':
    case 'fixed':
      return s.kind;
    default:
      return unreachable(s);
  }
}
