import { SqlNormalizer } from '../audit/normalize-sql.js';
import cluster from 'node:cluster';
import { createHmac } from 'node:crypto';
import { AgentDirectory } from '../identity/agent-directory.js';
import os from 'node:os';
import type { Server } from 'node:http';
import type { Config } from '../config/schema.js';
import type { Logger } from '../logger.js';
import { approvalAuditOf, openAuditSink, resolveAuditKey, withAudit, type AuditSetup } from '../audit/build-audit.js';
import { startHolder, startReviewServer, type Holder, type ReviewServer } from '../approval/build-approvals.js';
import { approvalsEnabled } from '../config/startup-checks.js';
import { sumSnapshots, type MetricsSnapshot } from '../approval/metrics.js';
import type { RequestJudge } from '../session/decision.js';
import type { ApprovalAudit } from '../approval/approval-gate.js';
import { createMaskCatalog, maskingKey } from '../masking/build-masking.js';
import { MaskingJudge } from '../masking/masking-judge.js';
import { buildPolicyJudge } from '../policy/build-judge.js';
import { startHealthServer } from './health.js';
import { startProxy, type RunningProxy } from './proxy-server.js';

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
/** A worker's approval metrics (the primary serves /metrics for all of them). */
interface MetricsEnvelope {
  type: 'pgwarden:metrics';
  worker: number;
  snapshot: MetricsSnapshot;
}
type Envelope = CancelEnvelope | ShutdownEnvelope | MetricsEnvelope | { type: 'pgwarden:ready'; port: number };

function isEnvelope(m: unknown): m is Envelope {
  return typeof m === 'object' && m !== null && typeof (m as { type?: unknown }).type === 'string';
}

/** Entry point of `pgwarden start`: resolves once the proxy is listening. */
export async function runProxy(config: Config, log: Logger): Promise<void> {
  if (config.workers === 1) return runSingle(config, log);
  if (cluster.isPrimary) return runPrimary(config, log);
  return runWorker(config, log);
}

/** The instance's name in approval requests: the audit instance id (or host) and the worker. */
function instanceName(config: Config, workerId: number): string {
  return `${config.audit.instanceId ?? os.hostname()}/w${workerId}`;
}

/** Policy → masking → approval gate (with Redis) → audit, for one process that holds connections. */
async function buildJudge(
  config: Config,
  log: Logger,
  workerId: number,
): Promise<{ audit: AuditSetup; holder: Holder | null; agents: AgentDirectory | undefined; close(): Promise<void> }> {
  const { judge: policyJudge, rules } = await buildPolicyJudge(config, log);
  // One normalizer (and its caches) for the audit log, held requests and masked-statement entries.
  const normalizer = new SqlNormalizer();
  const holder = approvalsEnabled(config) ? await startHolder(config, log, instanceName(config, workerId), normalizer) : null;
  if (!holder && config.approval.enabled) log.warn('approvals need Redis (redisUrl): statements that need review are refused');
  const catalog = createMaskCatalog(config, log);
  const key = maskingKey(config, log);
  const inner = (a: ApprovalAudit | null): RequestJudge => {
    const masking = new MaskingJudge(policyJudge, { policy: rules, catalog, key, audit: a, log, normalizer });
    return holder ? holder.wrap(masking, a, rules) : masking;
  };
  const audit = await withAudit(config, inner, rules, log, workerId, normalizer);
  const agents = config.identity.mode === 'agents' ? new AgentDirectory(rules, config.identity, log, createHmac('sha256', key).update('pgwarden scram mock salt v1').digest()) : undefined;
  const close = async () => {
    await holder?.close();
    await audit.close();
    await catalog.close();
    rules.close();
  };
  return { audit, holder, agents, close };
}

export interface RunningInstance {
  proxy: RunningProxy;
  review: ReviewServer | null;
  holder: Holder | null;
  audit: AuditSetup;
  /** Stops accepting, waits for running statements, then closes everything. */
  stop(): Promise<void>;
}

/** One process doing everything: proxy, approval gate, review server, audit (also used by tests). */
export async function startInstance(config: Config, log: Logger): Promise<RunningInstance> {
  const { audit, holder, agents, close } = await buildJudge(config, log, 0);
  const proxy = await startProxy(config, { log, judge: audit.judge, ...(agents ? { agents } : {}) });
  const review = holder
    ? await startReviewServer(config, log, { audit: audit.sink ? approvalAuditOf(audit.sink) : null, metrics: () => holder.metrics.snapshot() })
    : null;
  if (review && holder) holder.usePageUrl(review.url);
  return {
    proxy,
    review,
    holder,
    audit,
    stop: async () => {
      await proxy.shutdown();
      await review?.close();
      await close();
    },
  };
}

async function runSingle(config: Config, log: Logger): Promise<void> {
  const inst = await startInstance(config, log);
  let draining = false;
  const health = config.healthListen ? await startHealthServer(config.healthListen, () => draining) : undefined;
  const { proxy, review } = inst;
  log.info({ event: 'ready', listen: `${proxy.host}:${proxy.port}`, workers: 1, ...(review ? { approvals: review.url } : {}) }, 'pgwarden is accepting connections');
  const stop = async (signal: string) => {
    if (draining) return;
    draining = true;
    log.info({ signal }, 'shutting down: no new connections, waiting for running statements');
    await inst.stop();
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
  const workerMetrics = new Map<number, MetricsSnapshot>();
  let readyResolve: () => void = () => {};
  const allReady = new Promise<void>((r) => (readyResolve = r));
  const fork = (index: number) => {
    const worker = cluster.fork({ PGWARDEN_WORKER_ID: String(index) });
    workers.set(index, worker);
    let started = false;
    worker.on('message', (m: unknown) => {
      if (!isEnvelope(m)) return;
      if (m.type === 'pgwarden:cancel') workers.get(m.worker)?.send(m);
      else if (m.type === 'pgwarden:metrics') workerMetrics.set(m.worker, m.snapshot);
      else if (m.type === 'pgwarden:ready') {
        started = true;
        boundPort = m.port;
        if (++ready === config.workers) readyResolve();
      }
    });
    worker.on('exit', (code, signal) => {
      workers.delete(index);
      if (draining) return;
      if (!started) {
        // It failed before accepting anything; a new one would fail the same way, in a tight loop.
        log.fatal({ worker: index, code, signal }, 'a worker failed to start; stopping (see its log lines above)');
        draining = true;
        for (const w of workers.values()) w.kill();
        process.exit(1);
      }
      log.error({ worker: index, code, signal }, 'worker exited unexpectedly; starting a new one');
      fork(index);
    });
  };
  for (let i = 0; i < config.workers; i++) fork(i);
  await allReady;
  // One review server per instance; the workers hold, any instance decides (state is in Redis).
  const primaryAudit = approvalsEnabled(config) ? await openAuditSink(config, log, 'primary') : null;
  const review = approvalsEnabled(config)
    ? await startReviewServer(config, log, {
        audit: primaryAudit ? approvalAuditOf(primaryAudit.sink) : null,
        metrics: () => sumSnapshots([...workerMetrics.values()]),
      })
    : null;
  let health: Server | undefined;
  if (config.healthListen) health = await startHealthServer(config.healthListen, () => draining);
  const host = config.listen.slice(0, config.listen.lastIndexOf(':'));
  log.info({ event: 'ready', listen: `${host}:${boundPort}`, workers: config.workers, ...(review ? { approvals: review.url } : {}) }, 'pgwarden is accepting connections');
  const stop = (signal: string) => {
    if (draining) return;
    draining = true;
    log.info({ signal }, 'shutting down: no new connections, waiting for running statements');
    for (const w of workers.values()) w.send({ type: 'pgwarden:shutdown' } satisfies ShutdownEnvelope);
    const check = setInterval(() => {
      if (workers.size === 0) {
        clearInterval(check);
        health?.close();
        void review?.close();
        void primaryAudit?.close();
        log.info('shutdown complete');
        process.exit(0);
      }
    }, 50);
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  // Each worker holds its own rules snapshot and reloads on SIGHUP; an operator signals the
  // primary (the process they started), so it passes the signal on.
  process.on('SIGHUP', () => {
    for (const w of workers.values()) w.process.kill('SIGHUP');
  });
}

async function runWorker(config: Config, log: Logger): Promise<void> {
  const workerId = Number(process.env.PGWARDEN_WORKER_ID ?? '0');
  const wlog = log.child({ worker: workerId });
  const { audit, holder, agents, close } = await buildJudge(config, wlog, workerId);
  const proxy = await startProxy(config, {
    judge: audit.judge,
    log: wlog,
    workerId,
    ...(agents ? { agents } : {}),
    forwardCancel: (worker, processId, secretKey) =>
      process.send?.({ type: 'pgwarden:cancel', worker, processId, secretKey: secretKey.toString('hex') } satisfies CancelEnvelope),
  });
  if (holder) {
    let last = '';
    setInterval(() => {
      const snapshot = holder.metrics.snapshot();
      const text = JSON.stringify(snapshot);
      if (text === last) return;
      last = text;
      process.send?.({ type: 'pgwarden:metrics', worker: workerId, snapshot } satisfies MetricsEnvelope);
    }, 1000).unref();
  }
  const stopWorker = async () => {
    await proxy.shutdown();
    await close();
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
