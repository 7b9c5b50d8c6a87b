import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { ApprovalRequest } from '../../src/approval/approval-store.js';
import { escapeMrkdwn, slackMessage, Webhook, type WebhookEvent } from '../../src/approval/webhook.js';

const PAGE = 'https://approvals.example.com/';

function request(over: Partial<ApprovalRequest> = {}): ApprovalRequest {
  return {
    id: '9f2c41d07a3b5e61',
    state: 'pending',
    createdAt: Date.UTC(2025, 10, 22, 8, 26, 40),
    expiresAt: Date.UTC(2025, 10, 22, 8, 31, 40),
    instance: 'host-a',
    session: { id: 12, user: 'agent', database: 'shop', application: 'etl', client: '10.0.0.7:51234' },
    statements: [{ text: 'DELETE FROM orders WHERE id = $1', fingerprint: '5d1c0e7a9b2f4c13' }],
    kinds: ['write'],
    tables: ['public.orders'],
    rule: 'big-deletes',
    reason: 'Deletes need a second pair of eyes',
    fingerprint: 'aa11bb22cc33dd44',
    piiColumns: [],
    required: 1,
    reviewerGroups: [],
    grantable: true,
    approvals: [],
    ...over,
  };
}

interface SlackBody {
  text: string;
  blocks: { type: string; text?: { type: string; text: string }; elements?: { type: string; text: string }[] }[];
}

/** Every mrkdwn string of a message: the fallback text and each block's text. */
function texts(m: SlackBody): string[] {
  return [m.text, ...m.blocks.flatMap((b) => [...(b.text ? [b.text.text] : []), ...(b.elements ?? []).map((e) => e.text)])];
}

/** The request id a delivered message links to. */
const idOf = (m: SlackBody) => /#([^|>]+)\|Open in pgwarden>/.exec(JSON.stringify(m))?.[1];

// ---- a local receiver ----

type Reply = number | 'hang' | 'destroy';
interface Received {
  method: string;
  path: string;
  contentType: string | undefined;
  raw: string;
  body: SlackBody;
}

let server: Server | null = null;

async function receiver(reply: (n: number, body: SlackBody) => Reply | Promise<Reply> = () => 200): Promise<{ url: string; got: Received[] }> {
  const got: Received[] = [];
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const body = JSON.parse(raw) as SlackBody;
      got.push({ method: req.method ?? '', path: req.url ?? '', contentType: req.headers['content-type'], raw, body });
      void Promise.resolve(reply(got.length, body)).then((r) => {
        if (r === 'hang') return;
        if (r === 'destroy') return void req.socket.destroy();
        res.writeHead(r, { 'content-type': 'text/plain' }).end(r < 300 ? 'ok' : 'no');
      });
    });
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/services/T000/B000/SECRETPATH?token=SECRETQUERY`, got };
}

afterEach(async () => {
  if (!server) return;
  server.closeAllConnections();
  await new Promise<void>((resolve) => server!.close(() => resolve()));
  server = null;
});

/** A logger whose lines are kept; `warns()` parses the warn-level ones. */
function capture(): { log: pino.Logger; warns: () => Record<string, unknown>[]; raw: () => string } {
  const out: string[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void out.push(s) });
  const warns = () => out.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.level === 40);
  return { log, warns, raw: () => out.join('') };
}

const ms = (from: number) => performance.now() - from;

// ---- the message ----

describe('slackMessage', () => {
  it('says what was held, by which agent, with statements, kinds, tables, rule, reason, expiry and a link', () => {
    const m = slackMessage('held', request(), PAGE) as SlackBody;
    const all = texts(m).join('\n');
    expect(m.text).toContain('held for review');
    expect(m.text).toContain('agent@shop');
    expect(all).toContain('*Agent:* agent@shop');
    expect(all).toContain('*Application:* etl');
    expect(all).toContain('*Client:* 10.0.0.7:51234');
    expect(all).toContain('```\nDELETE FROM orders WHERE id = $1\n```');
    expect(all).toContain('*Kinds:* write');
    expect(all).toContain('*Tables:* public.orders');
    expect(all).toContain('big-deletes');
    expect(all).toContain('Deletes need a second pair of eyes');
    expect(all).toContain('Waits up to 5 min');
    expect(all).toContain('expires 2025-11-22 08:31:40 UTC');
    expect(all).toContain(`<${PAGE}#9f2c41d07a3b5e61|Open in pgwarden>`);
    for (const b of m.blocks) expect(['section', 'context']).toContain(b.type);
    for (const b of m.blocks) if (b.text) expect(b.text.type).toBe('mrkdwn');
  });

  it.each<[WebhookEvent, Partial<ApprovalRequest>, string]>([
    ['approved', { state: 'approved', verdict: { by: 'alice', at: Date.UTC(2025, 10, 22, 8, 28, 20), reason: 'fine' } }, 'Approved by alice: fine'],
    ['denied', { state: 'denied', verdict: { by: 'bob', at: Date.UTC(2025, 10, 22, 8, 27, 40), reason: 'no WHERE on a big table' } }, 'Denied by bob: no WHERE on a big table'],
    ['expired', { state: 'expired' }, 'Expired without a verdict'],
    ['withdrawn', { state: 'withdrawn' }, 'Withdrawn'],
  ])('says %s and by whom', (event, over, expected) => {
    const m = slackMessage(event, request(over), PAGE) as SlackBody;
    expect(m.blocks[0]!.text!.text).toContain(expected);
    expect(m.text.toLowerCase()).toContain(expected.toLowerCase());
    expect(texts(m).join('\n')).not.toContain('held for review');
  });

  it('gives the time to a verdict and lists every approver when several were needed', () => {
    const m = slackMessage(
      'approved',
      request({
        required: 2,
        approvals: [
          { reviewer: 'alice', at: Date.UTC(2025, 10, 22, 8, 27, 0) },
          { reviewer: 'carol', at: Date.UTC(2025, 10, 22, 8, 28, 20) },
        ],
        verdict: { by: 'carol', at: Date.UTC(2025, 10, 22, 8, 28, 20), grantMinutes: 30 },
      }),
      PAGE,
    ) as SlackBody;
    const all = texts(m).join('\n');
    expect(all).toContain('Approved by alice, carol');
    expect(all).toContain('grant for 30 min');
    expect(all).toContain('Decided after 1 min 40 s');
  });

  it('shows at most 5 statements of at most 500 characters each, and counts the rest', () => {
    const long = `SELECT ${'x'.repeat(600)} FROM t`;
    const statements = Array.from({ length: 8 }, (_, i) => ({ text: i === 0 ? long : `SELECT ${i}`, fingerprint: `f${i}` }));
    const m = slackMessage('held', request({ statements }), PAGE) as SlackBody;
    const code = m.blocks.filter((b) => b.text?.text.startsWith('```'));
    expect(code).toHaveLength(5);
    expect(code[0]!.text!.text).toBe('```\n' + long.slice(0, 500) + '…\n```');
    expect(code.map((b) => b.text!.text)).not.toContain('```\nSELECT 5\n```');
    expect(texts(m).join('\n')).toContain('and 3 more statements');
  });

  it('escapes <, > and & in everything the agent or a reviewer wrote', () => {
    const m = slackMessage(
      'denied',
      request({
        session: { id: 1, user: 'u<!here>', database: 'd&b', application: '<!channel> <http://evil.example|click>', client: '1.2.3.4:5' },
        statements: [{ text: 'SELECT 1 /* <!channel> <http://evil.example|x> */', fingerprint: 'f' }],
        tables: ['<!subteam^S1>'],
        verdict: { by: '<@U123>', at: Date.UTC(2025, 10, 22, 8, 27, 0), reason: '<https://phish.example|see runbook>' },
      }),
      PAGE,
    ) as SlackBody;
    const all = texts(m).join('\n');
    for (const bad of ['<!channel>', '<!here>', '<http://evil', '<https://phish', '<!subteam', '<@U123>']) expect(all).not.toContain(bad);
    expect(all).toContain('&lt;!channel&gt; &lt;http://evil.example|click&gt;');
    expect(all).toContain('u&lt;!here&gt;@d&amp;b');
    expect(all).toContain('/* &lt;!channel&gt; &lt;http://evil.example|x&gt; */');
    // The only Slack control sequence left is our own link.
    const controls = all.match(/<[^>]*>/g) ?? [];
    expect(controls.length).toBeGreaterThan(0);
    for (const c of controls) expect(c).toBe(`<${PAGE}#9f2c41d07a3b5e61|Open in pgwarden>`);
  });

  it('keeps statement text inside its code block (no ``` can close it) and flattens line breaks in fields', () => {
    const m = slackMessage(
      'held',
      request({
        statements: [{ text: 'SELECT 1 ```\n*Approved by admin*\n``` `x`', fingerprint: 'f' }],
        session: { id: 1, user: 'agent', database: 'shop', application: 'etl\n*Approved by admin*', client: 'c' },
      }),
      PAGE,
    ) as SlackBody;
    const code = m.blocks.find((b) => b.text?.text.startsWith('```'))!.text!.text;
    expect(code.match(/``/g)).toHaveLength(2); // the opening and closing fences only
    expect(code.startsWith('```\n') && code.endsWith('\n```')).toBe(true);
    expect(code.slice(4, -4)).not.toMatch(/``/);
    expect(texts(m).join('\n')).toContain('*Application:* etl *Approved by admin*');
  });

  it('takes nothing else from the record', () => {
    const rec = request({
      instance: 'SENTINEL-INSTANCE',
      statements: [{ text: 'UPDATE t SET a = $1', fingerprint: 'SENTINEL-FINGERPRINT' }],
      estimatedRows: 987654321,
      inTransactionSince: 1111111111111,
      session: { id: 424242424, user: 'agent', database: 'shop', application: 'etl', client: 'c' },
      fingerprint: 'SENTINEL-REQUEST-FINGERPRINT',
      piiColumns: ['SENTINEL-PII'],
      reviewerGroups: ['SENTINEL-GROUP'],
      approvals: [{ reviewer: 'SENTINEL-EARLIER-REVIEWER', at: 1, reason: 'SENTINEL-EARLIER-REASON' }],
    });
    Object.assign(rec, { params: ['SENTINEL-PARAM'], extra: { secret: 'SENTINEL-EXTRA' } });
    Object.assign(rec.session, { password: 'SENTINEL-PASSWORD' });
    const json = JSON.stringify(slackMessage('held', rec, PAGE));
    expect(json).not.toMatch(/SENTINEL/);
    for (const n of ['987654321', '1111111111111', '424242424']) expect(json).not.toContain(n);
  });

  it('escapeMrkdwn escapes & first so entities are not doubled wrongly', () => {
    expect(escapeMrkdwn('a&b<c>d &lt;')).toBe('a&amp;b&lt;c&gt;d &amp;lt;');
  });
});

// ---- delivery ----

describe('Webhook delivery', () => {
  it('POSTs the message as JSON to the URL', async () => {
    const { url, got } = await receiver();
    const hook = new Webhook({ url, timeoutMs: 5000, pageUrl: PAGE, log: pino({ level: 'silent' }) });
    hook.notify('held', request());
    await hook.close();
    expect(got).toHaveLength(1);
    expect(got[0]!.method).toBe('POST');
    expect(got[0]!.path).toBe('/services/T000/B000/SECRETPATH?token=SECRETQUERY');
    expect(got[0]!.contentType).toBe('application/json');
    expect(got[0]!.body).toEqual(JSON.parse(JSON.stringify(slackMessage('held', request(), PAGE))));
    expect(Object.keys(got[0]!.body).sort()).toEqual(['blocks', 'text']);
  });

  it('sends escaped text for hostile application names and SQL', async () => {
    const { url, got } = await receiver();
    const hook = new Webhook({ url, timeoutMs: 5000, pageUrl: PAGE, log: pino({ level: 'silent' }) });
    hook.notify(
      'held',
      request({
        session: { id: 1, user: 'agent', database: 'shop', application: '<!channel> <http://evil|x>', client: 'c' },
        statements: [{ text: 'SELECT $1 /* <!channel> <http://evil|x> */', fingerprint: 'f' }],
      }),
    );
    await hook.close();
    const all = texts(got[0]!.body).join('\n');
    expect(all).not.toContain('<!channel>');
    expect(all).not.toContain('<http://evil|x>');
    expect(all).toContain('&lt;!channel&gt; &lt;http://evil|x&gt;');
  });

  it('does not send the record fields it must not', async () => {
    const { url, got } = await receiver();
    const hook = new Webhook({ url, timeoutMs: 5000, pageUrl: PAGE, log: pino({ level: 'silent' }) });
    const rec = request({ instance: 'SENTINEL-INSTANCE' });
    Object.assign(rec, { unexpected: 'SENTINEL-UNEXPECTED' });
    hook.notify('held', rec);
    await hook.close();
    expect(got).toHaveLength(1);
    expect(got[0]!.raw).not.toContain('SENTINEL');
  });

  it('retries after a 500 (and a 429) and then succeeds, sending the same message', async () => {
    const { url, got } = await receiver((n) => (n === 1 ? 500 : n === 2 ? 429 : 200));
    const { log, warns } = capture();
    const hook = new Webhook({ url, timeoutMs: 5000, pageUrl: PAGE, log });
    hook.notify('held', request());
    await hook.close();
    expect(got).toHaveLength(3);
    expect(got[1]!.raw).toBe(got[0]!.raw);
    expect(got[2]!.raw).toBe(got[0]!.raw);
    expect(warns()).toEqual([]); // delivered in the end: no warning
  });

  it('retries a dropped connection', async () => {
    const { url, got } = await receiver((n) => (n === 1 ? 'destroy' : 200));
    const hook = new Webhook({ url, timeoutMs: 5000, pageUrl: PAGE, log: pino({ level: 'silent' }) });
    hook.notify('held', request());
    await hook.close();
    expect(got).toHaveLength(2);
  });

  it('gives up after `retries` extra attempts and warns once', async () => {
    const { url, got } = await receiver(() => 503);
    const { log, warns } = capture();
    const hook = new Webhook({ url, timeoutMs: 5000, pageUrl: PAGE, log, retries: 1 });
    hook.notify('held', request());
    await hook.close();
    expect(got).toHaveLength(2);
    const warned = warns();
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ status: 503, attempts: 2 });
  });

  it('does not retry a 400, and logs the failure with the origin only', async () => {
    const { url, got } = await receiver(() => 400);
    const { log, warns, raw } = capture();
    const hook = new Webhook({ url, timeoutMs: 5000, pageUrl: PAGE, log });
    hook.notify('held', request());
    hook.notify('denied', request({ id: 'bbbb', verdict: { by: 'x', at: Date.now(), reason: 'r' } }));
    await hook.close();
    expect(got.map((g) => idOf(g.body))).toEqual(['9f2c41d07a3b5e61', 'bbbb']); // each once, no retry
    const warned = warns();
    expect(warned).toHaveLength(2);
    expect(warned[0]).toMatchObject({ status: 400, attempts: 1, webhook: new URL(url).origin });
    expect(raw()).not.toContain('SECRETPATH');
    expect(raw()).not.toContain('SECRETQUERY');
    expect(raw()).not.toContain('/services/');
  });

  it('keeps network error logs free of the URL secret', async () => {
    const { url } = await receiver();
    const port = new URL(url).port;
    await new Promise<void>((resolve) => server!.close(() => resolve())); // nobody listens now
    server = null;
    const { log, warns, raw } = capture();
    const hook = new Webhook({ url, timeoutMs: 5000, pageUrl: PAGE, log, retries: 0 });
    hook.notify('held', request());
    await hook.close();
    const warned = warns();
    expect(warned).toHaveLength(1);
    expect(String(warned[0]!.err)).toMatch(/ECONNREFUSED/);
    expect(raw()).toContain(`127.0.0.1:${port}`);
    expect(raw()).not.toContain('SECRET');
  });

  it('never blocks notify() on a receiver that does not answer, and close() returns after timeoutMs', async () => {
    const { url, got } = await receiver(() => 'hang');
    const { log } = capture();
    const hook = new Webhook({ url, timeoutMs: 300, pageUrl: PAGE, log });
    const t0 = performance.now();
    for (let i = 0; i < 20; i++) hook.notify('held', request({ id: `r${i}` }));
    expect(ms(t0)).toBeLessThan(100);
    const t1 = performance.now();
    await hook.close();
    const took = ms(t1);
    expect(took).toBeGreaterThanOrEqual(250);
    expect(took).toBeLessThan(1500);
    expect(got.length).toBeGreaterThanOrEqual(1);
    // Nothing is sent once closed.
    const before = got.length;
    hook.notify('held', request({ id: 'late' }));
    await new Promise((r) => setTimeout(r, 100));
    expect(got.length).toBe(before);
  });

  it('never throws from notify(), even for a broken record', async () => {
    const { url, got } = await receiver();
    const { log, warns } = capture();
    const hook = new Webhook({ url, timeoutMs: 5000, pageUrl: PAGE, log });
    const broken = { ...request(), get statements(): never { throw new Error('boom'); } } as ApprovalRequest;
    expect(() => hook.notify('held', broken)).not.toThrow();
    hook.notify('held', request({ id: 'good' }));
    await hook.close();
    expect(got.map((g) => idOf(g.body))).toEqual(['good']);
    expect(warns().some((l) => String(l.msg).includes('could not be built'))).toBe(true);
  });

  it('keeps the order of notifications, one delivery at a time', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const { url, got } = await receiver(async () => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 15)));
      inFlight--;
      return 200;
    });
    const hook = new Webhook({ url, timeoutMs: 5000, pageUrl: PAGE, log: pino({ level: 'silent' }) });
    const ids = Array.from({ length: 12 }, (_, i) => `req${i}`);
    for (const id of ids) hook.notify('held', request({ id }));
    await hook.close();
    expect(got.map((g) => idOf(g.body))).toEqual(ids);
    expect(maxInFlight).toBe(1);
  });

  it('drops the oldest queued notifications past maxQueue and warns with the count', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { url, got } = await receiver(async (n) => {
      if (n === 1) await gate;
      return 200;
    });
    const { log, warns } = capture();
    const hook = new Webhook({ url, timeoutMs: 5000, pageUrl: PAGE, log, maxQueue: 3 });
    for (let i = 1; i <= 7; i++) hook.notify('held', request({ id: `q${i}` }));
    // q1 is in flight; q2..q7 queued with room for 3: q2, q3, q4 dropped.
    await new Promise((r) => setTimeout(r, 50));
    // Warned while still running (one line for the burst), not only at close.
    expect(warns()).toHaveLength(1);
    expect(warns()[0]).toMatchObject({ dropped: 3 });
    release();
    await hook.close();
    expect(got.map((g) => idOf(g.body))).toEqual(['q1', 'q5', 'q6', 'q7']);
    expect(warns()).toHaveLength(1);
  });

  it('restarts delivery after the queue ran empty', async () => {
    const { url, got } = await receiver();
    const hook = new Webhook({ url, timeoutMs: 5000, pageUrl: PAGE, log: pino({ level: 'silent' }) });
    hook.notify('held', request({ id: 'first' }));
    await new Promise((r) => setTimeout(r, 200));
    expect(got).toHaveLength(1);
    hook.notify('expired', request({ id: 'second' }));
    await hook.close();
    expect(got.map((g) => idOf(g.body))).toEqual(['first', 'second']);
  });
});
