import { createHash, createHmac, pbkdf2, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * SCRAM-SHA-256 verifiers: what pgwarden stores for an agent instead of its secret.
 *
 * The text form is PostgreSQL's own (pg_authid.rolpassword, see "Password Authentication" in
 * the docs and src/backend/libpq/auth-scram.c):
 *
 *   SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>
 *
 * so a verifier made by PostgreSQL (`SELECT rolpassword FROM pg_authid`) can be pasted into the
 * rules, and one made here could be given to PostgreSQL. Key derivation, RFC 5802 §3 with
 * H = SHA-256 and HMAC = HMAC-SHA-256 (RFC 7677):
 *
 *   SaltedPassword = Hi(SASLprep(secret), salt, i)      (Hi is PBKDF2-HMAC-SHA-256, 32 bytes)
 *   ClientKey      = HMAC(SaltedPassword, "Client Key")
 *   StoredKey      = H(ClientKey)
 *   ServerKey      = HMAC(SaltedPassword, "Server Key")
 *
 * The verifier proves knowledge of the secret without revealing it: StoredKey lets the server
 * check a client proof, ServerKey lets it prove itself to the client; neither lets anyone log in
 * (that needs ClientKey) short of a brute-force search over the secret.
 */

export const SCRAM_MECHANISM = 'SCRAM-SHA-256';
/** SCRAM_SHA_256_KEY_LEN: the length of every SHA-256 key and signature. */
export const SCRAM_KEY_LENGTH = 32;
/** SCRAM_DEFAULT_SALT_LEN in PostgreSQL. */
export const SCRAM_SALT_LENGTH = 16;
/** PostgreSQL's default scram_iterations (and RFC 7677's minimum recommendation). */
export const SCRAM_DEFAULT_ITERATIONS = 4096;

export interface ScramVerifier {
  readonly iterations: number;
  readonly salt: Buffer;
  readonly storedKey: Buffer;
  readonly serverKey: Buffer;
}

// ---- SASLprep (RFC 4013), as PostgreSQL applies it (src/common/saslprep.c) ----

/** RFC 3454 table C.1.2 (non-ASCII space characters): mapped to U+0020. Checked first, as PostgreSQL does. */
const NON_ASCII_SPACE = /[\u00A0\u1680\u2000-\u200B\u202F\u205F\u3000]/gu;
/** RFC 3454 table B.1 ("commonly mapped to nothing"). */
const MAPPED_TO_NOTHING = /[\u00AD\u034F\u1806\u180B-\u180D\u200B-\u200D\u2060\uFE00-\uFE0F\uFEFF]/gu;
/**
 * Prohibited output (RFC 4013 §2.3): tables C.1.2, C.2.1, C.2.2, C.3 (private use), C.4
 * (non-characters), C.5 (surrogates), C.6, C.7, C.8, C.9 of RFC 3454.
 */
const PROHIBITED =
  /[\u00A0\u1680\u2000-\u200B\u202F\u205F\u3000\u0000-\u001F\u007F\u0080-\u009F\u06DD\u070F\u180E\u200C\u200D\u2028\u2029\u2060-\u2063\u206A-\u206F\uFEFF\uFFF9-\uFFFC\u{1D173}-\u{1D17A}\uE000-\uF8FF\u{F0000}-\u{FFFFD}\u{100000}-\u{10FFFD}\uFDD0-\uFDEF\uFFFE\uFFFF\u{1FFFE}\u{1FFFF}\u{2FFFE}\u{2FFFF}\u{3FFFE}\u{3FFFF}\u{4FFFE}\u{4FFFF}\u{5FFFE}\u{5FFFF}\u{6FFFE}\u{6FFFF}\u{7FFFE}\u{7FFFF}\u{8FFFE}\u{8FFFF}\u{9FFFE}\u{9FFFF}\u{AFFFE}\u{AFFFF}\u{BFFFE}\u{BFFFF}\u{CFFFE}\u{CFFFF}\u{DFFFE}\u{DFFFF}\u{EFFFE}\u{EFFFF}\u{FFFFE}\u{FFFFF}\u{10FFFE}\u{10FFFF}\p{Cs}\uFFFD\u2FF0-\u2FFB\u0340\u0341\u200E\u200F\u202A-\u202E\u{E0001}\u{E0020}-\u{E007F}]/u;

/**
 * The string SCRAM keys are derived from, as PostgreSQL computes it (pg_saslprep, and the
 * fallback of scram_build_secret / auth-scram.c "SASLprep usage"):
 *
 * - pure ASCII: the secret itself (PostgreSQL's fast path: no mapping, no checks);
 * - otherwise: map table C.1.2 to SPACE and table B.1 to nothing, normalize to NFKC; if the
 *   result is empty or contains a prohibited character, PostgreSQL gives up on SASLprep and uses
 *   the raw secret, and so does this.
 *
 * Not reproduced: the bidirectional-text check (RFC 3454 §6) and the "unassigned in Unicode 3.2"
 * check (table A.1), whose tables are large. For a secret that fails only those checks
 * PostgreSQL (and libpq) use the raw secret while this uses the normalized one; the two differ
 * only when NFKC or the mapping changes the secret. node-postgres (pg/lib/crypto/sasl.js) skips
 * every prohibition check, so clients already disagree there: `pgwarden agent-secret` refuses a
 * secret that SASLprep would change, which makes every client derive the same key from it.
 */
export function saslprep(secret: string): string {
  if (/^[\x00-\x7f]*$/.test(secret)) return secret;
  const prepared = secret.replace(NON_ASCII_SPACE, ' ').replace(MAPPED_TO_NOTHING, '').normalize('NFKC');
  if (prepared === '' || PROHIBITED.test(prepared)) return secret;
  return prepared;
}

// ---- derivation ----

export function hmac(key: Buffer, data: string | Buffer): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

export function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

function checkSecret(secret: string): void {
  if (typeof secret !== 'string' || secret === '') throw new Error('a SCRAM secret must be a non-empty string');
  // A lone surrogate has no UTF-8 form: Buffer.from would silently turn it into U+FFFD.
  if (/\p{Cs}/u.test(secret)) throw new Error('a SCRAM secret must be valid Unicode (it holds a lone surrogate)');
}

function checkIterations(iterations: number): void {
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > 0x7fffffff) {
    throw new Error(`SCRAM iteration count must be an integer from 1 to 2147483647, not ${iterations}`);
  }
}

function keysFromSalted(salted: Buffer): { storedKey: Buffer; serverKey: Buffer } {
  return { storedKey: sha256(hmac(salted, 'Client Key')), serverKey: hmac(salted, 'Server Key') };
}

/**
 * A new verifier for `secret` (the agent's password). The salt is random unless given (tests).
 * Synchronous PBKDF2: meant for the CLI and tests, not for the proxy's event loop.
 */
export function makeScramVerifier(secret: string, iterations = SCRAM_DEFAULT_ITERATIONS, salt?: Buffer): ScramVerifier {
  checkSecret(secret);
  checkIterations(iterations);
  const s = salt ?? randomBytes(SCRAM_SALT_LENGTH);
  if (s.length === 0) throw new Error('a SCRAM salt must not be empty');
  const salted = pbkdf2Sync(Buffer.from(saslprep(secret), 'utf8'), s, iterations, SCRAM_KEY_LENGTH, 'sha256');
  return { iterations, salt: Buffer.from(s), ...keysFromSalted(salted) };
}

/** The verifier's text form, as PostgreSQL stores it. */
export function formatScramVerifier(v: ScramVerifier): string {
  return `${SCRAM_MECHANISM}$${v.iterations}:${v.salt.toString('base64')}$${v.storedKey.toString('base64')}:${v.serverKey.toString('base64')}`;
}

/** Canonical padded base64 (RFC 4648 §4): what PostgreSQL writes. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Decodes strict base64; null for anything Buffer.from would silently accept or repair. */
export function decodeBase64Strict(text: string): Buffer | null {
  if (!BASE64.test(text)) return null;
  const bytes = Buffer.from(text, 'base64');
  // Rejects non-zero trailing bits ("QR==" decodes like "QQ=="): one text per byte string.
  return bytes.toString('base64') === text ? bytes : null;
}

/**
 * Parses a verifier in PostgreSQL's text form (parse_scram_secret in auth-scram.c). Strict: no
 * surrounding whitespace, canonical base64, a non-empty salt, 32-byte keys, a decimal iteration
 * count without sign or leading zeros. Throws an Error saying what is wrong (for rules
 * validation); the message quotes no part of the verifier.
 */
export function parseScramVerifier(text: string): ScramVerifier {
  if (typeof text !== 'string') throw new Error('a SCRAM verifier must be a string');
  const prefix = `${SCRAM_MECHANISM}$`;
  if (!text.startsWith(prefix)) {
    throw new Error(`not a SCRAM-SHA-256 verifier: expected "${prefix}<iterations>:<salt>$<StoredKey>:<ServerKey>"`);
  }
  const parts = text.slice(prefix.length).split('$');
  if (parts.length !== 2) throw new Error('malformed SCRAM verifier: expected "<iterations>:<salt>$<StoredKey>:<ServerKey>" after the prefix');
  const [iterSalt, keys] = parts as [string, string];
  const is = iterSalt.split(':');
  const ks = keys.split(':');
  if (is.length !== 2) throw new Error('malformed SCRAM verifier: expected "<iterations>:<salt>"');
  if (ks.length !== 2) throw new Error('malformed SCRAM verifier: expected "<StoredKey>:<ServerKey>"');
  const [iterText, saltText] = is as [string, string];
  const [storedText, serverText] = ks as [string, string];
  if (!/^[1-9][0-9]{0,9}$/.test(iterText) || Number(iterText) > 0x7fffffff) {
    throw new Error('malformed SCRAM verifier: the iteration count must be an integer from 1 to 2147483647');
  }
  const salt = decodeBase64Strict(saltText);
  if (!salt || salt.length === 0) throw new Error('malformed SCRAM verifier: the salt is not valid non-empty base64');
  const storedKey = decodeBase64Strict(storedText);
  if (!storedKey || storedKey.length !== SCRAM_KEY_LENGTH) {
    throw new Error(`malformed SCRAM verifier: StoredKey must be ${SCRAM_KEY_LENGTH} bytes in base64`);
  }
  const serverKey = decodeBase64Strict(serverText);
  if (!serverKey || serverKey.length !== SCRAM_KEY_LENGTH) {
    throw new Error(`malformed SCRAM verifier: ServerKey must be ${SCRAM_KEY_LENGTH} bytes in base64`);
  }
  return { iterations: Number(iterText), salt, storedKey, serverKey };
}

/** parseScramVerifier that answers null instead of throwing. */
export function tryParseScramVerifier(text: string): ScramVerifier | null {
  try {
    return parseScramVerifier(text);
  } catch {
    return null;
  }
}

/**
 * Checks a secret received in cleartext (AuthenticationCleartextPassword) against a verifier,
 * as PostgreSQL's scram_verify_plain_password does: derive the keys with the verifier's salt and
 * iteration count and compare. PBKDF2 runs on libuv's thread pool, not on the event loop (an
 * unauthenticated client can trigger it). Compares both keys in constant time.
 */
export async function verifyPlainSecret(verifier: ScramVerifier, secret: string): Promise<boolean> {
  if (typeof secret !== 'string' || secret === '' || /\p{Cs}/u.test(secret)) return false;
  const salted = await new Promise<Buffer>((resolve, reject) =>
    pbkdf2(Buffer.from(saslprep(secret), 'utf8'), verifier.salt, verifier.iterations, SCRAM_KEY_LENGTH, 'sha256', (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  );
  const { storedKey, serverKey } = keysFromSalted(salted);
  // Both compared (no short-circuit) so the time taken does not depend on which one differs.
  const a = timingSafeEqual(storedKey, verifier.storedKey);
  const b = timingSafeEqual(serverKey, verifier.serverKey);
  return a && b;
}
