import { Writer } from 'pg-protocol/dist/buffer-writer.js';
import { Parser } from 'pg-protocol/dist/parser.js';
import type { BackendMessage } from 'pg-protocol/dist/messages.js';
import { AuthCode, BackendTag, type TxStatus } from './codes.js';
import type { Frame } from './framer.js';

/**
 * Backend messages: encode what pgwarden writes to clients, decode what it inspects from the
 * server. Encoding uses pg-protocol's Writer; decoding of server output uses pg-protocol's Parser
 * (the server is trusted to be well-formed). Only the few message types the proxy inspects are
 * ever decoded; everything else is forwarded as the original bytes.
 */

/** Fields of ErrorResponse/NoticeResponse ("Error and Notice Message Fields"). */
export interface PgErrorFields {
  severity: 'ERROR' | 'FATAL' | 'PANIC' | 'WARNING' | 'NOTICE' | 'DEBUG' | 'INFO' | 'LOG';
  code: string;
  message: string;
  detail?: string;
  hint?: string;
  /** 1-based character position in the query string ('P'). */
  position?: number;
}

function encodeFields(tag: number, f: PgErrorFields): Buffer {
  const w = new Writer();
  // 'S' localized severity, 'V' non-localized severity (9.6+), 'C' SQLSTATE, 'M' message.
  w.addString('S').addCString(f.severity);
  w.addString('V').addCString(f.severity);
  w.addString('C').addCString(f.code);
  w.addString('M').addCString(f.message);
  if (f.detail !== undefined) w.addString('D').addCString(f.detail);
  if (f.hint !== undefined) w.addString('H').addCString(f.hint);
  if (f.position !== undefined) w.addString('P').addCString(String(f.position));
  w.addString('\0');
  return w.flush(tag);
}

export function encodeErrorResponse(f: PgErrorFields): Buffer {
  return encodeFields(BackendTag.ErrorResponse, f);
}

export function encodeNoticeResponse(f: PgErrorFields): Buffer {
  return encodeFields(BackendTag.NoticeResponse, f);
}

const readyForQueryCache: Record<TxStatus, Buffer> = {
  I: new Writer().addString('I').flush(BackendTag.ReadyForQuery),
  T: new Writer().addString('T').flush(BackendTag.ReadyForQuery),
  E: new Writer().addString('E').flush(BackendTag.ReadyForQuery),
};

export function encodeReadyForQuery(status: TxStatus): Buffer {
  return readyForQueryCache[status];
}

/** BackendKeyData: Int32 process id, then the secret key (4 bytes in 3.0, up to 256 in 3.2). */
export function encodeBackendKeyData(processId: number, secretKey: Buffer): Buffer {
  return new Writer().addInt32(processId).add(secretKey).flush(BackendTag.BackendKeyData);
}

/** AuthenticationSASL: Int32 10, then a list of mechanism names ended by an empty string. */
export function encodeAuthenticationSASL(mechanisms: readonly string[]): Buffer {
  const w = new Writer().addInt32(AuthCode.SASL);
  for (const m of mechanisms) w.addCString(m);
  w.addString('\0');
  return w.flush(BackendTag.Authentication);
}

/** The single byte answering SSLRequest/GSSENCRequest ("Message Flow" → "SSL Session Encryption"). */
export const SSL_ACCEPT = Buffer.from('S');
export const SSL_REFUSE = Buffer.from('N');

// ---- decoding server output ----

/** Authentication subtype of an 'R' message (Int32 right after the length). */
export function authCode(frame: Frame): number {
  return frame.bytes.readInt32BE(frame.bodyOffset);
}

export function readyForQueryStatus(frame: Frame): TxStatus {
  return String.fromCharCode(frame.bytes[frame.bodyOffset]!) as TxStatus;
}

export function decodeBackendKeyData(frame: Frame): { processId: number; secretKey: Buffer } {
  return {
    processId: frame.bytes.readInt32BE(frame.bodyOffset),
    secretKey: Buffer.from(frame.bytes.subarray(frame.bodyOffset + 4)),
  };
}

/** Decodes one complete server message with pg-protocol. */
export function decodeBackendMessage(frame: Frame): BackendMessage {
  let out: BackendMessage | undefined;
  new Parser().parse(frame.bytes, (m) => {
    out = m;
  });
  if (!out) throw new Error('incomplete backend message');
  return out;
}
