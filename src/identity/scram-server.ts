import { randomBytes, timingSafeEqual } from 'node:crypto';
import {
  SCRAM_DEFAULT_ITERATIONS,
  SCRAM_KEY_LENGTH,
  SCRAM_MECHANISM,
  SCRAM_SALT_LENGTH,
  decodeBase64Strict,
  hmac,
  parseScramVerifier,
  sha256,
  type ScramVerifier,
} from './scram-verifier.js';

/**
 * The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL runs it over the wire
 * (docs: "Frontend/Backend Protocol" → "SASL Authentication"; src/backend/libpq/auth-scram.c):
 *
 *   agent  → SASLInitialResponse  client-first-message   gs2-header "n=<user>,r=<c-nonce>"
 *   pgwarden → SASLContinue       server-first-message   "r=<c-nonce><s-nonce>,s=<salt>,i=<n>"
 *   agent  → SASLResponse         client-final-message   "c=<b64 gs2-header>,r=<nonce>,p=<proof>"
 *   pgwarden → SASLFinal          server-final-message   "v=<server signature>"
 *
 * Pure: bytes in, bytes or an error out; the session does the framing and the I/O. Deviations
 * from RFC 5802, all PostgreSQL's own:
 * - the user name in "n=" is ignored: the startup packet's user is the one authenticated;
 * - no channel binding is offered (no SCRAM-SHA-256-PLUS), so "p=" in the gs2 header is refused
 *   while "y" (client supports binding, thinks the server does not) is accepted;
 * - no authorization identity ("a=") and no mandatory extension ("m=") is accepted;
 * - failures are not reported with "e=" in a server-final-message: the session sends an
 *   ErrorResponse (28P01 for a wrong secret, 08P01 for a malformed message) and closes.
 *
 * Unknown users run a mock exchange (auth-scram.c "Error handling"): a salt derived from the user
 * name and a server secret, the usual iteration count, the proof computed and checked like a real
 * one, and the same failure at the same step as a wrong secret, so that probing does not reveal
 * which agents exist.
 *
 * Messages are handled as latin1 strings, one character per byte, so that the AuthMessage the
 * proof covers is exactly the bytes received whatever the client put in them. Error strings
 * never quote client input, keys, nonces or proofs.
 */

/** SQLSTATEs of the two ways an exchange fails (PostgreSQL "Appendix A. Error Codes"). */
export const ScramSqlState = {
  /** invalid_password: wrong secret, or unknown user (mock exchange). */
  InvalidPassword: '28P01',
  /** protocol_violation: a malformed or out-of-order message. */
  ProtocolViolation: '08P01',
} as const;

export interface ScramFailure {
  /** For the ErrorResponse to the client; holds no secret and no client input but the user name. */
  error: string;
  sqlstate: (typeof ScramSqlState)[keyof typeof ScramSqlState];
}

export interface ScramServerOptions {
  /** The user of the startup packet: named in the failure message, and seeds the mock salt. */
  user: string;
  /**
   * Key for mock salts (at least 16 bytes); required when the verifier is null. Must be the same
   * on every instance and across restarts (derive it from a configured secret): a random one per
   * process would give an unknown user a different salt on each connection, which a real agent's
   * salt never changes, and so reveal that the user does not exist.
   */
  mockSecret?: Buffer;
  /** Iteration count announced by a mock exchange: use what real verifiers use. Default 4096. */
  mockIterations?: number;
  /**
   * Tests only (published test vectors): a fixed server nonce instead of 18 random bytes. A
   * fixed nonce would let a recorded exchange be replayed; never set it outside tests.
   */
  testServerNonce?: string;
}

/** What the session sends next: SASLContinue with `reply`, or SASLFinal with `final` then AuthenticationOk. */
export type ScramInitialResult = { reply: Buffer } | ScramFailure;
export type ScramResponseResult = { reply: Buffer } | { final: Buffer } | ScramFailure;

/** PostgreSQL's SCRAM_RAW_NONCE_LEN: 18 random bytes, 24 base64 characters. */
const SERVER_NONCE_BYTES = 18;
const MIN_MOCK_SECRET_BYTES = 16;

/** Base64 of the gs2 headers "n,," and "y,,": the only channel-binding data without binding. */
const CBIND_WITHOUT_BINDING: Record<string, string> = { n: 'biws', y: 'eSws' };

/** A malformed message; turned into a ScramFailure at the method boundary. */
class Malformed extends Error {}

/** printable = %x21-2B / %x2D-7E (RFC 5802 §7): ASCII without controls, space and ",". */
function isPrintable(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x21 || c > 0x7e || c === 0x2c) return false;
  }
  return true;
}

function isLetter(c: string | undefined): boolean {
  return c !== undefined && /^[A-Za-z]$/.test(c);
}

/** A cursor over one SCRAM message, reading "x=value" attributes separated by ",". */
class AttrReader {
  pos = 0;
  constructor(readonly text: string) {}

  get atEnd(): boolean {
    return this.pos >= this.text.length;
  }

  /** Reads `<attr>=<value>` and the "," after it, if any (read_attr_value in auth-scram.c). */
  expect(attr: string, where: string): string {
    if (this.text[this.pos] !== attr) throw new Malformed(`expected attribute "${attr}" in ${where}`);
    return this.value(attr);
  }

  /** Reads any `<letter>=<value>` (read_any_attr in auth-scram.c). */
  any(where: string): { attr: string; value: string } {
    const attr = this.text[this.pos];
    if (!isLetter(attr)) throw new Malformed(`attribute expected, but found an invalid character in ${where}`);
    return { attr: attr!, value: this.value(attr!) };
  }

  private value(attr: string): string {
    if (this.text[this.pos + 1] !== '=') throw new Malformed(`expected character "=" for attribute "${attr}"`);
    const start = this.pos + 2;
    let end = this.text.indexOf(',', start);
    if (end < 0) end = this.text.length;
    this.pos = end < this.text.length ? end + 1 : end;
    return this.text.slice(start, end);
  }
}

/** The checks PostgreSQL's pg_be_scram_exchange makes on every message before parsing it. */
function messageText(data: Buffer): string {
  if (data.length === 0) throw new Malformed('malformed SCRAM message (empty message)');
  // The message travels as a counted byte string but PostgreSQL handles it as a C string.
  if (data.includes(0)) throw new Malformed('malformed SCRAM message (length mismatch)');
  return data.toString('latin1');
}


type State = 'start' | 'awaiting-first' | 'salt-sent' | 'done' | 'failed';

export class ScramServerExchange {
  private state: State = 'start';
  private readonly verifier: ScramVerifier;
  /** Unknown user: the exchange runs to the end and then fails like a wrong secret. */
  private readonly doomed: boolean;
  private readonly user: string;
  private readonly testServerNonce: string | undefined;
  private cbindFlag = '';
  private clientFirstBare = '';
  private clientNonce = '';
  private nonce = '';
  private serverFirst = '';

  /**
   * `verifier` is the agent's (parsed, or in text form: a text that does not parse throws, as a
   * configuration error), or null for a user with none: a mock exchange follows.
   */
  constructor(verifier: ScramVerifier | string | null, options: ScramServerOptions) {
    this.user = options.user;
    this.testServerNonce = options.testServerNonce;
    if (verifier !== null) {
      this.verifier = typeof verifier === 'string' ? parseScramVerifier(verifier) : verifier;
      this.doomed = false;
      return;
    }
    const secret = options.mockSecret;
    if (!secret || secret.length < MIN_MOCK_SECRET_BYTES) {
      throw new Error(`ScramServerExchange: a mock exchange needs a mockSecret of at least ${MIN_MOCK_SECRET_BYTES} bytes`);
    }
    this.verifier = {
      iterations: options.mockIterations ?? SCRAM_DEFAULT_ITERATIONS,
      // scram_mock_salt: deterministic per user, unpredictable without the server's secret.
      salt: hmac(secret, `pgwarden SCRAM mock salt\0${options.user}`).subarray(0, SCRAM_SALT_LENGTH),
      // Never matched: the proof is still checked against them so that the work done is the same.
      storedKey: randomBytes(SCRAM_KEY_LENGTH),
      serverKey: randomBytes(SCRAM_KEY_LENGTH),
    };
    this.doomed = true;
  }

  /** The mechanisms for AuthenticationSASL. No SCRAM-SHA-256-PLUS: no channel binding offered. */
  mechanisms(): string[] {
    return [SCRAM_MECHANISM];
  }

  /** True once the client proved knowledge of the secret (the final message was produced). */
  get succeeded(): boolean {
    return this.state === 'done';
  }

  /**
   * The SASLInitialResponse. `data` null (length -1: the client sent no initial response) is
   * answered with an empty SASLContinue, and the client-first-message then comes as a
   * SASLResponse, as PostgreSQL does.
   */
  onInitialResponse(mechanism: string, data: Buffer | null): ScramInitialResult {
    if (this.state !== 'start') return this.fail('unexpected SASLInitialResponse', ScramSqlState.ProtocolViolation);
    if (mechanism !== SCRAM_MECHANISM) {
      return this.fail('client selected an invalid SASL authentication mechanism', ScramSqlState.ProtocolViolation);
    }
    if (data === null) {
      this.state = 'awaiting-first';
      return { reply: Buffer.alloc(0) };
    }
    return this.clientFirst(data);
  }

  /** A SASLResponse: the client-final-message (or the client-first one, see onInitialResponse). */
  onResponse(data: Buffer): ScramResponseResult {
    if (this.state === 'awaiting-first') return this.clientFirst(data);
    if (this.state !== 'salt-sent') return this.fail('unexpected SASLResponse', ScramSqlState.ProtocolViolation);
    try {
      return this.clientFinal(data);
    } catch (err) {
      return this.malformed(err);
    }
  }

  private fail(error: string, sqlstate: ScramFailure['sqlstate']): ScramFailure {
    this.state = 'failed';
    return { error, sqlstate };
  }

  private malformed(err: unknown): ScramFailure {
    if (err instanceof Malformed) return this.fail(err.message, ScramSqlState.ProtocolViolation);
    // Not expected: a bug must still fail the exchange, and must not leak details.
    return this.fail('malformed SCRAM message', ScramSqlState.ProtocolViolation);
  }

  private clientFirst(data: Buffer): ScramInitialResult {
    try {
      this.readClientFirst(messageText(data));
    } catch (err) {
      return this.malformed(err);
    }
    this.nonce = this.clientNonce + (this.testServerNonce ?? randomBytes(SERVER_NONCE_BYTES).toString('base64'));
    this.serverFirst = `r=${this.nonce},s=${this.verifier.salt.toString('base64')},i=${this.verifier.iterations}`;
    this.state = 'salt-sent';
    return { reply: Buffer.from(this.serverFirst, 'latin1') };
  }

  /**
   * client-first-message = gs2-header client-first-message-bare
   *   gs2-header = gs2-cbind-flag "," [ authzid ] ","
   *   client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
   * (RFC 5802 §7; read_client_first_message in auth-scram.c)
   */
  private readClientFirst(text: string): void {
    const flag = text[0];
    if (flag === 'p') {
      throw new Malformed(
        'malformed SCRAM message: the client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data',
      );
    }
    if (flag !== 'n' && flag !== 'y') throw new Malformed('malformed SCRAM message: unexpected channel-binding flag');
    if (text[1] !== ',') throw new Malformed('malformed SCRAM message: comma expected after the channel-binding flag');
    if (text[2] === 'a') throw new Malformed('client uses authorization identity, but it is not supported');
    if (text[2] !== ',') throw new Malformed('malformed SCRAM message: unexpected attribute in client-first-message');
    this.cbindFlag = flag;
    const bare = text.slice(3);
    if (bare[0] === 'm') throw new Malformed('client requires an unsupported SCRAM extension');
    const r = new AttrReader(bare);
    // The user name: ignored, the startup packet's counts (clients send "" or "*").
    r.expect('n', 'client-first-message');
    const clientNonce = r.expect('r', 'client-first-message');
    if (clientNonce === '' || !isPrintable(clientNonce)) throw new Malformed('non-printable characters in SCRAM nonce');
    // Optional extensions: read and ignored.
    while (!r.atEnd) r.any('client-first-message');
    // "n=x,r=y," ends with an empty attribute: not a valid message.
    if (bare.endsWith(',')) throw new Malformed('malformed SCRAM message: trailing comma in client-first-message');
    this.clientFirstBare = bare;
    this.clientNonce = clientNonce;
  }

  /**
   * client-final-message = channel-binding "," nonce ["," extensions] "," proof
   *   channel-binding = "c=" base64(gs2-header [cbind-data])
   * (RFC 5802 §7; read_client_final_message, verify_final_nonce, verify_client_proof)
   */
  private clientFinal(data: Buffer): ScramResponseResult {
    const text = messageText(data);
    const r = new AttrReader(text);
    const cbind = r.expect('c', 'client-final-message');
    // Without binding the data is the gs2 header alone, and it must be the one sent first.
    if (cbind !== CBIND_WITHOUT_BINDING[this.cbindFlag]) {
      throw new Malformed('unexpected SCRAM channel-binding attribute in client-final-message');
    }
    const finalNonce = r.expect('r', 'client-final-message');
    // Extensions until the proof, which must come last.
    let proofStart: number;
    let proofText: string;
    for (;;) {
      if (r.atEnd) throw new Malformed('malformed SCRAM message: could not find proof in client-final-message');
      proofStart = r.pos - 1; // the "," before the attribute
      const { attr, value } = r.any('client-final-message');
      if (attr === 'p') {
        proofText = value;
        break;
      }
    }
    const proof = decodeBase64Strict(proofText);
    if (!proof || proof.length !== SCRAM_KEY_LENGTH) throw new Malformed('malformed SCRAM message: malformed proof in client-final-message');
    if (!r.atEnd || text.endsWith(',')) throw new Malformed('malformed SCRAM message: garbage found at the end of client-final-message');
    if (finalNonce !== this.nonce) throw new Malformed('invalid SCRAM response: nonce does not match');

    const withoutProof = text.slice(0, proofStart);
    const authMessage = Buffer.from(`${this.clientFirstBare},${this.serverFirst},${withoutProof}`, 'latin1');
    // ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); the proof holds iff H(ClientKey) = StoredKey.
    const clientSignature = hmac(this.verifier.storedKey, authMessage);
    const clientKey = Buffer.alloc(SCRAM_KEY_LENGTH);
    for (let i = 0; i < SCRAM_KEY_LENGTH; i++) clientKey[i] = proof[i]! ^ clientSignature[i]!;
    const matches = timingSafeEqual(sha256(clientKey), this.verifier.storedKey);
    // Checked in this order, as PostgreSQL does: the proof is computed even when doomed.
    if (!matches || this.doomed) {
      return this.fail(`password authentication failed for user "${this.user}"`, ScramSqlState.InvalidPassword);
    }
    const serverSignature = hmac(this.verifier.serverKey, authMessage);
    this.state = 'done';
    return { final: Buffer.from(`v=${serverSignature.toString('base64')}`, 'latin1') };
  }
}
