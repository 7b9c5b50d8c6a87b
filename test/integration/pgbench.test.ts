import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UPSTREAM_URL, startTestProxy } from '../helpers/proxy.js';
import { libpqEnv, run, runOk, type RunResult } from '../helpers/spawn.js';

/**
 * pgbench drives the proxy the way a busy application does: concurrent clients, each protocol
 * mode (simple, extended with unnamed statements, named prepared statements), COPY during -i.
 * Every run must finish cleanly with no failed transaction.
 */
const DB = `pgw_bench_${randomBytes(5).toString('hex')}`;

let proxy: Awaited<ReturnType<typeof startTestProxy>>;
let viaProxy: Record<string, string>;

beforeAll(async () => {
  await runOk('createdb', [DB], { env: libpqEnv(UPSTREAM_URL, 'postgres') });
  proxy = await startTestProxy();
  viaProxy = libpqEnv(proxy.url(DB));
});

afterAll(async () => {
  await proxy?.shutdown(1000);
  await run('dropdb', ['--force', '--if-exists', DB], { env: libpqEnv(UPSTREAM_URL, 'postgres') });
});

interface BenchSummary {
  mode: string | undefined;
  clients: number | undefined;
  processed: number | undefined;
  failed: number | undefined;
}

/** Reads pgbench's end-of-run summary (PostgreSQL 15 format). */
function summary(r: RunResult): BenchSummary {
  const num = (re: RegExp): number | undefined => {
    const m = re.exec(r.stdout);
    return m?.[1] === undefined ? undefined : Number(m[1]);
  };
  return {
    mode: /^query mode: (\w+)$/m.exec(r.stdout)?.[1],
    clients: num(/^number of clients: (\d+)$/m),
    processed: num(/^number of transactions actually processed: (\d+)/m),
    failed: num(/^number of failed transactions: (\d+)/m),
  };
}

function pgbench(args: string[]): Promise<RunResult> {
  return run('pgbench', ['--no-vacuum', ...args], { env: viaProxy, timeoutMs: 60_000 });
}

/** pgbench prints progress and notices on stderr; anything that looks like a failure is kept. */
function errorLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => /error|fatal|abort|could not|server closed/i.test(l));
}

describe('pgbench through the proxy', () => {
  it('initializes a scale-1 database with pgbench -i (COPY, DDL, VACUUM, primary keys)', async () => {
    const r = await run('pgbench', ['-i', '-s', '1', '-q'], { env: viaProxy, timeoutMs: 120_000 });
    expect(errorLines(r.stderr)).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('done in');
    const check = await runOk('psql', ['-X', '-A', '-t', '-c', 'SELECT count(*) FROM pgbench_accounts'], {
      env: libpqEnv(UPSTREAM_URL, DB),
    });
    expect(check.stdout).toBe('100000\n');
  });

  for (const mode of ['simple', 'extended', 'prepared'] as const) {
    it(`runs the TPC-B-like script with -M ${mode}, 4 clients, 2 threads, with no failed transaction`, async () => {
      const r = await pgbench(['-M', mode, '-c', '4', '-j', '2', '-t', '200']);
      expect(errorLines(r.stderr)).toEqual([]);
      expect(r.code).toBe(0);
      expect(summary(r)).toEqual({ mode, clients: 4, processed: 800, failed: 0 });
    });
  }

  it('runs the select-only script (-S) for 2 seconds with -M prepared and no failed transaction', async () => {
    const r = await pgbench(['-S', '-M', 'prepared', '-c', '4', '-j', '2', '-T', '2']);
    expect(errorLines(r.stderr)).toEqual([]);
    expect(r.code).toBe(0);
    const s = summary(r);
    expect(s.failed).toBe(0);
    expect(s.processed).toBeGreaterThan(100);
  });

  it('runs the select-only script (-S) with -M simple and no failed transaction', async () => {
    const r = await pgbench(['-S', '-M', 'simple', '-c', '4', '-j', '2', '-t', '500']);
    expect(errorLines(r.stderr)).toEqual([]);
    expect(r.code).toBe(0);
    expect(summary(r)).toEqual({ mode: 'simple', clients: 4, processed: 2000, failed: 0 });
  });

  it('survives a new connection per transaction (-C) with no failed transaction', async () => {
    const r = await pgbench(['-S', '-C', '-M', 'extended', '-c', '2', '-j', '2', '-t', '50']);
    expect(errorLines(r.stderr)).toEqual([]);
    expect(r.code).toBe(0);
    expect(summary(r)).toEqual({ mode: 'extended', clients: 2, processed: 100, failed: 0 });
  });

  it('leaves the bank balanced: history matches the sum of account balance changes', async () => {
    // Each TPC-B transaction adds delta to one account, teller, branch and a history row.
    const r = await runOk(
      'psql',
      [
        '-X', '-A', '-t', '-c',
        'SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(delta) FROM pgbench_history)' +
          ' AND (SELECT sum(bbalance) FROM pgbench_branches) = (SELECT sum(delta) FROM pgbench_history)' +
          ', (SELECT count(*) FROM pgbench_history)',
      ],
      { env: libpqEnv(UPSTREAM_URL, DB) },
    );
    expect(r.stdout).toBe('t|2400\n');
  });
});
