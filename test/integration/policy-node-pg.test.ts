import { cpSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Classifier, loadParser } from '../../src/classify/classifier.js';
import { silentLogger } from '../../src/logger.js';
import { BUNDLED_RULES_DIR } from '../../src/policy/build-judge.js';
import { PolicyJudge } from '../../src/policy/policy-judge.js';
import { RulesStore } from '../../src/policy/rules-store.js';
import { createTestDatabase, directClient, startTestProxy } from '../helpers/proxy.js';

/**
 * node-postgres through pgwarden with the shipped rules (rules/*.yaml, copied to a temp dir so a
 * test can edit them): what an application sees when the policy allows, refuses or asks for
 * approval, over the simple and the extended protocol, inside and outside transactions.
 */

// directClient() passes user 'postgres' next to a connection string without a user, and pg lets
// the string's (absent) user win; PGUSER fills the gap where $USER is unset.
process.env.PGUSER ??= 'postgres';

const APPROVAL_PREFIX = 'statement requires approval: schema-changes; no approval channel is configured';
const SERVER_FILES_DENIED = 'pgwarden: statement denied by rule "server-files-and-network"';

type Proxy = Awaited<ReturnType<typeof startTestProxy>>;
type Mode = 'simple' | 'extended' | 'named';
const MODES: Mode[] = ['simple', 'extended', 'named'];

let db: Awaited<ReturnType<typeof createTestDatabase>>;
let rulesDir: string;
let rules: RulesStore;
let proxy: Proxy;
let direct: pg.Client;
const clients: pg.Client[] = [];

let statementSeq = 0;

/**
 * Runs SQL without parameters over the chosen protocol: a simple Query, an unnamed extended
 * batch (Parse/Bind/Describe/Execute/Sync), or a named prepared statement.
 */
function run(client: pg.Client, mode: Mode, text: string): Promise<pg.QueryResult> {
  switch (mode) {
    case 'simple':
      return client.query(text);
    case 'extended': {
      // pg's queryMode forces the extended protocol; @types/pg does not declare it.
      const config: pg.QueryConfig & { queryMode: 'extended' } = { text, values: [], queryMode: 'extended' };
      return client.query(config);
    }
    case 'named':
      return client.query({ name: `pgw_stmt_${++statementSeq}`, text, values: [] });
  }
}

/** The ErrorResponse a statement produced; fails the test if the statement succeeded. */
async function refusal(p: Promise<unknown>): Promise<pg.DatabaseError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof pg.DatabaseError) return err;
    throw err;
  }
  throw new Error('expected the statement to be refused, but it succeeded');
}

async function connect(): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: proxy.url(db.name) });
  clients.push(client);
  await client.connect();
  return client;
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
  db = await createTestDatabase('pgw_polpg');
  direct = directClient(db.name);
  await direct.connect();
  await direct.query(`
    CREATE TABLE t (id int PRIMARY KEY, v text);
    INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 10) g;
    CREATE TABLE guarded (id int PRIMARY KEY, secret text);
    INSERT INTO guarded VALUES (1, 'one'), (2, 'two');
  `);
  rulesDir = mkdtempSync(path.join(tmpdir(), 'pgw-rules-'));
  cpSync(BUNDLED_RULES_DIR, rulesDir, { recursive: true });
  await loadParser();
  rules = new RulesStore(rulesDir, silentLogger);
  const judge = new PolicyJudge(rules, new Classifier());
  proxy = await startTestProxy({}, { judge });
});

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => undefined);
  await proxy?.shutdown(1000);
  rules?.close();
  await direct?.end().catch(() => undefined);
  await db?.drop();
  if (rulesDir) rmSync(rulesDir, { recursive: true, force: true });
});

describe.each(MODES)('with the shipped rules over the %s protocol', (mode) => {
  const id = 100 + MODES.indexOf(mode);

  it('runs ordinary SELECT, INSERT and UPDATE', async () => {
    const client = await connect();
    const inserted = await run(client, mode, `INSERT INTO t (id, v) VALUES (${id}, 'new')`);
    expect(inserted.command).toBe('INSERT');
    expect(inserted.rowCount).toBe(1);
    const updated = await run(client, mode, `UPDATE t SET v = 'changed' WHERE id = ${id}`);
    expect(updated.command).toBe('UPDATE');
    expect(updated.rowCount).toBe(1);
    const selected = await run(client, mode, `SELECT id, v FROM t WHERE id = ${id}`);
    expect(selected.rows).toEqual([{ id, v: 'changed' }]);
    const seen = await direct.query('SELECT v FROM t WHERE id = $1', [id]);
    expect(seen.rows).toEqual([{ v: 'changed' }]);
  });

  it('refuses DROP TABLE as needing approval, leaves the table in place and keeps the connection usable', async () => {
    const client = await connect();
    const err = await refusal(run(client, mode, 'DROP TABLE t'));
    expect(err.code).toBe('42501');
    expect(err.severity).toBe('ERROR');
    expect(err.message.startsWith(APPROVAL_PREFIX)).toBe(true);
    expect(await tableExists('t')).toBe(true);
    const after = await run(client, mode, 'SELECT count(*)::int AS n FROM t WHERE id <= 10');
    expect(after.rows).toEqual([{ n: 10 }]);
  });

  it('denies pg_read_file by rule "server-files-and-network"', async () => {
    const client = await connect();
    const err = await refusal(run(client, mode, "SELECT pg_read_file('/etc/hostname')"));
    expect(err.code).toBe('42501');
    expect(err.message).toBe(SERVER_FILES_DENIED);
    const after = await run(client, mode, 'SELECT 1 AS one');
    expect(after.rows).toEqual([{ one: 1 }]);
  });

  it("reports a syntax error as 42601 with the parser's message and position, like the server does", async () => {
    const client = await connect();
    const viaProxy = await refusal(run(client, mode, 'SELEC 1'));
    const fromServer = await refusal(run(direct, mode, 'SELEC 1'));
    expect(viaProxy.code).toBe('42601');
    expect(viaProxy.message).toBe('syntax error at or near "SELEC"');
    expect(viaProxy.message).toBe(fromServer.message);
    expect(viaProxy.position).toBe(fromServer.position);
    const after = await run(client, mode, 'SELECT 2 AS two');
    expect(after.rows).toEqual([{ two: 2 }]);
  });

  it('refuses SET standard_conforming_strings = off and the setting stays on', async () => {
    const client = await connect();
    const err = await refusal(run(client, mode, 'SET standard_conforming_strings = off'));
    expect(err.code).toBe('42501');
    expect(err.message).toBe('pgwarden: changing standard_conforming_strings is not allowed');
    const shown = await run(client, mode, 'SHOW standard_conforming_strings');
    expect(shown.rows).toEqual([{ standard_conforming_strings: 'on' }]);
  });

  it('inside a transaction, a refused DROP aborts it: the next statement gets 25P02 and ROLLBACK discards the INSERT', async () => {
    const client = await connect();
    const rowId = 200 + MODES.indexOf(mode);
    await run(client, mode, 'BEGIN');
    await run(client, mode, `INSERT INTO t (id, v) VALUES (${rowId}, 'in tx')`);
    const refused = await refusal(run(client, mode, 'DROP TABLE t'));
    expect(refused.code).toBe('42501');
    expect(refused.message.startsWith(APPROVAL_PREFIX)).toBe(true);
    const next = await refusal(run(client, mode, 'SELECT 1'));
    expect(next.code).toBe('25P02');
    expect(next.message.startsWith('current transaction is aborted')).toBe(true);
    const rolledBack = await run(client, mode, 'ROLLBACK');
    expect(rolledBack.command).toBe('ROLLBACK');
    expect(await rowExists(rowId)).toBe(false);
    expect(await tableExists('t')).toBe(true);
    const after = await run(client, mode, `SELECT count(*)::int AS n FROM t WHERE id = ${rowId}`);
    expect(after.rows).toEqual([{ n: 0 }]);
  });

  it('COMMIT after a refusal inside a transaction reports ROLLBACK and commits nothing', async () => {
    const client = await connect();
    const rowId = 300 + MODES.indexOf(mode);
    await run(client, mode, 'BEGIN');
    await run(client, mode, `INSERT INTO t (id, v) VALUES (${rowId}, 'in tx')`);
    const refused = await refusal(run(client, mode, "SELECT pg_read_file('/etc/hostname')"));
    expect(refused.code).toBe('42501');
    const commit = await run(client, mode, 'COMMIT');
    expect(commit.command).toBe('ROLLBACK');
    expect(await rowExists(rowId)).toBe(false);
    const after = await run(client, mode, 'SELECT 3 AS three');
    expect(after.rows).toEqual([{ three: 3 }]);
  });
});

describe('multi-statement simple queries', () => {
  it('refuses "SELECT 1; DROP TABLE t" as a whole', async () => {
    const client = await connect();
    const err = await refusal(client.query('SELECT 1; DROP TABLE t'));
    expect(err.code).toBe('42501');
    expect(err.message.startsWith(APPROVAL_PREFIX)).toBe(true);
    expect(await tableExists('t')).toBe(true);
  });

  it('runs no part of a refused message, not even statements committed before the refused one', async () => {
    const client = await connect();
    // Sent straight to the server, the INSERT would be committed by the COMMIT before DROP runs.
    const err = await refusal(client.query("INSERT INTO t (id, v) VALUES (400, 'x'); COMMIT; DROP TABLE t"));
    expect(err.code).toBe('42501');
    expect(await rowExists(400)).toBe(false);
    expect(await tableExists('t')).toBe(true);
    const after = await client.query('SELECT 4 AS four');
    expect(after.rows).toEqual([{ four: 4 }]);
  });
});

describe('SQL-level PREPARE and cursors', () => {
  it('allows PREPARE of a DELETE (a write) and EXECUTE runs it', async () => {
    const client = await connect();
    await direct.query("INSERT INTO t (id, v) VALUES (500, 'to delete')");
    const prepared = await client.query('PREPARE p AS DELETE FROM t WHERE id = $1');
    expect(prepared.command).toBe('PREPARE');
    const executed = await client.query('EXECUTE p(500)');
    expect(executed.command).toBe('DELETE');
    expect(executed.rowCount).toBe(1);
    expect(await rowExists(500)).toBe(false);
  });

  it('reports PREPARE of a DROP as the syntax error PostgreSQL gives', async () => {
    const client = await connect();
    const viaProxy = await refusal(client.query('PREPARE q AS DROP TABLE t'));
    const fromServer = await refusal(direct.query('PREPARE q AS DROP TABLE t'));
    expect(fromServer.code).toBe('42601');
    expect(viaProxy.code).toBe('42601');
    expect(viaProxy.message).toBe(fromServer.message);
    expect(await tableExists('t')).toBe(true);
  });

  it('denies PREPARE of a statement calling pg_read_file, so it cannot be executed later', async () => {
    const client = await connect();
    const err = await refusal(client.query("PREPARE r AS SELECT pg_read_file('x')"));
    expect(err.code).toBe('42501');
    expect(err.message).toBe(SERVER_FILES_DENIED);
    const exec = await refusal(client.query('EXECUTE r'));
    // Either pgwarden refuses the unknown name or the server reports it missing: never a file read.
    expect(['42501', '26000']).toContain(exec.code);
  });

  it('lets DECLARE and FETCH read through a cursor inside a transaction', async () => {
    const client = await connect();
    await client.query('BEGIN');
    const declared = await client.query('DECLARE c CURSOR FOR SELECT id FROM t WHERE id <= 5 ORDER BY id');
    // pg reports the first word of the command tag "DECLARE CURSOR".
    expect(declared.command).toBe('DECLARE');
    const first = await client.query('FETCH 2 FROM c');
    expect(first.rows).toEqual([{ id: 1 }, { id: 2 }]);
    const second = await client.query({ text: 'FETCH 3 FROM c', values: [], name: 'fetch_three' });
    expect(second.rows).toEqual([{ id: 3 }, { id: 4 }, { id: 5 }]);
    await client.query('CLOSE c');
    const commit = await client.query('COMMIT');
    expect(commit.command).toBe('COMMIT');
  });

  it('denies DECLARE of a cursor over pg_read_file', async () => {
    const client = await connect();
    await client.query('BEGIN');
    const err = await refusal(client.query("DECLARE d CURSOR FOR SELECT pg_read_file('/etc/hostname')"));
    expect(err.code).toBe('42501');
    expect(err.message).toBe(SERVER_FILES_DENIED);
    // The transaction is aborted and the cursor was never declared: the FETCH cannot read anything
    // (pgwarden refuses a FETCH of a cursor it has not seen declared; the server would say 25P02).
    const fetch = await refusal(client.query('FETCH 1 FROM d'));
    expect(['42501', '25P02']).toContain(fetch.code);
    const rollback = await client.query('ROLLBACK');
    expect(rollback.command).toBe('ROLLBACK');
  });
});

describe('protocol-level prepared statements', () => {
  it('keeps answering a named statement reused many times', async () => {
    const client = await connect();
    for (let i = 1; i <= 25; i++) {
      const r = await client.query<{ n: number }>({ name: 'count_above', text: 'SELECT count(*)::int AS n FROM t WHERE id > $1 AND id <= 10', values: [i % 10] });
      expect(r.rows).toEqual([{ n: 10 - (i % 10) }]);
    }
  });

  it('refuses a Bind of a named statement once the rules deny its table, and allows it again when the rule goes', async () => {
    const client = await connect();
    const query = { name: 'read_guarded', text: 'SELECT secret FROM guarded WHERE id = $1', values: [1] };
    expect((await client.query(query)).rows).toEqual([{ secret: 'one' }]);
    const extra = path.join(rulesDir, 'zz-guarded.yaml');
    writeFileSync(
      extra,
      'policy:\n  rules:\n    - name: guarded-table\n      match: { relations: [guarded] }\n      action: deny\n',
    );
    try {
      expect(rules.reload('test')).toBe(true);
      const err = await refusal(client.query(query));
      expect(err.code).toBe('42501');
      expect(err.message).toBe('pgwarden: statement denied by rule "guarded-table"');
      const other = await client.query('SELECT 5 AS five');
      expect(other.rows).toEqual([{ five: 5 }]);
    } finally {
      unlinkSync(extra);
      rules.reload('test');
    }
    expect((await client.query({ ...query, values: [2] })).rows).toEqual([{ secret: 'two' }]);
  });
});
