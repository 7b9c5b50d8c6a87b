/**
 * Builders for frontend (client → server) wire messages, for pure codec tests.
 *
 * Typed messages a real driver sends come from pg-protocol's `serialize` (the encoder
 * node-postgres uses), so the decoder is tested against bytes a real client produces. What
 * pg-protocol cannot produce (SSLRequest variants, GSSENCRequest, 3.2 CancelRequest keys,
 * FunctionCall, explicit format codes, malformed messages) is built here byte by byte.
 * Layouts: PostgreSQL docs, "Frontend/Backend Protocol" → "Message Formats".
 *
 * Every builder returns a fresh Buffer: pg-protocol hands out shared constant buffers for
 * Sync/Flush/Terminate/CopyDone, and a test that mutated one would corrupt every other test.
 */
import { serialize } from 'pg-protocol';
import { FrontendTag, StartupCode } from '../../src/protocol/codes.js';
import type { Frame } from '../../src/protocol/framer.js';

const fresh = (b: Buffer): Buffer => Buffer.from(b);

// ---- field encoders (for hand-built and malformed bodies) ----

export function cstr(s: string): Buffer {
  return Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);
}

export function int16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n & 0xffff);
  return b;
}

export function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

export function bytes(...values: number[]): Buffer {
  return Buffer.from(values);
}

// ---- typed messages ----

/** A typed message: tag, Int32 length (counting itself, not the tag), body. */
export function typed(tag: number | string, ...body: Buffer[]): Buffer {
  const payload = Buffer.concat(body);
  const out = Buffer.alloc(5 + payload.length);
  out[0] = typeof tag === 'string' ? tag.charCodeAt(0) : tag;
  out.writeInt32BE(4 + payload.length, 1);
  payload.copy(out, 5);
  return out;
}

/** A typed message header announcing `length` (which need not match any body). */
export function typedHeader(tag: number | string, length: number): Buffer {
  const out = Buffer.alloc(5);
  out[0] = typeof tag === 'string' ? tag.charCodeAt(0) : tag;
  out.writeInt32BE(length | 0, 1);
  return out;
}

export interface BindSpec {
  portal?: string;
  statement?: string;
  paramFormats?: number[];
  params?: (Buffer | string | null)[];
  resultFormats?: number[];
}

/** A Bind with explicit format codes (pg-protocol always writes one code per parameter). */
export function bindMessage(spec: BindSpec): Buffer {
  const params = spec.params ?? [];
  const parts: Buffer[] = [cstr(spec.portal ?? ''), cstr(spec.statement ?? '')];
  const paramFormats = spec.paramFormats ?? [];
  parts.push(int16(paramFormats.length), ...paramFormats.map(int16));
  parts.push(int16(params.length));
  for (const p of params) {
    if (p === null) {
      parts.push(int32(-1));
    } else {
      const value = typeof p === 'string' ? Buffer.from(p, 'utf8') : p;
      parts.push(int32(value.length), value);
    }
  }
  const resultFormats = spec.resultFormats ?? [];
  parts.push(int16(resultFormats.length), ...resultFormats.map(int16));
  return typed(FrontendTag.Bind, ...parts);
}

export interface FunctionCallSpec {
  oid: number;
  argFormats?: number[];
  args?: (Buffer | string | null)[];
  resultFormat?: number;
}

/** FunctionCall ('F'): Int32 OID, format codes, arguments, Int16 result format. */
export function functionCall(spec: FunctionCallSpec): Buffer {
  const args = spec.args ?? [];
  const argFormats = spec.argFormats ?? [];
  const parts: Buffer[] = [int32(spec.oid), int16(argFormats.length), ...argFormats.map(int16), int16(args.length)];
  for (const a of args) {
    if (a === null) {
      parts.push(int32(-1));
    } else {
      const value = typeof a === 'string' ? Buffer.from(a, 'utf8') : a;
      parts.push(int32(value.length), value);
    }
  }
  parts.push(int16(spec.resultFormat ?? 0));
  return typed(FrontendTag.FunctionCall, ...parts);
}

/** Messages as pg-protocol (node-postgres) serializes them. */
export const fe = {
  query: (sql: string): Buffer => fresh(serialize.query(sql)),
  parse: (text: string, name = '', types: number[] = []): Buffer => fresh(serialize.parse({ text, name, types })),
  bind: (opts: { portal?: string; statement?: string; values?: (string | Buffer | null)[]; binary?: boolean } = {}): Buffer =>
    fresh(serialize.bind(opts)),
  describe: (type: 'S' | 'P', name = ''): Buffer => fresh(serialize.describe({ type, name })),
  execute: (portal = '', rows = 0): Buffer => fresh(serialize.execute({ portal, rows })),
  close: (type: 'S' | 'P', name = ''): Buffer => fresh(serialize.close({ type, name })),
  sync: (): Buffer => fresh(serialize.sync()),
  flush: (): Buffer => fresh(serialize.flush()),
  end: (): Buffer => fresh(serialize.end()),
  copyData: (chunk: Buffer): Buffer => fresh(serialize.copyData(chunk)),
  copyDone: (): Buffer => fresh(serialize.copyDone()),
  copyFail: (message: string): Buffer => fresh(serialize.copyFail(message)),
  password: (password: string): Buffer => fresh(serialize.password(password)),
  /** StartupMessage for protocol 3.0; pg-protocol appends client_encoding=UTF8. */
  startup: (params: Record<string, string>): Buffer => fresh(serialize.startup(params)),
  /** CancelRequest with a 4-byte (protocol 3.0) key given as an Int32. */
  cancel: (processId: number, secretKey: number): Buffer => fresh(serialize.cancel(processId, secretKey)),
  functionCall,
  bindMessage,
};

// ---- untyped startup packets ----

/** An untyped startup packet: Int32 length (counting itself), Int32 code, rest of body. */
export function startupPacket(code: number, ...rest: Buffer[]): Buffer {
  const payload = Buffer.concat([int32(code), ...rest]);
  const out = Buffer.alloc(4 + payload.length);
  out.writeInt32BE(out.length, 0);
  payload.copy(out, 4);
  return out;
}

export function sslRequest(): Buffer {
  return startupPacket(StartupCode.SSLRequest);
}

export function gssEncRequest(): Buffer {
  return startupPacket(StartupCode.GSSENCRequest);
}

/** CancelRequest: 4-byte key in protocol 3.0, up to 256 bytes in 3.2. */
export function cancelRequest(processId: number, secretKey: Buffer): Buffer {
  return startupPacket(StartupCode.CancelRequest, int32(processId), secretKey);
}

/**
 * A StartupMessage with exact control over the parameter list (order, duplicates) and the
 * final terminator.
 */
export function startupMessage(
  protocolVersion: number,
  params: readonly (readonly [string, string])[],
  options: { terminated?: boolean } = {},
): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of params) parts.push(cstr(name), cstr(value));
  if (options.terminated ?? true) parts.push(Buffer.from([0]));
  return startupPacket(protocolVersion, ...parts);
}

/** Protocol version number: major in the high 16 bits, minor in the low 16. */
export function protocolVersion(major: number, minor: number): number {
  return ((major << 16) | minor) >>> 0;
}

// ---- frames (what the Framer hands to the decoders) ----

/** The Frame for one complete typed message, as the framer would return it. */
export function typedFrame(message: Buffer): Frame {
  return { tag: message[0] ?? 0, bytes: message, bodyOffset: 5 };
}

/** The Frame for one complete startup packet. */
export function startupFrame(packet: Buffer): Frame {
  return { tag: 0, bytes: packet, bodyOffset: 4 };
}

// ---- deterministic randomness for fuzz tests ----

/** mulberry32: a small seeded PRNG, so a failing fuzz case can be reproduced from its seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomBytesFrom(random: () => number, n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(random() * 256);
  return out;
}
