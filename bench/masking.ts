/**
 * `npm run bench:masking` (part of `npm run bench`): what masking PII columns costs a large result.
 *
 * One `SELECT * FROM bench_people` (BENCH_ROWS rows, default 1,000,000; 4 PII columns and 4 plain
 * ones) is read to the end by a raw-protocol client that counts DataRow messages and keeps none:
 *
 * - direct: straight to PostgreSQL;
 * - masked: through pgwarden, masking rules on email (partial_email), ssn (redact), phone
 *   (keep_last 4) and card (hash);
 * - unmasked: through pgwarden with the same rules minus the `masking:` section.
 *
 * pgwarden runs as a child process (`node dist/src/cli.js start --config <tmp yaml> --workers 1`,
 * audit on to the embedded journal in a temporary directory, no Redis), started afresh for every
 * run so that its peak RSS (/proc/<pid>/status VmHWM) belongs to that run alone: read after an
 * unmeasured warm-up query (`... LIMIT 1000` on another connection), each time the client has
 * received another tenth of the rows, and at the end, before the child is stopped; its CPU time
 * (/proc/<pid>/stat) is read around the query. The client (this process) resets its own VmHWM
 * before each run (/proc/self/clear_refs) and reports it too. BENCH_ROUNDS (3) rounds, the order
 * of the modes rotating every round, after one unmeasured direct read (page cache, shared
 * buffers); the time is from the Query message to ReadyForQuery; medians are compared.
 *
 * Targets: masked / direct ≤ 1.5, unmasked / direct ≤ 1.2, pgwarden's peak RSS flat: the second
 * half of the rows adds less than 10 % of the result's size to it (a proxy that kept the rows
 * would add about 50 %). Every run checks the row count and the first row (masked values in
 * masked mode, raw values otherwise), so the benchmark cannot pass with masking off. Prints
 * PASS/MISS per target and exits 0 either way.
 *
 * Environment: BENCH_ROWS (1000000), BENCH_ROUNDS (3), BENCH_CPU_PROF (a directory: the pgwarden
 * children run with `node --cpu-prof` and write their profiles there), PGWARDEN_BENCH_UPSTREAM
 * (postgres://127.0.0.1:5432, trust authentication as user postgres). Uses the database
 * pgwarden_bench (created when missing) and its table bench_people (created with generate_series
 * when missing or when it does not hold BENCH_ROWS rows; reused otherwise).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { configSchema } from '../src/config/schema.js';
import { median, root, run, stopChild } from './bench-lib.js';

const ROWS = Number(process.env.BENCH_ROWS ?? 1_000_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CPU_PROF = process.env.BENCH_CPU_PROF;
const upstream = new URL(process.env.PGWARDEN_BENCH_UPSTREAM ?? 'postgres://127.0.0.1:5432');
const UP_HOST = upstream.hostname;
const UP_PORT = Number(upstream.port || 5432);
const DB = 'pgwarden_bench';
const TABLE = 'bench_people';
const QUERY = `SELECT * FROM ${TABLE}`;
const MASK_KEY = 'bench-masking-key-0123456789-0123456789';
const TARGET_MASKED = 1.5;
const TARGET_UNMASKED = 1.2;
/** Flat RSS: the second half of the rows may add at most this share of the result size to pgwarden's peak. */
const TARGET_RSS_SHARE = 0.1;
/** Clock ticks per second of /proc/<pid>/stat (USER_HZ; 100 on Linux x86 and arm). */
const CLK_TCK = 100;

const POLICY = `
policy:
  default: allow
`;
const MASKING = `
masking:
  - table: public.${TABLE}
    columns:
      email: partial_email
      ssn: redact
      phone: { strategy: keep_last, count: 4 }
      card: hash
`;

type Mode = 'direct' | 'masked' | 'unmasked';
const MODES: Mode[] = ['direct', 'masked', 'unmasked'];

const out = (line = '') => process.stdout.write(`${line}\n`);
const verdict = (ok: boolean) => (ok ? 'PASS' : 'MISS');
const mib = (bytes: number) => (bytes / 1024 / 1024).toFixed(1);

// ---------------------------------------------------------------- raw protocol streaming client

interface Result {
  rows: number;
  /** Bytes received from the Query until ReadyForQuery (the result as it crossed the wire). */
  bytes: number;
  ms: number;
  /** The first DataRow's values (text format; null: SQL NULL). */
  first: (string | null)[] | null;
  tag: string;
}

function errorText(body: Buffer): string {
  const f = new Map<string, string>();
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const end = body.indexOf(0, i + 1);
    f.set(String.fromCharCode(body[i]!), body.toString('utf8', i + 1, end));
    i = end + 1;
  }
  return `${f.get('C') ?? '?'}: ${f.get('M') ?? '?'}${f.get('D') ? ` (${f.get('D')})` : ''}`;
}

function dataRowValues(body: Buffer): (string | null)[] {
  const n = body.readInt16BE(0);
  const values: (string | null)[] = [];
  let pos = 2;
  for (let i = 0; i < n; i++) {
    const len = body.readInt32BE(pos);
    pos += 4;
    if (len < 0) values.push(null);
    else {
      values.push(body.toString('utf8', pos, pos + len));
      pos += len;
    }
  }
  return values;
}

/**
 * A PostgreSQL client on a plain socket that reads a result as it streams and keeps only counters.
 * Each chunk is parsed synchronously in the 'data' handler (message bodies are skipped, not
 * copied, except for the few messages it needs), so nothing piles up in this process: while it is
 * busy the kernel's receive window fills and the sender waits, which is the flow control.
 */
class StreamingClient {
  private readonly hdr = Buffer.alloc(5);
  private hdrLen = 0;
  private type = 0;
  private left = 0;
  private parts: Buffer[] | null = null;
  private rows = 0;
  private bytes = 0;
  private first: (string | null)[] | null = null;
  private tag = '';
  private error: string | null = null;
  private onReady: (() => void) | null = null;
  private failed: Error | null = null;
  /** Called every `markEvery` rows (0: never). */
  private nextMark = 0;
  private markEvery = 0;
  private onMark: (() => void) | null = null;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('connection closed')));
  }

  static async connect(host: string, port: number): Promise<StreamingClient> {
    const socket = net.connect(port, host);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const c = new StreamingClient(socket);
    const params = Buffer.from(`user\0postgres\0database\0${DB}\0application_name\0pgw-bench-masking\0client_encoding\0UTF8\0\0`);
    const head = Buffer.alloc(8);
    head.writeInt32BE(8 + params.length, 0);
    head.writeInt32BE(196608, 4);
    const ready = c.ready();
    socket.write(Buffer.concat([head, params]));
    try {
      await ready;
    } catch (err) {
      socket.destroy();
      throw c.error ? new Error(`startup failed: ${c.error}`) : err;
    }
    if (c.error) throw new Error(`startup failed: ${c.error}`);
    return c;
  }

  private fail(err: Error): void {
    this.failed ??= err;
    this.onReady?.();
  }

  private ready(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.onReady = () => {
        this.onReady = null;
        if (this.failed) reject(this.failed);
        else resolve();
      };
    });
  }

  private onData(chunk: Buffer): void {
    this.bytes += chunk.length;
    const len = chunk.length;
    let i = 0;
    while (i < len) {
      if (this.hdrLen === 0 && this.left === 0 && i + 5 <= len) {
        // Fast path: a DataRow wholly inside this chunk is counted and skipped.
        const type = chunk[i]!;
        const size = chunk.readInt32BE(i + 1);
        if (type === 0x44 /* D */ && this.rows > 0 && i + 1 + size <= len) {
          if (++this.rows === this.nextMark) this.mark();
          i += 1 + size;
          continue;
        }
      }
      if (this.hdrLen < 5) {
        const n = Math.min(5 - this.hdrLen, len - i);
        chunk.copy(this.hdr, this.hdrLen, i, i + n);
        this.hdrLen += n;
        i += n;
        if (this.hdrLen < 5) break;
        this.type = this.hdr[0]!;
        this.left = this.hdr.readInt32BE(1) - 4;
        const keep = this.type !== 0x44 || this.rows === 0;
        this.parts = keep ? [] : null;
        if (this.left === 0) this.message();
        continue;
      }
      const n = Math.min(this.left, len - i);
      this.parts?.push(chunk.subarray(i, i + n));
      i += n;
      this.left -= n;
      if (this.left === 0) this.message();
    }
  }

  private mark(): void {
    this.nextMark += this.markEvery;
    this.onMark!();
  }

  /** Calls `fn` every `every` rows of the next query. */
  everyRows(every: number, fn: () => void): void {
    this.markEvery = every;
    this.nextMark = every;
    this.onMark = fn;
  }

  private message(): void {
    const body = this.parts ? Buffer.concat(this.parts) : null;
    const type = String.fromCharCode(this.type);
    this.hdrLen = 0;
    this.parts = null;
    switch (type) {
      case 'D':
        if (this.rows === 0) this.first = dataRowValues(body!);
        if (++this.rows === this.nextMark) this.mark();
        return;
      case 'R': {
        const code = body!.readInt32BE(0);
        if (code !== 0) this.fail(new Error(`the bench expects trust authentication (got request ${code})`));
        return;
      }
      case 'E':
        this.error ??= errorText(body!);
        return;
      case 'C':
        this.tag = body!.toString('utf8', 0, body!.length - 1);
        return;
      case 'Z':
        this.onReady?.();
        return;
      default:
        return;
    }
  }

  /** Sends one simple Query and reads its whole answer. */
  async query(sql: string): Promise<Result> {
    this.rows = 0;
    this.bytes = 0;
    this.first = null;
    this.tag = '';
    this.error = null;
    const text = Buffer.from(`${sql}\0`);
    const msg = Buffer.alloc(5 + text.length);
    msg.write('Q', 0);
    msg.writeInt32BE(4 + text.length, 1);
    text.copy(msg, 5);
    const done = this.ready();
    const started = performance.now();
    this.socket.write(msg);
    await done;
    const ms = performance.now() - started;
    if (this.error) throw new Error(`server error: ${this.error}`);
    return { rows: this.rows, bytes: this.bytes, ms, first: this.first, tag: this.tag };
  }

  close(): void {
    this.socket.removeAllListeners('close');
    this.socket.end(Buffer.from([0x58, 0, 0, 0, 4])); // Terminate
  }
}

// ---------------------------------------------------------------- /proc

function procStatus(pid: number | 'self'): { hwm: number; rss: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024;
  return { hwm: kb('VmHWM'), rss: kb('VmRSS') };
}

/** User + system CPU seconds of a process so far. */
function procCpu(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime (fields 14 and 15)
}

/** Resets this process's VmHWM to its current RSS (Linux ≥ 4.0); false when not allowed. */
function resetOwnPeak(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- setup

async function psql(sql: string, db = 'postgres'): Promise<string> {
  const { stdout } = await run('psql', ['-X', '-h', UP_HOST, '-p', String(UP_PORT), '-U', 'postgres', '-d', db, '-v', 'ON_ERROR_STOP=1', '-Atqc', sql], {
    maxBuffer: 16 * 1024 * 1024,
  });
  return stdout.trim();
}

/** pgwarden_bench.bench_people with ROWS rows: reused when it has them, else (re)created. */
async function ensureTable(): Promise<void> {
  if ((await psql(`SELECT 1 FROM pg_database WHERE datname = '${DB}'`)) !== '1') {
    out(`(creating database ${DB})`);
    await psql(`CREATE DATABASE ${DB}`);
  }
  const exists = (await psql(`SELECT to_regclass('public.${TABLE}') IS NOT NULL`, DB)) === 't';
  if (exists && Number(await psql(`SELECT count(*) FROM ${TABLE}`, DB)) === ROWS) {
    out(`(reusing ${DB}.${TABLE}, ${ROWS} rows)`);
    return;
  }
  out(`(creating ${DB}.${TABLE} with ${ROWS} rows)`);
  const started = performance.now();
  await psql(`DROP TABLE IF EXISTS ${TABLE}`, DB);
  await psql(
    `CREATE TABLE ${TABLE} (id int PRIMARY KEY, name text, city text, created date, email text, ssn text, phone text, card text)`,
    DB,
  );
  await psql(
    `INSERT INTO ${TABLE}
       SELECT g,
              'Person ' || g,
              (ARRAY['Berlin', 'Lisbon', 'Oslo', 'Paris', 'Rome', 'Vienna', 'Warsaw'])[1 + g % 7],
              date '2020-01-01' + g % 2000,
              'user' || g || '@example.com',
              substr(lpad(g::text, 9, '0'), 1, 3) || '-' || substr(lpad(g::text, 9, '0'), 4, 2) || '-' || substr(lpad(g::text, 9, '0'), 6, 4),
              '+1-555-' || lpad((g % 10000)::text, 4, '0'),
              '4' || lpad(g::text, 15, '0')
         FROM generate_series(1, ${ROWS}) AS g`,
    DB,
  );
  // Hint bits and the visibility map set now, not during the first measured scan.
  await psql(`VACUUM (ANALYZE) ${TABLE}`, DB);
  out(`(created in ${((performance.now() - started) / 1000).toFixed(1)} s)`);
}

// ---------------------------------------------------------------- pgwarden child

interface Pgwarden {
  child: ChildProcess;
  pid: number;
  port: number;
}

/** Writes a config (validated with the same schema `pgwarden start` uses) and its rules. */
function writeConfig(dir: string, masked: boolean): string {
  const rulesDir = path.join(dir, 'rules');
  mkdirSync(rulesDir, { recursive: true });
  writeFileSync(path.join(rulesDir, 'policy.yaml'), masked ? `${MASKING}${POLICY}` : POLICY);
  const input = {
    listen: '127.0.0.1:0',
    upstream: { url: `postgres://${UP_HOST}:${UP_PORT}`, sslmode: 'disable' },
    workers: 1,
    logLevel: 'info',
    rulesDir,
    audit: { enabled: true, journalDir: path.join(dir, 'journal'), instanceId: 'bench-masking' },
    approval: { enabled: false },
    masking: { hashKey: MASK_KEY },
  };
  configSchema.parse(input);
  const file = path.join(dir, 'pgwarden.yaml');
  writeFileSync(file, `${JSON.stringify(input, null, 2)}\n`); // JSON is YAML
  return file;
}

/** Starts `pgwarden start` and resolves at its "ready" log line (JSON on stdout). */
async function startPgwarden(configFile: string, profDir: string | undefined): Promise<Pgwarden> {
  const nodeArgs = profDir ? ['--cpu-prof', '--cpu-prof-dir', profDir] : [];
  const child = spawn(process.execPath, [...nodeArgs, path.join(root, 'dist/src/cli.js'), 'start', '--config', configFile, '--workers', '1'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise<Pgwarden>((resolve, reject) => {
    let pending = '';
    let ready = false;
    const timer = setTimeout(() => fail(new Error('pgwarden did not log "ready" within 30 s')), 30_000);
    const fail = (err: Error) => {
      if (ready) return;
      ready = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(err);
    };
    child.once('exit', (code, signal) => fail(new Error(`pgwarden exited before it was ready (${code ?? signal})`)));
    child.once('error', fail);
    // Read stdout to the end (a full pipe would block the child); show warnings and errors.
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (text: string) => {
      pending += text;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        let entry: { level?: number; event?: string; listen?: string; msg?: string };
        try {
          entry = JSON.parse(line) as typeof entry;
        } catch {
          process.stderr.write(`pgwarden: ${line}\n`);
          continue;
        }
        if ((entry.level ?? 0) >= 40) process.stderr.write(`pgwarden: ${line}\n`);
        if (entry.event === 'ready' && !ready) {
          ready = true;
          clearTimeout(timer);
          const port = Number(entry.listen!.slice(entry.listen!.lastIndexOf(':') + 1));
          resolve({ child, pid: child.pid!, port });
        }
      }
    });
  });
}

// ---------------------------------------------------------------- one run

interface Run {
  mode: Mode;
  result: Result;
  /**
   * pgwarden: VmHWM before the query (after a warm-up query), each time the client had received
   * another tenth of the rows, and after the run; CPU seconds during the query.
   */
  idleHwm?: number;
  tenths?: number[];
  peak?: number;
  cpu?: number;
  /** This process (the client): VmHWM over the run (after a reset), CPU seconds. */
  clientPeak: number;
  clientCpu: number;
}

/** Checks the row count and the first row, so that a run with masking off cannot pass as masked. */
function check(mode: Mode, r: Result): void {
  if (r.rows !== ROWS) throw new Error(`${mode}: ${r.rows} rows, expected ${ROWS}`);
  if (r.tag !== `SELECT ${ROWS}`) throw new Error(`${mode}: command tag "${r.tag}"`);
  const row = r.first;
  if (!row || row.length !== 8) throw new Error(`${mode}: first row has ${row?.length ?? 0} columns, expected 8`);
  const [, , , , email, ssn, phone, card] = row as string[];
  if (mode === 'masked') {
    const ok = email!.includes('***') && /^.\*\*\*@example\.com$/.test(email!) && ssn === '***' && /^\*\*\*\d{4}$/.test(phone!) && /^[0-9a-f]{32}$/.test(card!);
    if (!ok) throw new Error(`masked: the first row is not masked as the rules say: ${JSON.stringify(row.slice(4))}`);
  } else if (!/^user\d+@example\.com$/.test(email!) || !/^4\d{15}$/.test(card!)) {
    throw new Error(`${mode}: the first row should be raw: ${JSON.stringify(row.slice(4))}`);
  }
}

async function runOnce(mode: Mode, dirs: { masked: string; unmasked: string }, profDir: string | undefined): Promise<Run> {
  let pgw: Pgwarden | null = null;
  try {
    if (mode !== 'direct') pgw = await startPgwarden(path.join(dirs[mode], 'pgwarden.yaml'), profDir);
    const connect = () => (pgw ? StreamingClient.connect('127.0.0.1', pgw.port) : StreamingClient.connect(UP_HOST, UP_PORT));
    if (pgw) {
      // Unmeasured: rules, masking catalog and parser loaded, the masking code paths compiled.
      const warm = await connect();
      await warm.query(`${QUERY} LIMIT 1000`);
      warm.close();
    }
    const client = await connect();
    const idleHwm = pgw ? procStatus(pgw.pid).hwm : undefined;
    const tenths: number[] = [];
    if (pgw) {
      const pid = pgw.pid;
      client.everyRows(Math.max(1, Math.floor(ROWS / 10)), () => tenths.push(procStatus(pid).hwm));
    }
    const cpu0 = pgw ? procCpu(pgw.pid) : 0;
    const reset = resetOwnPeak();
    const clientCpu0 = process.cpuUsage();
    const result = await client.query(QUERY);
    const clientCpu = process.cpuUsage(clientCpu0);
    const clientPeak = reset ? procStatus('self').hwm : NaN;
    const cpu = pgw ? procCpu(pgw.pid) - cpu0 : undefined;
    const peak = pgw ? procStatus(pgw.pid).hwm : undefined;
    client.close();
    check(mode, result);
    return { mode, result, idleHwm, tenths: pgw ? tenths : undefined, peak, cpu, clientPeak, clientCpu: (clientCpu.user + clientCpu.system) / 1e6 };
  } finally {
    if (pgw) await stopChild(pgw.child);
  }
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'pgw-bench-masking-'));
  try {
    await ensureTable();
    const dirs = { masked: path.join(scratch, 'masked'), unmasked: path.join(scratch, 'unmasked') };
    writeConfig(dirs.masked, true);
    writeConfig(dirs.unmasked, false);
    if (CPU_PROF) mkdirSync(CPU_PROF, { recursive: true });
    out(`${QUERY}: ${ROWS} rows x 8 columns (4 masked), raw-protocol streaming client, ${ROUNDS} rounds`);
    out(`pgwarden: child process per run, workers 1, audit on (embedded journal in ${scratch}), no Redis`);
    out(`${os.availableParallelism()} cores, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} before`);

    // Unmeasured: the table into the page cache and shared buffers.
    {
      const c = await StreamingClient.connect(UP_HOST, UP_PORT);
      const r = await c.query(QUERY);
      c.close();
      check('direct', r);
    }

    const runs: Run[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const order = MODES.map((_, i) => MODES[(i + round - 1) % MODES.length]!);
      for (const mode of order) {
        const profDir = CPU_PROF && mode !== 'direct' ? path.join(CPU_PROF, mode) : undefined;
        const r = await runOnce(mode, dirs, profDir);
        runs.push(r);
        const proxy = r.peak !== undefined
          ? `, pgwarden CPU ${r.cpu!.toFixed(2)} s, peak RSS MiB ${mib(r.idleHwm!)} before, by tenth of the rows ${r.tenths!.map(mib).join(' ')}, end ${mib(r.peak)}`
          : '';
        out(`round ${round} ${mode.padEnd(8)} ${r.result.ms.toFixed(0).padStart(6)} ms, ${mib(r.result.bytes)} MiB received${proxy}; client peak RSS ${mib(r.clientPeak)} MiB, CPU ${r.clientCpu.toFixed(2)} s`);
      }
    }

    const of = (mode: Mode) => runs.filter((r) => r.mode === mode);
    /** pgwarden's peak RSS when the client had half the rows. */
    const half = (r: Run) => r.tenths![4] ?? NaN;
    const med = (mode: Mode, f: (r: Run) => number) => median(of(mode).map(f));
    const direct = med('direct', (r) => r.result.ms);
    const masked = med('masked', (r) => r.result.ms);
    const unmasked = med('unmasked', (r) => r.result.ms);
    const resultBytes = of('direct')[0]!.result.bytes;

    out(`\nresult size (wire bytes, direct): ${resultBytes} (${mib(resultBytes)} MiB); masked: ${of('masked')[0]!.result.bytes}`);
    out('\n| mode | ms per round | median ms | rows/s | ratio to direct | pgwarden CPU s (median) | pgwarden peak RSS MiB, before → half → end (median) | client peak RSS MiB |');
    out('|---|---|---|---|---|---|---|---|');
    for (const mode of MODES) {
      const ms = med(mode, (r) => r.result.ms);
      const proxy = mode === 'direct'
        ? '– | –'
        : `${med(mode, (r) => r.cpu!).toFixed(2)} | ${mib(med(mode, (r) => r.idleHwm!))} → ${mib(med(mode, half))} → ${mib(med(mode, (r) => r.peak!))}`;
      out(`| ${mode} | ${of(mode).map((r) => r.result.ms.toFixed(0)).join(', ')} | ${ms.toFixed(0)} | ${((ROWS / ms) * 1000).toFixed(0)} | ${(ms / direct).toFixed(2)} | ${proxy} | ${mib(med(mode, (r) => r.clientPeak))} |`);
    }

    // Flat: what the second half of the rows adds to the peak (a proxy that kept rows would add
    // about half the result there). The growth over the process before the query is shown beside it.
    const late = (mode: Mode) => Math.max(...of(mode).map((r) => r.peak! - half(r)));
    const growth = (mode: Mode) => Math.max(...of(mode).map((r) => r.peak! - r.idleHwm!));
    const rssOk = (mode: Mode) => late(mode) < TARGET_RSS_SHARE * resultBytes;
    out('\n| target | measured | result |');
    out('|---|---|---|');
    out(`| masked / direct ≤ ${TARGET_MASKED} | ${(masked / direct).toFixed(2)} | ${verdict(masked / direct <= TARGET_MASKED)} |`);
    out(`| unmasked through pgwarden / direct ≤ ${TARGET_UNMASKED} | ${(unmasked / direct).toFixed(2)} | ${verdict(unmasked / direct <= TARGET_UNMASKED)} |`);
    for (const mode of ['masked', 'unmasked'] as const) {
      out(`| pgwarden peak RSS flat, ${mode}: the second half of the rows adds < ${TARGET_RSS_SHARE * 100} % of the result (${mib(TARGET_RSS_SHARE * resultBytes)} MiB) | ${mib(late(mode))} MiB (over the whole query: ${mib(growth(mode))} MiB, ${((100 * growth(mode)) / resultBytes).toFixed(0)} % of the result) | ${verdict(rssOk(mode))} |`);
    }
    out(`\nmasked first row checked in every masked run (email x***@example.com, ssn ***, phone ***NNNN, card 32 hex digits); load after: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    if (CPU_PROF) out(`CPU profiles of the pgwarden children: ${CPU_PROF}/{masked,unmasked}`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? (err as Error).message}\n`);
    process.exit(1);
  },
);
