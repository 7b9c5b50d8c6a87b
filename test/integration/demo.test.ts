import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agent, callApi, heldId } from '../helpers/approvals.js';
import { startTestRedis, type TestRedis } from '../helpers/redis-server.js';
import { run, runOk } from '../helpers/spawn.js';

/**
 * `pgwarden demo` as a newcomer runs it: the built CLI starts an embedded PostgreSQL, pgwarden and
 * the approval page, and prints what to try. The test reads the printed connection string, page
 * address, reviewer token and example queries, runs the queries as printed, and checks what the
 * user would see: masked PII, a NOTICE and a statement that runs once approved through the API,
 * a refusal with its SQLSTATE, the audit log through the printed `audit tail` command, and a clean
 * stop on Ctrl-C (SIGINT).
 */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(ROOT, 'dist/src/cli.js');

/** The environment without settings of a real deployment that the demo must not need. */
function demoEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('PGWARDEN_') && !k.startsWith('PG') && k !== 'REDIS_URL') env[k] = v;
  }
  return { ...env, ...extra };
}

interface Printed {
  psqlUrl: string;
  pageUrl: string;
  api: string;
  token: string;
  rulesDir: string;
  /** The journal directory (empty when the audit log goes to Redis). */
  auditDir: string;
  /** The example statements, in the order printed (masking, review, deny). */
  queries: string[];
}

class Demo {
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly child: ChildProcess;

  constructor(args: string[], env: NodeJS.ProcessEnv = demoEnv()) {
    this.child = spawn(process.execPath, [CLI, 'demo', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (b: Buffer) => (this.stdout += b.toString()));
    this.child.stderr!.on('data', (b: Buffer) => (this.stderr += b.toString()));
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  /** Waits for the banner and reads what it tells the user. */
  async printed(timeoutMs = 60_000): Promise<Printed> {
    const deadline = Date.now() + timeoutMs;
    while (!this.stdout.includes('Ctrl-C stops the demo.')) {
      if (this.child.exitCode !== null) throw new Error(`demo exited early (${this.child.exitCode}): ${this.stdout}\n${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`no banner within ${timeoutMs} ms: ${this.stdout}\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const pick = (re: RegExp, optional = false): string => {
      const m = re.exec(this.stdout);
      if (!m && !optional) throw new Error(`${re} not in the banner:\n${this.stdout}`);
      return m?.[1] ?? '';
    };
    const pageUrl = pick(/approval page:\s+(\S+)/);
    return {
      psqlUrl: pick(/psql "(postgres:\/\/[^"]+)"/),
      pageUrl,
      api: pageUrl.replace(/\/$/, ''),
      token: pick(/reviewer token:\s+(\S+)/),
      rulesDir: pick(/rules:\s+(\S+)/),
      auditDir: pick(/audit log:\s+(\/\S+)/, true),
      queries: [...this.stdout.matchAll(/^ {7}(\S.*;)$/gm)].map((m) => m[1]!),
    };
  }

  signal(sig: NodeJS.Signals): void {
    this.child.kill(sig);
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => {});
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

beforeAll(async () => {
  // `npm test` builds dist first; a bare `vitest run` may find the demo missing.
  if (!existsSync(path.join(ROOT, 'dist/src/demo/demo.js'))) await runOk('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, timeoutMs: 120_000 });
}, 150_000);

describe('pgwarden demo', () => {
  let demo: Demo;
  let p: Printed;

  beforeAll(async () => {
    const started = Date.now();
    demo = new Demo(['--listen', '127.0.0.1:0', '--approval-listen', '127.0.0.1:0']);
    p = await demo.printed();
    // Start-up time (PGlite's WebAssembly dominates it), for the report.
    console.info(`pgwarden demo ready in ${Date.now() - started} ms`);
  }, 90_000);

  afterAll(() => demo?.kill());

  it('prints the connection string, the page with a reviewer token, and three statements to try', () => {
    expect(p.psqlUrl).toMatch(/^postgres:\/\/postgres@127\.0\.0\.1:\d+\/postgres$/);
    expect(p.pageUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(p.token).toMatch(/^pgwr_[A-Za-z0-9_-]{40,}$/);
    expect(p.queries.slice(0, 3)).toEqual([
      expect.stringMatching(/^SELECT .*email.* FROM customers/),
      expect.stringMatching(/^CREATE INDEX /),
      expect.stringMatching(/^DELETE FROM customers /),
    ]);
    expect(demo.stderr).toBe('');
  });

  it('masks customers PII in the first example; other columns come back as stored', async () => {
    const rows = await withClient(p.psqlUrl, async (c) => (await c.query(p.queries[0]!)).rows);
    expect(rows).toHaveLength(3);
    expect(rows[0]).toMatchObject({ name: 'Alice Martin', email: 'a***@example.com', phone: '***0143', ssn: '***', city: 'Boston' });
    expect(rows[0].card_number).toMatch(/^[0-9a-f]{32}$/);
    // The hash is deterministic: Alice and Gustavo share the test card 4111 1111 1111 1111.
    const cards = await withClient(p.psqlUrl, async (c) => (await c.query("SELECT card_number FROM customers WHERE name IN ('Alice Martin', 'Gustavo Reyes')")).rows);
    expect(cards[0].card_number).toBe(cards[1].card_number);
  });

  it('holds the second example with a NOTICE until it is approved through the API with the printed token', async () => {
    const client = await agent(p.psqlUrl);
    try {
      const running = client.query(p.queries[1]!);
      const id = await heldId(client); // the NOTICE psql prints: "statement held for review (request <id>)"
      const pending = await callApi(p.api, p.token, 'GET', '/api/requests?status=pending');
      expect(pending.status).toBe(200);
      expect(pending.json.requests.map((r: { id: string }) => r.id)).toContain(id);
      const approved = await callApi(p.api, p.token, 'POST', `/api/requests/${id}/approve`, { reason: 'demo test' });
      expect(approved.status).toBe(200);
      const result = await running;
      expect(result.command).toBe('CREATE');
      const idx = await client.query("SELECT indexname FROM pg_indexes WHERE tablename = 'orders' AND indexname = 'orders_status_idx'");
      expect(idx.rows).toHaveLength(1);
    } finally {
      await client.end().catch(() => undefined);
    }
  });

  it('refuses the third example with 42501 naming the rule', async () => {
    const err = await withClient(p.psqlUrl, (c) => c.query(p.queries[2]!).then(() => null, (e: pg.DatabaseError) => e));
    expect(err).toMatchObject({ code: '42501', severity: 'ERROR' });
    expect(err!.message).toContain('customers-read-only');
    const still = await withClient(p.psqlUrl, async (c) => (await c.query('SELECT count(*)::int AS n FROM customers')).rows[0].n);
    expect(still).toBe(12);
  });

  it('shows the decisions in the audit log with the printed audit tail command', async () => {
    const r = await run(process.execPath, [CLI, 'audit', 'tail', '--no-follow', '-n', '50', '--audit-journal', p.auditDir], { cwd: ROOT, env: demoEnv(), timeoutMs: 30_000 });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/statement\.denied .*rule=customers-read-only sqlstate=42501/);
    expect(r.stdout).toMatch(/statement\.held /);
    expect(r.stdout).toMatch(/approval\.approved /);
    expect(r.stdout).toMatch(/statement\.masked /);
  });

  it('stops cleanly on Ctrl-C, even with a statement held: exit 0, no error output, its directory removed', async () => {
    const client = await agent(p.psqlUrl);
    const held = client.query('COPY customers TO STDOUT').then(() => null, (e: pg.DatabaseError) => e);
    await heldId(client);
    const t0 = Date.now();
    demo.signal('SIGINT');
    const exit = await demo.exited;
    const stopMs = Date.now() - t0;
    console.info(`pgwarden demo stopped in ${stopMs} ms`);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(stopMs).toBeLessThan(8000);
    expect(demo.stdout).toContain('demo stopped');
    expect(demo.stderr).toBe('');
    expect((await held)?.code).toBe('57P01');
    expect(existsSync(p.rulesDir)).toBe(false);
  });
});

describe('pgwarden demo: start-up problems', () => {
  it('names a port already in use and exits 1, without a stack trace', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const r = await run(process.execPath, [CLI, 'demo', '--listen', `127.0.0.1:${port}`, '--approval-listen', '127.0.0.1:0'], { cwd: ROOT, env: demoEnv(), timeoutMs: 60_000 });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`127.0.0.1:${port}`);
      expect(r.stderr).toContain('--listen');
      expect(r.stderr).not.toMatch(/\n\s+at /);
    } finally {
      blocker.close();
    }
  }, 60_000);

  it('rejects a malformed address with exit 2 before starting anything', async () => {
    for (const flag of ['--listen', '--db-listen']) {
      const r = await run(process.execPath, [CLI, 'demo', flag, 'localhost'], { cwd: ROOT, env: demoEnv(), timeoutMs: 30_000 });
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`${flag}: expected host:port`);
      expect(r.stdout).not.toContain('starting the embedded PostgreSQL');
    }
  });

  it('rejects an unknown option with exit 2 and the usage', async () => {
    const r = await run(process.execPath, [CLI, 'demo', '--bogus'], { cwd: ROOT, env: demoEnv(), timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Usage: pgwarden demo');
  });
});

describe('pgwarden demo with REDIS_URL', () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startTestRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('writes the audit log to the Redis stream it prints, readable with the printed key', async () => {
    const demo = new Demo(['--listen', '127.0.0.1:0', '--approval-listen', '127.0.0.1:0'], demoEnv({ REDIS_URL: redis.url }));
    try {
      const p = await demo.printed();
      expect(demo.stdout).toMatch(/audit log:\s+Redis stream pgwarden-demo:audit/);
      const err = await withClient(p.psqlUrl, (c) => c.query(p.queries[2]!).then(() => null, (e: pg.DatabaseError) => e));
      expect(err?.code).toBe('42501');
      const keyFile = /\$\(cat (\S+audit\.key)\)/.exec(demo.stdout)![1]!;
      const key = readFileSync(keyFile, 'utf8').trim();
      const r = await run(process.execPath, [CLI, 'audit', 'tail', '--no-follow', '--redis', redis.url, '--audit-stream', 'pgwarden-demo:audit'], {
        cwd: ROOT,
        env: demoEnv({ PGWARDEN_AUDIT_KEY: key }),
        timeoutMs: 30_000,
      });
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/statement\.denied .*rule=customers-read-only/);
      demo.signal('SIGTERM');
      expect(await demo.exited).toEqual({ code: 0, signal: null });
      expect(demo.stderr).toBe('');
    } finally {
      demo.kill();
    }
  }, 90_000);
});
