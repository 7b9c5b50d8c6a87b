import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { directClient } from '../helpers/proxy.js';
import {
  DENY_REASON,
  MASKED_EMAILS,
  RAW_PII,
  REVIEWER_DENIAL,
  RULE_DENIAL,
  reviewHolds,
  startCompatEnv,
  vaultIds,
  type CompatEnv,
  type Decision,
} from '../helpers/real-clients.js';

/**
 * node-postgres (pg) and postgres.js, unchanged, through pgwarden with masking and review rules
 * on: what their basic-use tests (node-pg.test.ts, postgres-js.test.ts) do not cover. A PII
 * column comes back masked while every other value equals what the same driver reads directly;
 * a held statement waits until a scripted reviewer approves it over the REST API and then
 * returns its rows; a reviewer's denial and a rule's denial arrive as errors with SQLSTATE 42501.
 */
const MASKED_QUERY = 'SELECT id, name, email, ssn, credit_limit, balance, joined FROM customers ORDER BY id';
const CLEAN_COLUMNS = ['id', 'name', 'balance', 'joined'] as const;

let env: CompatEnv;

beforeAll(async () => {
  env = await startCompatEnv('pgw_rc_node');
});

afterAll(async () => {
  await env?.close();
});

/**
 * Runs `call` (a client call that may be held) while a scripted reviewer decides holds of
 * `application`; each decision records whether the call had already settled at that moment.
 */
async function whileReviewing<T>(application: string, call: () => Promise<T>): Promise<{ result: T | undefined; error: any; decisions: Decision[] }> {
  let settled = false;
  const reviewer = reviewHolds(env.inst, { database: env.db, application }, { probe: () => ({ settled }) });
  let result: T | undefined;
  let error: any;
  try {
    result = await call();
  } catch (e) {
    error = e;
  } finally {
    settled = true;
  }
  return { result, error, decisions: await reviewer.stop() };
}

function expectNoRawPii(value: unknown): void {
  const text = JSON.stringify(value);
  for (const raw of RAW_PII) expect(text, `raw ${raw} leaked`).not.toContain(raw);
}

describe('node-postgres (pg)', () => {
  const APP = 'pgw-node-pg';
  let client: pg.Client;
  let direct: pg.Client;
  const notices: { severity?: string | undefined; code?: string | undefined; message?: string | undefined }[] = [];

  beforeAll(async () => {
    client = new pg.Client({ host: '127.0.0.1', port: env.proxyPort, user: 'postgres', database: env.db, application_name: APP });
    client.on('notice', (n) => notices.push(n));
    await client.connect();
    direct = directClient(env.db);
    await direct.connect();
  });

  afterAll(async () => {
    await client?.end();
    await direct?.end();
  });

  it('masks PII columns and returns every other column as a direct connection does (simple and extended protocol)', async () => {
    const want = await direct.query(MASKED_QUERY);
    expect(want.rows[0].email).toBe('alice@example.com');
    const simple = await client.query(MASKED_QUERY);
    // A named statement, executed twice: the second Execute reuses it without a new Parse.
    const named1 = await client.query({ name: 'masked_by_id', text: `${MASKED_QUERY.replace(' ORDER BY id', '')} WHERE id >= $1 ORDER BY id`, values: [1] });
    const named2 = await client.query({ name: 'masked_by_id', text: `${MASKED_QUERY.replace(' ORDER BY id', '')} WHERE id >= $1 ORDER BY id`, values: [1] });
    for (const [label, r] of [['simple', simple], ['named', named1], ['named again', named2]] as const) {
      expect(r.rows, label).toHaveLength(2);
      r.rows.forEach((row, i) => {
        for (const c of CLEAN_COLUMNS) expect(row[c], `${label} ${c}`).toEqual(want.rows[i][c]);
        expect([row.email, row.ssn, row.credit_limit], label).toEqual([MASKED_EMAILS[i], '***', '***']);
      });
      // The masked int column is announced as text (OID 25); the clean ones keep their types.
      expect(r.fields.map((f) => [f.name, f.dataTypeID]), label).toEqual(want.fields.map((f) => [f.name, ['email', 'ssn', 'credit_limit'].includes(f.name) ? 25 : f.dataTypeID]));
      expectNoRawPii(r.rows);
    }
  });

  it('waits on a held parameterised query, gets the hold notice, and returns its rows once approved', async () => {
    notices.length = 0;
    const { result, error, decisions } = await whileReviewing(APP, () => client.query('SELECT id, label FROM vault WHERE id <= $1 ORDER BY id', [2]));
    expect(error).toBeUndefined();
    expect(result!.rows).toEqual([{ id: 1, label: 'gold' }, { id: 2, label: 'silver' }]);
    expect(decisions).toHaveLength(1);
    expect(decisions[0]).toMatchObject({ status: 200, before: { settled: false }, verdict: { verb: 'approve' }, view: { rule: 'vault-review', session: { application: APP } } });
    expect(decisions[0]!.view.statements.map((s) => s.text)).toEqual(['SELECT id, label FROM vault WHERE id <= $1 ORDER BY id']);
    expect(notices.map((n) => [n.severity, n.code, n.message])).toEqual([['NOTICE', '00000', `pgwarden: statement held for review (request ${decisions[0]!.id})`]]);
  });

  it('gets 42501 with the reviewer and reason when the held DELETE is denied; nothing is deleted and the client goes on', async () => {
    const { error, decisions } = await whileReviewing(APP, () => client.query('DELETE FROM vault WHERE id = $1', [1]));
    expect(decisions.map((d) => [d.verdict.verb, d.verdict.reason, d.before])).toEqual([['deny', DENY_REASON, { settled: false }]]);
    expect(error).toBeInstanceOf(pg.DatabaseError);
    expect([error.severity, error.code, error.message, error.detail]).toEqual([
      'ERROR',
      '42501',
      REVIEWER_DENIAL,
      `Approval request ${decisions[0]!.id} was denied; the statement was not run.`,
    ]);
    expect(await vaultIds(env.db)).toEqual([1, 2]);
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('masks the rows of EXECUTE of a SQL PREPARE over the masked table', async () => {
    await client.query('PREPARE customer_contact(int) AS SELECT name, email, ssn FROM customers WHERE id = $1');
    try {
      expect((await client.query('EXECUTE customer_contact(1)')).rows).toEqual([{ name: 'Alice', email: 'a***@example.com', ssn: '***' }]);
    } finally {
      await client.query('DEALLOCATE customer_contact');
    }
  });

  it('masks the rows of a held statement once it is approved (approval does not lift masking)', async () => {
    const { result, error, decisions } = await whileReviewing(APP, () => client.query('SELECT c.email, c.ssn, v.label FROM customers c JOIN vault v ON v.id = c.id WHERE c.id = $1', [1]));
    expect(error).toBeUndefined();
    expect(decisions).toHaveLength(1);
    expect(result!.rows).toEqual([{ email: 'a***@example.com', ssn: '***', label: 'gold' }]);
  });

  // Was a PII leak: a PREPARE held and approved was not recorded, so its EXECUTE was held as
  // unanalysable and, once approved, returned raw values.
  it('masks the rows of EXECUTE of a SQL PREPARE that was held and approved', async () => {
    const { result, error } = await whileReviewing(APP, async () => {
      await client.query('PREPARE vault_customer(int) AS SELECT c.email, c.ssn, v.label FROM customers c JOIN vault v ON v.id = c.id WHERE c.id = $1');
      try {
        return (await client.query('EXECUTE vault_customer(1)')).rows;
      } finally {
        await client.query('DEALLOCATE vault_customer');
      }
    });
    expect(error).toBeUndefined();
    expect(result).toEqual([{ email: 'a***@example.com', ssn: '***', label: 'gold' }]);
  });

  it('gets 42501 naming the rule for a statement the rules deny, with no hold', async () => {
    const { error, decisions } = await whileReviewing(APP, () => client.query('SELECT pg_read_file($1)', ['/etc/hostname']));
    expect(decisions).toEqual([]);
    expect([error?.code, error?.message, error?.detail]).toEqual(['42501', RULE_DENIAL, 'reading server files is not allowed']);
    expect((await client.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
  });
});

describe('postgres.js', () => {
  const APP = 'pgw-postgresjs';
  type Sql = ReturnType<typeof postgres>;
  let sql: Sql;
  let direct: Sql;
  const notices: postgres.Notice[] = [];

  beforeAll(() => {
    // One connection, default options: every tagged query is a named prepared statement.
    sql = postgres({ host: '127.0.0.1', port: env.proxyPort, user: 'postgres', database: env.db, max: 1, connection: { application_name: APP }, onnotice: (n) => notices.push(n) });
    direct = postgres({ host: env.upstream.host, port: env.upstream.port, user: 'postgres', database: env.db, max: 1, onnotice: () => {} });
  });

  afterAll(async () => {
    await sql?.end({ timeout: 2 });
    await direct?.end({ timeout: 2 });
  });

  it('masks PII columns and returns every other column as a direct connection does (prepared and unsafe)', async () => {
    const want = await direct.unsafe(MASKED_QUERY);
    expect(want[0]!.email).toBe('alice@example.com');
    const prepared = async (s: Sql) => s`SELECT id, name, email, ssn, credit_limit, balance, joined FROM customers WHERE id >= ${1} ORDER BY id`;
    const results = [
      ['prepared', await prepared(sql)],
      ['prepared again', await prepared(sql)],
      ['unsafe (not prepared)', await sql.unsafe(MASKED_QUERY, [], { prepare: false })],
    ] as const;
    expect(await prepared(direct)).toEqual(want.map((r) => ({ ...r })));
    for (const [label, rows] of results) {
      expect(rows, label).toHaveLength(2);
      rows.forEach((row, i) => {
        for (const c of CLEAN_COLUMNS) expect(row[c], `${label} ${c}`).toEqual(want[i]![c]);
        expect([row.email, row.ssn, row.credit_limit], label).toEqual([MASKED_EMAILS[i], '***', '***']);
      });
      expect(rows.columns.map((c) => [c.name, c.type]), label).toEqual(want.columns.map((c) => [c.name, ['email', 'ssn', 'credit_limit'].includes(c.name) ? 25 : c.type]));
      expectNoRawPii([...rows]);
    }
  });

  it('waits on a held statement, gets the hold notice, and returns its rows once approved', async () => {
    notices.length = 0;
    const { result, error, decisions } = await whileReviewing(APP, async () => [...(await sql`SELECT id, label FROM vault WHERE id <= ${2} ORDER BY id`)]);
    expect(error).toBeUndefined();
    expect(result).toEqual([{ id: 1, label: 'gold' }, { id: 2, label: 'silver' }]);
    // One request per round trip postgres.js makes (see the next test); every one was the vault
    // read, approved while the query was still waiting.
    expect(decisions.length).toBeGreaterThanOrEqual(1);
    for (const d of decisions) {
      expect(d).toMatchObject({ status: 200, before: { settled: false }, verdict: { verb: 'approve' }, view: { rule: 'vault-review', session: { application: APP } } });
      expect(d.view.statements.map((s) => s.text)).toEqual(['SELECT id, label FROM vault WHERE id <= $1 ORDER BY id']);
    }
    expect(notices.map((n) => [n.severity, n.code, n.message])).toEqual(
      decisions.map((d) => ['NOTICE', '00000', `pgwarden: statement held for review (request ${d.id})`]),
    );
  });

  it('asks reviewers once when the statement is already prepared on the connection (Bind/Execute/Sync only)', async () => {
    // Same text as the test above: postgres.js reuses its named statement.
    const { result, decisions } = await whileReviewing(APP, async () => [...(await sql`SELECT id, label FROM vault WHERE id <= ${1} ORDER BY id`)]);
    expect(result).toEqual([{ id: 1, label: 'gold' }]);
    expect(decisions.map((d) => [d.verdict.verb, d.before])).toEqual([['approve', { settled: false }]]);
  });

  // KNOWN BUG (reported): for a new statement with parameters postgres.js first sends
  // Parse(S_n)/Describe(S_n)/Flush, and only after ParameterDescription sends Bind/Execute/Sync.
  // pgwarden holds the Parse/Describe/Flush batch (which runs nothing) as one approval request and
  // then the Bind/Execute/Sync as a second one, so reviewers must approve one query twice.
  it('asks reviewers once for a new parameterised statement', async () => {
    const { result, decisions } = await whileReviewing(APP, async () => [...(await sql`SELECT label FROM vault WHERE id = ${2}`)]);
    expect(result).toEqual([{ label: 'silver' }]);
    expect(decisions).toHaveLength(1);
  });

  it('gets 42501 with the reviewer and reason when the held DELETE is denied; nothing is deleted and the connection goes on', async () => {
    const { error, decisions } = await whileReviewing(APP, async () => sql`DELETE FROM vault WHERE id = ${1}`);
    expect(decisions.map((d) => [d.verdict.verb, d.verdict.reason, d.before])).toEqual([['deny', DENY_REASON, { settled: false }]]);
    expect(error).toBeInstanceOf(postgres.PostgresError);
    expect([error.severity, error.code, error.message, error.detail]).toEqual([
      'ERROR',
      '42501',
      REVIEWER_DENIAL,
      `Approval request ${decisions[0]!.id} was denied; the statement was not run.`,
    ]);
    expect(await vaultIds(env.db)).toEqual([1, 2]);
    expect([...(await sql`SELECT 1 AS one`)]).toEqual([{ one: 1 }]);
  });

  it('gets 42501 naming the rule for a statement the rules deny, inside sql.begin, which rolls back', async () => {
    const { error, decisions } = await whileReviewing(APP, () =>
      sql.begin(async (tx) => {
        await tx`INSERT INTO products VALUES (99, 'never', 0)`;
        await tx`SELECT pg_read_file(${'/etc/hostname'})`;
      }),
    );
    expect(decisions).toEqual([]);
    expect([error?.code, error?.message, error?.detail]).toEqual(['42501', RULE_DENIAL, 'reading server files is not allowed']);
    expect([...(await sql`SELECT count(*)::int AS n FROM products WHERE id = 99`)]).toEqual([{ n: 0 }]);
  });
});
