import { parseArgs } from 'node:util';
import { ConfigError, FLAGS, loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { Redis } from 'ioredis';
import { AuditKeyMissing, resolveAuditKey, retentionOf } from './build-audit.js';
import { verifyChains, type StoredRecord } from './chain.js';
import { JournalSource, RedisSource, type AuditSource } from './audit-source.js';
import { csvHeader, csvRow, formatEntry, parseEntry } from './format-entry.js';
import { RedisAuditLog } from './redis-log.js';

/**
 * `pgwarden audit tail | verify | export`: reads the audit log where pgwarden writes it (the
 * Redis stream when redisUrl is configured, else the journal directory), with the same config
 * sources as `pgwarden start`.
 */
export const AUDIT_USAGE = `Usage:
  pgwarden audit tail   [-n N] [--no-follow]        newest entries, then follow new ones (human-readable)
  pgwarden audit verify [--allow-trimmed]           check every chain; exit 1 at a broken link
  pgwarden audit export [--since T] [--until T] [--format jsonl|csv]
                                                    entries in a time range (T: ISO time or 30m, 24h, 7d ago)
Where to read: --config FILE, --redis URL, --audit-stream KEY, --audit-journal DIR (or PGWARDEN_* env);
the key for verify comes from PGWARDEN_AUDIT_KEY or, in the embedded mode, the journal's audit.key.
`;

const CONFIG_FLAGS = ['redis', 'audit-stream', 'audit-journal'] as const;

interface Out {
  out: (s: string) => void;
  err: (s: string) => void;
}

const stdio: Out = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

export async function auditCommand(args: string[], io: Out = stdio, signal?: AbortSignal): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'tail' && sub !== 'verify' && sub !== 'export') {
    io.err(AUDIT_USAGE);
    return 2;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: {
        config: { type: 'string' },
        redis: { type: 'string' },
        'audit-stream': { type: 'string' },
        'audit-journal': { type: 'string' },
        n: { type: 'string', short: 'n' },
        'no-follow': { type: 'boolean', default: false },
        'allow-trimmed': { type: 'boolean', default: false },
        since: { type: 'string' },
        until: { type: 'string' },
        format: { type: 'string', default: 'jsonl' },
      },
    });
  } catch (err) {
    io.err(`pgwarden audit: ${(err as Error).message}\n${AUDIT_USAGE}`);
    return 2;
  }
  const v = parsed.values;
  let config: Config;
  try {
    const flags: Record<string, string> = {};
    for (const f of CONFIG_FLAGS) if (v[f] !== undefined && FLAGS[f]) flags[f] = v[f];
    config = loadConfig({ file: v.config, env: process.env, flags });
  } catch (err) {
    if (err instanceof ConfigError) {
      io.err(`pgwarden audit: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const source: AuditSource = config.redisUrl
    ? new RedisSource(new RedisAuditLog(readerRedis(config.redisUrl), config.audit.stream))
    : new JournalSource(config.audit.journalDir);
  try {
    // Retention trims only the Redis stream; a journal chain that lost its start was tampered with.
    const trimmed = config.redisUrl !== undefined && Object.keys(retentionOf(config)).length > 0;
    if (sub === 'verify') return await verify(config, source, v['allow-trimmed'] || trimmed, io);
    if (sub === 'export') return await exportEntries(source, v.since, v.until, v.format, io);
    return await tail(source, v.n === undefined ? 10 : Number(v.n), !v['no-follow'], io, signal);
  } catch (err) {
    if (err instanceof AuditKeyMissing || err instanceof UsageError) {
      io.err(`pgwarden audit: ${err.message}\n`);
      return 2;
    }
    io.err(`pgwarden audit: cannot read ${source.description}: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await source.close();
  }
}

class UsageError extends Error {}

/** A reading client: queues commands until connected, gives up after a few failed attempts. */
function readerRedis(url: string): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, connectTimeout: 3000, retryStrategy: (times) => (times > 3 ? null : 200) });
  redis.on('error', () => {}); // reported through the failing command
  return redis;
}

async function verify(config: Config, source: AuditSource, allowTrimmedStart: boolean, io: Out): Promise<number> {
  const key = resolveAuditKey(config, { generate: false });
  const records: StoredRecord[] = [];
  for await (const r of source.records()) records.push(r);
  const heads = await source.heads();
  const report = verifyChains(records, { key, heads, allowTrimmedStart });
  io.out(`audit verify: ${report.entries} entries in ${report.chains.length} chain(s), ${source.description}\n`);
  for (const c of report.chains) io.out(`  chain ${c.chain}: seq ${c.first}..${c.last} (${c.count} entries), head ${c.head.slice(0, 16)}\n`);
  if (report.ok) {
    io.out('OK: every chain is intact\n');
    return 0;
  }
  const first = report.problems[0]!;
  io.out(`BROKEN: first broken link at ${first.where}, chain ${first.chain}${first.seq !== null ? ` seq ${first.seq}` : ''}: ${first.problem}\n`);
  for (const p of report.problems.slice(1, 20)) io.out(`  also at ${p.where}, chain ${p.chain}${p.seq !== null ? ` seq ${p.seq}` : ''}: ${p.problem}\n`);
  io.out(`${report.problems.length} problem(s)\n`);
  return 1;
}

/** ISO time, or an age like 30m / 24h / 7d (that long before now). */
export function parseTime(text: string, now = Date.now()): number {
  const rel = /^(\d+)([smhd])$/.exec(text);
  if (rel) return now - Number(rel[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[rel[2] as 's' | 'm' | 'h' | 'd'];
  const t = Date.parse(text);
  if (Number.isNaN(t)) throw new UsageError(`cannot read time "${text}": use an ISO time (2026-11-21T10:00:00Z) or an age (30m, 24h, 7d)`);
  return t;
}

async function exportEntries(source: AuditSource, since: string | undefined, until: string | undefined, format: string | undefined, io: Out): Promise<number> {
  if (format !== 'jsonl' && format !== 'csv') throw new UsageError(`unknown format "${format}": jsonl or csv`);
  const from = since ? parseTime(since) : -Infinity;
  const to = until ? parseTime(until) : Infinity;
  if (format === 'csv') io.out(`${csvHeader()}\n`);
  let n = 0;
  for await (const rec of source.records()) {
    const t = Date.parse(String(parseEntry(rec)?.ts ?? ''));
    if (!(t >= from && t < to)) continue;
    io.out(`${format === 'csv' ? csvRow(rec) : rec.raw}\n`);
    n++;
  }
  io.err(`${n} entries exported from ${source.description}\n`);
  return 0;
}

async function tail(source: AuditSource, count: number, follow: boolean, io: Out, signal?: AbortSignal): Promise<number> {
  if (!Number.isInteger(count) || count < 0) throw new UsageError('-n expects a whole number');
  if (count > 0) for (const rec of await source.last(count)) io.out(`${formatEntry(rec)}\n`);
  if (!follow) return 0;
  const abort = new AbortController();
  signal?.addEventListener('abort', () => abort.abort(), { once: true });
  const stop = () => abort.abort();
  process.once('SIGINT', stop);
  try {
    await source.follow((rec) => io.out(`${formatEntry(rec)}\n`), abort.signal);
  } finally {
    process.off('SIGINT', stop);
  }
  return 0;
}
