import cluster from 'node:cluster';
import type { Server } from 'node:http';
import type { Config } from '../config/schema.js';
import type { Logger } from '../logger.js';
import { resolveAuditKey, withAudit } from '../audit/build-audit.js';
import { buildPolicyJudge } from '../policy/build-judge.js';
import { startHealthServer } from './health.js';
import { startProxy } from './proxy-server.js';

/**
 * Runs the proxy as `config.workers` processes sharing one port (node:cluster). One Node.js
 * process tops out below pgbouncer on pgbench (DESIGN.md "Hot path"), two reach it.
 *
 * A CancelRequest arrives on a new connection that may land on any worker; the process id we
 * issued names the owning worker, and the primary relays the cancel to it over IPC.
 */
interface CancelEnvelope {
  type: 'pgwarden:cancel';
  worker: number;
  processId: number;
  secretKey: string;
}
interface ShutdownEnvelope {
  type: 'pgwarden:shutdown';
}
type Envelope = CancelEnvelope | ShutdownEnvelope | { type: 'pgwarden:ready'; port: number };

function isEnvelope(m: unknown): m is Envelope {
  return typeof m === 'object' && m !== null && typeof (m as { type?: unknown }).type === 'string';
}

/** Entry point of `pgwarden start`: resolves once the proxy is listening. */
export async function runProxy(config: Config, log: Logger): Promise<void> {
  if (config.workers === 1) return runSingle(config, log);
  if (cluster.isPrimary) return runPrimary(config, log);
  return runWorker(config, log);
}

async function runSingle(config: Config, log: Logger): Promise<void> {
  const { judge: policyJudge, rules } = await buildPolicyJudge(config, log);
  const audit = await withAudit(config, policyJudge, rules, log, 0);
  const proxy = await startProxy(config, { log, judge: audit.judge });
  let draining = false;
  const health = config.healthListen ? await startHealthServer(config.healthListen, () => draining) : undefined;
  log.info({ event: 'ready', listen: `${proxy.host}:${proxy.port}`, workers: 1 }, 'pgwarden is accepting connections');
  const stop = async (signal: string) => {
    if (draining) return;
    draining = true;
    log.info({ signal }, 'shutting down: no new connections, waiting for running statements');
    await proxy.shutdown();
    await audit.close();
    health?.close();
    log.info('shutdown complete');
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
}

async function runPrimary(config: Config, log: Logger): Promise<void> {
  // Generate the embedded mode's audit key once, before workers race to create it.
  if (config.audit.enabled) resolveAuditKey(config, { generate: true });
  let draining = false;
  const workers = new Map<number, ReturnType<typeof cluster.fork>>();
  let ready = 0;
  let boundPort = 0;
  let readyResolve: () => void = () => {};
  const allReady = new Promise<void>((r) => (readyResolve = r));
  const fork = (index: number) => {
    const worker = cluster.fork({ PGWARDEN_WORKER_ID: String(index) });
    workers.set(index, worker);
    worker.on('message', (m: unknown) => {
      if (!isEnvelope(m)) return;
      if (m.type === 'pgwarden:cancel') workers.get(m.worker)?.send(m);
      else if (m.type === 'pgwarden:ready') {
        boundPort = m.port;
        if (++ready === config.workers) readyResolve();
      }
    });
    worker.on('exit', (code, signal) => {
      workers.delete(index);
      if (draining) return;
      log.error({ worker: index, code, signal }, 'worker exited unexpectedly; starting a new one');
      fork(index);
    });
  };
  for (let i = 0; i < config.workers; i++) fork(i);
  await allReady;
  let health: Server | undefined;
  if (config.healthListen) health = await startHealthServer(config.healthListen, () => draining);
  const host = config.listen.slice(0, config.listen.lastIndexOf(':'));
  log.info({ event: 'ready', listen: `${host}:${boundPort}`, workers: config.workers }, 'pgwarden is accepting connections');
  const stop = (signal: string) => {
    if (draining) return;
    draining = true;
    log.info({ signal }, 'shutting down: no new connections, waiting for running statements');
    for (const w of workers.values()) w.send({ type: 'pgwarden:shutdown' } satisfies ShutdownEnvelope);
    const check = setInterval(() => {
      if (workers.size === 0) {
        clearInterval(check);
        health?.close();
        log.info('shutdown complete');
        process.exit(0);
      }
    }, 50);
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

async function runWorker(config: Config, log: Logger): Promise<void> {
  const workerId = Number(process.env.PGWARDEN_WORKER_ID ?? '0');
  const wlog = log.child({ worker: workerId });
  const { judge: policyJudge, rules } = await buildPolicyJudge(config, wlog);
  const audit = await withAudit(config, policyJudge, rules, wlog, workerId);
  const proxy = await startProxy(config, {
    judge: audit.judge,
    log: wlog,
    workerId,
    forwardCancel: (worker, processId, secretKey) =>
      process.send?.({ type: 'pgwarden:cancel', worker, processId, secretKey: secretKey.toString('hex') } satisfies CancelEnvelope),
  });
  const stopWorker = async () => {
    await proxy.shutdown();
    await audit.close();
    process.exit(0);
  };
  process.on('message', (m: unknown) => {
    if (!isEnvelope(m)) return;
    if (m.type === 'pgwarden:cancel') proxy.cancelLocal(m.processId, Buffer.from(m.secretKey, 'hex'));
    else if (m.type === 'pgwarden:shutdown') void stopWorker();
  });
  // The primary handles signals; a worker ignores SIGINT from the terminal's process group.
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => void stopWorker());
  process.send?.({ type: 'pgwarden:ready', port: proxy.port });
}
