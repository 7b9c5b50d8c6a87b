import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient } from '../helpers/proxy.js';
import { startTestRedis, type TestRedis } from '../helpers/redis-server.js';
import { agent, callApi, heldId, MASKED_APPROVAL_RULES, PII_PEOPLE_DDL, readAudit, REVIEWERS, startApprovalInstance, until, type ApprovalInstance } from '../helpers/approvals.js';

/**
 * Held statements end to end: real PostgreSQL, a redis-server of the test's own, node-postgres
 * as the agent and the REST API as the reviewer.
 */
let redis: TestRedis;
let inst: ApprovalInstance;
let db: { name: string; drop: () => Promise<void> };

beforeAll(async () => {
  redis = await startTestRedis();
  db = await createTestDatabase('pgw_appr');
  const c = directClient(db.name);
  await c.connect();
  await c.query('CREATE TABLE payroll (id int, amount int); CREATE TABLE ledger (id int); CREATE TABLE notes (id int)');
  await c.query(PII_PEOPLE_DDL);
  await c.end();
  inst = await startApprovalInstance(redis.url, { rules: MASKED_APPROVAL_RULES });
});

afterAll(async () => {
  await inst?.close();
  await db?.drop();
  await redis?.stop();
});

const { alice, bob, carol } = REVIEWERS;

async function tableExists(name: string): Promise<boolean> {
  const c = directClient(db.name);
  await c.connect();
  try {
    const r = await c.query('SELECT to_regclass($1) IS NOT NULL AS ok', [name]);
    return r.rows[0].ok as boolean;
  } finally {
    await c.end();
  }
}

describe('a statement held for review', () => {
  it('waits with a notice, shows up for reviewers without literals, and runs once approved', async () => {
    const a = await agent(inst.url(db.name));
    const running = a.query("CREATE TABLE approved_one AS SELECT 'sup3rsecret'::text AS x, 4242 AS n");
    const id = await heldId(a);
    const list = await callApi(inst.api, alice.token, 'GET', '/api/requests?status=pending');
    expect(list.status).toBe(200);
    const view = list.json.requests.find((r: { id: string }) => r.id === id);
    expect(view).toMatchObject({
      state: 'pending',
      rule: 'schema-changes',
      reason: 'DDL changes the schema',
      session: { user: 'postgres', database: db.name },
      kinds: expect.arrayContaining(['ddl']),
      required: 1,
    });
    expect(view.statements[0].text).toContain('CREATE TABLE approved_one AS SELECT $1');
    expect(JSON.stringify(list.json)).not.toContain('sup3rsecret');
    expect(JSON.stringify(list.json)).not.toContain('4242');
    expect(await tableExists('approved_one')).toBe(false);

    const res = await callApi(inst.api, alice.token, 'POST', `/api/requests/${id}/approve`, { reason: 'planned migration' });
    expect(res.status).toBe(200);
    expect(res.json.state).toBe('approved');
    const r = await running;
    expect(r.command).toBe('SELECT');
    expect(await tableExists('approved_one')).toBe(true);
    await until('done', async () => (await callApi(inst.api, alice.token, 'GET', `/api/requests/${id}`)).json.state === 'done');

    // The audit log tells the whole story, in order, and holds no literal.
    const entries = await readAudit(redis.url, inst.stream);
    const mine = entries.filter((e) => e.approvalId === id || e.approval?.id === id);
    expect(mine.map((e) => e.type)).toEqual(['statement.held', 'approval.approved', 'statement.allowed']);
    expect(mine[1]).toMatchObject({ reviewer: 'alice', reason: 'planned migration' });
    expect(mine[2]).toMatchObject({ rule: 'schema-changes', approval: { id, by: 'alice' } });
    expect(JSON.stringify(entries)).not.toContain('sup3rsecret');
    await a.end();
  });

  it('denied: ERROR 42501 with the reviewer and reason; the connection stays usable', async () => {
    const a = await agent(inst.url(db.name));
    const running = a.query('DROP TABLE notes').catch((e: unknown) => e as pg.DatabaseError);
    const id = await heldId(a);
    const res = await callApi(inst.api, bob.token, 'POST', `/api/requests/${id}/deny`, { reason: 'not during business hours' });
    expect(res.status).toBe(200);
    const err = (await running) as pg.DatabaseError;
    expect(err.code).toBe('42501');
    expect(err.message).toBe('pgwarden: statement denied by reviewer bob: not during business hours');
    expect(await tableExists('notes')).toBe(true);
    expect((await a.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await a.end();
  });

  it('nobody answers: ERROR 57014 "approval timed out", and the request is expired', async () => {
    const a = await agent(inst.url(db.name));
    const started = Date.now();
    const running = a.query('CREATE TABLE timeout_probe (id int)').catch((e: unknown) => e as pg.DatabaseError);
    const id = await heldId(a);
    const err = (await running) as pg.DatabaseError;
    expect(err.code).toBe('57014');
    expect(err.message).toBe('approval timed out');
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(await tableExists('timeout_probe')).toBe(false);
    expect((await callApi(inst.api, alice.token, 'GET', `/api/requests/${id}`)).json.state).toBe('expired');
    const recent = await callApi(inst.api, alice.token, 'GET', '/api/requests?status=recent');
    expect(recent.json.requests.map((r: { id: string }) => r.id)).toContain(id);
    await a.end();
  });

  it('inside a transaction: a denial leaves the transaction failed (ReadyForQuery E), ROLLBACK recovers', async () => {
    const a = await agent(inst.url(db.name));
    await a.query('BEGIN');
    await a.query('INSERT INTO notes VALUES (1)');
    const running = a.query('CREATE TABLE in_tx (id int)').catch((e: unknown) => e as pg.DatabaseError);
    const id = await heldId(a);
    const view = await callApi(inst.api, alice.token, 'GET', `/api/requests/${id}`);
    expect(typeof view.json.inTransactionSince).toBe('number');
    await callApi(inst.api, alice.token, 'POST', `/api/requests/${id}/deny`, { reason: 'no' });
    expect(((await running) as pg.DatabaseError).code).toBe('42501');
    const next = (await a.query('SELECT 1').catch((e: unknown) => e)) as pg.DatabaseError;
    expect(next.code).toBe('25P02');
    await a.query('ROLLBACK');
    expect((await a.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
    await a.end();
  });
});

describe('who may decide', () => {
  it('no self-approval: a reviewer acting as the agent\'s database user gets 403', async () => {
    const a = await agent(inst.url(db.name));
    const running = a.query('CREATE TABLE self_probe (id int)').catch((e: unknown) => e);
    const id = await heldId(a);
    const res = await callApi(inst.api, carol.token, 'POST', `/api/requests/${id}/approve`, {});
    expect(res.status).toBe(403);
    expect(res.json.error).toMatch(/act as/);
    expect((await callApi(inst.api, carol.token, 'GET', `/api/requests/${id}`)).json.state).toBe('pending');
    await callApi(inst.api, alice.token, 'POST', `/api/requests/${id}/deny`, { reason: 'cleanup' });
    await running;
    await a.end();
  });

  it('two distinct approvers from the rule\'s group (extended protocol, with parameters)', async () => {
    const a = await agent(inst.url(db.name));
    const running = a.query('INSERT INTO payroll VALUES ($1, $2)', [7, 99999]);
    const id = await heldId(a);
    expect((await callApi(inst.api, bob.token, 'GET', `/api/requests/${id}`)).json).toMatchObject({ required: 2, reviewerGroups: ['dba'] });
    // carol is not in dba
    expect((await callApi(inst.api, carol.token, 'POST', `/api/requests/${id}/approve`, {})).status).toBe(403);
    const first = await callApi(inst.api, alice.token, 'POST', `/api/requests/${id}/approve`, {});
    expect(first.json.state).toBe('pending');
    // the same reviewer twice does not count twice
    expect((await callApi(inst.api, alice.token, 'POST', `/api/requests/${id}/approve`, {})).status).toBe(409);
    const second = await callApi(inst.api, bob.token, 'POST', `/api/requests/${id}/approve`, {});
    expect(second.json.state).toBe('approved');
    expect((await running).rowCount).toBe(1);
    expect(JSON.stringify(second.json)).not.toContain('99999');
    await a.end();
  });

  it('REST needs a valid bearer token', async () => {
    expect((await callApi(inst.api, null, 'GET', '/api/requests')).status).toBe(401);
    expect((await callApi(inst.api, 'pgwr_wrong', 'GET', '/api/requests')).status).toBe(401);
    expect((await callApi(inst.api, alice.token, 'GET', '/api/me')).json).toEqual({ name: 'alice', groups: ['dba'], via: 'token' });
  });
});

describe('grants', () => {
  it('an approval with grant_minutes lets the same statement from the same agent run without a hold', async () => {
    const a = await agent(inst.url(db.name));
    const first = a.query("COMMENT ON TABLE payroll IS 'v1'");
    const id = await heldId(a);
    const res = await callApi(inst.api, alice.token, 'POST', `/api/requests/${id}/approve`, { grant_minutes: 5 });
    expect(res.json.verdict.grantMinutes).toBe(5);
    await first;
    // Same shape, other literal: covered by the grant, runs at once without a notice.
    await a.query("COMMENT ON TABLE payroll IS 'v2'");
    expect(a.notices.filter((n) => n.includes('held for review'))).toEqual([]);
    // Another statement is not covered.
    const other = a.query("COMMENT ON TABLE ledger IS 'x'").catch((e: unknown) => e);
    const id2 = await heldId(a);
    await callApi(inst.api, alice.token, 'POST', `/api/requests/${id2}/deny`, { reason: 'no' });
    await other;
    const entries = await readAudit(redis.url, inst.stream);
    expect(entries.some((e) => e.type === 'grant.created' && e.reviewer === 'alice' && e.user === 'postgres')).toBe(true);
    expect(entries.some((e) => e.type === 'statement.allowed' && e.approval?.grant)).toBe(true);
    await a.end();
  });

  it('a rule can forbid grants', async () => {
    const a = await agent(inst.url(db.name));
    const running = a.query('INSERT INTO ledger VALUES (5)');
    const id = await heldId(a);
    const res = await callApi(inst.api, alice.token, 'POST', `/api/requests/${id}/approve`, { grant_minutes: 5 });
    expect(res.status).toBe(403);
    expect((await callApi(inst.api, alice.token, 'POST', `/api/requests/${id}/approve`, {})).status).toBe(200);
    await running;
    // single use: the next one is held again
    const again = a.query('INSERT INTO ledger VALUES (6)').catch((e: unknown) => e);
    const id2 = await heldId(a);
    expect(id2).not.toBe(id);
    await callApi(inst.api, alice.token, 'POST', `/api/requests/${id2}/deny`, { reason: 'enough' });
    await again;
    await a.end();
  });
});

describe('withdrawal', () => {
  it('the agent disconnects: the request is withdrawn and leaves the pending list', async () => {
    const a = await agent(inst.url(db.name));
    void a.query('DROP TABLE ledger').catch(() => undefined);
    const id = await heldId(a);
    (a as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    await until('withdrawn', async () => (await callApi(inst.api, alice.token, 'GET', `/api/requests/${id}`)).json.state === 'withdrawn');
    const pending = await callApi(inst.api, alice.token, 'GET', '/api/requests?status=pending');
    expect(pending.json.requests.map((r: { id: string }) => r.id)).not.toContain(id);
    expect(await tableExists('ledger')).toBe(true);
  });
});

describe('what reviewers see of personal data', () => {
  it('a held read or COPY of a masked table lists its masked columns (names only, no values)', async () => {
    const a = await agent(inst.url(db.name));
    for (const sql of ["SELECT name FROM pii_people WHERE email = 'pii-secret@example.com'", 'COPY public.pii_people TO STDOUT']) {
      const running = a.query(sql).catch((e: unknown) => e as pg.DatabaseError);
      const id = await heldId(a);
      const view = await callApi(inst.api, alice.token, 'GET', `/api/requests/${id}`);
      expect(view.status).toBe(200);
      expect(view.json.rule).toBe('pii-people');
      expect(view.json.piiColumns).toEqual(['public.pii_people.email', 'public.pii_people.ssn']);
      const listed = await callApi(inst.api, alice.token, 'GET', '/api/requests?status=pending');
      expect(listed.json.requests.find((r: { id: string }) => r.id === id).piiColumns).toEqual(['public.pii_people.email', 'public.pii_people.ssn']);
      expect(JSON.stringify(view.json)).not.toContain('pii-secret');
      await callApi(inst.api, alice.token, 'POST', `/api/requests/${id}/deny`, { reason: 'not today' });
      expect(((await running) as pg.DatabaseError).code).toBe('42501');
    }
    await a.end();
  });

  it('a held statement on other tables lists none', async () => {
    const a = await agent(inst.url(db.name));
    const running = a.query('CREATE TABLE pii_free (id int)').catch((e: unknown) => e as pg.DatabaseError);
    const id = await heldId(a);
    expect((await callApi(inst.api, alice.token, 'GET', `/api/requests/${id}`)).json.piiColumns).toEqual([]);
    await callApi(inst.api, alice.token, 'POST', `/api/requests/${id}/deny`, { reason: 'not today' });
    await running;
    await a.end();
  });
});
