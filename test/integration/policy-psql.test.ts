import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Classifier, loadParser } from '../../src/classify/classifier.js';
import { silentLogger } from '../../src/logger.js';
import { BUNDLED_RULES_DIR } from '../../src/policy/build-judge.js';
import { PolicyJudge } from '../../src/policy/policy-judge.js';
import { RulesStore } from '../../src/policy/rules-store.js';
import { UPSTREAM_URL, createTestDatabase, directClient, startTestProxy } from '../helpers/proxy.js';
import { libpqEnv, run, type RunResult } from '../helpers/spawn.js';

/**
 * psql through pgwarden with the shipped rules: refusals print like server errors, psql's own
 * catalog queries (backslash commands) are allowed, and scripts that hit a refusal commit nothing.
 */

// directClient() relies on PGUSER when the connection string names no user.
process.env.PGUSER ??= 'postgres';

type Proxy = Awaited<ReturnType<typeof startTestProxy>>;

let db: Awaited<ReturnType<typeof createTestDatabase>>;
let rules: RulesStore;
let proxy: Proxy;
let direct: pg.Client;
let viaProxy: Record<string, string>;
let toServer: Record<string, string>;
let scratch: string;

function psql(env: Record<string, string>, args: string[]): Promise<RunResult> {
  return run('psql', ['-X', ...args], { env, timeoutMs: 30_000 });
}

async function tableExists(name: string): Promise<boolean> {
  const r = await direct.query<{ oid: string | null }>('SELECT to_regclass($1)::text AS oid', [`public.${name}`]);
  return r.rows[0]?.oid !== null;
}

async function rowExists(id: number): Promise<boolean> {
  const r = await direct.query('SELECT 1 FROM t WHERE id = $1', [id]);
  return r.rowCount === 1;
}

beforeAll(async () => {
  db = await createTestDatabase('pgw_polpsql');
  direct = directClient(db.name);
  await direct.connect();
  await direct.query(`
    CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL DEFAULT '', created timestamptz DEFAULT now());
    CREATE INDEX t_v_idx ON t (lower(v));
    CREATE TABLE child (id int PRIMARY KEY, t_id int REFERENCES t(id), CHECK (id > 0));
    CREATE VIEW t_view AS SELECT id, v FROM t;
    CREATE FUNCTION t_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM t';
    COMMENT ON TABLE t IS 'the test table';
    INSERT INTO t (id, v) VALUES (1, 'one'), (2, 'two');
  `);
  await loadParser();
  rules = new RulesStore(BUNDLED_RULES_DIR, silentLogger);
  proxy = await startTestProxy({}, { judge: new PolicyJudge(rules, new Classifier()) });
  viaProxy = libpqEnv(proxy.url(db.name));
  toServer = libpqEnv(UPSTREAM_URL, db.name);
  scratch = mkdtempSync(path.join(tmpdir(), 'pgw-psql-'));
});

afterAll(async () => {
  await proxy?.shutdown(1000);
  rules?.close();
  await direct?.end().catch(() => undefined);
  await db?.drop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe('psql refusals', () => {
  it('prints "ERROR:  statement requires approval: schema-changes" for DROP TABLE, exits non-zero and drops nothing', async () => {
    const r = await psql(viaProxy, ['-c', 'DROP TABLE t']);
    expect(r.stderr).toContain('ERROR:  statement requires approval: schema-changes; no approval channel is configured');
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(await tableExists('t')).toBe(true);
  });

  it('refuses "SELECT 1; SELECT pg_read_file(...)" as a whole: not even the first result is printed', async () => {
    const sql = "SELECT 1 AS first_result; SELECT pg_read_file('x')";
    const [proxied, server] = await Promise.all([psql(viaProxy, ['-c', sql]), psql(toServer, ['-c', sql])]);
    // Directly, the server runs the first SELECT before failing on the second.
    expect(server.stdout).toContain('first_result');
    expect(proxied.stdout).not.toContain('first_result');
    expect(proxied.stdout).toBe('');
    expect(proxied.stderr).toContain('ERROR:  pgwarden: statement denied by rule "server-files-and-network"');
    expect(proxied.code).not.toBe(0);
  });
});

describe('psql backslash commands under the shipped rules', () => {
  it.each([['\\dt'], ['\\d t'], ['\\d+ t'], ['\\dt+'], ['\\di'], ['\\dv'], ['\\df t_count'], ['\\dn']])(
    'prints the same %s output through the proxy as directly',
    async (command) => {
      const [proxied, server] = await Promise.all([psql(viaProxy, ['-c', command]), psql(toServer, ['-c', command])]);
      expect(server.code).toBe(0);
      expect(proxied.stderr).toBe('');
      expect(proxied.code).toBe(0);
      expect(proxied.stdout).toBe(server.stdout);
    },
  );

  it('runs \\l and \\du (lists that other test files change concurrently, so not compared byte for byte)', async () => {
    const databases = await psql(viaProxy, ['-c', '\\l']);
    expect(databases.stderr).toBe('');
    expect(databases.code).toBe(0);
    expect(databases.stdout).toContain(db.name);
    const roles = await psql(viaProxy, ['-c', '\\du']);
    expect(roles.stderr).toBe('');
    expect(roles.code).toBe(0);
    expect(roles.stdout).toMatch(/^ postgres\s+\|/m);
  });

  it('lists the test table in \\dt and describes its columns and index in \\d t', async () => {
    const list = await psql(viaProxy, ['-c', '\\dt']);
    expect(list.stdout).toMatch(/public \| t\s+\| table/);
    const describeT = await psql(viaProxy, ['-c', '\\d t']);
    expect(describeT.stdout).toContain('Table "public.t"');
    expect(describeT.stdout).toContain('t_v_idx');
    expect(describeT.stdout).toContain('Referenced by:');
  });
});

describe('psql scripts', () => {
  it('with ON_ERROR_STOP, a script BEGIN/INSERT/DROP/COMMIT stops at the refused DROP and leaves no inserted row', async () => {
    const file = path.join(scratch, 'stop.sql');
    writeFileSync(file, "BEGIN;\nINSERT INTO t (id, v) VALUES (42, 'script');\nDROP TABLE t;\nCOMMIT;\n");
    const r = await psql(viaProxy, ['-v', 'ON_ERROR_STOP=1', '-f', file]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(`psql:${file}:3: ERROR:  statement requires approval: schema-changes`);
    expect(r.stdout).not.toContain('COMMIT');
    expect(await rowExists(42)).toBe(false);
    expect(await tableExists('t')).toBe(true);
  });

  it('without ON_ERROR_STOP, the COMMIT after the refused DROP reports ROLLBACK and leaves no inserted row', async () => {
    const file = path.join(scratch, 'continue.sql');
    writeFileSync(file, "BEGIN;\nINSERT INTO t (id, v) VALUES (43, 'script');\nDROP TABLE t;\nSELECT 1;\nCOMMIT;\n");
    const r = await psql(viaProxy, ['-f', file]);
    expect(r.stderr).toContain(`psql:${file}:3: ERROR:  statement requires approval: schema-changes`);
    expect(r.stderr).toContain(`psql:${file}:4: ERROR:  current transaction is aborted`);
    expect(r.stdout.trim().split('\n')).toEqual(['BEGIN', 'INSERT 0 1', 'ROLLBACK']);
    expect(await rowExists(43)).toBe(false);
  });
});
