import { beforeAll, describe, expect, it } from 'vitest';
import type { AuditSink, Recorded } from '../../src/audit/audit-sink.js';
import { AuditingJudge, type AuditWait } from '../../src/audit/auditing-judge.js';
import type { AuditEventInput } from '../../src/audit/events.js';
import { SqlNormalizer } from '../../src/audit/normalize-sql.js';
import { Classifier, loadParser } from '../../src/classify/classifier.js';
import { silentLogger } from '../../src/logger.js';
import { PolicyJudge } from '../../src/policy/policy-judge.js';
import { compileRules } from '../../src/policy/rules-loader.js';
import { decodeFrontendMessage } from '../../src/protocol/frontend.js';
import type { Decision, RequestJudge } from '../../src/session/decision.js';
import type { ReceivedMessage, Request } from '../../src/session/request.js';
import type { SessionInfo } from '../../src/session/session-info.js';
import { fe, typedFrame } from '../helpers/wire.js';

/**
 * The auditing judge: what each decision records, which decisions wait for a durable record,
 * and that nothing is allowed while the log cannot record (fail closed).
 */
class FakeSink implements AuditSink {
  events: { event: AuditEventInput; waited: boolean }[] = [];
  failing = false;
  /** Settles `record` promises: resolve (durable) or reject (nowhere to write). */
  settle: 'resolve' | 'reject' | 'hold' = 'resolve';
  held: (() => void)[] = [];

  record(event: AuditEventInput): Recorded {
    this.events.push({ event, waited: true });
    const seq = this.events.length;
    if (this.settle === 'reject') return { seq, durable: Promise.reject(new Error('nowhere to write')) };
    if (this.settle === 'hold') return { seq, durable: new Promise((r) => this.held.push(r)) };
    return { seq, durable: Promise.resolve() };
  }

  note(event: AuditEventInput): number {
    this.events.push({ event, waited: false });
    return this.events.length;
  }

  async close(): Promise<void> {}
}

const session: SessionInfo = {
  id: 3,
  startupParams: new Map([
    ['user', 'agent'],
    ['database', 'app'],
    ['application_name', 'bot'],
  ]),
  user: 'agent',
  transactionSince: null,
  notify: () => {},
  database: 'app',
  clientAddress: '10.0.0.9:5555',
  tls: true,
  txStatus: 'I',
  serverParams: new Map([
    ['standard_conforming_strings', 'on'],
    ['client_encoding', 'UTF8'],
  ]),
  statementCandidates: (name) => (name === 'prepared_earlier' ? ["SELECT * FROM orders WHERE note = 'kept-out'"] : []),
  portalCandidates: () => [],
};

function request(kind: Request['kind'], messages: Buffer[], end: Request['end']): Request {
  const received: ReceivedMessage[] = messages.map((m) => {
    const frame = typedFrame(m);
    return { frame, msg: decodeFrontendMessage(frame) };
  });
  return { kind, messages: received, end, bytes: 0 };
}
const query = (sql: string) => request('simple', [fe.query(sql)], 'none');

let policyJudge: RequestJudge;
beforeAll(async () => {
  await loadParser();
  const policy = compileRules([
    { file: 'test.yaml', text: 'policy:\n  default: allow\n  rules:\n    - name: no-drop\n      match: { kind: [ddl] }\n      action: deny\n' },
  ]);
  policyJudge = new PolicyJudge({ current: policy }, new Classifier());
});

function judgeWith(sink: FakeSink, wait: AuditWait = 'refusals', outcomeWindowMs = 0): AuditingJudge {
  const j = new AuditingJudge(policyJudge, sink, new SqlNormalizer(), () => 'rules-v1', silentLogger, wait, outcomeWindowMs);
  j.opened(session);
  return j;
}

const settle = async (d: Decision | Promise<Decision>) => await d;

describe('AuditingJudge', () => {
  it('records an allowed statement with identity, normalized SQL, kinds, tables and rule, without waiting for it', async () => {
    const sink = new FakeSink();
    const d = judgeWith(sink).judge(query("SELECT * FROM orders WHERE note = 'secret-value'"), session, new AbortController().signal);
    expect(d).not.toBeInstanceOf(Promise); // forwarded at once
    expect((d as Decision).action).toBe('allow');
    const allowed = sink.events.find((e) => e.event.type === 'statement.allowed')!;
    expect(allowed.waited).toBe(false);
    expect(allowed.event).toMatchObject({
      session: { id: 3, user: 'agent', database: 'app', application: 'bot', client: '10.0.0.9:5555' },
      request: 'simple',
      statements: [{ text: 'SELECT * FROM orders WHERE note = $1' }],
      kinds: ['read'],
      tables: ['orders'],
      rule: 'default',
      rulesVersion: 'rules-v1',
    });
    expect(JSON.stringify(sink.events)).not.toContain('secret-value');
  });

  it('records a statement that finishes within the outcome window as one entry with its outcome', async () => {
    const sink = new FakeSink();
    const judge = judgeWith(sink, 'refusals', 1000);
    const d = (await settle(judge.judge(query("UPDATE orders SET n = 'x'"), session, new AbortController().signal))) as Extract<Decision, { action: 'allow' }>;
    expect(sink.events.map((e) => e.event.type)).toEqual(['connection.opened']); // kept back
    d.onDone!({ durationMs: 1.25, rowsReturned: 0, rowsAffected: 3 });
    expect(sink.events.map((e) => e.event.type)).toEqual(['connection.opened', 'statement.allowed']);
    expect(sink.events[1]!.event).toMatchObject({
      statements: [{ text: 'UPDATE orders SET n = $1' }],
      outcome: { durationMs: 1.25, rowsReturned: 0, rowsAffected: 3 },
    });
  });

  it('writes a kept-back decision when the window passes, or when flushed, and records the outcome separately', async () => {
    const sink = new FakeSink();
    const judge = judgeWith(sink, 'refusals', 20);
    const slow = (await settle(judge.judge(query('SELECT pg_sleep(1)'), session, new AbortController().signal))) as Extract<Decision, { action: 'allow' }>;
    await new Promise((r) => setTimeout(r, 80));
    expect(sink.events.map((e) => e.event.type)).toEqual(['connection.opened', 'statement.allowed']);
    expect(sink.events[1]!.event).not.toHaveProperty('outcome');
    slow.onDone!({ durationMs: 1000, rowsReturned: 1, rowsAffected: 0 });
    expect(sink.events[2]!.event).toMatchObject({ type: 'statement.executed', decisionSeq: 2, rowsReturned: 1 });

    const held = judgeWith(sink, 'refusals', 60_000);
    await settle(held.judge(query('SELECT 2'), session, new AbortController().signal));
    const before = sink.events.length;
    held.flush();
    expect(sink.events.length).toBe(before + 1);
    expect(sink.events.at(-1)!.event).toMatchObject({ type: 'statement.allowed', statements: [{ text: 'SELECT $1' }] });
  });

  it('records the outcome after the statement ran, linked to its decision', async () => {
    const sink = new FakeSink();
    const d = (await settle(judgeWith(sink).judge(query('UPDATE orders SET n = 1'), session, new AbortController().signal))) as Extract<Decision, { action: 'allow' }>;
    const decisionSeq = sink.events.length;
    d.onDone!({ durationMs: 2.5, rowsReturned: 0, rowsAffected: 7, sqlstate: '23505' });
    expect(sink.events.at(-1)!.event).toEqual({
      type: 'statement.executed',
      session: { id: 3, user: 'agent', database: 'app', application: 'bot', client: '10.0.0.9:5555' },
      decisionSeq,
      durationMs: 2.5,
      rowsReturned: 0,
      rowsAffected: 7,
      sqlstate: '23505',
    });
  });

  it('makes a refusal wait for its durable record before the client is answered', async () => {
    const sink = new FakeSink();
    sink.settle = 'hold';
    const pending = judgeWith(sink).judge(query('DROP TABLE orders'), session, new AbortController().signal);
    expect(pending).toBeInstanceOf(Promise);
    let answered = false;
    void (pending as Promise<Decision>).then(() => (answered = true));
    await new Promise((r) => setTimeout(r, 10));
    expect(answered).toBe(false);
    sink.held.forEach((r) => r());
    const d = await pending;
    expect(d).toMatchObject({ action: 'deny', rule: 'no-drop', error: { code: '42501' } });
    expect(sink.events.find((e) => e.event.type === 'statement.denied')).toMatchObject({
      waited: true,
      event: { rule: 'no-drop', sqlstate: '42501', statements: [{ text: 'DROP TABLE orders' }], kinds: ['ddl'] },
    });
  });

  it('with wait=all, an allowed statement waits for its record, and is refused when it cannot be recorded', async () => {
    const sink = new FakeSink();
    sink.settle = 'reject';
    const d = await settle(judgeWith(sink, 'all').judge(query('SELECT 1'), session, new AbortController().signal));
    expect(d).toMatchObject({ action: 'deny', rule: 'audit-unavailable', error: { code: '58030', message: 'pgwarden: the audit log cannot record this statement, so it was not run' } });
  });

  it('keeps a refusal a refusal when its record cannot be written', async () => {
    const sink = new FakeSink();
    sink.settle = 'reject';
    const d = await settle(judgeWith(sink).judge(query('DROP TABLE orders'), session, new AbortController().signal));
    expect(d).toMatchObject({ action: 'deny', rule: 'no-drop', error: { code: '42501' } });
  });

  it('refuses every allowed statement while the sink is failing (fail closed), and allows again once it records', async () => {
    const sink = new FakeSink();
    const judge = judgeWith(sink);
    sink.failing = true;
    expect(await settle(judge.judge(query('SELECT 1'), session, new AbortController().signal))).toMatchObject({ action: 'deny', error: { code: '58030' } });
    sink.failing = false;
    expect(await settle(judge.judge(query('SELECT 1'), session, new AbortController().signal))).toMatchObject({ action: 'allow' });
  });

  it('records the SQL a Bind runs when it was prepared by an earlier request (never the parameters)', async () => {
    const sink = new FakeSink();
    const req = request('extended', [fe.bind({ statement: 'prepared_earlier', values: ['param-secret'] }), fe.execute(), fe.sync()], 'Sync');
    await settle(judgeWith(sink).judge(req, session, new AbortController().signal));
    const allowed = sink.events.find((e) => e.event.type === 'statement.allowed')!.event;
    expect(allowed).toMatchObject({ request: 'extended', statements: [{ text: 'SELECT * FROM orders WHERE note = $1' }] });
    expect(JSON.stringify(sink.events)).not.toMatch(/param-secret|kept-out/);
  });

  it('records connections: opened, closed with its request count, and refused attempts with the reason', async () => {
    const sink = new FakeSink();
    const judge = judgeWith(sink);
    await settle(judge.judge(query('SELECT 1'), session, new AbortController().signal));
    judge.closed(session, { authenticated: true, reason: 'client-terminated' });
    expect(sink.events[0]!.event).toMatchObject({ type: 'connection.opened', tls: true });
    expect(sink.events.at(-1)!.event).toMatchObject({ type: 'connection.closed', statements: 1 });
    const other = { ...session, id: 4 };
    judge.closed(other, { authenticated: false, reason: '28P01' });
    expect(sink.events.at(-1)!.event).toMatchObject({ type: 'connection.refused', reason: '28P01', session: { id: 4, user: 'agent' } });
  });
});
