import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requestsCommand } from '../../src/approval/requests-cli.js';
import { createTestDatabase, directClient } from '../helpers/proxy.js';
import { startTestRedis, type TestRedis } from '../helpers/redis-server.js';
import { agent, callApi, heldId, REVIEWERS, startApprovalInstance, until, type ApprovalInstance } from '../helpers/approvals.js';

/**
 * Approvals across instances and under trouble: two pgwarden instances sharing one Redis, the
 * reviewer's CLI, cancel and pipelining on the held connection, the per-user cap, and Redis
 * going away (fail closed).
 */
let redis: TestRedis;
let a: ApprovalInstance;
let b: ApprovalInstance;
let db: { name: string; drop: () => Promise<void> };
const { alice } = REVIEWERS;

beforeAll(async () => {
  redis = await startTestRedis();
  db = await createTestDatabase('pgw_apprm');
  const c = directClient(db.name);
  await c.connect();
  await c.query('CREATE TABLE t1 (id int); CREATE TABLE t2 (id int); CREATE TABLE t3 (id int)');
  await c.end();
  a = await startApprovalInstance(redis.url, { instanceId: 'inst-a', approval: { maxPendingPerUser: 2 } });
  b = await startApprovalInstance(redis.url, { instanceId: 'inst-b', prefix: a.prefix, stream: a.stream, approval: { maxPendingPerUser: 2 } });
});

afterAll(async () => {
  await a?.close();
  await b?.close();
  await db?.drop();
  await redis?.stop();
});

function capture() {
  let out = '';
  let err = '';
  return { io: { out: (s: string) => (out += s), err: (s: string) => (err += s) }, out: () => out, err: () => err };
}

describe('several instances share requests and verdicts through Redis', () => {
  it('a statement held on instance A is listed and approved through instance B', async () => {
    const ag = await agent(a.url(db.name));
    const running = ag.query('ALTER TABLE t1 ADD COLUMN note text');
    const id = await heldId(ag);
    const seen = await callApi(b.api, alice.token, 'GET', `/api/requests/${id}`);
    expect(seen.json).toMatchObject({ state: 'pending', instance: 'inst-a/w0' });
    expect((await callApi(b.api, alice.token, 'POST', `/api/requests/${id}/approve`, {})).status).toBe(200);
    await running;
    await ag.end();
  });

  it('the CLI lists, approves and denies through any instance', async () => {
    const env = { PGWARDEN_REVIEWER_TOKEN: alice.token };
    const ag = await agent(a.url(db.name));
    const first = ag.query("COMMENT ON TABLE t2 IS 'cli-literal'");
    const id = await heldId(ag);
    const list = capture();
    expect(await requestsCommand('requests', ['--url', b.api], list.io, env)).toBe(0);
    expect(list.out()).toContain(id);
    expect(list.out()).toContain('schema-changes');
    expect(list.out()).toContain('COMMENT ON TABLE t2 IS $1');
    expect(list.out()).not.toContain('cli-literal');
    const ok = capture();
    expect(await requestsCommand('approve', [id, '--url', b.api, '--reason', 'ok'], ok.io, env)).toBe(0);
    expect(ok.out()).toContain(`${id}: approved`);
    await first;

    const second = ag.query('DROP TABLE t2').catch((e: unknown) => e as pg.DatabaseError);
    const id2 = await heldId(ag);
    const noReason = capture();
    expect(await requestsCommand('deny', [id2, '--url', a.api], noReason.io, env)).toBe(2);
    const denied = capture();
    expect(await requestsCommand('deny', [id2, '--url', a.api, '--reason', 'keep it'], denied.io, env)).toBe(0);
    expect(((await second) as pg.DatabaseError).message).toContain('keep it');
    const again = capture();
    expect(await requestsCommand('approve', [id2, '--url', a.api], again.io, env)).toBe(1);
    expect(again.err()).toContain('409');
    const anon = capture();
    expect(await requestsCommand('requests', ['--url', a.api], anon.io, {})).toBe(2);
    await ag.end();
  });
});

describe('the held connection', () => {
  it('CancelRequest withdraws the request: 57014 for the agent, gone from the list', async () => {
    const sql = postgres(a.url(db.name), { max: 1, onnotice: () => {} });
    try {
      const q = sql.unsafe('DROP TABLE t3');
      const err = q.catch((e: unknown) => e as { code: string; message: string });
      const pendingBefore = await until('held', async () => {
        const r = await callApi(a.api, alice.token, 'GET', '/api/requests?status=pending');
        return r.json.requests.find((x: { statements: { text: string }[] }) => x.statements[0]?.text === 'DROP TABLE t3');
      });
      q.cancel();
      expect(await err).toMatchObject({ code: '57014' });
      await until('withdrawn', async () => (await callApi(a.api, alice.token, 'GET', `/api/requests/${pendingBefore.id}`)).json.state === 'withdrawn');
      expect((await sql`SELECT 1 AS one`)[0]).toEqual({ one: 1 });
    } finally {
      await sql.end();
    }
  });

  it('statements pipelined behind a held one wait in order and run after the verdict', async () => {
    const sql = postgres(a.url(db.name), { max: 1, onnotice: () => {} });
    try {
      const order: string[] = [];
      const held = sql`CREATE TABLE pipelined (id int)`.then(() => order.push('create'));
      const after = sql`SELECT count(*)::int AS n FROM t1`.then((r) => {
        order.push('select');
        return r;
      });
      const req = await until('held', async () => {
        const r = await callApi(a.api, alice.token, 'GET', '/api/requests?status=pending');
        return r.json.requests.find((x: { statements: { text: string }[] }) => x.statements[0]?.text.startsWith('CREATE TABLE pipelined'));
      });
      await new Promise((r) => setTimeout(r, 100));
      expect(order).toEqual([]);
      await callApi(a.api, alice.token, 'POST', `/api/requests/${req.id}/approve`, {});
      await Promise.all([held, after]);
      expect(order).toEqual(['create', 'select']);
    } finally {
      await sql.end();
    }
  });

  it('past approval.maxPendingPerUser new holds are refused with 53400; other users and reads are unaffected', async () => {
    const agents = await Promise.all([agent(a.url(db.name)), agent(a.url(db.name)), agent(a.url(db.name))]);
    const p1 = agents[0]!.query('DROP TABLE t1').catch((e: unknown) => e);
    const id1 = await heldId(agents[0]!);
    const p2 = agents[1]!.query('DROP TABLE t1').catch((e: unknown) => e);
    const id2 = await heldId(agents[1]!);
    const third = (await agents[2]!.query('DROP TABLE t1').catch((e: unknown) => e)) as pg.DatabaseError;
    expect(third.code).toBe('53400');
    expect(third.message).toContain('too many statements awaiting review');
    // The cap is shared: instance B refuses too.
    const viaB = await agent(b.url(db.name));
    expect(((await viaB.query('DROP TABLE t1').catch((e: unknown) => e)) as pg.DatabaseError).code).toBe('53400');
    expect((await agents[2]!.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
    for (const id of [id1, id2]) await callApi(a.api, alice.token, 'POST', `/api/requests/${id}/deny`, { reason: 'cap test' });
    await Promise.all([p1, p2]);
    for (const c of [...agents, viaB]) await c.end();
  });
});

describe('Redis goes away', () => {
  it('a held statement and new holds fail closed with 58000; nothing runs; reads go on', async () => {
    const own = await startTestRedis();
    const inst = await startApprovalInstance(own.url);
    try {
      const ag = await agent(inst.url(db.name));
      const running = ag.query('CREATE TABLE never_made (id int)').catch((e: unknown) => e as pg.DatabaseError);
      await heldId(ag);
      await own.kill();
      const err = (await running) as pg.DatabaseError;
      expect(err.code).toBe('58000');
      expect(err.message).toContain('approval service is unavailable');
      const next = (await ag.query('CREATE TABLE never_made_2 (id int)').catch((e: unknown) => e)) as pg.DatabaseError;
      expect(next.code).toBe('58000');
      expect((await ag.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
      const c = directClient(db.name);
      await c.connect();
      const r = await c.query("SELECT count(*)::int AS n FROM pg_class WHERE relname LIKE 'never_made%'");
      expect(r.rows[0].n).toBe(0);
      await c.end();
      await ag.end();
    } finally {
      await inst.close();
      await own.stop();
    }
  });
});
