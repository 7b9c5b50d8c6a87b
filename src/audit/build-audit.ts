import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import type { Config } from '../config/schema.js';
import type { Logger } from '../logger.js';
import type { RulesStore } from '../policy/rules-store.js';
import type { ApprovalAudit } from '../approval/approval-gate.js';
import type { RequestJudge } from '../session/decision.js';
import { ChainSink } from './audit-sink.js';
import { AuditingJudge } from './auditing-judge.js';
import { SqlNormalizer } from './normalize-sql.js';
import { RedisAuditLog } from './redis-log.js';

/**
 * Composition of the audit log for one process: key, Redis stream (or none), journal, sink,
 * and the judge wrapper that records every decision.
 */
export class AuditKeyMissing extends Error {
  override readonly name = 'AuditKeyMissing';
}

/**
 * The chain's HMAC key: configured (PGWARDEN_AUDIT_KEY), or, in the embedded mode only, the key
 * file in the journal directory (generated on first start, mode 0600). With Redis every instance
 * and every auditor must share one configured key, so none is generated.
 */
export function resolveAuditKey(config: Config, options: { generate: boolean }): Buffer {
  if (config.audit.hmacKey) return Buffer.from(config.audit.hmacKey, 'utf8');
  if (config.redisUrl) {
    throw new AuditKeyMissing('the audit key is required when audit entries go to Redis: set PGWARDEN_AUDIT_KEY (32+ characters) on every instance');
  }
  const file = path.join(config.audit.journalDir, 'audit.key');
  try {
    return Buffer.from(readFileSync(file, 'utf8').trim(), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !options.generate) {
      throw new AuditKeyMissing(`cannot read the audit key ${file}: ${(err as Error).message}; set PGWARDEN_AUDIT_KEY`);
    }
  }
  mkdirSync(config.audit.journalDir, { recursive: true, mode: 0o700 });
  const key = randomBytes(32).toString('base64url');
  writeFileSync(file, `${key}\n`, { mode: 0o600, flag: 'wx' });
  return Buffer.from(key, 'utf8');
}

/** A Redis client that fails fast when Redis is down (the sink then spools to the journal). */
export function auditRedis(url: string, log: Logger): Redis {
  const redis = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: 2000,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(100 * times, 1000),
  });
  let lastLogged = 0;
  redis.on('error', (err: Error) => {
    // ioredis reports every failed reconnect; one line per 10 s is enough.
    if (Date.now() - lastLogged > 10_000) {
      lastLogged = Date.now();
      log.warn({ message: err.message }, 'Redis connection error');
    }
  });
  return redis;
}

export function retentionOf(config: Config): { maxLen?: number; retentionMs?: number } {
  if (config.audit.maxLen !== undefined) return { maxLen: config.audit.maxLen };
  if (config.audit.retentionHours !== undefined) return { retentionMs: config.audit.retentionHours * 3_600_000 };
  return {};
}

/** This process's chain: instance, worker (or "primary"), and the start time (every run begins a new chain). */
export function chainName(config: Config, workerId: number | 'primary'): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  const proc = workerId === 'primary' ? 'primary' : `w${workerId}`;
  return `${config.audit.instanceId ?? os.hostname()}/${proc}@${stamp}-${randomBytes(3).toString('hex')}`;
}

export interface AuditSetup {
  judge: RequestJudge;
  sink: ChainSink | null;
  close(): Promise<void>;
}

/** Durable and fire-and-forget recording through a sink, as the approval code uses it. */
export function approvalAuditOf(sink: ChainSink): ApprovalAudit {
  return {
    record: async (event) => {
      await sink.record(event).durable;
    },
    note: (event) => {
      try {
        sink.note(event);
      } catch {
        // The sink logs failures and turns `failing` on.
      }
    },
  };
}

/** Opens this process's audit chain (Redis stream and/or journal); null when audit is off. */
export async function openAuditSink(config: Config, log: Logger, workerId: number | 'primary'): Promise<{ sink: ChainSink; close(): Promise<void> } | null> {
  if (!config.audit.enabled) return null;
  const key = resolveAuditKey(config, { generate: true });
  const redis = config.redisUrl ? auditRedis(config.redisUrl, log) : null;
  if (redis) await waitReady(redis, 3000);
  const sink = await ChainSink.open({
    chain: chainName(config, workerId),
    key,
    journalDir: config.audit.journalDir,
    redis: redis ? new RedisAuditLog(redis, config.audit.stream, retentionOf(config)) : null,
    log,
  });
  log.info(
    { event: 'audit-ready', chain: sink.chain, redis: redis ? config.audit.stream : null, journal: config.audit.journalDir, spooling: sink.isSpooling },
    redis ? 'audit entries go to the Redis stream' : 'audit entries go to the local journal (no Redis configured)',
  );
  return {
    sink,
    close: async () => {
      await sink.close();
      redis?.disconnect();
    },
  };
}

/**
 * Wraps the decision step with the audit log (when enabled) and records rules loads and
 * reloads. `inner` may be built from the approval recorder (the approval gate records holds
 * and verdicts in the same chain).
 */
export async function withAudit(
  config: Config,
  inner: RequestJudge | ((audit: ApprovalAudit | null) => RequestJudge),
  rules: RulesStore,
  log: Logger,
  workerId = 0,
  normalizer = new SqlNormalizer(),
): Promise<AuditSetup> {
  const build = typeof inner === 'function' ? inner : () => inner;
  const opened = await openAuditSink(config, log, workerId);
  if (!opened) {
    log.warn('audit is disabled (audit.enabled: false): decisions are not recorded');
    return { judge: build(null), sink: null, close: async () => {} };
  }
  const { sink } = opened;
  const judge = new AuditingJudge(build(approvalAuditOf(sink)), sink, normalizer, () => rules.current.version, log, config.audit.wait);
  const policy = rules.current;
  judge.fireAndForget({ type: 'rules.reloaded', version: policy.version, trigger: 'startup', files: policy.files, rules: policy.rules.length });
  rules.onChange((p, change) =>
    judge.fireAndForget({ type: 'rules.reloaded', version: p.version, previous: change.previous, trigger: change.trigger, files: p.files, rules: p.rules.length }),
  );
  rules.onReject((r) => judge.fireAndForget({ type: 'rules.rejected', trigger: r.trigger, problems: r.problems, inForce: r.inForce }));
  return {
    judge,
    sink,
    close: async () => {
      judge.flush();
      await opened.close();
    },
  };
}

/** Waits for the first connection; a Redis that is down at start only means spooling. */
export function waitReady(redis: Redis, ms: number): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      redis.off('ready', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    redis.once('ready', done);
  });
}
