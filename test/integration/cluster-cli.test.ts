import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { serialize } from 'pg-protocol/dist/serializer.js';
import { UPSTREAM_URL, directClient } from '../helpers/proxy.js';

/**
 * The built CLI as an operator runs it: `pgwarden start` with two worker processes (node:cluster).
 * What is checked is what an operator and an application see: the ready log line, connections
 * spread over the workers, cancel working whichever worker the CancelRequest lands on, graceful
 * SIGTERM, and exit code 2 with a readable message for bad options.
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(ROOT, 'dist/src/cli.js');

interface LogLine {
  level?: number;
  msg?: string;
  event?: string;
  listen?: string;
  worker?: number;
  client?: string;
  [key: string]: unknown;
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Each CLI process of this file records its audit entries here (the embedded journal). */
const AUDIT_JOURNAL = mkdtempSync(path.join(tmpdir(), 'pgw-cluster-audit-'));

/**
 * The environment of the test run without PGWARDEN_* settings that would change the CLI's config,
 * and with the audit journal in a scratch directory rather than the repository.
 */
function cliEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('PGWARDEN_')) env[k] = v;
  }
  env.PGWARDEN_AUDIT_JOURNAL = AUDIT_JOURNAL;
  return env;
}

class CliProcess {
  readonly logs: LogLine[] = [];
  stderr = '';
  readonly exited: Promise<Exit>;
  exit: Exit | null = null;
  private stdoutRest = '';
  private listeners: Array<() => void> = [];

  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (text: string) => this.onStdout(text));
    child.stderr?.on('data', (text: string) => {
      this.stderr += text;
    });
    // 'close', not 'exit': it comes after stdout and stderr are fully read.
    this.exited = new Promise((resolve) =>
      child.on('close', (code, signal) => {
        this.exit = { code, signal };
        this.notify();
        resolve({ code, signal });
      }),
    );
  }

  static start(args: string[]): CliProcess {
    return new CliProcess(spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: cliEnv(), stdio: ['ignore', 'pipe', 'pipe'] }));
  }

  /** Everything the process printed on stdout. */
  stdout = '';

  private onStdout(text: string): void {
    this.stdout += text;
    const lines = (this.stdoutRest + text).split('\n');
    this.stdoutRest = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      try {
        this.logs.push(JSON.parse(line) as LogLine);
      } catch {
        this.logs.push({ msg: line });
      }
    }
    this.notify();
  }

  private notify(): void {
    const l = this.listeners;
    this.listeners = [];
    for (const f of l) f();
  }

  /** Resolves with the first log line matching `pred`, waiting up to `ms`. */
  async waitForLog(pred: (l: LogLine) => boolean, ms: number, what: string): Promise<LogLine> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.logs.find(pred);
      if (found) return found;
      if (this.exit) throw new Error(`pgwarden exited (${JSON.stringify(this.exit)}) before logging ${what}; stderr: ${this.stderr}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.listeners.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async waitForExit(ms: number): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`pgwarden did not exit within ${ms} ms`)), ms);
    });
    return Promise.race([this.exited, timeout]).finally(() => clearTimeout(timer));
  }

  /** Stops the process if a test left it running: SIGTERM, then SIGKILL. */
  async stop(): Promise<void> {
    if (this.exit) return;
    this.child.kill('SIGTERM');
    try {
      await this.waitForExit(5000);
    } catch {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }
}

/** Starts `pgwarden start` with two workers on an ephemeral port; resolves once it logs ready. */
async function startCluster(): Promise<{ cli: CliProcess; port: number }> {
  const cli = CliProcess.start([
    'start',
    '--listen',
    '127.0.0.1:0',
    '--workers',
    '2',
    '--upstream',
    UPSTREAM_URL,
    '--upstream-sslmode',
    'disable',
    '--log-level',
    'info',
  ]);
  const ready = await cli.waitForLog((l) => l.event === 'ready', 20_000, 'the ready line');
  const port = Number(String(ready.listen).split(':').pop());
  if (!Number.isInteger(port) || port <= 0) throw new Error(`ready line without a port: ${JSON.stringify(ready)}`);
  return { cli, port };
}

interface BackendKey {
  processID: number;
  secretKey: number;
}

function backendKeyOf(client: pg.Client): BackendKey {
  const { processID, secretKey } = client as unknown as Partial<BackendKey>;
  if (typeof processID !== 'number' || typeof secretKey !== 'number') throw new Error('client has no BackendKeyData');
  return { processID, secretKey };
}

/** The worker that owns a session, from the process id pgwarden issued (bits 24..30). */
function workerOf(client: pg.Client): number {
  return (backendKeyOf(client).processID >>> 24) & 0x7f;
}

/** Sends a CancelRequest on a new connection; resolves with the local port once the proxy closes it. */
function sendCancelRequest(port: number, key: BackendKey): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let localPort = 0;
    socket.on('connect', () => {
      localPort = socket.localPort ?? 0;
      socket.write(serialize.cancel(key.processID, key.secretKey));
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(localPort));
  });
}

async function waitUntilRunning(sql: string): Promise<void> {
  const admin = directClient('postgres');
  await admin.connect();
  try {
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      const r = await admin.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query = $1", [sql]);
      if (r.rows[0]?.n === 1) return;
      await new Promise((res) => setTimeout(res, 20));
    }
    throw new Error(`statement never started: ${sql}`);
  } finally {
    await admin.end();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function errorOf(p: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await p;
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected the promise to reject');
}

describe('pgwarden CLI with two workers', () => {
  // Clients connect as user postgres explicitly: with $USER unset pg would send no user at all.
  const url = (port: number): string => `postgres://postgres@127.0.0.1:${port}/postgres`;
  const clients: pg.Client[] = [];
  const processes: CliProcess[] = [];

  async function connect(port: number): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: url(port) });
    c.on('error', () => {
      // Sessions ended by a shutdown report it here; the tests assert on query results instead.
    });
    clients.push(c);
    await c.connect();
    return c;
  }

  beforeAll(() => {
    if (!existsSync(CLI)) execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'pipe' });
  }, 120_000);

  afterAll(async () => {
    await Promise.all(clients.splice(0).map((c) => c.end().catch(() => undefined)));
    await Promise.all(processes.map((p) => p.stop()));
  });

  describe('serving', () => {
    let cli: CliProcess;
    let port: number;

    beforeAll(async () => {
      ({ cli, port } = await startCluster());
      processes.push(cli);
    });

    it('logs a JSON ready line with the bound port and the worker count', async () => {
      const ready = await cli.waitForLog((l) => l.event === 'ready', 1000, 'the ready line');
      expect(ready.listen).toBe(`127.0.0.1:${port}`);
      expect(ready.workers).toBe(2);
      expect(port).toBeGreaterThan(0);
    });

    it('answers queries on many connections spread over both workers', async () => {
      const sessions: pg.Client[] = [];
      for (let i = 0; i < 12; i++) sessions.push(await connect(port));
      const workers = new Set<number>();
      await Promise.all(
        sessions.map(async (c, i) => {
          for (let n = 0; n < 5; n++) {
            const r = await c.query<{ v: number }>('SELECT $1::int * 10 + $2::int AS v', [i, n]);
            expect(r.rows).toEqual([{ v: i * 10 + n }]);
          }
          workers.add(workerOf(c));
        }),
      );
      expect([...workers].sort()).toEqual([0, 1]);
      const backendPids = await Promise.all(sessions.map(async (c) => (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid));
      expect(new Set(backendPids).size).toBe(12);
      await Promise.all(sessions.map((c) => c.end()));
    });

    it('reloads the rules in every worker on SIGHUP sent to the process the operator started', async () => {
      cli.child.kill('SIGHUP');
      for (const worker of [0, 1]) {
        // The files did not change, so each worker re-reads them and says so.
        await cli.waitForLog((l) => l.event === 'rules-unchanged' && l.trigger === 'SIGHUP' && l.worker === worker, 10_000, `worker ${worker} re-reading its rules on SIGHUP`);
      }
      expect(cli.exit).toBeNull();
      const c = await connect(port);
      expect((await c.query<{ v: number }>('SELECT 1 AS v')).rows).toEqual([{ v: 1 }]);
      await c.end();
    });

    it('cancels pg_sleep(10) whichever worker the CancelRequest lands on', async () => {
      // One session on each worker.
      const byWorker = new Map<number, pg.Client>();
      for (let i = 0; i < 10 && byWorker.size < 2; i++) {
        const c = await connect(port);
        const w = workerOf(c);
        if (byWorker.has(w)) await c.end();
        else byWorker.set(w, c);
      }
      expect([...byWorker.keys()].sort()).toEqual([0, 1]);

      let crossWorker = 0;
      let sameWorker = 0;
      // The primary hands connections to the workers round-robin, so the next cancel connection
      // most likely lands on the other worker than the last one did: pick the owner accordingly,
      // first to get cancels that must be relayed between workers, then one that stays local.
      let lastLanding = 0;
      for (let attempt = 0; attempt < 8 && (crossWorker < 2 || sameWorker < 1); attempt++) {
        const owner = crossWorker < 2 ? lastLanding : 1 - lastLanding;
        const c = byWorker.get(owner)!;
        const sql = `SELECT pg_sleep(10) /* cancel attempt ${attempt} */`;
        const sleeping = errorOf(c.query(sql));
        await waitUntilRunning(sql);
        const sentAt = Date.now();
        const localPort = await sendCancelRequest(port, backendKeyOf(c));
        const err = await withTimeout(sleeping, 3000, `the cancel of attempt ${attempt}`);
        expect(err.code).toBe('57014');
        expect(Date.now() - sentAt).toBeLessThan(2000);
        // The worker that accepted the cancel connection logs it with our local port.
        const line = await cli.waitForLog(
          (l) => l.msg === 'client disconnected' && typeof l.client === 'string' && l.client.endsWith(`:${localPort}`),
          2000,
          'the log line of the cancel connection',
        );
        expect([0, 1]).toContain(line.worker);
        lastLanding = line.worker ?? 0;
        if (line.worker === owner) sameWorker++;
        else crossWorker++;
        // The cancelled session is still usable.
        const r = await c.query<{ ok: number }>('SELECT $1::int AS ok', [attempt]);
        expect(r.rows).toEqual([{ ok: attempt }]);
      }
      expect(crossWorker).toBeGreaterThanOrEqual(1);
      expect(sameWorker).toBeGreaterThanOrEqual(1);
    });
  });

  describe('shutdown', () => {
    it('lets a running statement finish on SIGTERM, refuses new connections, then exits 0', async () => {
      const { cli, port } = await startCluster();
      processes.push(cli);
      const c = await connect(port);
      const terminated = new Promise<Error & { code?: string }>((resolve) => c.once('error', resolve));
      const sql = "SELECT 'finished' AS outcome FROM pg_sleep(1.5) /* sigterm */";
      const running = c.query<{ outcome: string }>(sql);
      await waitUntilRunning(sql);
      cli.child.kill('SIGTERM');
      await cli.waitForLog((l) => l.signal === 'SIGTERM', 2000, 'the shutdown log line');
      await new Promise((r) => setTimeout(r, 300));

      const late = new pg.Client({ connectionString: url(port), connectionTimeoutMillis: 2000 });
      late.on('error', () => {});
      const refused = await errorOf(late.connect());
      await late.end().catch(() => undefined);
      // Refused outright once every worker stopped listening, or told so by a draining worker.
      expect(['ECONNREFUSED', '57P03']).toContain(refused.code);
      expect(cli.exit).toBeNull();

      const r = await running;
      expect(r.rows).toEqual([{ outcome: 'finished' }]);
      // Once idle, the session is closed with the shutdown error an application can recognise.
      expect((await terminated).code).toBe('57P01');

      const exit = await cli.waitForExit(10_000);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(cli.logs.some((l) => l.msg === 'shutdown complete')).toBe(true);

      // Every worker recorded into its own chain, flushed before exiting; the chains verify.
      const verify = CliProcess.start(['audit', 'verify', '--audit-journal', AUDIT_JOURNAL]);
      expect(await verify.waitForExit(10_000)).toEqual({ code: 0, signal: null });
      expect(verify.stdout).toMatch(/chain \S+\/w0@\S+: seq 1\.\./);
      expect(verify.stdout).toMatch(/chain \S+\/w1@\S+: seq 1\.\./);
      expect(verify.stdout).toContain('OK: every chain is intact');
      const exported = CliProcess.start(['audit', 'export', '--audit-journal', AUDIT_JOURNAL, '--format', 'jsonl']);
      expect(await exported.waitForExit(10_000)).toEqual({ code: 0, signal: null });
      const entries = exported.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; seq: number; decisionSeq?: number; chain: string; statements?: { text: string }[] });
      const decision = entries.find((e) => e.type === 'statement.allowed' && e.statements?.[0]?.text.includes('AS outcome'));
      expect(decision?.statements?.[0]?.text).toBe('SELECT $1 AS outcome FROM pg_sleep($2)');
      expect(entries.some((e) => e.type === 'statement.executed' && e.chain === decision!.chain && e.decisionSeq === decision!.seq)).toBe(true);
    });
  });

  describe('command line errors', () => {
    it('exits 2 with a message for an unknown option', async () => {
      const cli = CliProcess.start(['start', '--bogus']);
      processes.push(cli);
      const exit = await cli.waitForExit(10_000);
      expect(exit.code).toBe(2);
      expect(cli.stderr).toMatch(/bogus/);
    });

    it('exits 2 listing every invalid setting', async () => {
      const cli = CliProcess.start(['start', '--listen', '127.0.0.1:0', '--upstream-sslmode', 'nope', '--workers', '0']);
      processes.push(cli);
      const exit = await cli.waitForExit(10_000);
      expect(exit.code).toBe(2);
      expect(cli.stderr).toMatch(/invalid configuration/);
      expect(cli.stderr).toMatch(/upstream\.sslmode/);
      expect(cli.stderr).toMatch(/workers/);
      expect(cli.logs.some((l) => l.event === 'ready')).toBe(false);
    });

    it('exits 2 before starting anything when settings contradict each other (Redis without the audit key, an open page without TLS)', async () => {
      const cli = CliProcess.start(['start', '--listen', '127.0.0.1:0', '--redis', 'redis://127.0.0.1:1', '--approval-listen', '0.0.0.0:0']);
      processes.push(cli);
      const exit = await cli.waitForExit(10_000);
      expect(exit.code).toBe(2);
      expect(cli.stderr).toContain('cannot start');
      expect(cli.stderr).toContain('audit.hmacKey: the audit key is required when audit entries go to Redis');
      expect(cli.stderr).toContain('approval.listen: refusing to serve the approval page on 0.0.0.0:0 without TLS');
      expect(cli.logs.some((l) => l.event === 'ready')).toBe(false);
    });

    it('exits 2 before starting workers when the rules do not validate', async () => {
      const rules = mkdtempSync(path.join(tmpdir(), 'pgw-cluster-bad-rules-'));
      writeFileSync(path.join(rules, 'policy.yaml'), 'policy:\n  default: maybe\n');
      const cli = CliProcess.start(['start', '--listen', '127.0.0.1:0', '--workers', '2', '--rules', rules]);
      processes.push(cli);
      const exit = await cli.waitForExit(10_000);
      expect(exit.code).toBe(2);
      expect(cli.stderr).toMatch(/cannot start:\n {2}rulesDir: policy\.yaml: policy\.default: /);
      expect(cli.logs.some((l) => l.event === 'rules-loaded')).toBe(false);
    });

    it('stops with exit 1, instead of restarting workers in a loop, when a worker cannot start (port taken)', async () => {
      const taken = net.createServer();
      await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
      const port = (taken.address() as net.AddressInfo).port;
      try {
        const cli = CliProcess.start(['start', '--listen', `127.0.0.1:${port}`, '--workers', '2', '--upstream', UPSTREAM_URL]);
        processes.push(cli);
        const exit = await cli.waitForExit(10_000);
        expect(exit.code).toBe(1);
        expect(cli.logs.filter((l) => l.msg === 'a worker failed to start; stopping (see its log lines above)')).toHaveLength(1);
        expect(cli.logs.some((l) => l.msg === 'worker exited unexpectedly; starting a new one')).toBe(false);
      } finally {
        taken.close();
      }
    });

    it('exits 2 when a numeric option is not a number', async () => {
      const cli = CliProcess.start(['start', '--listen', '127.0.0.1:0', '--workers', 'two']);
      processes.push(cli);
      const exit = await cli.waitForExit(10_000);
      expect(exit.code).toBe(2);
      expect(cli.stderr).toMatch(/--workers/);
    });

    it('exits 2 for an unknown command', async () => {
      const cli = CliProcess.start(['launch']);
      processes.push(cli);
      const exit = await cli.waitForExit(10_000);
      expect(exit.code).toBe(2);
      expect(cli.stderr).toMatch(/unknown command "launch"/);
    });
  });
});
