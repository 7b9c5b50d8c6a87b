import cluster from 'node:cluster';
import os from 'node:os';
import { Redis } from 'ioredis';
import { auditRedis, waitReady } from '../audit/build-audit.js';
import type { SqlNormalizer } from '../audit/normalize-sql.js';
import type { Config } from '../config/schema.js';
import { splitHostPort } from '../config/load.js';
import { approvalExposureProblem, approvalsEnabled } from '../config/startup-checks.js';
import type { Logger } from '../logger.js';
import type { Policy } from '../policy/policy.js';
import type { RequestJudge } from '../session/decision.js';
import { ApprovalGate, approvalEnded, type ApprovalAudit } from './approval-gate.js';
import { startApprovalHttp, type ApprovalHttp } from './approval-http.js';
import { RedisApprovalStore, redisApprovalEvents, type ApprovalEvents, type ApprovalStore } from './approval-store.js';
import { MemoryApprovalStore } from './memory-approval-store.js';
import { ApprovalMetrics, type MetricsSnapshot } from './metrics.js';
import { ReviewDesk } from './review-desk.js';
import { ReviewHub } from './review-hub.js';
import { ReviewerAuth } from './reviewer-auth.js';
import { VerdictWaiter } from './verdict-waiter.js';
import { Webhook } from './webhook.js';

/**
 * Composition of approvals for one process. Two roles, both optional:
 *
 * - holder: the gate that holds statements on this process's connections (every worker);
 * - review server: the page, WebSocket and API (one per instance: the primary in cluster mode,
 *   since all state is in Redis and any instance can decide any request).
 *
 * Whether there are approvals at all is `approvalsEnabled` (config/startup-checks.ts).
 */

/** The page's address for notices and webhooks: publicUrl, else derived from listen. */
export function pageUrl(config: Config, boundPort?: number): string {
  if (config.approval.publicUrl) return config.approval.publicUrl.replace(/\/$/, '') + '/';
  const { host, port } = splitHostPort(config.approval.listen);
  const h = host === '0.0.0.0' || host === '::' ? os.hostname() : host.includes(':') ? `[${host}]` : host;
  return `${config.approval.tls ? 'https' : 'http'}://${h}:${boundPort ?? port}/`;
}

function subscriberRedis(url: string): Redis {
  // Subscriptions queue until connected and come back after a reconnect (ioredis
  // autoResubscribe); connection errors are logged by the command connection's client.
  const r = new Redis(url, { maxRetriesPerRequest: null, retryStrategy: (times) => Math.min(100 * times, 1000) });
  r.on('error', () => {});
  return r;
}

/** Where this process keeps approval requests, and how it hears about their changes. */
interface StoreBackend {
  store: ApprovalStore;
  /** One subscription to the store's changes (the waiter's or the hub's; closing it is theirs). */
  events: ApprovalEvents;
  close(): void;
}

/**
 * The memory store of one process. The holder and the review server that startInstance builds
 * from one configuration object must share it (they are started separately, each from the
 * config), so it is kept per configuration object.
 */
const memoryStores = new WeakMap<Config, MemoryApprovalStore>();

function memoryStoreOf(config: Config): MemoryApprovalStore {
  if (cluster.isWorker) {
    // The schema refuses `store: memory` with workers > 1; this is the last line of defence.
    throw new Error('approval.store: memory keeps approval requests inside one process; a multi-worker cluster needs Redis (redisUrl)');
  }
  let store = memoryStores.get(config);
  if (!store) memoryStores.set(config, (store = new MemoryApprovalStore(config.approval.keepHours * 3_600_000)));
  return store;
}

async function openBackend(config: Config, log: Logger): Promise<StoreBackend> {
  if (config.approval.store === 'memory') {
    const store = memoryStoreOf(config);
    return { store, events: store.events(), close: () => {} };
  }
  // Approvals are started only when approvalsEnabled(config): without the memory store, redisUrl is set.
  const url = config.redisUrl!;
  const redis = auditRedis(url, log);
  const subscriber = subscriberRedis(url);
  await Promise.all([waitReady(redis, 3000), waitReady(subscriber, 3000)]);
  const store = new RedisApprovalStore(redis, config.approval.redisPrefix, config.approval.keepHours * 3_600_000);
  return { store, events: redisApprovalEvents(subscriber, store.eventsChannel), close: () => redis.disconnect() };
}

export interface Holder {
  metrics: ApprovalMetrics;
  /** The page's real address once its listener is bound (listen port 0). */
  usePageUrl(url: string): void;
  /**
   * Wraps the policy judge with the approval gate. `rules` is the rules store in force: its
   * masking rules tell reviewers which PII columns a held statement touches (without it, none
   * are shown).
   */
  /** The gate in front of `inner`; `rules` is the snapshot in force (its version and masked columns go to reviewers). */
  wrap(inner: RequestJudge, audit: ApprovalAudit | null, rules: { readonly current: Pick<Policy, 'masking' | 'version'> }): RequestJudge;
  close(): Promise<void>;
}

export async function startHolder(config: Config, log: Logger, instance: string, normalizer: SqlNormalizer): Promise<Holder> {
  const backend = await openBackend(config, log);
  const { store } = backend;
  const waiter = new VerdictWaiter(backend.events, log);
  await waiter.whenReady();
  const metrics = new ApprovalMetrics();
  let page = pageUrl(config);
  const webhook = config.approval.webhook ? new Webhook({ url: config.approval.webhook.url, timeoutMs: config.approval.webhook.timeoutMs, pageUrl: () => page, log }) : null;
  return {
    metrics,
    usePageUrl: (url) => {
      page = url;
    },
    wrap: (inner, audit, rules) =>
      new ApprovalGate(inner, {
        store,
        waiter,
        normalizer,
        audit,
        metrics,
        webhook,
        instance,
        timeoutSeconds: config.approval.timeoutSeconds,
        maxPendingPerUser: config.approval.maxPendingPerUser,
        pageUrl: () => page,
        rulesVersion: () => rules.current.version,
        masking: () => rules.current.masking,
        log,
      }),
    close: async () => {
      await webhook?.close();
      waiter.close();
      backend.close();
    },
  };
}

export interface ReviewServer {
  http: ApprovalHttp;
  /** The page's address (publicUrl, or the bound listener), ending in '/'. */
  url: string;
  close(): Promise<void>;
}

/** Serves the page, WebSocket and API, and expires requests whose holder is gone. */
export async function startReviewServer(
  config: Config,
  log: Logger,
  opts: { audit: ApprovalAudit | null; metrics: () => MetricsSnapshot },
): Promise<ReviewServer> {
  const { host, port } = splitHostPort(config.approval.listen);
  const exposure = approvalExposureProblem(config);
  if (exposure) throw new Error(exposure);
  const backend = await openBackend(config, log);
  const { store } = backend;
  const auth = new ReviewerAuth(config.approval, { log });
  if (config.approval.reviewers.length === 0 && !auth.oidcEnabled) {
    log.warn('no reviewers are configured (approval.reviewers or approval.oidc): held statements can only time out');
  }
  const hub = new ReviewHub(store, auth, backend.events, log);
  const desk = new ReviewDesk({ store, audit: opts.audit, maxGrantMinutes: config.approval.maxGrantMinutes, log });
  const http = await startApprovalHttp({
    host,
    port,
    ...(config.approval.tls ? { tls: config.approval.tls } : {}),
    allowedOrigins: [...config.approval.allowedOrigins, ...(config.approval.publicUrl ? [config.approval.publicUrl] : [])],
    store,
    desk,
    auth,
    hub,
    metrics: opts.metrics,
    log,
  });
  // Requests whose holder died (crash, network split) would otherwise stay pending: expire
  // them a little after their deadline, when the holder had its chance.
  const janitor = setInterval(() => {
    void store.overdue(Date.now() - 5000).then(
      async (ids) => {
        for (const id of ids) {
          const r = await store.expire(id).catch(() => null);
          if (r) opts.audit?.note(approvalEnded('approval.expired', r));
        }
      },
      () => undefined,
    );
  }, 5000).unref();
  const url = pageUrl(config, http.port);
  log.info({ event: 'approvals-ready', url }, 'approval page, WebSocket and API are listening');
  return {
    http,
    url,
    close: async () => {
      clearInterval(janitor);
      await http.close();
      backend.close();
    },
  };
}
