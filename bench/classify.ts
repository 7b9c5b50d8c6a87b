/**
 * `node dist/bench/classify.js`: classification + policy cost per statement, uncached (a parse
 * every time) and cached (exact-text hit), median and p99, over a realistic corpus: psql's \d
 * catalogue queries (bench/psql-describe-queries.sql), ORM-style statements, pgbench's.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Classifier, classifyUncached, loadParser } from '../src/classify/classifier.js';
import { BUNDLED_RULES_DIR } from '../src/policy/build-judge.js';
import { PolicyJudge } from '../src/policy/policy-judge.js';
import { loadRules } from '../src/policy/rules-loader.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const psqlQueries = readFileSync(path.resolve(here, '../../bench/psql-describe-queries.sql'), 'utf8')
  .split('\n;;;;\n')
  .map((s) => s.trim())
  .filter(Boolean);

const orm = [
  'SELECT "users"."id", "users"."email", "users"."created_at" FROM "users" WHERE "users"."id" = $1 LIMIT $2',
  'INSERT INTO "orders" ("customer_id", "total", "status") VALUES ($1, $2, $3) RETURNING "id"',
  'UPDATE "orders" SET "status" = $1, "updated_at" = now() WHERE "id" = $2',
  'DELETE FROM "sessions" WHERE "expires_at" < $1',
  'SELECT count(*) AS "count" FROM "orders" INNER JOIN "customers" ON "customers"."id" = "orders"."customer_id" WHERE "customers"."country" = $1',
  'SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at > now() - interval \'7 days\' ORDER BY o.created_at DESC LIMIT 50',
  'WITH recent AS (SELECT * FROM orders WHERE created_at > $1) SELECT customer_id, sum(total) FROM recent GROUP BY customer_id HAVING sum(total) > 100',
  'BEGIN',
  'COMMIT',
  'SELECT 1',
  'SET search_path TO app, public',
  'SELECT t.typname, t.oid FROM pg_type t WHERE t.typname = ANY($1)',
];
const pgbench = [
  'SELECT abalance FROM pgbench_accounts WHERE aid = 48213;',
  'UPDATE pgbench_accounts SET abalance = abalance + -4071 WHERE aid = 73152;',
  'UPDATE pgbench_tellers SET tbalance = tbalance + -4071 WHERE tid = 7;',
  'UPDATE pgbench_branches SET bbalance = bbalance + -4071 WHERE bid = 1;',
  'INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 73152, -4071, CURRENT_TIMESTAMP);',
];

function stats(samples: number[]): { median: number; p99: number } {
  const s = [...samples].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)]!, p99: s[Math.min(s.length - 1, Math.floor(s.length * 0.99))]! };
}

function time(fn: () => void, rounds: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    out.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  return out;
}

async function main(): Promise<void> {
  await loadParser();
  const policy = loadRules(BUNDLED_RULES_DIR);
  const corpora: [string, string[]][] = [
    ['psql \\d queries', psqlQueries],
    ['ORM statements', orm],
    ['pgbench statements', pgbench],
  ];
  process.stdout.write(`rules: ${policy.rules.length} rules, version ${policy.version}\n`);
  process.stdout.write('corpus              n   parse+classify µs (median/p99)   +policy uncached   cached decision µs\n');
  for (const [name, corpus] of corpora) {
    const uncached: number[] = [];
    const judged: number[] = [];
    const cached: number[] = [];
    const classifier = new Classifier();
    const judge = new PolicyJudge({ current: policy }, classifier);
    const identity = { user: 'agent', database: 'app', application: 'bench' };
    for (const sql of corpus) {
      time(() => classifyUncached(sql), 20); // warm-up
      uncached.push(...time(() => classifyUncached(sql), 200));
      judged.push(...time(() => judge.explain(sql, identity), 1));
      judge.explain(sql, identity);
      cached.push(...time(() => judge.explain(sql, identity), 2000));
    }
    const u = stats(uncached);
    const j = stats(judged);
    const c = stats(cached);
    process.stdout.write(
      `${name.padEnd(20)}${String(corpus.length).padStart(3)}   ${u.median.toFixed(1).padStart(8)} / ${u.p99.toFixed(1).padEnd(12)}` +
        `   ${j.median.toFixed(1).padStart(6)} / ${j.p99.toFixed(1).padEnd(8)}   ${c.median.toFixed(2).padStart(6)} / ${c.p99.toFixed(2)}\n`,
    );
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${(err as Error).message}\n`);
  process.exit(1);
});
