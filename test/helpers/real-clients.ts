import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createTestDatabase, directClient, UPSTREAM_URL } from './proxy.js';
import { startTestRedis, type TestRedis } from './redis-server.js';
import { callApi, REVIEWERS, startApprovalInstance, type ApprovalInstance } from './approvals.js';

/**
 * Shared setup for the real-client compatibility tests (test/integration/real-client-*.test.ts):
 * one seeded database, masking and review rules, a whole pgwarden instance with its own Redis,
 * and a scripted reviewer that decides held statements through the REST API while a client
 * (in-process or a spawned python/java/libpq program) waits on its connection.
 */

/** Masking of customers' PII; every vault statement goes to review; server files are refused. */
export const COMPAT_RULES = `
masking:
  - table: public.customers
    columns:
      email: partial_email
      ssn: redact
      credit_limit: redact
policy:
  default: allow
  unanalysable: review
  fastpath: deny
  rules:
    - name: vault-review
      description: the vault needs a second pair of eyes
      match: { relations: [vault] }
      action: review
    - name: no-server-files
      description: reading server files is not allowed
      match: { functions: [pg_read_file] }
      action: deny
`;

export const SCHEMA = `
CREATE TABLE customers (
  id int PRIMARY KEY,
  name text,
  email text,
  ssn text,
  credit_limit int,
  balance numeric(10,2),
  joined date
);
INSERT INTO customers VALUES
  (1, 'Alice', 'alice@example.com', '123-45-6789', 5000, 1234.50, '2021-03-04'),
  (2, 'Bob', 'bob@example.org', '987-65-4321', 250, -7.25, '2022-11-30');
CREATE TABLE products (id int PRIMARY KEY, title text, price numeric(8,2));
INSERT INTO products VALUES (1, 'pen', 1.50), (2, 'notebook', 3.25), (3, 'ruler', 0.99);
CREATE TABLE vault (id int PRIMARY KEY, label text);
INSERT INTO vault VALUES (1, 'gold'), (2, 'silver');
`;

/** Raw PII values: none may reach a client through the proxy. */
export const RAW_PII = ['alice@example.com', 'bob@example.org', '123-45-6789', '987-65-4321', '5000', '250'];
export const MASKED_EMAILS = ['a***@example.com', 'b***@example.org'];

export const APPROVE_REASON = 'read-only vault access is fine';
export const DENY_REASON = 'vault rows are never deleted by agents';
export const REVIEWER_DENIAL = `pgwarden: statement denied by reviewer bob: ${DENY_REASON}`;
export const RULE_DENIAL = 'pgwarden: statement denied by rule "no-server-files"';

export interface CompatEnv {
  redis: TestRedis;
  inst: ApprovalInstance;
  db: string;
  /** Proxy address for libpq-style programs. */
  proxyPort: number;
  upstream: { host: string; port: number };
  close(): Promise<void>;
}

export async function startCompatEnv(prefix: string): Promise<CompatEnv> {
  const redis = await startTestRedis();
  const db = await createTestDatabase(prefix);
  try {
    const c = directClient(db.name);
    await c.connect();
    await c.query(SCHEMA);
    await c.end();
    const inst = await startApprovalInstance(redis.url, { rules: COMPAT_RULES });
    const u = new URL(UPSTREAM_URL);
    return {
      redis,
      inst,
      db: db.name,
      proxyPort: inst.proxy.port,
      upstream: { host: u.hostname, port: Number(u.port || 5432) },
      close: async () => {
        await inst.close();
        await db.drop();
        await redis.stop();
      },
    };
  } catch (e) {
    await db.drop();
    await redis.stop();
    throw e;
  }
}

/** Rows of the vault, read directly from PostgreSQL (to prove what a denial left in place). */
export async function vaultIds(db: string): Promise<number[]> {
  const c = directClient(db);
  await c.connect();
  try {
    return (await c.query('SELECT id FROM vault ORDER BY id')).rows.map((r) => r.id as number);
  } finally {
    await c.end();
  }
}

// ---------------------------------------------------------------------------------------------
// The scripted reviewer

export interface RequestView {
  id: string;
  state: string;
  rule: string;
  session: { user: string; database: string; application?: string };
  statements: { text: string }[];
  [k: string]: unknown;
}

export interface Verdict {
  verb: 'approve' | 'deny';
  reviewer: keyof typeof REVIEWERS;
  reason: string;
}

export interface Decision {
  id: string;
  view: RequestView;
  verdict: Verdict;
  status: number;
  /** What the client had printed/done before the verdict (filled by the caller's probe). */
  before: unknown;
}

/**
 * The usual verdicts: a read of the vault (also PREPARE/EXECUTE of one, and pg_dump's LOCK/COPY) is approved by alice,
 * a DELETE is denied by bob, anything else that is held unexpectedly is denied (and shows up in
 * the decisions, so the test sees it).
 */
export function standardVerdict(view: RequestView): Verdict {
  const text = view.statements.map((s) => s.text).join('; ');
  if (/^\s*(SELECT|LOCK|COPY|PREPARE|EXECUTE)\b/i.test(text)) return { verb: 'approve', reviewer: 'alice', reason: APPROVE_REASON };
  if (/^\s*DELETE\b/i.test(text)) return { verb: 'deny', reviewer: 'bob', reason: DENY_REASON };
  return { verb: 'deny', reviewer: 'bob', reason: `unexpected hold: ${text}` };
}

export interface ReviewerLoop {
  decisions: Decision[];
  stop(): Promise<Decision[]>;
}

/**
 * Polls the pending list like a reviewer at the page would, and decides every request of the
 * given database (and application_name, when given) once. `probe` is called just before each
 * verdict to capture what the waiting client had already produced.
 */
export function reviewHolds(
  inst: ApprovalInstance,
  filter: { database: string; application?: string },
  opts: { verdict?: (v: RequestView) => Verdict; probe?: () => unknown } = {},
): ReviewerLoop {
  const decisions: Decision[] = [];
  const seen = new Set<string>();
  let stopped = false;
  const verdictOf = opts.verdict ?? standardVerdict;
  const loop = (async () => {
    while (!stopped) {
      const list = await callApi(inst.api, REVIEWERS.alice.token, 'GET', '/api/requests?status=pending');
      const pending = (list.json?.requests ?? []) as RequestView[];
      for (const view of pending) {
        if (seen.has(view.id) || view.session.database !== filter.database) continue;
        if (filter.application !== undefined && view.session.application !== filter.application) continue;
        seen.add(view.id);
        const verdict = verdictOf(view);
        const before = opts.probe?.();
        const res = await callApi(inst.api, REVIEWERS[verdict.reviewer].token, 'POST', `/api/requests/${view.id}/${verdict.verb}`, { reason: verdict.reason });
        decisions.push({ id: view.id, view, verdict, status: res.status, before });
      }
      await new Promise((r) => setTimeout(r, 40));
    }
  })();
  return {
    decisions,
    stop: async () => {
      stopped = true;
      await loop;
      return decisions;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// External client programs

/** The environment of a spawned client: no inherited libpq settings, messages in English. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return { ...env, LC_ALL: 'C', LC_MESSAGES: 'C', PSQLRC: '/dev/null', ...extra };
}

export interface ProgramRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** JSON lines the program printed, by their "step" field. */
  steps: Record<string, any>;
  decisions: Decision[];
}

/**
 * Runs a client program while the scripted reviewer decides its holds. Each decision records
 * which steps the program had reported and whether it was still running at that moment, so a
 * test can prove the held call was waiting for the verdict.
 */
export async function runWithReviewer(
  env: CompatEnv,
  program: string,
  args: string[],
  opts: { application?: string; extraEnv?: Record<string, string>; timeoutMs?: number; stdin?: string; verdict?: (v: RequestView) => Verdict } = {},
): Promise<ProgramRun> {
  const child = spawn(program, args, { env: cleanEnv(opts.extraEnv), stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let exited = false;
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  child.stdin.on('error', () => undefined);
  child.stdin.end(opts.stdin ?? '');
  const steps = (): Record<string, any> => {
    const out: Record<string, any> = {};
    for (const line of stdout.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        const o = JSON.parse(line) as { step?: string };
        if (o.step) out[o.step] = o;
      } catch {
        /* a partial line: the rest is still coming */
      }
    }
    return out;
  };
  const reviewer = reviewHolds(
    env.inst,
    { database: env.db, ...(opts.application !== undefined ? { application: opts.application } : {}) },
    { ...(opts.verdict ? { verdict: opts.verdict } : {}), probe: () => ({ running: !exited, steps: Object.keys(steps()), stdout }) },
  );
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 45_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c, s) => {
      exited = true;
      resolve([c, s]);
    });
  });
  clearTimeout(timer);
  const decisions = await reviewer.stop();
  return { code, signal, stdout, stderr, steps: steps(), decisions };
}

/**
 * A python3 that can import `module` (Debian's /usr/bin/python3 has python3-psycopg; a python3
 * earlier on PATH, e.g. pyenv's, may not), or null.
 */
export function pythonWith(module: string): string | null {
  for (const py of ['/usr/bin/python3', 'python3']) {
    const r = spawnSync(py, ['-c', `import ${module}`], { stdio: 'ignore' });
    if (r.status === 0) return py;
  }
  return null;
}

export const JDBC_JAR = '/usr/share/java/postgresql.jar';

/** Whether `java` can run a single-file source program with the Debian JDBC driver. */
export function javaWithJdbc(): { ok: true } | { ok: false; why: string } {
  if (!existsSync(JDBC_JAR)) return { ok: false, why: `${JDBC_JAR} is missing (install libpostgresql-jdbc-java)` };
  const r = spawnSync('java', ['-version'], { stdio: 'ignore' });
  if (r.error || r.status !== 0) return { ok: false, why: 'no java runtime (install default-jre-headless)' };
  return { ok: true };
}
