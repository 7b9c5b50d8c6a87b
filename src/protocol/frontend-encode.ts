import { Writer } from 'pg-protocol/dist/buffer-writer.js';
import { StartupCode } from './codes.js';

/**
 * The two untyped frontend packets pgwarden writes to the upstream itself. pg-protocol's
 * serializer hard-codes protocol 3.0 and its own parameters for startup, and cannot carry a
 * variable-length (protocol 3.2) cancel key, so these two are encoded here with its Writer.
 */

/** StartupMessage: Int32 length, Int32 protocol version, name/value C strings, a final NUL. */
export function encodeStartupMessage(protocolVersion: number, params: ReadonlyMap<string, string>): Buffer {
  const body = new Writer().addInt32(protocolVersion);
  for (const [name, value] of params) body.addCString(name).addCString(value);
  body.addCString('');
  const bytes = body.flush();
  return new Writer().addInt32(bytes.length + 4).add(bytes).flush();
}

/** CancelRequest: Int32 length, Int32 80877102, Int32 process id, secret key bytes. */
export function encodeCancelRequest(processId: number, secretKey: Buffer): Buffer {
  const body = new Writer().addInt32(StartupCode.CancelRequest).addInt32(processId).add(secretKey).flush();
  return new Writer().addInt32(body.length + 4).add(body).flush();
}
