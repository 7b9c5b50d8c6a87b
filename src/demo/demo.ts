import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { newReviewerToken, hashReviewerToken } from '../approval/reviewer-auth.js';
import { resolveAuditKey } from '../audit/build-audit.js';
import { splitHostPort } from '../config/load.js';
import { configSchema, type Config } from '../config/schema.js';
import { createLogger } from '../logger.js';
import { startInstance, type RunningInstance } from '../server/run.js';
import { writeDemoRules } from './demo-rules.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from './embedded-postgres.js';
import { SEED_SQL } from './seed.js';

/**
 * `pgwarden demo`: everything in one process, nothing to install beyond `npm ci`.
 *
 *   psql ──► pgwarden (masking, rules, approvals in memory, audit) ──► PGlite (embedded, seeded)
 *                 └── approval page + API, with a reviewer token generated for this run
 *
 * Its rules and audit journal live in a directory of its own (a temporary one, removed on exit,
 * unless --dir names one to keep). With Redis (--redis, REDIS_URL, PGWARDEN_REDIS or
 * PGWARDEN_REDIS_URL) the audit log goes to the stream `pgwarden-demo:audit` instead; approvals
 * stay in memory either way (one process). The demo reads no PGWARDEN_* settings otherwise: it
 * must not pick up a real deployment's upstream or rules.
 */
const DEMO_USAGE = `Usage: pgwarden demo [options]

Starts an embedded PostgreSQL (PGlite) with a sample shop database full of PII, pgwarden in
front of it with example rules (masking, review, deny), the approval page with a fresh reviewer
token, and the audit log; then prints what to try. Ctrl-C stops everything.

Options:
  --listen HOST:PORT            where psql connects to pgwarden (default 127.0.0.1:6432; port 0 picks one)
  --approval-listen HOST:PORT   the approval page and API (default 127.0.0.1:6480; port 0 picks one)
  --db-listen HOST:PORT         the embedded PostgreSQL itself (default 127.0.0.1:0)
  --redis URL                   audit log to this Redis (default: REDIS_URL, PGWARDEN_REDIS or PGWARDEN_REDIS_URL; else the journal)
  --dir DIR                     keep rules and audit journal in DIR (default: a temporary directory, removed on exit)
  --log-level LEVEL             pgwarden's log (default warn; info shows every connection and decision)
`;

/** The demo's reviewer (no database user is called this, so no self-approval conflict). */
const REVIEWER = 'demo-reviewer';
const AUDIT_STREAM = 'pgwarden-demo:audit';
/** Ctrl-C should not wait half a minute for a held statement; the demo has nothing long-running. */
const SHUTDOWN_GRACE_MS = 2000;

interface DemoOptions {
  listen: string;
  approvalListen: string;
  dbListen: string;
  redisUrl?: string;
  redisFrom?: string;
  dir?: string;
  logLevel: string;
}

type Out = (s: string) => void;

class DemoUsageError extends Error {
  override readonly name = 'DemoUsageError';
}

function parseOptions(args: string[], env: NodeJS.ProcessEnv): DemoOptions | 'help' {
  let values;
  try {
    values = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        listen: { type: 'string', default: '127.0.0.1:6432' },
        'approval-listen': { type: 'string', default: '127.0.0.1:6480' },
        'db-listen': { type: 'string', default: '127.0.0.1:0' },
        redis: { type: 'string' },
        dir: { type: 'string' },
        'log-level': { type: 'string', default: 'warn' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }).values;
  } catch (err) {
    throw new DemoUsageError((err as Error).message);
  }
  if (values.help) return 'help';
  // Checked before anything starts, with the configuration's own host:port rule.
  const hostPort = configSchema.shape.listen;
  for (const flag of ['listen', 'approval-listen', 'db-listen'] as const) {
    const checked = hostPort.safeParse(values[flag]);
    if (!checked.success) throw new DemoUsageError(`--${flag}: ${checked.error.issues.map((i) => i.message).join('; ')}, got "${values[flag]}"`);
  }
  const redisSources: [string, string | undefined][] = [
    ['--redis', values.redis],
    ['REDIS_URL', env.REDIS_URL],
    ['PGWARDEN_REDIS', env.PGWARDEN_REDIS],
    ['PGWARDEN_REDIS_URL', env.PGWARDEN_REDIS_URL],
  ];
  const redis = redisSources.find(([, v]) => v !== undefined && v !== '');
  return {
    listen: values.listen,
    approvalListen: values['approval-listen'],
    dbListen: values['db-listen'],
    ...(redis ? { redisUrl: redis[1]!, redisFrom: redis[0] } : {}),
    ...(values.dir !== undefined ? { dir: path.resolve(values.dir) } : {}),
    logLevel: values['log-level'],
  };
}

function demoConfig(o: DemoOptions, db: EmbeddedPostgres, dirs: { rules: string; audit: string }, tokenHash: string, auditKey: string | undefined): Config {
  const parsed = configSchema.safeParse({
    listen: o.listen,
    upstream: { url: `postgres://${db.host.includes(':') ? `[${db.host}]` : db.host}:${db.port}`, sslmode: 'disable' },
    workers: 1,
    rulesDir: dirs.rules,
    logLevel: o.logLevel,
    ...(o.redisUrl ? { redisUrl: o.redisUrl } : {}),
    audit: {
      journalDir: dirs.audit,
      instanceId: 'demo',
      stream: AUDIT_STREAM,
      ...(auditKey ? { hmacKey: auditKey } : {}),
    },
    approval: {
      store: 'memory',
      listen: o.approvalListen,
      timeoutSeconds: 600,
      reviewers: [{ name: REVIEWER, tokenHash, groups: ['dba'], actsAs: [] }],
    },
    limits: { shutdownGraceMs: SHUTDOWN_GRACE_MS },
  });
  if (!parsed.success) {
    const names: Record<string, string> = { listen: '--listen', 'approval.listen': '--approval-listen', logLevel: '--log-level', redisUrl: '--redis' };
    throw new DemoUsageError(parsed.error.issues.map((i) => `${names[i.path.join('.')] ?? i.path.join('.')}: ${i.message}`).join('; '));
  }
  return parsed.data;
}

/** What the user reads once everything is up: where to connect and what to try. */
function banner(o: {
  psqlUrl: string;
  pageUrl: string;
  token: string;
  db: EmbeddedPostgres;
  rulesDir: string;
  audit: string;
  kept: boolean;
}): string {
  const api = o.pageUrl.replace(/\/$/, '');
  const lines = [
    '',
    'pgwarden demo is running: a query firewall in front of an embedded PostgreSQL (PGlite)',
    'with a sample shop database (customers, orders, employees, the view customer_contacts).',
    '',
    `  connect (as an agent):  psql "${o.psqlUrl}"`,
    `  approval page:          ${o.pageUrl}`,
    `  reviewer token:         ${o.token}`,
    '                          (shown only now: paste it into the page to sign in)',
    `  rules:                  ${o.rulesDir}  (edit and save: reloaded at once)`,
    `  audit log:              ${o.audit}`,
    `  the database directly:  ${o.db.url}  (no firewall: compare)`,
    ...(o.kept ? [] : ['  (rules and audit journal are removed when the demo stops; --dir DIR keeps them)']),
    '',
    'Try, in psql:',
    '',
    '  1. masking: PII comes back masked, every other column untouched',
    '       SELECT name, email, phone, ssn, card_number, city FROM customers ORDER BY id LIMIT 3;',
    '',
    '  2. review: schema changes wait for a reviewer (psql shows a NOTICE and waits);',
    '     approve the request on the approval page, and the statement runs',
    '       CREATE INDEX orders_status_idx ON orders (status);',
    `     or from another terminal: PGWARDEN_REVIEWER_TOKEN=<token> npx pgwarden approve <id> --url ${api}`,
    '',
    '  3. deny: agents may read customers, never change them',
    '       DELETE FROM customers WHERE id = 1;',
    '',
    '  more: SELECT * FROM customer_contacts;   SELECT upper(email) FROM customers;',
    "        COPY customers TO STDOUT;   SELECT pg_read_file('/etc/passwd');",
    `        psql "${o.psqlUrl.replace('//postgres@', '//dpo@')}" sees raw values (user dpo is exempt in the rules;`,
    '        the embedded database trusts any user name, a real PostgreSQL authenticates it)',
    '',
    'Ctrl-C stops the demo.',
    '',
  ];
  return lines.join('\n');
}

/**
 * With Redis the chain key must be configured (README "Audit log"): PGWARDEN_AUDIT_KEY when set,
 * else the key file of the demo's journal directory, generated on first use (reused when --dir
 * keeps it) exactly as `pgwarden start` makes a journal's key, where the printed `audit tail`
 * command reads it. Without Redis the journal generates and keeps that same key itself.
 */
function redisAuditKey(env: NodeJS.ProcessEnv, auditDir: string): { key: string; generated: boolean } {
  if (env.PGWARDEN_AUDIT_KEY) return { key: env.PGWARDEN_AUDIT_KEY, generated: false };
  const journalOnly = configSchema.parse({ audit: { journalDir: auditDir } });
  return { key: resolveAuditKey(journalOnly, { generate: true }).toString('utf8'), generated: true };
}

/** The audit location, and the command that reads it. */
function auditHint(o: DemoOptions, auditDir: string, generatedKey: boolean): string {
  if (o.redisUrl) {
    // The URL may carry a password: name the variable it came from rather than print it again.
    const redis = o.redisFrom === '--redis' ? '<the --redis URL>' : `"$${o.redisFrom}"`;
    const key = generatedKey ? `"$(cat ${path.join(auditDir, 'audit.key')})"` : '<your PGWARDEN_AUDIT_KEY>';
    return `Redis stream ${AUDIT_STREAM}  (PGWARDEN_AUDIT_KEY=${key} npx pgwarden audit tail --redis ${redis} --audit-stream ${AUDIT_STREAM})`;
  }
  return `${auditDir}  (npx pgwarden audit tail --audit-journal ${auditDir})`;
}

/**
 * Runs the demo until SIGINT or SIGTERM. Resolves with an exit code when it could not start
 * (2: bad options, 1: anything else); once running, the signal handler exits the process (0).
 */
export async function demoCommand(args: string[], env: NodeJS.ProcessEnv = process.env, out: Out = (s) => process.stdout.write(s), err: Out = (s) => process.stderr.write(s)): Promise<number> {
  let opts: DemoOptions | 'help';
  try {
    opts = parseOptions(args, env);
  } catch (e) {
    err(`pgwarden demo: ${(e as Error).message}\n\n${DEMO_USAGE}`);
    return 2;
  }
  if (opts === 'help') {
    out(DEMO_USAGE);
    return 0;
  }
  const o = opts;

  const root = o.dir ?? mkdtempSync(path.join(tmpdir(), 'pgwarden-demo-'));
  const dirs = { rules: path.join(root, 'rules'), audit: path.join(root, 'audit') };
  let db: EmbeddedPostgres | null = null;
  let inst: RunningInstance | null = null;
  let stopping = false;

  const cleanup = async (): Promise<void> => {
    await inst?.stop().catch((e: unknown) => err(`pgwarden demo: while stopping pgwarden: ${(e as Error).message}\n`));
    await db?.stop().catch(() => undefined);
    if (!o.dir) rmSync(root, { recursive: true, force: true });
  };
  // Installed first: Ctrl-C while PGlite is still starting stops cleanly too.
  let startup: Promise<unknown> = Promise.resolve();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      err(`pgwarden demo: ${signal} again, exiting without waiting\n`);
      process.exit(130);
    }
    stopping = true;
    out('\nstopping the demo ...\n');
    void startup
      .catch(() => undefined)
      .then(cleanup)
      .then(() => {
        out('demo stopped\n');
        process.exit(0);
      });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const run = async (): Promise<void> => {
    mkdirSync(dirs.audit, { recursive: true, mode: 0o700 });
    // A kept directory keeps the user's edits to its rules from one run to the next.
    if (!existsSync(dirs.rules)) writeDemoRules(dirs.rules);
    const auditKey = o.redisUrl ? redisAuditKey(env, dirs.audit) : undefined;
    const dbAt = splitHostPort(o.dbListen);
    out('pgwarden demo: starting the embedded PostgreSQL (PGlite) and loading the sample data ...\n');
    db = await startEmbeddedPostgres({ host: dbAt.host, port: dbAt.port, seed: SEED_SQL });
    if (stopping) return;
    const { token } = newReviewerToken();
    const config = demoConfig(o, db, dirs, hashReviewerToken(token), auditKey?.key);
    out('pgwarden demo: starting pgwarden in front of it ...\n');
    inst = await startInstance(config, createLogger(config.logLevel));
    if (stopping) return;
    const host = config.listen.slice(0, config.listen.lastIndexOf(':'));
    out(
      banner({
        psqlUrl: `postgres://postgres@${host}:${inst.proxy.port}/postgres`,
        pageUrl: inst.review?.url ?? '(approvals are off)',
        token,
        db,
        rulesDir: dirs.rules,
        audit: auditHint(o, dirs.audit, auditKey?.generated ?? false),
        kept: o.dir !== undefined,
      }),
    );
  };
  startup = run();
  try {
    await startup;
    return -1; // keep running until a signal
  } catch (e) {
    if (stopping) return -1;
    stopping = true;
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
    const error = e as NodeJS.ErrnoException;
    if (e instanceof DemoUsageError) {
      err(`pgwarden demo: ${error.message}\n`);
      return 2;
    }
    if (error.code === 'EADDRINUSE') {
      err(`pgwarden demo: ${error.message}: another program uses that port; choose others with --listen / --approval-listen (port 0 picks a free one)\n`);
      return 1;
    }
    err(`pgwarden demo: could not start: ${error.message}\n`);
    return 1;
  }
}
