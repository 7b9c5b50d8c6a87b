/**
 * `npm run bench:approval` (part of `npm run bench`): how fast approvals move, and what held
 * statements cost everybody else.
 *
 * One pgwarden instance runs in this process (`startInstance`: proxy, approval gate, review
 * server and audit to Redis, i.e. `workers: 1`), against the machine's PostgreSQL and Redis.
 * Held statements are `INSERT INTO bench_approval_<pid> ...`, matched by a review rule with
 * `grants: false` (no grant can short-circuit a later one). The agent is a raw protocol socket,
 * so the first byte of the result is seen as it arrives; the reviewer is an authenticated
 * WebSocket (the page's feed) plus plain HTTP requests to the REST API.
 *
 * 1. Click → first byte: per request, the time from just before `POST /api/requests/:id/approve`
 *    is sent until the first byte of the statement's result reaches the agent.
 * 2. Hold → visible on the WebSocket: from the agent writing the statement until the WebSocket
 *    receives `{"type":"request"}` with state `pending` for it.
 * 3. pgbench -S -M prepared through the proxy with no holds, and with BENCH_HOLDS agent
 *    connections each holding a statement (nobody decides), in alternating rounds; then the
 *    holders hang up and every request must end `withdrawn`. Each held statement keeps an upstream
 *    connection (session mode): when max_connections leaves no room for BENCH_HOLDS plus pgbench,
 *    it holds as many as fit and says so.
 *
 * Environment: BENCH_APPROVALS (200), BENCH_SECONDS (10), BENCH_ROUNDS (3), BENCH_CLIENTS (8),
 * BENCH_HOLDS (100), BENCH_REDIS_URL (redis://127.0.0.1:6379), PGWARDEN_BENCH_UPSTREAM
 * (postgres://127.0.0.1:5432). Uses the database pgwarden_bench (created, with pgbench tables at
 * scale 10, when missing). Prints PASS/MISS per target and exits 0 either way.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import pg from 'pg';
import WebSocket from 'ws';
import { hashReviewerToken } from '../src/approval/reviewer-auth.js';
import { configSchema } from '../src/config/schema.js';
import { silentLogger } from '../src/logger.js';
import { startInstance, type RunningInstance } from '../src/server/run.js';
import { median, parseTps, pgbench, run } from './bench-lib.js';

const APPROVALS = Number(process.env.BENCH_APPROVALS ?? 200);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 8);
const HOLDS = Number(process.env.BENCH_HOLDS ?? 100);
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const upstream = new URL(process.env.PGWARDEN_BENCH_UPSTREAM ?? 'postgres://127.0.0.1:5432');
const UP_HOST = upstream.hostname;
const UP_PORT = Number(upstream.port || 5432);
const DB = 'pgwarden_bench';
const TABLE = `bench_approval_${process.pid}`;
/** Every Redis key of this run starts with this (approval records and the audit stream). */
const KEY_BASE = `pgwarden-bench:approval:${process.pid}-${randomBytes(4).toString('hex')}`;
const PREFIX = `${KEY_BASE}:approvals`;
const STREAM = `${KEY_BASE}:audit`;
const AUDIT_KEY = 'bench-approval-key-0123456789-0123456789';
const REVIEWER_TOKEN = `pgwr_bench_${randomBytes(16).toString('hex')}`;
const HOLDER_APP = 'pgw-bench-holder';
const AGENT_APP = 'pgw-bench-agent';
/** Unmeasured round trips first (JIT, keep-alive connection, Redis scripts loaded). */
const WARMUP = 10;
const TARGET_MS = 20;
const TARGET_RATIO = 0.95;

const RULES = `
policy:
  default: allow
  unanalysable: review
  fastpath: deny
  rules:
    - name: bench-approval
      description: writes to the approval bench table wait for a reviewer
      match: { relations: [${TABLE}], kind: [write] }
      action: review
      review: { grants: false, timeout_seconds: 3600 }
`;

// ---------------------------------------------------------------- raw protocol agent

interface Msg {
  type: string;
  body: Buffer;
  /** performance.now() when the chunk carrying it arrived. */
  at: number;
}

function fields(body: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const code = String.fromCharCode(body[i]!);
    const end = body.indexOf(0, i + 1);
    out.set(code, body.toString('utf8', i + 1, end));
    i = end + 1;
  }
  return out;
}

function errorText(m: Msg): string {
  const f = fields(m.body);
  return `${f.get('C') ?? '?'}: ${f.get('M') ?? '?'}${f.get('D') ? ` (${f.get('D')})` : ''}`;
}

/**
 * A PostgreSQL client speaking the simple query protocol on a plain socket: the only way to see
 * the first byte of a result rather than the resolution of a driver's promise.
 */
class RawAgent {
  private buf: Buffer = Buffer.alloc(0);
  private readonly queue: Msg[] = [];
  private wake: (() => void) | null = null;
  private ended: Error | null = null;
  private armed = false;
  /** performance.now() of the first chunk after arm(). */
  firstByteAt: number | null = null;

  private constructor(readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.end(err));
    socket.on('close', () => this.end(new Error('connection closed')));
  }

  static async connect(port: number, app: string): Promise<RawAgent> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const agent = new RawAgent(socket);
    const params = Buffer.from(`user\0postgres\0database\0${DB}\0application_name\0${app}\0\0`);
    const head = Buffer.alloc(8);
    head.writeInt32BE(8 + params.length, 0);
    head.writeInt32BE(196608, 4);
    socket.write(Buffer.concat([head, params]));
    for (;;) {
      const m = await agent.take(['R', 'Z'], 10_000);
      if (m.type === 'Z') return agent;
      if (m.body.readInt32BE(0) !== 0) throw new Error(`the bench expects trust authentication (got request ${m.body.readInt32BE(0)})`);
    }
  }

  private onData(chunk: Buffer): void {
    const at = performance.now();
    if (this.armed && this.firstByteAt === null) this.firstByteAt = at;
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    while (this.buf.length >= 5) {
      const len = this.buf.readInt32BE(1);
      if (this.buf.length < 1 + len) break;
      this.queue.push({ type: String.fromCharCode(this.buf[0]!), body: this.buf.subarray(5, 1 + len), at });
      this.buf = this.buf.subarray(1 + len);
    }
    this.wake?.();
  }

  private end(err: Error): void {
    this.ended ??= err;
    this.wake?.();
  }

  /** The next message of one of `types`, skipping others; an ErrorResponse throws unless asked for. */
  async take(types: string[], timeoutMs: number): Promise<Msg> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      while (this.queue.length) {
        const m = this.queue.shift()!;
        if (types.includes(m.type)) return m;
        if (m.type === 'E') throw new Error(`server error: ${errorText(m)}`);
      }
      if (this.ended) throw this.ended;
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no ${types.join('/')} message within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          this.wake = null;
          resolve();
        };
      });
    }
  }

  /** Sends a simple Query; returns performance.now() just before the write. */
  query(sql: string): number {
    const text = Buffer.from(`${sql}\0`);
    const msg = Buffer.alloc(5 + text.length);
    msg.write('Q', 0);
    msg.writeInt32BE(4 + text.length, 1);
    text.copy(msg, 5);
    const at = performance.now();
    this.socket.write(msg);
    return at;
  }

  /** Waits for pgwarden's hold notice; returns the request id and when the notice arrived. */
  async held(timeoutMs = 10_000): Promise<{ id: string; at: number }> {
    for (;;) {
      const m = await this.take(['N'], timeoutMs);
      const id = /statement held for review \(request ([0-9a-f]{16})\)/.exec(fields(m.body).get('M') ?? '')?.[1];
      if (id) return { id, at: m.at };
    }
  }

  /** Records the arrival of the next chunk from now on. */
  arm(): void {
    this.firstByteAt = null;
    this.armed = true;
  }

  /** Reads the result up to ReadyForQuery; returns the command tag. */
  async result(timeoutMs = 10_000): Promise<string> {
    const c = await this.take(['C'], timeoutMs);
    await this.take(['Z'], timeoutMs);
    this.armed = false;
    return c.body.toString('utf8', 0, c.body.length - 1);
  }

  close(): void {
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------- reviewer: WebSocket and REST

/** The approval page's live feed, as a reviewer's browser holds it. */
class Feed {
  private readonly seen = new Map<string, number>();
  private readonly waiting = new Map<string, () => void>();

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const at = performance.now();
      const msg = JSON.parse(data.toString()) as { type: string; request?: { id: string; state: string } };
      if (msg.type !== 'request' || !msg.request) return;
      const key = `${msg.request.id}/${msg.request.state}`;
      if (!this.seen.has(key)) this.seen.set(key, at);
      this.waiting.get(key)?.();
    });
  }

  static async open(api: string, token: string): Promise<Feed> {
    const ws = new WebSocket(`${api.replace(/^http/, 'ws')}/ws`);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const feed = new Feed(ws);
    const ready = new Promise<void>((resolve, reject) => {
      const types = new Set<string>();
      const onMessage = (data: WebSocket.RawData) => {
        types.add((JSON.parse(data.toString()) as { type: string }).type);
        if (types.has('hello') && types.has('snapshot')) {
          ws.off('message', onMessage);
          resolve();
        }
      };
      ws.on('message', onMessage);
      ws.once('close', (code) => reject(new Error(`WebSocket closed (${code}) before hello and snapshot`)));
    });
    ws.send(JSON.stringify({ type: 'auth', token }));
    await ready;
    return feed;
  }

  /** When `request` with `state` was pushed (waits up to timeoutMs); null when it never came. */
  async when(id: string, state: string, timeoutMs: number): Promise<number | null> {
    const key = `${id}/${state}`;
    if (!this.seen.has(key)) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, timeoutMs);
        this.waiting.set(key, () => {
          clearTimeout(t);
          resolve();
        });
      });
      this.waiting.delete(key);
    }
    return this.seen.get(key) ?? null;
  }

  forget(id: string): void {
    for (const key of this.seen.keys()) if (key.startsWith(`${id}/`)) this.seen.delete(key);
  }

  close(): void {
    this.ws.terminate();
  }
}

const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 4 });

function api(base: string, method: 'GET' | 'POST', route: string, body?: unknown): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      `${base}${route}`,
      {
        method,
        agent: keepAlive,
        headers: {
          authorization: `Bearer ${REVIEWER_TOKEN}`,
          ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown = text;
          try {
            json = JSON.parse(text);
          } catch {
            // not JSON: keep the text
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

// ---------------------------------------------------------------- statistics and output

/** Nearest-rank percentile. */
function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

const ms = (x: number) => x.toFixed(2);
const verdict = (ok: boolean) => (ok ? 'PASS' : 'MISS');
const out = (line = '') => process.stdout.write(`${line}\n`);

function row(name: string, xs: number[]): string {
  return `| ${name} | ${xs.length} | ${ms(median(xs))} | ${ms(pct(xs, 90))} | ${ms(pct(xs, 99))} | ${ms(Math.max(...xs))} |`;
}

// ---------------------------------------------------------------- setup

async function psql(sql: string, db = 'postgres'): Promise<string> {
  const { stdout } = await run('psql', ['-h', UP_HOST, '-p', String(UP_PORT), '-U', 'postgres', '-d', db, '-Atqc', sql]);
  return stdout.trim();
}

/** pgwarden_bench with pgbench tables (scale 10), as the other benchmarks leave it; created when missing. */
async function ensureDatabase(): Promise<void> {
  if ((await psql(`SELECT 1 FROM pg_database WHERE datname = '${DB}'`)) !== '1') {
    out(`(creating database ${DB})`);
    await psql(`CREATE DATABASE ${DB}`);
  }
  if ((await psql(`SELECT to_regclass('public.pgbench_accounts') IS NOT NULL`, DB)) !== 't') {
    out(`(initialising pgbench tables in ${DB}, scale 10)`);
    await run('pgbench', ['-h', UP_HOST, '-p', String(UP_PORT), '-U', 'postgres', '-i', '-q', '-s', '10', DB]);
  }
}

async function startPgwarden(dir: string): Promise<RunningInstance & { api: string; port: number }> {
  const rulesDir = path.join(dir, 'rules');
  mkdirSync(rulesDir);
  writeFileSync(path.join(rulesDir, 'policy.yaml'), RULES);
  const config = configSchema.parse({
    listen: '127.0.0.1:0',
    upstream: { url: `postgres://${UP_HOST}:${UP_PORT}`, sslmode: 'disable' },
    workers: 1,
    logLevel: 'silent',
    rulesDir,
    redisUrl: REDIS_URL,
    audit: { enabled: true, stream: STREAM, journalDir: path.join(dir, 'journal'), hmacKey: AUDIT_KEY, instanceId: 'bench' },
    approval: {
      listen: '127.0.0.1:0',
      redisPrefix: PREFIX,
      timeoutSeconds: 3600,
      maxPendingPerUser: 10_000,
      reviewers: [{ name: 'bench-reviewer', tokenHash: hashReviewerToken(REVIEWER_TOKEN), groups: [], actsAs: [] }],
    },
  });
  const inst = await startInstance(config, silentLogger);
  if (!inst.review) throw new Error('the approval server did not start (Redis?)');
  return Object.assign(inst, { api: inst.review.url.replace(/\/$/, ''), port: inst.proxy.port });
}

// ---------------------------------------------------------------- 1 + 2: latency

interface Latencies {
  clickToFirstByte: number[];
  clickToHttp: number[];
  writeToWs: number[];
  writeToNotice: number[];
  missingWs: number;
}

async function latency(pgw: { api: string; port: number }, feed: Feed, admin: pg.Client): Promise<Latencies> {
  const agent = await RawAgent.connect(pgw.port, AGENT_APP);
  const r: Latencies = { clickToFirstByte: [], clickToHttp: [], writeToWs: [], writeToNotice: [], missingWs: 0 };
  try {
    for (let i = 0; i < WARMUP + APPROVALS; i++) {
      const measured = i >= WARMUP;
      const written = agent.query(`INSERT INTO ${TABLE} (id) VALUES (${i})`);
      const notice = await agent.held();
      const pushed = await feed.when(notice.id, 'pending', 5000);
      // Click: the reviewer approves what the page shows.
      agent.arm();
      const click = performance.now();
      const answer = api(pgw.api, 'POST', `/api/requests/${notice.id}/approve`, { reason: 'bench' }).then((a) => ({ ...a, at: performance.now() }));
      answer.catch(() => undefined); // awaited below; no unhandled rejection if the agent fails first
      const tag = await agent.result();
      const firstByte = agent.firstByteAt!;
      const res = await answer;
      if (res.status !== 200) throw new Error(`approve answered ${res.status}: ${JSON.stringify(res.json)}`);
      if (tag !== 'INSERT 0 1') throw new Error(`unexpected result ${tag}`);
      // Let the request settle (executing → done reaches the page) before the next one.
      await feed.when(notice.id, 'done', 2000);
      feed.forget(notice.id);
      if (!measured) continue;
      r.clickToFirstByte.push(firstByte - click);
      r.clickToHttp.push(res.at - click);
      r.writeToNotice.push(notice.at - written);
      if (pushed === null) r.missingWs++;
      else r.writeToWs.push(pushed - written);
    }
  } finally {
    agent.close();
  }
  const rows = Number((await admin.query(`SELECT count(*) AS n FROM ${TABLE}`)).rows[0].n);
  if (rows !== WARMUP + APPROVALS) throw new Error(`expected ${WARMUP + APPROVALS} rows in ${TABLE}, found ${rows}`);
  return r;
}

// ---------------------------------------------------------------- 3: held statements vs unrelated traffic

/** Connection slots the holders can use on the upstream, leaving room for pgbench and a margin. */
async function holdSlots(admin: pg.Client): Promise<{ holds: number; max: number; used: number }> {
  const q = await admin.query(
    `SELECT current_setting('max_connections')::int AS max,
            (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS used`,
  );
  const { max, used } = q.rows[0] as { max: number; used: number };
  // pgbench: CLIENTS connections (+1 while it starts); 2 spare for anything else on the machine.
  return { holds: Math.max(0, Math.min(HOLDS, max - used - CLIENTS - 3)), max, used };
}

async function holdMany(port: number, n: number): Promise<{ agents: RawAgent[]; ids: string[]; ms: number }> {
  const started = performance.now();
  const agents = await Promise.all(Array.from({ length: n }, () => RawAgent.connect(port, HOLDER_APP)));
  const ids = await Promise.all(
    agents.map(async (a, i) => {
      a.query(`INSERT INTO ${TABLE} (id) VALUES (${-1 - i})`);
      return (await a.held(30_000)).id;
    }),
  );
  return { agents, ids, ms: performance.now() - started };
}

async function until(what: string, fn: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Hangs up every holder and checks that each request ended `withdrawn` and its backend is gone. */
async function release(pgw: { api: string }, admin: pg.Client, held: { agents: RawAgent[]; ids: string[] }): Promise<number> {
  const started = performance.now();
  for (const a of held.agents) a.close();
  const left = new Set(held.ids);
  await until(
    'held requests to be withdrawn',
    async () => {
      for (const id of [...left]) {
        const r = await api(pgw.api, 'GET', `/api/requests/${id}`);
        if (r.status !== 200) throw new Error(`GET /api/requests/${id} answered ${r.status}`);
        if (r.json.state === 'withdrawn') left.delete(id);
        else if (r.json.state !== 'pending') throw new Error(`request ${id} ended ${r.json.state}, not withdrawn`);
      }
      return left.size === 0;
    },
    15_000,
  );
  const withdrawnMs = performance.now() - started;
  const pending = await api(pgw.api, 'GET', '/api/requests?status=pending');
  if (pending.json.requests.length !== 0) throw new Error(`${pending.json.requests.length} requests still pending after the holders hung up`);
  await until(
    'holder backends to exit',
    async () => Number((await admin.query(`SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1`, [HOLDER_APP])).rows[0].n) === 0,
    15_000,
  );
  const rows = Number((await admin.query(`SELECT count(*) AS n FROM ${TABLE} WHERE id < 0`)).rows[0].n);
  if (rows !== 0) throw new Error(`${rows} withdrawn statements ran anyway`);
  return withdrawnMs;
}

interface Interference {
  holds: number;
  base: number[];
  held: number[];
  /** CPU time of this process (the proxy) per pgbench transaction, µs: robust to other load. */
  baseCpu: number[];
  heldCpu: number[];
  holdMs: number[];
  withdrawMs: number[];
  slots: { max: number; used: number };
  /** Event-loop utilization over 3 s without any traffic, without and with the holds. */
  idleBusy: { none: number; held: number };
}

async function interference(pgw: { api: string; port: number }, admin: pg.Client): Promise<Interference> {
  await until(
    'the latency agent\'s backend to exit',
    async () => Number((await admin.query(`SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1`, [AGENT_APP])).rows[0].n) === 0,
    15_000,
  );
  const { holds, max, used } = await holdSlots(admin);
  if (holds < HOLDS) {
    out(`NOTE: holding ${holds} statements, not ${HOLDS}: the upstream allows ${max} connections, ${used} in use, and pgbench needs ${CLIENTS}` +
      ' (each held statement keeps its agent connection and so one upstream connection).');
  }
  const bench = async (): Promise<{ tps: number; cpu: number }> => {
    const before = process.cpuUsage();
    const text = await pgbench(pgw.port, DB, ['-S', '-M', 'prepared', '-c', String(CLIENTS), '-j', '2', '-T', String(SECONDS), '-n']);
    const used = process.cpuUsage(before);
    const txs = Number(/number of transactions actually processed: (\d+)/.exec(text)?.[1] ?? NaN);
    return { tps: parseTps(text), cpu: (used.user + used.system) / txs };
  };
  // Warm-up: JIT, prepared statement caches, PostgreSQL's buffers.
  await pgbench(pgw.port, DB, ['-S', '-M', 'prepared', '-c', String(CLIENTS), '-j', '2', '-T', String(Math.min(3, SECONDS)), '-n']);
  const r: Interference = { holds, base: [], held: [], baseCpu: [], heldCpu: [], holdMs: [], withdrawMs: [], slots: { max, used }, idleBusy: { none: 0, held: 0 } };
  for (let round = 1; round <= ROUNDS; round++) {
    // Alternate which variant goes first, so a drift in machine load hits both alike.
    const order = round % 2 === 1 ? (['none', 'held'] as const) : (['held', 'none'] as const);
    for (const variant of order) {
      if (variant === 'none') {
        const { tps, cpu } = await bench();
        r.base.push(tps);
        r.baseCpu.push(cpu);
        out(`round ${round} no holds: ${tps.toFixed(0)} tps, ${cpu.toFixed(1)} µs CPU per transaction`);
        continue;
      }
      const held = await holdMany(pgw.port, holds);
      r.holdMs.push(held.ms);
      const pending = await api(pgw.api, 'GET', '/api/requests?status=pending');
      if (pending.json.requests.length !== holds) throw new Error(`expected ${holds} pending requests, the API lists ${pending.json.requests.length}`);
      let tps: number;
      let cpu: number;
      try {
        ({ tps, cpu } = await bench());
        // Still all held after the run: nothing timed out or got decided meanwhile.
        const after = await api(pgw.api, 'GET', '/api/requests?status=pending');
        if (after.json.requests.length !== holds) throw new Error(`${holds - after.json.requests.length} held requests left pending during pgbench`);
      } finally {
        r.withdrawMs.push(await release(pgw, admin, held));
      }
      r.held.push(tps);
      r.heldCpu.push(cpu);
      out(`round ${round} ${holds} held: ${tps.toFixed(0)} tps, ${cpu.toFixed(1)} µs CPU per transaction (all ${holds} withdrawn ${r.withdrawMs.at(-1)!.toFixed(0)} ms after hang-up)`);
    }
  }
  // What holding costs this process with no traffic at all: the event loop's busy share.
  const idle = async () => {
    const start = performance.eventLoopUtilization();
    await new Promise((res) => setTimeout(res, 3000));
    return performance.eventLoopUtilization(start).utilization;
  };
  r.idleBusy.none = await idle();
  const held = await holdMany(pgw.port, holds);
  try {
    r.idleBusy.held = await idle();
  } finally {
    await release(pgw, admin, held);
  }
  return r;
}

// ---------------------------------------------------------------- main

async function cleanRedis(): Promise<number> {
  const redis = new Redis(REDIS_URL);
  try {
    let cursor = '0';
    let n = 0;
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${KEY_BASE}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) n += await redis.del(...keys);
    } while (cursor !== '0');
    return n;
  } finally {
    redis.disconnect();
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pgw-bench-approval-'));
  await ensureDatabase();
  const admin = new pg.Client({ host: UP_HOST, port: UP_PORT, user: 'postgres', database: DB });
  await admin.connect();
  let pgw: Awaited<ReturnType<typeof startPgwarden>> | null = null;
  let feed: Feed | null = null;
  try {
    await admin.query(`CREATE TABLE ${TABLE} (id int)`);
    pgw = await startPgwarden(dir);
    feed = await Feed.open(pgw.api, REVIEWER_TOKEN);
    out(`pgwarden in this process (workers: 1, audit to Redis), upstream ${UP_HOST}:${UP_PORT}, ${os.availableParallelism()} cores, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);

    out(`\n1+2. ${APPROVALS} sequential approvals (after ${WARMUP} unmeasured), raw-socket agent, one authenticated WebSocket`);
    const lat = await latency(pgw, feed, admin);
    out('\n| latency, ms | n | median | p90 | p99 | max |');
    out('|---|---|---|---|---|---|');
    out(row('click → first byte at the agent', lat.clickToFirstByte));
    out(row('click → approve API answered', lat.clickToHttp));
    out(row('statement written → pending on WebSocket', lat.writeToWs));
    out(row('statement written → hold notice at the agent', lat.writeToNotice));
    if (lat.missingWs) out(`\n${lat.missingWs} pending pushes never arrived on the WebSocket (counted as MISS)`);
    const c = lat.clickToFirstByte;
    const w = lat.writeToWs;
    const wsOk = (x: number) => lat.missingWs === 0 && x < TARGET_MS;
    out('\n| target | median | p99 | result |');
    out('|---|---|---|---|');
    out(`| click → first byte < ${TARGET_MS} ms | ${ms(median(c))} | ${ms(pct(c, 99))} | ${verdict(median(c) < TARGET_MS)} / ${verdict(pct(c, 99) < TARGET_MS)} |`);
    out(`| hold → WebSocket < ${TARGET_MS} ms | ${ms(median(w))} | ${ms(pct(w, 99))} | ${verdict(wsOk(median(w)))} / ${verdict(wsOk(pct(w, 99)))} |`);

    out(`\n3. pgbench -S -M prepared -c ${CLIENTS} -j 2 -T ${SECONDS} through pgwarden (workers: 1), ${ROUNDS} alternating rounds`);
    const inter = await interference(pgw, admin);
    const mb = median(inter.base);
    const mh = median(inter.held);
    out(`\n| variant | tps per round | median |`);
    out('|---|---|---|');
    out(`| no holds | ${inter.base.map((x) => x.toFixed(0)).join(', ')} | ${mb.toFixed(0)} |`);
    out(`| ${inter.holds} statements held | ${inter.held.map((x) => x.toFixed(0)).join(', ')} | ${mh.toFixed(0)} |`);
    out(`| held / no holds, same round | ${inter.held.map((x, i) => (x / inter.base[i]!).toFixed(3)).join(', ')} | ${median(inter.held.map((x, i) => x / inter.base[i]!)).toFixed(3)} |`);
    const cb = median(inter.baseCpu);
    const ch = median(inter.heldCpu);
    out(`| proxy CPU µs per transaction, no holds | ${inter.baseCpu.map((x) => x.toFixed(1)).join(', ')} | ${cb.toFixed(1)} |`);
    out(`| proxy CPU µs per transaction, ${inter.holds} held | ${inter.heldCpu.map((x) => x.toFixed(1)).join(', ')} | ${ch.toFixed(1)} (${((ch / cb - 1) * 100).toFixed(1)} %) |`);
    out(`\n| target | ratio of medians held / no holds | result |`);
    out('|---|---|---|');
    out(`| ${HOLDS} held: ≥ ${TARGET_RATIO} of no-holds tps | ${(mh / mb).toFixed(3)} | ${verdict(mh / mb >= TARGET_RATIO)}${inter.holds < HOLDS ? ` with ${inter.holds} held, not ${HOLDS} (see NOTE)` : ''} |`);
    out(`\nthis process's event loop with no traffic (3 s each): ${(inter.idleBusy.none * 100).toFixed(2)} % busy without holds, ` +
      `${(inter.idleBusy.held * 100).toFixed(2)} % with ${inter.holds} held`);
    out(`load after: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}; holding ${inter.holds} (connect + hold notice): ${inter.holdMs.map((x) => x.toFixed(0)).join(', ')} ms; ` +
      `all withdrawn after hang-up within: ${inter.withdrawMs.map((x) => x.toFixed(0)).join(', ')} ms`);
  } finally {
    feed?.close();
    await pgw?.stop();
    keepAlive.destroy();
    await admin.query(`DROP TABLE IF EXISTS ${TABLE}`).catch(() => undefined);
    await admin.end();
    const keys = await cleanRedis();
    rmSync(dir, { recursive: true, force: true });
    out(`\ncleaned up: table ${TABLE} dropped, ${keys} Redis keys under ${KEY_BASE}:* deleted`);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? (err as Error).message}\n`);
    process.exit(1);
  },
);
