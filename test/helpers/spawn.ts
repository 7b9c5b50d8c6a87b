import { spawn } from 'node:child_process';

/**
 * Runs an external program (psql, pgbench, pg_dump, openssl, pg_ctl …) and captures what a user
 * would see: stdout, stderr and the exit code. Never rejects on a non-zero exit; rejects only when
 * the program cannot be started. A run that exceeds its timeout is killed (SIGKILL) and reported
 * with `timedOut: true`.
 */
export interface RunOptions {
  /** Extra environment variables, merged over a copy of process.env minus libpq's PG* ones. */
  env?: Record<string, string | undefined>;
  /** Written to the program's stdin, which is then closed. Without it stdin is closed at once. */
  stdin?: string | Buffer;
  cwd?: string;
  timeoutMs?: number;
  /** Run as this OS user via `runuser -u <user> --` (PostgreSQL server binaries refuse root). */
  asUser?: string;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  /** Exit code, or null when the process was ended by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
}

/**
 * libpq reads these from the environment; inheriting the developer's or CI's values would make
 * the tests depend on the machine, so they are dropped unless a test passes them explicitly.
 */
function cleanEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('PG')) env[k] = v;
  }
  // Messages in English whatever the machine's locale, so tests can match the server's text.
  env.LC_ALL = 'C';
  env.LC_MESSAGES = 'C';
  env.PSQLRC = '/dev/null';
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

export function run(program: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const [file, argv] = options.asUser
    ? ['runuser', ['-u', options.asUser, '--', program, ...args]]
    : [program, [...args]];
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, {
      env: cleanEnv(options.env ?? {}),
      cwd: options.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    // The program may exit before reading all of stdin (e.g. ON_ERROR_STOP): that is not our error.
    child.stdin.on('error', () => undefined);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        code,
        signal,
        timedOut,
      });
    });
    if (options.stdin !== undefined) child.stdin.end(options.stdin);
    else child.stdin.end();
  });
}

/** Like run(), but throws with the captured output when the program does not exit 0. */
export async function runOk(program: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const r = await run(program, args, options);
  if (r.code !== 0) {
    throw new Error(
      `${program} ${args.join(' ')} exited with ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}\n` +
        `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`,
    );
  }
  return r;
}

/**
 * libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE) for a postgres:// URL such as the
 * proxy's or UPSTREAM_URL. The user defaults to `postgres` when the URL names none, so the
 * programs never fall back to the OS user name (root in CI).
 */
export function libpqEnv(url: string, database?: string): Record<string, string> {
  const u = new URL(url);
  const env: Record<string, string> = {
    PGHOST: decodeURIComponent(u.hostname).replace(/^\[(.*)\]$/, '$1') || '127.0.0.1',
    PGPORT: u.port || '5432',
    PGUSER: decodeURIComponent(u.username) || 'postgres',
    PGCONNECT_TIMEOUT: '10',
    // Plain connections unless a test asks for TLS: the machine's server and a proxy without
    // a certificate both refuse it, and "prefer" would only add a round trip.
    PGSSLMODE: 'disable',
  };
  const db = database ?? decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (db) env.PGDATABASE = db;
  if (u.password) env.PGPASSWORD = decodeURIComponent(u.password);
  return env;
}
