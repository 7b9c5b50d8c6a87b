/**
 * `npm run bench:audit` (part of `npm run bench`): what the audit log costs.
 *
 * 1. pgbench -S through pgwarden with audit off, audit to Redis (default wait: refusals), audit to
 *    Redis waiting for every record (audit.wait: all), and the embedded journal; interleaved
 *    rounds, median tps, ratio to audit off.
 * 2. The sink alone: events/s one process can seal and make durable, to Redis and to the journal.
 *
 * Environment: BENCH_SECONDS (5), BENCH_ROUNDS (3), BENCH_CLIENTS (8), BENCH_REDIS_URL
 * (redis://127.0.0.1:6379), PGWARDEN_BENCH_UPSTREAM (postgres://127.0.0.1:5432).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { ChainSink } from '../src/audit/audit-sink.js';
import { RedisAuditLog } from '../src/audit/redis-log.js';
import { silentLogger } from '../src/logger.js';
import { freePort, initPgbenchDatabase, median, parseTps, pgbench, startPgwardenCli } from './bench-lib.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 8);
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const upstream = new URL(process.env.PGWARDEN_BENCH_UPSTREAM ?? 'postgres://127.0.0.1:5432');
const DB = 'pgwarden_bench';
const KEY = 'bench-audit-key-0123456789-0123456789';
const STREAM = `pgwarden-bench:audit:${process.pid}`;

interface Variant {
  name: string;
  args: string[];
}

async function startPgwarden(v: Variant): Promise<{ port: number; stop: () => Promise<void> }> {
  return startPgwardenCli(await freePort(), upstream, { args: v.args, env: { PGWARDEN_AUDIT_KEY: KEY }, logLevel: 'error' });
}

async function endToEnd(): Promise<void> {
  const variants: Variant[] = [
    { name: 'audit off', args: ['--audit', 'off'] },
    { name: 'redis', args: ['--redis', REDIS_URL, '--audit-stream', STREAM] },
    { name: 'redis, wait all', args: ['--redis', REDIS_URL, '--audit-stream', STREAM, '--audit-wait', 'all'] },
    { name: 'journal', args: [] },
  ];
  const running = [];
  for (const v of variants) running.push({ v, ...(await startPgwarden(v)) });
  const tps = new Map<string, number[]>();
  for (let round = 1; round <= ROUNDS; round++) {
    for (const mode of ['simple', 'prepared']) {
      for (const r of running) {
        const t = parseTps(await pgbench(r.port, DB, ['-S', '-M', mode, '-c', String(CLIENTS), '-j', '2', '-T', String(SECONDS), '-n']));
        const key = `${r.v.name}/${mode}`;
        tps.set(key, [...(tps.get(key) ?? []), t]);
        process.stdout.write(`round ${round} ${key}: ${t.toFixed(0)} tps\n`);
      }
    }
  }
  for (const r of running) await r.stop();
  process.stdout.write(`\npgbench -S through pgwarden, ${CLIENTS} clients, ${SECONDS}s x ${ROUNDS} rounds (median tps; ratio to audit off)\n`);
  for (const mode of ['simple', 'prepared']) {
    const off = median(tps.get(`audit off/${mode}`)!);
    for (const v of variants) {
      const m = median(tps.get(`${v.name}/${mode}`)!);
      process.stdout.write(`${mode.padEnd(9)} ${v.name.padEnd(16)} ${m.toFixed(0).padStart(7)}  ${(m / off).toFixed(2)}\n`);
    }
  }
}

/** Seals and writes `total` events in bursts, as sessions would, and waits until all are durable. */
async function sinkThroughput(scratch: string): Promise<void> {
  const total = 200_000;
  const session = { id: 1, user: 'agent', database: DB, application: 'bench', client: '127.0.0.1:40000' };
  const event = {
    type: 'statement.allowed' as const,
    session,
    request: 'simple' as const,
    statements: [{ text: 'SELECT abalance FROM pgbench_accounts WHERE aid = $1', fingerprint: '0123456789abcdef' }],
    kinds: ['read'],
    tables: ['pgbench_accounts'],
    rule: 'default',
    rulesVersion: 'bench',
  };
  for (const target of ['redis', 'journal'] as const) {
    const redis = target === 'redis' ? new Redis(REDIS_URL) : null;
    const sink = await ChainSink.open({
      chain: `bench/${target}@${Date.now()}`,
      key: Buffer.from(KEY),
      journalDir: mkdtempSync(path.join(scratch, 'sink-')),
      redis: redis ? new RedisAuditLog(redis, STREAM) : null,
      log: silentLogger,
    });
    const started = performance.now();
    for (let i = 0; i < total; i += 100) {
      for (let j = 0; j < 100; j++) sink.record(event);
      await new Promise((r) => setImmediate(r));
    }
    await sink.flushed();
    const seconds = (performance.now() - started) / 1000;
    process.stdout.write(`sink -> ${target.padEnd(8)} ${(total / seconds).toFixed(0).padStart(8)} events/s (sealed, HMAC'd and durable)\n`);
    await sink.close();
    redis?.disconnect();
  }
}

async function main(): Promise<void> {
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'pgw-bench-audit-'));
  await initPgbenchDatabase(upstream, DB);
  try {
    await sinkThroughput(scratch);
    await endToEnd();
  } finally {
    const r = new Redis(REDIS_URL);
    await r.del(STREAM, `${STREAM}:heads`);
    r.disconnect();
    rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${(err as Error).message}\n`);
  process.exit(1);
});
