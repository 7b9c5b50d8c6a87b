import net from 'node:net';
import tls from 'node:tls';
import { StartupCode } from '../protocol/codes.js';

/**
 * Opens the server-side connection, negotiating TLS the way libpq does for each sslmode
 * ("SSL Session Encryption": send SSLRequest, read one byte, 'S' → TLS handshake, 'N' → plain).
 */
export type UpstreamSslMode = 'disable' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';

export interface UpstreamTarget {
  host: string;
  port: number;
  sslmode: UpstreamSslMode;
  /** PEM CA bundle for verify-ca / verify-full. */
  ca?: Buffer;
  connectTimeoutMs: number;
}

export class UpstreamConnectError extends Error {
  override readonly name = 'UpstreamConnectError';
  constructor(
    message: string,
    readonly reason: 'unreachable' | 'tls-required' | 'tls-failed',
  ) {
    super(message);
  }
}

const SSL_REQUEST = (() => {
  const b = Buffer.alloc(8);
  b.writeInt32BE(8, 0);
  b.writeInt32BE(StartupCode.SSLRequest, 4);
  return b;
})();

function openSocket(t: UpstreamTarget): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    // A host starting with '/' is a Unix-socket directory, as in libpq.
    const socket = t.host.startsWith('/')
      ? net.connect({ path: `${t.host}/.s.PGSQL.${t.port}` })
      : net.connect({ host: t.host, port: t.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new UpstreamConnectError('timed out connecting to upstream', 'unreachable'));
    }, t.connectTimeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.setNoDelay(true);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(new UpstreamConnectError(`cannot connect to upstream: ${err.message}`, 'unreachable'));
    });
  });
}

/** Reads exactly the one-byte answer to SSLRequest; more bytes would be injected plaintext. */
function readSslAnswer(socket: net.Socket): Promise<'S' | 'N'> {
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      cleanup();
      if (chunk.length !== 1) {
        socket.destroy();
        reject(new UpstreamConnectError('unexpected data after the SSL answer from upstream', 'tls-failed'));
        return;
      }
      const c = String.fromCharCode(chunk[0]!);
      if (c === 'S' || c === 'N') resolve(c);
      else {
        socket.destroy();
        reject(new UpstreamConnectError(`upstream answered SSLRequest with "${c}"`, 'tls-failed'));
      }
    };
    const onEnd = () => {
      cleanup();
      reject(new UpstreamConnectError('upstream closed the connection during SSL negotiation', 'unreachable'));
    };
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('error', onEnd);
      socket.off('close', onEnd);
    };
    socket.on('data', onData);
    socket.once('error', onEnd);
    socket.once('close', onEnd);
  });
}

export async function connectUpstream(t: UpstreamTarget): Promise<net.Socket> {
  const socket = await openSocket(t);
  if (t.sslmode === 'disable' || t.host.startsWith('/')) return socket;
  socket.write(SSL_REQUEST);
  const answer = await readSslAnswer(socket);
  socket.pause();
  if (answer === 'N') {
    if (t.sslmode === 'prefer') return socket;
    socket.destroy();
    throw new UpstreamConnectError('upstream does not support TLS', 'tls-required');
  }
  const verify = t.sslmode === 'verify-ca' || t.sslmode === 'verify-full';
  const options: tls.ConnectionOptions = {
    socket,
    rejectUnauthorized: verify,
    ca: t.ca,
    // SNI must not carry an IP address.
    servername: net.isIP(t.host) ? undefined : t.host,
    checkServerIdentity: t.sslmode === 'verify-full' ? tls.checkServerIdentity : () => undefined,
  };
  return new Promise((resolve, reject) => {
    const secure = tls.connect(options);
    secure.once('secureConnect', () => {
      secure.removeAllListeners('error');
      resolve(secure);
    });
    secure.once('error', (err) => {
      secure.destroy();
      reject(new UpstreamConnectError(`TLS handshake with upstream failed: ${err.message}`, 'tls-failed'));
    });
  });
}
