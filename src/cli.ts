#!/usr/bin/env node
import cluster from 'node:cluster';
import { parseArgs } from 'node:util';
import { auditCommand } from './audit/audit-cli.js';
import { agentSecretCommand } from './identity/agent-secret-cli.js';
import { requestsCommand } from './approval/requests-cli.js';
import { ConfigError, loadConfig, parseConfigArgs } from './config/load.js';
import { configCommand } from './config/config-cli.js';
import { startupReport } from './config/startup-checks.js';
import { createLogger } from './logger.js';
import { runProxy } from './server/run.js';
import { Classifier, loadParser } from './classify/classifier.js';
import { BUNDLED_RULES_DIR } from './policy/build-judge.js';
import { PolicyJudge } from './policy/policy-judge.js';
import { RulesInvalid, loadRules } from './policy/rules-loader.js';

/** Command-line entry point: `pgwarden <command> [options]`. */
const USAGE = `Usage: pgwarden <command> [options]

Commands:
  start                      run the proxy
  demo                       try it: embedded PostgreSQL with sample PII, example rules, approval
                             page; prints what to try (pgwarden demo --help)
  explain "<sql>"            classify SQL and show which rule decides, as JSON
                             [--rules DIR] [--user U] [--database D] [--application A] [--in-transaction]
  rules check [DIR]          validate rule files; exit 1 listing every problem
  config check               validate the configuration start would use and print it, secrets hidden
                             [--config FILE] [start options]
  config reference           print the settings table (README "Configuration reference")
  audit tail|verify|export   read and check the audit log (pgwarden audit --help)
  requests                   list statements held for review [--status pending|recent] [--json]
  approve <id>               approve [--reason TEXT] [--grant-minutes N]
  deny <id> --reason TEXT    refuse; the agent gets the reason in its error
  reviewer-token             print a new reviewer token and its hash for the config
  agent-secret               print the SCRAM verifier of an agent's secret (stdin, or --generate)
                             (requests/approve/deny: PGWARDEN_REVIEWER_TOKEN, --url or PGWARDEN_APPROVAL_URL)

Options for start (each also settable as PGWARDEN_* env var or in the config file;
every setting: pgwarden config reference):
  --config FILE                 YAML config file (env PGWARDEN_CONFIG)
  --listen HOST:PORT            where agents connect (default 127.0.0.1:6432)
  --upstream URL                postgres://host:port of the real server (default postgres://127.0.0.1:5432)
  --upstream-sslmode MODE       disable | prefer | require | verify-ca | verify-full (default prefer)
  --upstream-sslrootcert FILE   CA bundle for verify-ca / verify-full
  --tls-cert FILE --tls-key FILE   terminate TLS for clients
  --workers N                   worker processes (default: number of cores)
  --health-listen HOST:PORT     serve GET /healthz
  --estimator-url URL           postgres:// side connection that EXPLAINs reads of sensitive tables
  --log-level LEVEL             fatal | error | warn | info | debug | trace | silent
  --max-message-bytes N         largest accepted client message (default 64 MiB)
  --redis URL                   redis:// shared by all instances (audit stream); unset: local journal only
  --audit on|off                record every decision (default on)
  --audit-stream KEY            Redis stream of the audit log (default pgwarden:audit)
  --audit-wait refusals|all     decisions that wait for a durable record (default refusals)
  --audit-journal DIR           local audit journal / spool directory (default ./pgwarden-audit)
  --instance-id ID              names this instance's audit chains (default: host name)
  --audit-maxlen N | --audit-retention-hours H   stream retention (default: keep everything)
  (PGWARDEN_AUDIT_KEY: the audit chain's HMAC key, from the environment or config file only)
  --approvals on|off            hold statements the rules send to review (default on; needs --redis)
  --approval-listen HOST:PORT   approval page, WebSocket and API (default 127.0.0.1:6480)
  --approval-public-url URL     the page's address as reviewers reach it (links, Origin check)
  --approval-timeout SECONDS    how long a held statement waits for a verdict (default 300)
  --approval-tls-cert FILE --approval-tls-key FILE   HTTPS for the page and API
  (PGWARDEN_APPROVAL_WEBHOOK: webhook URL; reviewers and OIDC: config file, see README "Approvals")
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  if (command === 'demo') {
    // Loaded only here: the demo brings an embedded PostgreSQL (PGlite) that `start` never needs.
    const { demoCommand } = await import('./demo/demo.js');
    return demoCommand(rest);
  }
  if (command === 'explain') return explainCommand(rest);
  if (command === 'rules') return rulesCommand(rest);
  if (command === 'config') return configCommand(rest);
  if (command === 'audit') return auditCommand(rest);
  if (command === 'agent-secret') return agentSecretCommand(rest);
  if (['requests', 'approve', 'deny', 'reviewer-token'].includes(command)) return requestsCommand(command, rest);
  if (command !== 'start') {
    process.stderr.write(`pgwarden: unknown command "${command}"\n\n${USAGE}`);
    return 2;
  }
  try {
    const { file, flags } = parseConfigArgs(rest);
    const config = loadConfig({ file, env: process.env, flags });
    // Checked once, by the process the operator started; forked workers run the same command line.
    const { problems } = cluster.isPrimary ? startupReport(config) : { problems: [] };
    if (problems.length > 0) throw new ConfigError(`cannot start:\n${problems.map((p) => `  ${p}`).join('\n')}`);
    const log = createLogger(config.logLevel);
    await runProxy(config, log);
    return -1; // keep running
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`pgwarden: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`pgwarden: ${(err as Error).message}\n`);
    return 1;
  }
}

function printRulesProblems(err: RulesInvalid): void {
  for (const p of err.problems) process.stderr.write(`${p.file}: ${p.path}: ${p.message}\n`);
}

async function explainCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        rules: { type: 'string' },
        user: { type: 'string', default: 'agent' },
        database: { type: 'string', default: 'postgres' },
        application: { type: 'string', default: '' },
        'in-transaction': { type: 'boolean', default: false },
      },
    });
  } catch (err) {
    process.stderr.write(`pgwarden explain: ${(err as Error).message}\n`);
    return 2;
  }
  const sql = parsed.positionals.join(' ');
  if (!sql) {
    process.stderr.write('pgwarden explain: give the SQL to explain, e.g. pgwarden explain "DROP TABLE t"\n');
    return 2;
  }
  try {
    await loadParser();
    const policy = loadRules(parsed.values.rules ?? process.env.PGWARDEN_RULES_DIR ?? BUNDLED_RULES_DIR);
    const judge = new PolicyJudge({ current: policy }, new Classifier());
    const result = judge.explain(sql, {
      user: parsed.values.user,
      database: parsed.values.database,
      application: parsed.values.application,
      inTransaction: parsed.values['in-transaction'],
    });
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return 0;
  } catch (err) {
    if (err instanceof RulesInvalid) {
      printRulesProblems(err);
      return 1;
    }
    throw err;
  }
}

function rulesCommand(args: string[]): number {
  const [sub, dir, ...extra] = args;
  if (sub !== 'check' || extra.length > 0) {
    process.stderr.write('usage: pgwarden rules check [DIR]\n');
    return 2;
  }
  const target = dir ?? process.env.PGWARDEN_RULES_DIR ?? 'rules';
  try {
    const policy = loadRules(target);
    process.stdout.write(`${target}: ${policy.files.length} file(s), ${policy.rules.length} rule(s), version ${policy.version}: OK\n`);
    return 0;
  } catch (err) {
    if (err instanceof RulesInvalid) {
      printRulesProblems(err);
      process.stderr.write(`${err.problems.length} problem(s); rules not valid\n`);
      return 1;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then((code) => {
  if (code >= 0) process.exit(code);
});
