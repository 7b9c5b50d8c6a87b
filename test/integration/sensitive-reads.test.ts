import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Classifier, loadParser } from '../../src/classify/classifier.js';
import { silentLogger } from '../../src/logger.js';
import { BUNDLED_RULES_DIR } from '../../src/policy/build-judge.js';
import { PolicyJudge } from '../../src/policy/policy-judge.js';
import { RowEstimator } from '../../src/policy/row-estimator.js';
import { RulesStore } from '../../src/policy/rules-store.js';
import { UPSTREAM_URL, createTestDatabase, directClient, startTestProxy } from '../helpers/proxy.js';

/**
 * Reads of sensitive tables: the planner estimate turns a large read into a bulk export (review),
 * and the run-time row cap stops any read that returns more rows than allowed, whatever LIMIT,
 * Execute row limit or cursor the client uses.
 */
const ROWS = 20_000;
const THRESHOLD = 1000;
const CAP = 500;

let db: Awaited<ReturnType<typeof createTestDatabase>>;
let rulesDir: string;
let rules: RulesStore;
let estimator: RowEstimator;
let proxy: Awaited<ReturnType<typeof startTestProxy>>;
let client: pg.Client;

beforeAll(async () => {
  db = await createTestDatabase('pgw_sens');
  const d = directClient(db.name);
  await d.connect();
  await d.query(`CREATE TABLE big AS SELECT g AS id, 'row ' || g AS v FROM generate_series(1, ${ROWS}) g`);
  await d.query('CREATE UNIQUE INDEX ON big (id)');
  await d.query('CREATE TABLE plain AS SELECT g AS id FROM generate_series(1, 5000) g');
  await d.query('ANALYZE');
  await d.end();

  rulesDir = mkdtempSync(path.join(tmpdir(), 'pgw-sensitive-'));
  cpSync(BUNDLED_RULES_DIR, rulesDir, { recursive: true });
  const policyFile = path.join(rulesDir, 'policy.yaml');
  const text = readFileSync(policyFile, 'utf8').replace(
    /sensitive:[\s\S]*$/,
    `sensitive:\n  tables: [public.big]\n  row_threshold: ${THRESHOLD}\n  row_cap: ${CAP}\n`,
  );
  writeFileSync(policyFile, text);
  await loadParser();
  rules = new RulesStore(rulesDir, silentLogger);
  estimator = new RowEstimator(UPSTREAM_URL.replace('://', '://postgres@'), silentLogger);
  proxy = await startTestProxy({}, { judge: new PolicyJudge(rules, new Classifier(), estimator) });
  client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'postgres', database: db.name });
  await client.connect();
});

afterAll(async () => {
  await client?.end();
  await proxy?.shutdown(1000);
  await estimator?.close();
  rules?.close();
  rmSync(rulesDir, { recursive: true, force: true });
  await db?.drop();
});

async function errorOf(p: Promise<unknown>): Promise<pg.DatabaseError> {
  try {
    await p;
  } catch (err) {
    return err as pg.DatabaseError;
  }
  throw new Error('expected the statement to be refused');
}

describe('planner estimate: large reads of sensitive tables are bulk exports', () => {
  it('sends a full read of a sensitive table to review, saying what the planner expects', async () => {
    const err = await errorOf(client.query('SELECT * FROM big'));
    expect(err.code).toBe('42501');
    expect(err.message).toBe('statement requires approval: bulk-export; no approval channel is configured');
    expect(err.detail).toMatch(/planner estimates 20000 rows .* above the threshold of 1000/);
  });

  it('allows a narrow read of the same table', async () => {
    const r = await client.query('SELECT v FROM big WHERE id = 42');
    expect(r.rows).toEqual([{ v: 'row 42' }]);
  });

  it.each(['LIMIT ALL', 'LIMIT NULL'])('is not fooled by %s', async (limit) => {
    const err = await errorOf(client.query(`SELECT * FROM big ${limit}`));
    expect(err.message).toMatch(/^statement requires approval: bulk-export/);
  });

  it('does not estimate reads of tables that are not sensitive', async () => {
    const r = await client.query('SELECT count(*)::int AS n FROM (SELECT * FROM plain) s');
    expect(r.rows).toEqual([{ n: 5000 }]);
  });
});

describe('row cap: no read of a sensitive table returns more than the cap', () => {
  it('cuts off a parameterised read (not estimable) at the cap with 54000, and the connection stays usable', async () => {
    const err = await errorOf(client.query('SELECT * FROM big WHERE id > $1', [0]));
    expect(err.code).toBe('54000');
    expect(err.message).toBe(`pgwarden: result exceeds the row cap of ${CAP} rows for sensitive table(s) big`);
    const ok = await client.query('SELECT 1 AS one');
    expect(ok.rows).toEqual([{ one: 1 }]);
  });

  it('allows a parameterised read that stays under the cap', async () => {
    const r = await client.query('SELECT id FROM big WHERE id <= $1', [CAP]);
    expect(r.rowCount).toBe(CAP);
  });

  it('counts rows across Execute calls with a row limit (a postgres.js cursor of 100 rows)', async () => {
    const sql = postgres({ host: '127.0.0.1', port: proxy.port, user: 'postgres', database: db.name, max: 1, onnotice: () => {} });
    let received = 0;
    let failure: { code?: string } | undefined;
    try {
      await sql`SELECT * FROM big WHERE id > ${0}`.cursor(100, (rows) => {
        received += rows.length;
      });
    } catch (err) {
      failure = err as { code?: string };
    } finally {
      await sql.end();
    }
    expect(failure?.code).toBe('54000');
    expect(received).toBeLessThanOrEqual(CAP);
  });

  it('counts rows across FETCHes of one cursor', async () => {
    await client.query('BEGIN');
    try {
      await client.query('DECLARE c CURSOR FOR SELECT * FROM big');
      const first = await client.query('FETCH 300 FROM c');
      expect(first.rowCount).toBe(300);
      const err = await errorOf(client.query('FETCH 300 FROM c'));
      expect(err.code).toBe('54000');
    } finally {
      await client.query('ROLLBACK');
    }
  });

  it('starts counting again for a cursor declared anew', async () => {
    await client.query('BEGIN');
    try {
      await client.query('DECLARE c2 CURSOR FOR SELECT * FROM big');
      await client.query('FETCH 400 FROM c2');
      await client.query('CLOSE c2');
      await client.query('DECLARE c2 CURSOR FOR SELECT * FROM big');
      const again = await client.query('FETCH 400 FROM c2');
      expect(again.rowCount).toBe(400);
    } finally {
      await client.query('ROLLBACK');
    }
  });
});
