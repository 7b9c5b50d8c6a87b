import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CryptoKey } from 'jose';
import { startOidcProvider, type TestOidcProvider } from '../helpers/oidc-provider.js';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { createTestDatabase, directClient } from '../helpers/proxy.js';
import { startTestRedis, type TestRedis } from '../helpers/redis-server.js';
import { agent, callApi, heldId, readAudit, REVIEWERS, startApprovalInstance, until, type ApprovalInstance } from '../helpers/approvals.js';

/**
 * The reviewers' channels other than plain REST decisions (docs/approvals-api.md): the WebSocket
 * feed (Origin check, first-message auth, hello/snapshot/request), the Slack-compatible webhook,
 * /metrics and /healthz, OIDC reviewers, and the audit entries a webhook-notified denial leaves.
 * Real PostgreSQL, a redis-server of the test's own, node-postgres as the agent.
 */
let redis: TestRedis;
let db: { name: string; drop: () => Promise<void> };
/** Static-token reviewers; the WebSocket and metrics tests. */
let inst: ApprovalInstance;

const EXTRA_ORIGIN = 'https://reviews.example';
const { alice, bob } = REVIEWERS;

type Agent = pg.Client & { notices: string[] };
const agents: Agent[] = [];
const sockets: WebSocket[] = [];

beforeAll(async () => {
  redis = await startTestRedis();
  db = await createTestDatabase('pgw_chan');
  const c = directClient(db.name);
  await c.connect();
  await c.query('CREATE TABLE notes (id int)');
  await c.end();
  inst = await startApprovalInstance(redis.url, { approval: { allowedOrigins: [EXTRA_ORIGIN] } });
});

afterEach(async () => {
  for (const ws of sockets.splice(0)) ws.terminate();
  await Promise.all(agents.splice(0).map((a) => a.end().catch(() => undefined)));
});

afterAll(async () => {
  await inst?.close();
  await db?.drop();
  await redis?.stop();
});

async function newAgent(target: ApprovalInstance): Promise<Agent> {
  const a = await agent(target.url(db.name));
  agents.push(a);
  return a;
}

async function tableExists(name: string): Promise<boolean> {
  const c = directClient(db.name);
  await c.connect();
  try {
    return (await c.query('SELECT to_regclass($1) IS NOT NULL AS ok', [name])).rows[0].ok as boolean;
  } finally {
    await c.end();
  }
}

// ---------------------------------------------------------------------------------------------
// WebSocket helpers

function wsUrl(target: ApprovalInstance, suffix = ''): string {
  return `${target.api.replace(/^http/, 'ws')}/ws${suffix}`;
}

interface Closed {
  code: number;
  reason: string;
  at: number;
}

/** A client socket that records everything it receives. */
interface Feed {
  ws: WebSocket;
  startedAt: number;
  /** Every data message as received (text). */
  raw: string[];
  messages: any[];
  opened: Promise<void>;
  closed: Promise<Closed>;
  send(msg: unknown): void;
  /** The first received message matching `pred` (waits up to timeoutMs). */
  next(what: string, pred: (m: any) => boolean, timeoutMs?: number): Promise<any>;
}

function openFeed(url: string, opts: { origin?: string } = {}): Feed {
  const ws = new WebSocket(url, opts.origin ? { origin: opts.origin } : {});
  sockets.push(ws);
  const raw: string[] = [];
  const messages: any[] = [];
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    const text = isBinary ? `<binary ${String((data as Buffer).length)}>` : data.toString();
    raw.push(text);
    try {
      messages.push(JSON.parse(text));
    } catch {
      messages.push(text);
    }
  });
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('close', (code) => reject(new Error(`closed (${code}) before opening`)));
  });
  opened.catch(() => undefined);
  const closed = new Promise<Closed>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString(), at: Date.now() })));
  return {
    ws,
    startedAt: Date.now(),
    raw,
    messages,
    opened,
    closed,
    send: (msg) => ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg)),
    next: (what, pred, timeoutMs = 5000) => until(what, () => messages.find(pred), timeoutMs),
  };
}

/** An authenticated feed, past its hello and snapshot. */
async function reviewerFeed(target: ApprovalInstance, token: string): Promise<Feed> {
  const feed = openFeed(wsUrl(target), { origin: target.api });
  await feed.opened;
  feed.send({ type: 'auth', token });
  await feed.next('snapshot', (m) => m?.type === 'snapshot');
  return feed;
}

/** What the upgrade answered: 'open', or the HTTP status of a refusal. */
function upgradeOutcome(url: string, origin?: string): Promise<number | 'open'> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, origin ? { origin } : {});
    sockets.push(ws);
    const timer = setTimeout(() => reject(new Error('no answer to the upgrade within 5 s')), 5000);
    ws.on('error', () => {});
    ws.once('unexpected-response', (req, res) => {
      clearTimeout(timer);
      resolve(res.statusCode ?? -1);
      res.resume();
      req.destroy();
    });
    ws.once('open', () => {
      clearTimeout(timer);
      resolve('open');
    });
    ws.once('close', (code) => {
      clearTimeout(timer);
      reject(new Error(`closed (${code}) without an HTTP answer`));
    });
  });
}

/** The request messages about one approval id. */
const aboutId = (feed: Feed, id: string) => feed.messages.filter((m) => m?.type === 'request' && m.request?.id === id);

// ---------------------------------------------------------------------------------------------

describe('WebSocket /ws', () => {
  it('refuses a foreign Origin with HTTP 403 at the upgrade, opens for the page\'s own origin and allowedOrigins', async () => {
    const url = wsUrl(inst);
    expect(await upgradeOutcome(url, 'http://evil.example')).toBe(403);
    // Same host, another port: another origin.
    const port = new URL(inst.api).port;
    expect(await upgradeOutcome(url, `http://127.0.0.1:${Number(port) === 1 ? 2 : 1}`)).toBe(403);
    // The page's own origin, and the configured extra origin, are accepted.
    expect(inst.api).toBe(`http://127.0.0.1:${port}`);
    expect(await upgradeOutcome(url, `http://127.0.0.1:${port}`)).toBe('open');
    expect(await upgradeOutcome(url, EXTRA_ORIGIN)).toBe('open');
  });

  it('authenticates only with a first message: silence → 4401 after 5 s, wrong token → 4401 at once, a URL token does not count', async () => {
    const silent = openFeed(wsUrl(inst), { origin: inst.api });
    const urlToken = openFeed(wsUrl(inst, `?token=${encodeURIComponent(alice.token)}`), { origin: inst.api });
    await Promise.all([silent.opened, urlToken.opened]);

    // A wrong token is refused right away.
    const wrong = openFeed(wsUrl(inst), { origin: inst.api });
    await wrong.opened;
    const sentAt = Date.now();
    wrong.send({ type: 'auth', token: 'pgwr_not_a_reviewer_token' });
    const wrongClose = await Promise.race([wrong.closed, new Promise<null>((r) => setTimeout(() => r(null), 2000))]);
    expect(wrongClose, 'wrong token: socket not closed within 2 s').not.toBeNull();
    expect(wrongClose!.code).toBe(4401);
    expect(wrongClose!.at - sentAt).toBeLessThan(1000);
    expect(wrong.raw).toEqual([]);

    // Meanwhile something happens that an authenticated reviewer is told about: the sockets that
    // have not authenticated must not hear of it.
    const control = await reviewerFeed(inst, bob.token);
    const a = await newAgent(inst);
    const running = a.query('COMMENT ON TABLE notes IS \'unauth-window\'').catch((e: unknown) => e as pg.DatabaseError);
    const id = await heldId(a);
    await control.next('the held request on the authenticated socket', (m) => m?.type === 'request' && m.request?.id === id);
    expect((await callApi(inst.api, bob.token, 'POST', `/api/requests/${id}/deny`, { reason: 'probe' })).status).toBe(200);
    expect(((await running) as pg.DatabaseError).code).toBe('42501');
    await control.next('the denial on the authenticated socket', (m) => m?.type === 'request' && m.request?.id === id && m.request.state === 'denied');

    // Silence (with or without a token in the URL) ends in 4401 after about 5 s, having received nothing.
    const timeout = (f: Feed) => Promise.race([f.closed, new Promise<null>((r) => setTimeout(() => r(null), Math.max(0, f.startedAt + 6500 - Date.now())))]);
    const [silentClose, urlTokenClose] = await Promise.all([timeout(silent), timeout(urlToken)]);
    expect(silentClose, 'silent socket: not closed within 6.5 s').not.toBeNull();
    expect(urlTokenClose, 'socket with a token in the URL: not closed within 6.5 s').not.toBeNull();
    for (const [f, c] of [
      [silent, silentClose!],
      [urlToken, urlTokenClose!],
    ] as const) {
      expect(c.code).toBe(4401);
      expect(c.at - f.startedAt).toBeGreaterThanOrEqual(4500);
      expect(f.raw).toEqual([]);
    }
  }, 20_000);

  it('hello, snapshot, then the held request live; its approval follows; nothing carries a literal', async () => {
    // Before the reviewer connects, one request was decided and another one waits: the snapshot
    // has both, each in its list.
    const early = await newAgent(inst);
    const decidedRun = early.query("COMMENT ON TABLE notes IS 'rec3nt-l1t3ral'").catch((e: unknown) => e as pg.DatabaseError);
    const decidedId = await heldId(early);
    expect((await callApi(inst.api, bob.token, 'POST', `/api/requests/${decidedId}/deny`, { reason: 'earlier' })).status).toBe(200);
    expect(((await decidedRun) as pg.DatabaseError).code).toBe('42501');
    const earlyRun = early.query("COMMENT ON TABLE notes IS 'sn4pshot-l1t3ral'").catch((e: unknown) => e as pg.DatabaseError);
    const earlyId = await heldId(early);

    const feed = openFeed(wsUrl(inst), { origin: inst.api });
    await feed.opened;
    feed.send({ type: 'auth', token: alice.token });
    await feed.next('hello and snapshot', () => feed.messages.length >= 2);
    const [hello, snapshot] = feed.messages;
    expect(hello).toMatchObject({ type: 'hello', reviewer: { name: 'alice', groups: ['dba'], via: 'token' } });
    expect(typeof hello.now).toBe('number');
    expect(snapshot).toMatchObject({ type: 'snapshot' });
    expect(typeof snapshot.now).toBe('number');
    expect(Array.isArray(snapshot.pending)).toBe(true);
    expect(Array.isArray(snapshot.recent)).toBe(true);
    expect(snapshot.pending.map((r: { id: string }) => r.id)).toEqual([earlyId]);
    expect(snapshot.pending[0]).toMatchObject({ state: 'pending', rule: 'schema-changes' });
    expect(snapshot.pending.map((r: { id: string }) => r.id)).not.toContain(decidedId);
    expect(snapshot.recent.find((r: { id: string }) => r.id === decidedId)).toMatchObject({ state: 'denied', verdict: { by: 'bob', reason: 'earlier' } });
    expect(snapshot.recent.map((r: { id: string }) => r.id)).not.toContain(earlyId);
    expect(await callApi(inst.api, bob.token, 'POST', `/api/requests/${earlyId}/deny`, { reason: 'not now' })).toMatchObject({ status: 200 });
    expect(((await earlyRun) as pg.DatabaseError).code).toBe('42501');
    await feed.next('the early request denied', (m) => m?.type === 'request' && m.request?.id === earlyId && m.request.state === 'denied');

    const a = await newAgent(inst);
    const heldAt = Date.now();
    const running = a.query("CREATE TABLE ws_probe AS SELECT 'ws-l1t3ral-90210'::text AS x, 4242427 AS n");
    const id = await heldId(a);
    const pendingMsg = await feed.next('the held request', (m) => m?.type === 'request' && m.request?.id === id, 3000);
    expect(Date.now() - heldAt).toBeLessThan(3000);
    expect(pendingMsg.request).toMatchObject({ id, state: 'pending', rule: 'schema-changes', session: { user: 'postgres', database: db.name } });
    expect(pendingMsg.request.statements[0].text).toContain('CREATE TABLE ws_probe AS SELECT $1');

    const res = await callApi(inst.api, bob.token, 'POST', `/api/requests/${id}/approve`, { reason: 'looks fine' });
    expect(res.status).toBe(200);
    await feed.next('the approval', (m) => m?.type === 'request' && m.request?.id === id && ['approved', 'executing', 'done'].includes(m.request.state));
    const r = await running;
    expect(r.command).toBe('SELECT');
    expect(await tableExists('ws_probe')).toBe(true);
    await feed.next('done', (m) => m?.type === 'request' && m.request?.id === id && m.request.state === 'done');
    expect(aboutId(feed, id).at(-1).request).toMatchObject({ state: 'done', approvals: [{ reviewer: 'bob', reason: 'looks fine' }] });

    const everything = feed.raw.join('\n');
    expect(everything).not.toContain('ws-l1t3ral-90210');
    expect(everything).not.toContain('4242427');
    expect(everything).not.toContain('sn4pshot-l1t3ral');
    expect(everything).not.toContain('rec3nt-l1t3ral');
  });
});

// ---------------------------------------------------------------------------------------------

async function metrics(target: ApprovalInstance): Promise<{ status: number; type: string | null; values: Map<string, number>; text: string }> {
  const res = await fetch(`${target.api}/metrics`);
  const text = await res.text();
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(\S+) (\S+)$/.exec(line);
    if (m) values.set(m[1]!, Number(m[2]));
  }
  return { status: res.status, type: res.headers.get('content-type'), values, text };
}

const total = (outcome: string) => `pgwarden_approval_requests_total{outcome="${outcome}"}`;

describe('metrics and health', () => {
  it('GET /metrics counts an approval, a denial and a timeout; shows pending and the wait histogram', async () => {
    const before = await metrics(inst);
    expect(before.status).toBe(200);
    expect(before.type).toMatch(/^text\/plain; version=0\.0\.4/);
    for (const o of ['held', 'approved', 'denied', 'expired']) expect(before.values.has(total(o)), o).toBe(true);
    expect(before.values.get('pgwarden_approval_pending')).toBe(0);
    const delta = (after: Map<string, number>, key: string) => (after.get(key) ?? NaN) - (before.values.get(key) ?? NaN);

    // approved (the pending gauge shows it while it waits)
    const a = await newAgent(inst);
    const ok = a.query('CREATE TABLE metrics_ok (id int)');
    const id1 = await heldId(a);
    expect((await metrics(inst)).values.get('pgwarden_approval_pending')).toBe(1);
    expect((await callApi(inst.api, alice.token, 'POST', `/api/requests/${id1}/approve`, {})).status).toBe(200);
    await ok;

    // denied
    const denied = a.query('DROP TABLE notes').catch((e: unknown) => e as pg.DatabaseError);
    const id2 = await heldId(a);
    expect((await callApi(inst.api, alice.token, 'POST', `/api/requests/${id2}/deny`, { reason: 'no' })).status).toBe(200);
    expect(((await denied) as pg.DatabaseError).code).toBe('42501');

    // timed out (quick-timeout: 1 s)
    const started = Date.now();
    const late = a.query('CREATE TABLE timeout_probe (id int)').catch((e: unknown) => e as pg.DatabaseError);
    await heldId(a);
    expect(((await late) as pg.DatabaseError).code).toBe('57014');
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);

    const after = await metrics(inst);
    expect(after.status).toBe(200);
    expect(delta(after.values, total('held'))).toBe(3);
    expect(delta(after.values, total('approved'))).toBe(1);
    expect(delta(after.values, total('denied'))).toBe(1);
    expect(delta(after.values, total('expired'))).toBe(1);
    expect(delta(after.values, total('withdrawn'))).toBe(0);
    expect(after.values.get('pgwarden_approval_pending')).toBe(0);
    expect(delta(after.values, 'pgwarden_approval_wait_seconds_count')).toBe(3);
    expect(delta(after.values, 'pgwarden_approval_wait_seconds_bucket{le="+Inf"}')).toBe(3);
    // The timeout alone waited about a second.
    expect(delta(after.values, 'pgwarden_approval_wait_seconds_sum')).toBeGreaterThanOrEqual(0.9);
    expect(after.text).toContain('# TYPE pgwarden_approval_wait_seconds histogram');
  });

  it('GET /healthz answers 200 ok without credentials', async () => {
    const res = await fetch(`${inst.api}/healthz`);
    expect(res.status).toBe(200);
    expect((await res.text()).trim()).toBe('ok');
  });
});

// ---------------------------------------------------------------------------------------------

interface Hook {
  url: string;
  posts: { method: string; path: string; type: string | undefined; body: any }[];
  close(): Promise<void>;
}

async function startHookServer(): Promise<Hook> {
  const posts: Hook['posts'] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // kept as text: the test will say so
      }
      posts.push({ method: req.method ?? '', path: req.url ?? '', type: req.headers['content-type'], body });
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    posts,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('webhook', () => {
  let hook: Hook;
  let hookInst: ApprovalInstance;
  const LITERAL = 'h00k-l1t3ral-5521';
  let id = '';

  beforeAll(async () => {
    hook = await startHookServer();
    hookInst = await startApprovalInstance(redis.url, { approval: { webhook: { url: hook.url, timeoutMs: 2000 } } });
  });
  afterAll(async () => {
    await hookInst?.close();
    await hook?.close();
  });

  it('posts Slack JSON for a held statement and for its denial, naming rule, request and reviewer, never the literal', async () => {
    const a = await newAgent(hookInst);
    const running = a.query(`COMMENT ON TABLE notes IS '${LITERAL}'`).catch((e: unknown) => e as pg.DatabaseError);
    id = await heldId(a);

    await until('the webhook POST for the hold', () => hook.posts.length >= 1, 5000);
    const held = hook.posts[0]!;
    expect(held.method).toBe('POST');
    expect(held.path).toBe('/hook');
    expect(held.type).toMatch(/^application\/json/);
    expect(typeof held.body.text).toBe('string');
    expect(Array.isArray(held.body.blocks)).toBe(true);
    expect(held.body.blocks.length).toBeGreaterThan(0);
    expect(held.body.text).toMatch(/held for review/i);
    expect(held.body.text).toContain('schema-changes');
    const heldJson = JSON.stringify(held.body);
    expect(heldJson).toContain(id);
    expect(heldJson).toContain('DDL changes the schema');
    expect(heldJson).not.toContain(LITERAL);

    const res = await callApi(hookInst.api, bob.token, 'POST', `/api/requests/${id}/deny`, { reason: 'comments are frozen this week' });
    expect(res.status).toBe(200);
    const err = (await running) as pg.DatabaseError;
    expect(err.message).toBe('pgwarden: statement denied by reviewer bob: comments are frozen this week');

    await until('the webhook POST for the denial', () => hook.posts.length >= 2, 5000);
    const verdict = hook.posts[1]!;
    expect(verdict.type).toMatch(/^application\/json/);
    expect(verdict.body.text).toMatch(/denied by bob: comments are frozen this week/i);
    const verdictJson = JSON.stringify(verdict.body);
    expect(verdictJson).toContain(id);
    expect(verdictJson).toContain('schema-changes');
    expect(verdictJson).not.toContain(LITERAL);
    expect(hook.posts).toHaveLength(2);
  });

  it('the audit stream has the hold and the denial with the reviewer, and no literal', async () => {
    expect(id).not.toBe('');
    const entries = await until(
      'the denial in the audit stream',
      async () => {
        const all = await readAudit(redis.url, hookInst.stream);
        return all.some((e) => e.type === 'approval.denied' && e.approvalId === id) ? all : null;
      },
      5000,
    );
    const mine = entries.filter((e) => e.approvalId === id || e.approval?.id === id);
    expect(mine.map((e) => e.type)).toEqual(expect.arrayContaining(['statement.held', 'approval.denied']));
    const heldEntry = mine.find((e) => e.type === 'statement.held')!;
    expect(heldEntry).toMatchObject({ rule: 'schema-changes', session: { user: 'postgres', database: db.name } });
    expect(mine.find((e) => e.type === 'approval.denied')).toMatchObject({ reviewer: 'bob', reason: 'comments are frozen this week', rule: 'schema-changes' });
    expect(mine.findIndex((e) => e.type === 'statement.held')).toBeLessThan(mine.findIndex((e) => e.type === 'approval.denied'));
    expect(JSON.stringify(entries)).not.toContain(LITERAL);
  });

  it('the webhook links to the approval page where reviewers decide', async () => {
    expect(hook.posts.length).toBeGreaterThan(0);
    // The agent's notice names the page (the listener's real port); the webhook's link must too.
    const expected = `<${hookInst.api}/#${id}|Open in pgwarden>`;
    for (const post of hook.posts) expect(JSON.stringify(post.body)).toContain(expected);
  });
});

// ---------------------------------------------------------------------------------------------

describe('OIDC reviewers through the REST API', () => {
  const ISSUER = 'https://idp.test';
  const AUDIENCE = 'pgwarden';
  let idp: TestOidcProvider;
  let oidcInst: ApprovalInstance;
  let otherKey: CryptoKey;
  const token: TestOidcProvider['token'] = (claims, o) => idp.token(claims, o);

  beforeAll(async () => {
    idp = await startOidcProvider(ISSUER, AUDIENCE);
    otherKey = idp.otherKey;
    oidcInst = await startApprovalInstance(redis.url, {
      approval: {
        oidc: { issuer: ISSUER, audience: AUDIENCE, jwksUrl: idp.jwksUrl },
        actsAs: { 'dana@example.com': ['postgres'] },
      },
    });
  });
  afterAll(async () => {
    await oidcInst?.close();
    await idp?.close();
  });

  it('an OIDC reviewer signs in and approves; one acting as the agent\'s user gets 403; bad tokens get 401', async () => {
    const erin = await token({ email: 'erin@example.com', groups: ['dba'] });
    const dana = await token({ email: 'dana@example.com', groups: ['dba'] });

    const me = await callApi(oidcInst.api, erin, 'GET', '/api/me');
    expect(me.status).toBe(200);
    expect(me.json).toEqual({ name: 'erin@example.com', groups: ['dba'], via: 'oidc' });

    // Bad OIDC tokens, each otherwise valid: 401 (while erin's is accepted by the same instance).
    const now = Math.floor(Date.now() / 1000);
    const bad = {
      expired: await token({ email: 'erin@example.com', groups: ['dba'] }, { exp: now - 600 }),
      'wrong audience': await token({ email: 'erin@example.com', groups: ['dba'] }, { aud: 'some-other-app' }),
      'wrong issuer': await token({ email: 'erin@example.com', groups: ['dba'] }, { iss: 'https://evil.example' }),
      'foreign key': await token({ email: 'erin@example.com', groups: ['dba'] }, { key: otherKey }),
    };
    for (const [what, t] of Object.entries(bad)) {
      const res = await callApi(oidcInst.api, t, 'GET', '/api/me');
      expect(res.status, what).toBe(401);
      expect(typeof res.json.error, what).toBe('string');
    }

    const a = await newAgent(oidcInst);
    const running = a.query('CREATE TABLE oidc_probe (id int)');
    const id = await heldId(a);

    for (const [what, t] of Object.entries(bad)) {
      expect((await callApi(oidcInst.api, t, 'POST', `/api/requests/${id}/approve`, {})).status, what).toBe(401);
    }
    // dana acts as postgres, the agent's user: no self-approval.
    const self = await callApi(oidcInst.api, dana, 'POST', `/api/requests/${id}/approve`, {});
    expect(self.status).toBe(403);
    expect(self.json.error).toMatch(/act as/);
    expect((await callApi(oidcInst.api, erin, 'GET', `/api/requests/${id}`)).json.state).toBe('pending');
    expect(await tableExists('oidc_probe')).toBe(false);

    const ok = await callApi(oidcInst.api, erin, 'POST', `/api/requests/${id}/approve`, { reason: 'oidc ok' });
    expect(ok.status).toBe(200);
    expect(ok.json).toMatchObject({ state: 'approved', approvals: [{ reviewer: 'erin@example.com', reason: 'oidc ok' }] });
    expect((await running).command).toBe('CREATE');
    expect(await tableExists('oidc_probe')).toBe(true);
  });

  it('an OIDC token also authenticates the WebSocket', async () => {
    const erin = await token({ email: 'erin@example.com', groups: ['dba'] });
    const feed = await reviewerFeed(oidcInst, erin);
    expect(feed.messages[0]).toMatchObject({ type: 'hello', reviewer: { name: 'erin@example.com', groups: ['dba'], via: 'oidc' } });

    const expired = await token({ email: 'erin@example.com' }, { exp: Math.floor(Date.now() / 1000) - 600 });
    const refused = openFeed(wsUrl(oidcInst), { origin: oidcInst.api });
    await refused.opened;
    refused.send({ type: 'auth', token: expired });
    expect((await refused.closed).code).toBe(4401);
    expect(refused.raw).toEqual([]);
  });
});
