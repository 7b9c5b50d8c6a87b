import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { Config } from '../config/schema.js';
import { splitHostPort } from '../config/load.js';
import { silentLogger, type Logger } from '../logger.js';
import { encodeErrorResponse } from '../protocol/backend.js';
import { pgError } from '../protocol/pg-error.js';
import { CancelKeys, workerOfProcessId } from '../session/cancel-keys.js';
import { allowEverything, type RequestJudge } from '../session/decision.js';
import { Session } from '../session/session.js';
import type { AgentDirectory } from '../identity/agent-directory.js';
import type { UpstreamTarget } from '../session/upstream-connect.js';

/**
 * The listening side of the proxy in one process: accepts clients, enforces the connection limit,
 * owns the sessions and their cancel keys, and drains them on shutdown.
 */
export interface ProxyOptions {
  judge?: RequestJudge;
  log?: Logger;
  /** This process's worker number (0 in single-process mode), encoded into issued cancel keys. */
  workerId?: number;
  /** Delivers a CancelRequest whose key belongs to another worker process. */
  forwardCancel?: (workerId: number, processId: number, secretKey: Buffer) => void;
  /** identity.mode agents: who may connect, and how pgwarden logs in upstream for them. */
  agents?: AgentDirectory;
}

export interface RunningProxy {
  readonly host: string;
  readonly port: number;
  readonly sessionCount: number;
  /** Stops accepting, lets running statements finish, closes every session (force after grace). */
  shutdown(graceMs?: number): Promise<void>;
  /** Cancels the session owning this key, if it lives in this process. */
  cancelLocal(processId: number, secretKey: Buffer): void;
  readonly server: net.Server;
}

export function upstreamTarget(config: Config): UpstreamTarget {
  const url = new URL(config.upstream.url);
  const host = decodeURIComponent(url.hostname || '127.0.0.1').replace(/^\[(.*)\]$/, '$1');
  return {
    host,
    port: url.port ? Number(url.port) : 5432,
    sslmode: config.upstream.sslmode,
    ca: config.upstream.sslrootcert ? readFileSync(config.upstream.sslrootcert) : undefined,
    connectTimeoutMs: config.upstream.connectTimeoutMs,
  };
}

export async function startProxy(config: Config, options: ProxyOptions = {}): Promise<RunningProxy> {
  const log = options.log ?? silentLogger;
  const workerId = options.workerId ?? 0;
  const cancelKeys = new CancelKeys(workerId);
  const sessions = new Set<Session>();
  const upstream = upstreamTarget(config);
  const tlsContext = config.tls
    ? tls.createSecureContext({ cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) })
    : undefined;
  let draining = false;

  const cancelLocal = (processId: number, secretKey: Buffer): void => {
    const target = cancelKeys.lookup(processId, secretKey);
    if (target) target.cancel();
    else log.info('cancel request with an unknown key ignored');
  };
  const routeCancel = (processId: number, secretKey: Buffer): void => {
    const owner = workerOfProcessId(processId);
    if (owner === workerId || !options.forwardCancel) cancelLocal(processId, secretKey);
    else options.forwardCancel(owner, processId, secretKey);
  };

  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on('error', () => socket.destroy());
    if (draining) {
      socket.end(encodeErrorResponse(pgError.shuttingDown()));
      return;
    }
    if (sessions.size >= config.limits.maxClientConnections) {
      log.warn({ limit: config.limits.maxClientConnections }, 'connection refused: too many clients');
      socket.end(encodeErrorResponse(pgError.tooManyConnections(config.limits.maxClientConnections)));
      return;
    }
    const session = new Session(socket, {
      limits: config.limits,
      upstream,
      tlsContext,
      judge: options.judge ?? allowEverything,
      cancelKeys,
      routeCancel,
      log,
      ...(options.agents ? { agents: options.agents } : {}),
      onClose: (s) => sessions.delete(s),
    });
    sessions.add(session);
  });

  const { host, port } = splitHostPort(config.listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as net.AddressInfo;

  return {
    host: address.address,
    port: address.port,
    server,
    get sessionCount() {
      return sessions.size;
    },
    cancelLocal,
    async shutdown(graceMs = config.limits.shutdownGraceMs) {
      draining = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sessions) s.shutdown();
      const deadline = Date.now() + graceMs;
      while (sessions.size > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      for (const s of sessions) s.fail(pgError.terminatedByShutdown());
      await closed;
    },
  };
}
