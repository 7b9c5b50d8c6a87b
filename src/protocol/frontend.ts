import { FrontendTag, StartupCode } from './codes.js';
import { BoundedReader } from './bounded-reader.js';
import type { Frame } from './framer.js';
import { ProtocolViolation } from './protocol-violation.js';

/**
 * Decoder for everything a client sends. Pure: a Frame in, a typed message out.
 * Layouts: PostgreSQL docs, "Frontend/Backend Protocol" → "Message Formats".
 * Every field is bounds-checked and every message must be consumed exactly (fail closed).
 */

// ---- startup packets (untyped) ----

export type StartupPacket =
  | { type: 'SSLRequest' }
  | { type: 'GSSENCRequest' }
  | { type: 'CancelRequest'; processId: number; secretKey: Buffer }
  | { type: 'StartupMessage'; protocolVersion: number; params: Map<string, string> };

export function decodeStartupPacket(frame: Frame): StartupPacket {
  const r = new BoundedReader(frame.bytes, frame.bodyOffset);
  const code = r.int32('request code');
  switch (code) {
    case StartupCode.SSLRequest:
      r.finish('SSLRequest');
      return { type: 'SSLRequest' };
    case StartupCode.GSSENCRequest:
      r.finish('GSSENCRequest');
      return { type: 'GSSENCRequest' };
    case StartupCode.CancelRequest: {
      // Int32 process id, then the secret key: 4 bytes in protocol 3.0, up to 256 in 3.2.
      const processId = r.int32('process id');
      const keyLength = r.remaining;
      if (keyLength < 4 || keyLength > 256) throw new ProtocolViolation('invalid CancelRequest key length');
      return { type: 'CancelRequest', processId, secretKey: Buffer.from(r.bytes(keyLength, 'secret key')) };
    }
    default: {
      const major = code >>> 16;
      if (major !== 3) {
        throw new ProtocolViolation(`unsupported frontend protocol ${major}.${code & 0xffff}: server supports 3.0 to 3.2`, '0A000');
      }
      // Name/value pairs of NUL-terminated strings, ended by an empty name.
      const params = new Map<string, string>();
      for (;;) {
        const name = r.cstring('parameter name');
        if (name === '') break;
        const value = r.cstring(`value of startup parameter "${name}"`);
        if (params.has(name)) throw new ProtocolViolation(`duplicate startup parameter "${name}"`);
        params.set(name, value);
      }
      r.finish('StartupMessage');
      return { type: 'StartupMessage', protocolVersion: code, params };
    }
  }
}

// ---- typed frontend messages ----

export type FrontendMessage =
  /** `utf8` is false when the SQL bytes are not valid UTF-8 (see BoundedReader.cstringUtf8). */
  | { type: 'Query'; sql: string; utf8: boolean }
  | { type: 'Parse'; statement: string; sql: string; utf8: boolean; paramTypes: number[] }
  | {
      type: 'Bind';
      portal: string;
      statement: string;
      paramFormats: number[];
      /** Parameter values as views of the received bytes; null is SQL NULL. */
      params: (Buffer | null)[];
      resultFormats: number[];
    }
  | { type: 'Describe'; target: 'S' | 'P'; name: string }
  | { type: 'Execute'; portal: string; maxRows: number }
  | { type: 'Close'; target: 'S' | 'P'; name: string }
  | { type: 'Sync' }
  | { type: 'Flush' }
  | { type: 'Terminate' }
  | { type: 'CopyData'; data: Buffer }
  | { type: 'CopyDone' }
  | { type: 'CopyFail'; message: string }
  | { type: 'FunctionCall'; functionOid: number; argFormats: number[]; args: (Buffer | null)[]; resultFormat: number }
  /** Password, SASL or GSS response: opaque, forwarded as is, never decoded or logged. */
  | { type: 'AuthResponse' };

export type FrontendMessageType = FrontendMessage['type'];

function target(r: BoundedReader, what: string): 'S' | 'P' {
  const t = r.byte(what);
  if (t === 0x53) return 'S';
  if (t === 0x50) return 'P';
  throw new ProtocolViolation(`invalid ${what} type "${String.fromCharCode(t)}"`);
}

function formatCodes(r: BoundedReader, what: string): number[] {
  const n = r.count(`number of ${what}`, 2);
  const codes: number[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const c = r.int16(what);
    if (c !== 0 && c !== 1) throw new ProtocolViolation(`unsupported format code: ${c}`);
    codes[i] = c;
  }
  return codes;
}

function values(r: BoundedReader, what: string): (Buffer | null)[] {
  const n = r.count(`number of ${what}`, 4);
  const out: (Buffer | null)[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const len = r.int32(`${what} length`);
    if (len === -1) out[i] = null;
    else if (len < 0) throw new ProtocolViolation(`invalid ${what} length ${len}`);
    else out[i] = r.bytes(len, what);
  }
  return out;
}

/** PQ_SMALL_MESSAGE_LIMIT in PostgreSQL: the most a message without variable-size data may take. */
const SMALL_MESSAGE_LIMIT = 10_000;

/** Largest length each client message type may declare (null: no such type); see Framer. */
export function frontendMessageLimit(tag: number): number | null {
  switch (tag) {
    case FrontendTag.Query:
    case FrontendTag.Parse:
    case FrontendTag.Bind:
    case FrontendTag.CopyData:
    case FrontendTag.FunctionCall:
    case FrontendTag.AuthResponse:
      return Number.MAX_SAFE_INTEGER; // bounded by limits.maxMessageBytes
    case FrontendTag.Describe:
    case FrontendTag.Execute:
    case FrontendTag.Close:
    case FrontendTag.CopyFail:
    case FrontendTag.Sync:
    case FrontendTag.Flush:
    case FrontendTag.Terminate:
    case FrontendTag.CopyDone:
      return SMALL_MESSAGE_LIMIT;
    default:
      return null;
  }
}

export function decodeFrontendMessage(frame: Frame): FrontendMessage {
  const r = new BoundedReader(frame.bytes, frame.bodyOffset);
  let msg: FrontendMessage;
  switch (frame.tag) {
    case FrontendTag.Query: {
      const q = r.cstringUtf8('query string');
      msg = { type: 'Query', sql: q.text, utf8: q.valid };
      break;
    }
    case FrontendTag.Parse: {
      const statement = r.cstring('statement name');
      const q = r.cstringUtf8('query string');
      const n = r.count('number of parameter types', 4);
      const paramTypes: number[] = new Array(n);
      for (let i = 0; i < n; i++) paramTypes[i] = r.int32('parameter type') >>> 0;
      msg = { type: 'Parse', statement, sql: q.text, utf8: q.valid, paramTypes };
      break;
    }
    case FrontendTag.Bind: {
      const portal = r.cstring('portal name');
      const statement = r.cstring('statement name');
      const paramFormats = formatCodes(r, 'parameter format codes');
      const params = values(r, 'parameter');
      // The docs allow 0, 1 or exactly one format code per parameter.
      if (paramFormats.length > 1 && paramFormats.length !== params.length) {
        throw new ProtocolViolation(`bind message has ${paramFormats.length} parameter formats but ${params.length} parameters`);
      }
      const resultFormats = formatCodes(r, 'result format codes');
      msg = { type: 'Bind', portal, statement, paramFormats, params, resultFormats };
      break;
    }
    case FrontendTag.Describe: {
      const t = target(r, 'Describe');
      msg = { type: 'Describe', target: t, name: r.cstring('Describe name') };
      break;
    }
    case FrontendTag.Execute: {
      const portal = r.cstring('portal name');
      const maxRows = r.int32('row limit');
      msg = { type: 'Execute', portal, maxRows };
      break;
    }
    case FrontendTag.Close: {
      const t = target(r, 'Close');
      msg = { type: 'Close', target: t, name: r.cstring('Close name') };
      break;
    }
    case FrontendTag.Sync:
      msg = { type: 'Sync' };
      break;
    case FrontendTag.Flush:
      msg = { type: 'Flush' };
      break;
    case FrontendTag.Terminate:
      msg = { type: 'Terminate' };
      break;
    case FrontendTag.CopyData:
      return { type: 'CopyData', data: frame.bytes.subarray(frame.bodyOffset) };
    case FrontendTag.CopyDone:
      msg = { type: 'CopyDone' };
      break;
    case FrontendTag.CopyFail:
      msg = { type: 'CopyFail', message: r.cstring('CopyFail message') };
      break;
    case FrontendTag.FunctionCall: {
      const functionOid = r.int32('function OID') >>> 0;
      const argFormats = formatCodes(r, 'argument format codes');
      const args = values(r, 'argument');
      if (argFormats.length > 1 && argFormats.length !== args.length) {
        throw new ProtocolViolation(`function call message contains ${argFormats.length} argument formats but ${args.length} arguments`);
      }
      const resultFormat = r.int16('result format');
      if (resultFormat !== 0 && resultFormat !== 1) throw new ProtocolViolation(`unsupported format code: ${resultFormat}`);
      msg = { type: 'FunctionCall', functionOid, argFormats, args, resultFormat };
      break;
    }
    case FrontendTag.AuthResponse:
      return { type: 'AuthResponse' };
    default:
      throw new ProtocolViolation(`invalid frontend message type ${frame.tag}`);
  }
  r.finish(msg.type);
  return msg;
}
