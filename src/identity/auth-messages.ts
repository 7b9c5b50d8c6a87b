import { Writer } from 'pg-protocol/dist/buffer-writer.js';
import { AuthCode, BackendTag, FrontendTag } from '../protocol/codes.js';
import { BoundedReader } from '../protocol/bounded-reader.js';
import type { Frame } from '../protocol/framer.js';
import { ProtocolViolation } from '../protocol/protocol-violation.js';

/**
 * The authentication messages pgwarden speaks itself once it authenticates agents (instead of
 * relaying the client's authentication to PostgreSQL) and logs in upstream on their behalf.
 * Layouts: PostgreSQL docs, "Frontend/Backend Protocol" → "Message Formats" (the Authentication*
 * family, PasswordMessage, SASLInitialResponse, SASLResponse) and → "SASL Authentication".
 *
 * Both directions live here: the server side (pgwarden ↔ agent) encodes 'R' and decodes 'p';
 * the client side (pgwarden ↔ PostgreSQL) encodes 'p' and decodes 'R'. Secrets carried by these
 * messages never appear in an error message.
 */

export { encodeAuthenticationSASL } from '../protocol/backend.js';

/**
 * PG_MAX_AUTH_TOKEN_LENGTH (src/include/libpq/auth.h): PostgreSQL reads every 'p' message of an
 * authentication exchange with this limit, far below limits.maxMessageBytes.
 */
export const MAX_AUTH_MESSAGE_BYTES = 65535;

/** Authentication request codes the docs define besides those in AuthCode, for error messages. */
const AUTH_METHOD_NAMES: Record<number, string> = {
  0: 'AuthenticationOk',
  2: 'KerberosV5',
  3: 'CleartextPassword',
  5: 'MD5Password',
  6: 'SCMCredential',
  7: 'GSS',
  8: 'GSSContinue',
  9: 'SSPI',
  10: 'SASL',
  11: 'SASLContinue',
  12: 'SASLFinal',
};

/** A readable name for an authentication request code ("GSS", "SSPI", "code 42"). */
export function authMethodName(code: number): string {
  return AUTH_METHOD_NAMES[code] ?? `code ${code}`;
}

// ---- server side: 'R' messages pgwarden sends to an agent ----

/** AuthenticationOk: Int32 0. A shared constant buffer: do not modify it. */
const AUTH_OK = new Writer().addInt32(AuthCode.Ok).flush(BackendTag.Authentication);
export function encodeAuthenticationOk(): Buffer {
  return AUTH_OK;
}

/** AuthenticationCleartextPassword: Int32 3. A shared constant buffer: do not modify it. */
const AUTH_CLEARTEXT = new Writer().addInt32(AuthCode.CleartextPassword).flush(BackendTag.Authentication);
export function encodeAuthenticationCleartextPassword(): Buffer {
  return AUTH_CLEARTEXT;
}

/** AuthenticationSASLContinue: Int32 11, then the mechanism's data (the server-first-message). */
export function encodeAuthenticationSASLContinue(data: Buffer): Buffer {
  return new Writer().addInt32(AuthCode.SASLContinue).add(data).flush(BackendTag.Authentication);
}

/** AuthenticationSASLFinal: Int32 12, then the outcome data (the server-final-message "v=..."). */
export function encodeAuthenticationSASLFinal(data: Buffer): Buffer {
  return new Writer().addInt32(AuthCode.SASLFinal).add(data).flush(BackendTag.Authentication);
}

// ---- server side: decoding the agent's 'p' messages ----

/**
 * All three share the tag 'p'; which one it is follows from the request pgwarden sent last
 * ("Message Formats": "the exact message type can be deduced from the context"). PostgreSQL
 * answers a message of another type during authentication with a protocol violation.
 */
function authReader(frame: Frame, expected: string): BoundedReader {
  if (frame.tag !== FrontendTag.AuthResponse) {
    throw new ProtocolViolation(`expected ${expected} response, got message type ${frame.tag}`);
  }
  return new BoundedReader(frame.bytes, frame.bodyOffset);
}

export interface SASLInitialResponse {
  mechanism: string;
  /** The client's initial response; null when it sent none (length -1). */
  data: Buffer | null;
}

/** SASLInitialResponse: String mechanism, Int32 length of the data (-1: none), the data. */
export function decodeSASLInitialResponse(frame: Frame): SASLInitialResponse {
  const r = authReader(frame, 'SASL');
  const mechanism = r.cstring('SASL mechanism name');
  const length = r.int32('SASL initial response length');
  if (length < -1) throw new ProtocolViolation(`invalid SASL initial response length ${length}`);
  const data = length === -1 ? null : Buffer.from(r.bytes(length, 'SASL initial response'));
  r.finish('SASLInitialResponse');
  return { mechanism, data };
}

/** SASLResponse: the mechanism's data, all of the body (the client-final-message for SCRAM). */
export function decodeSASLResponse(frame: Frame): Buffer {
  const r = authReader(frame, 'SASL');
  return Buffer.from(r.bytes(r.remaining, 'SASL response'));
}

/**
 * PasswordMessage: one NUL-terminated string (the cleartext password, or an OIDC token sent as
 * one). PostgreSQL's recv_password_packet rejects a packet whose string does not fill it
 * ("invalid password packet size").
 */
export function decodePasswordMessage(frame: Frame): string {
  const r = authReader(frame, 'password');
  const password = r.cstring('password');
  if (r.remaining !== 0) throw new ProtocolViolation('invalid password packet size');
  return password;
}

// ---- client side: 'p' messages pgwarden sends to PostgreSQL ----

/** PasswordMessage: the password (cleartext or "md5..." hash) as a C string. */
export function encodePasswordMessage(password: string): Buffer {
  return new Writer().addCString(password).flush(FrontendTag.AuthResponse);
}

/** SASLInitialResponse: mechanism, Int32 length of the client-first-message, the message. */
export function encodeSASLInitialResponse(mechanism: string, data: Buffer): Buffer {
  return new Writer().addCString(mechanism).addInt32(data.length).add(data).flush(FrontendTag.AuthResponse);
}

/** SASLResponse: the client-final-message, unframed inside the body. */
export function encodeSASLResponse(data: Buffer): Buffer {
  return new Writer().add(data).flush(FrontendTag.AuthResponse);
}

// ---- client side: decoding PostgreSQL's 'R' messages ----

export type AuthenticationRequest =
  | { type: 'Ok' }
  | { type: 'CleartextPassword' }
  | { type: 'MD5Password'; salt: Buffer }
  | { type: 'SASL'; mechanisms: string[] }
  | { type: 'SASLContinue'; data: Buffer }
  | { type: 'SASLFinal'; data: Buffer }
  /** KerberosV5, SCMCredential, GSS, GSSContinue, SSPI or an unknown code: not decoded further. */
  | { type: 'Other'; code: number; name: string };

/**
 * Decodes an Authentication ('R') message from the server. Bounds-checked like client input: a
 * truncated or padded message is a ProtocolViolation, never an out-of-range read.
 */
export function decodeAuthenticationRequest(frame: Frame): AuthenticationRequest {
  if (frame.tag !== BackendTag.Authentication) {
    throw new ProtocolViolation(`expected an authentication request, got message type ${frame.tag}`);
  }
  const r = new BoundedReader(frame.bytes, frame.bodyOffset);
  const code = r.int32('authentication request code');
  switch (code) {
    case AuthCode.Ok:
      r.finish('AuthenticationOk');
      return { type: 'Ok' };
    case AuthCode.CleartextPassword:
      r.finish('AuthenticationCleartextPassword');
      return { type: 'CleartextPassword' };
    case AuthCode.MD5Password: {
      const salt = Buffer.from(r.bytes(4, 'MD5 salt'));
      r.finish('AuthenticationMD5Password');
      return { type: 'MD5Password', salt };
    }
    case AuthCode.SASL: {
      // Mechanism names, each a C string, ended by an empty one.
      const mechanisms: string[] = [];
      for (;;) {
        const name = r.cstring('SASL mechanism name');
        if (name === '') break;
        mechanisms.push(name);
      }
      r.finish('AuthenticationSASL');
      return { type: 'SASL', mechanisms };
    }
    case AuthCode.SASLContinue:
      return { type: 'SASLContinue', data: Buffer.from(r.bytes(r.remaining, 'SASL data')) };
    case AuthCode.SASLFinal:
      return { type: 'SASLFinal', data: Buffer.from(r.bytes(r.remaining, 'SASL data')) };
    default:
      return { type: 'Other', code, name: authMethodName(code) };
  }
}
