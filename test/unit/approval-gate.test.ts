import { describe, expect, it } from 'vitest';
import { ApprovalGate, piiColumnsOf, type GateOptions } from '../../src/approval/approval-gate.js';
import type { ApprovalEvents, ApprovalRequest, ApprovalStore } from '../../src/approval/approval-store.js';
import { MemoryApprovalStore } from '../../src/approval/memory-approval-store.js';
import { ApprovalMetrics } from '../../src/approval/metrics.js';
import { VerdictWaiter } from '../../src/approval/verdict-waiter.js';
import type { SqlNormalizer } from '../../src/audit/normalize-sql.js';
import { silentLogger } from '../../src/logger.js';
import { compileMasking, NO_MASKING } from '../../src/masking/mask-rules.js';
import { pgError } from '../../src/protocol/pg-error.js';
import type { Decision, RequestJudge } from '../../src/session/decision.js';
import type { Request } from '../../src/session/request.js';
import type { SessionInfo } from '../../src/session/session-info.js';

/**
 * The approval gate against the in-process store, for races an end-to-end test cannot time:
 * what the gate does when a verdict and the deadline (and a disconnect) meet.
 */
const session = (): SessionInfo => ({
  id: 7,
  startupParams: new Map(),
  user: 'agent',
  database: 'shop',
  clientAddress: '127.0.0.1:5000',
  tls: false,
  txStatus: 'I' as SessionInfo['txStatus'],
  transactionSince: null,
  serverParams: new Map(),
  statementCandidates: () => [],
  portalCandidates: () => [],
  notify: () => {},
});

const query = (sql: string): Request => ({
  kind: 'simple',
  messages: [{ frame: { tag: 0x51, bytes: Buffer.alloc(0), bodyOffset: 5 }, msg: { type: 'Query', sql, utf8: true } }],
  end: 'none',
  bytes: sql.length,
});

/** A policy judge whose rule holds everything for review, with the given deadline. */
const holdsEverything = (timeoutSeconds: number, tables: { schema?: string; name: string }[] = []): RequestJudge => ({
  judge: (): Decision => ({
    action: 'deny',
    rule: 'schema-changes',
    error: pgError.reviewUnavailable('schema-changes', 'DDL'),
    about: [{ kinds: ['ddl'], relations: tables }],
    review: { reason: 'DDL', approvers: 1, reviewers: [], grants: false, timeoutSeconds },
  }),
});

/** Events that never arrive (pub/sub lost them): the holder only wakes by its own timers. */
const silent: ApprovalEvents = { subscribe: async () => {}, close: () => {} };

function gateOver(store: ApprovalStore, inner: RequestJudge, over: Partial<GateOptions> = {}): ApprovalGate {
  return new ApprovalGate(inner, {
    store,
    waiter: new VerdictWaiter(silent, silentLogger, 10_000),
    normalizer: { normalize: (sql: string) => ({ text: sql, fingerprint: 'fp' }) } as unknown as SqlNormalizer,
    audit: null,
    metrics: new ApprovalMetrics(),
    webhook: null,
    instance: 'test/w0',
    timeoutSeconds: 30,
    maxPendingPerUser: 10,
    pageUrl: () => null,
    rulesVersion: () => 'v1',
    masking: () => NO_MASKING,
    log: silentLogger,
    ...over,
  });
}

describe('ApprovalGate: a verdict landing at the deadline', () => {
  it('does not claim an approved request when the agent disconnected in that moment', async () => {
    const memory = new MemoryApprovalStore();
    const disconnect = new AbortController();
    let stale = true;
    let id = '';
    // The holder read the record just before a reviewer's approval landed (so it still looked
    // pending at the deadline); the agent disconnects while the holder tries to expire it.
    const store: ApprovalStore = Object.assign(Object.create(memory) as MemoryApprovalStore, {
      create: async (...args: Parameters<ApprovalStore['create']>) => {
        const rec = await memory.create(...args);
        id = rec.id;
        await memory.approve(rec.id, 'bob');
        return rec;
      },
      get: async (rid: string): Promise<ApprovalRequest | null> => {
        const rec = await memory.get(rid);
        return rec && stale ? { ...rec, state: 'pending' } : rec;
      },
      expire: async (rid: string) => {
        stale = false;
        disconnect.abort();
        return memory.expire(rid);
      },
    });
    const gate = gateOver(store, holdsEverything(0.1));
    const d = await gate.judge(query('DROP TABLE orders'), session(), disconnect.signal);
    expect(d.action).toBe('deny');
    expect(d.action === 'deny' && d.error.message).toBe('canceling statement due to user request');
    // Not `executing`: nobody will ever run it (the agent is gone), so it must not look as if someone is.
    expect((await memory.get(id))?.state).toBe('withdrawn');
  });

  it('still runs an approval that landed at the deadline when the agent is there', async () => {
    const memory = new MemoryApprovalStore();
    let stale = true;
    let id = '';
    const store: ApprovalStore = Object.assign(Object.create(memory) as MemoryApprovalStore, {
      create: async (...args: Parameters<ApprovalStore['create']>) => {
        const rec = await memory.create(...args);
        id = rec.id;
        await memory.approve(rec.id, 'bob');
        return rec;
      },
      get: async (rid: string): Promise<ApprovalRequest | null> => {
        const rec = await memory.get(rid);
        return rec && stale ? { ...rec, state: 'pending' } : rec;
      },
      expire: async (rid: string) => {
        stale = false;
        return memory.expire(rid);
      },
    });
    const gate = gateOver(store, holdsEverything(0.1));
    const d = await gate.judge(query('DROP TABLE orders'), session(), new AbortController().signal);
    expect(d).toMatchObject({ action: 'allow', approval: { id, by: 'bob' } });
    expect((await memory.get(id))?.state).toBe('executing');
  });
});

const masking = compileMasking([
  { entry: { table: 'public.customers', columns: { email: 'partial_email', ssn: 'redact' }, exempt: ['dpo'] }, file: 'masking.yaml', index: 0 },
  { entry: { table: 'billing.customers', columns: { card_number: 'hash' } }, file: 'masking.yaml', index: 1 },
  { entry: { table: 'public.employees', columns: { salary: 'redact' } }, file: 'masking.yaml', index: 2 },
]).rules;

describe('piiColumnsOf: the PII columns a reviewer is shown', () => {
  it('lists the masked columns of the masked tables named, as schema.table.column', () => {
    expect(piiColumnsOf(masking, ['public.customers', 'public.orders'])).toEqual(['public.customers.email', 'public.customers.ssn']);
    expect(piiColumnsOf(masking, ['public.orders'])).toEqual([]);
    expect(piiColumnsOf(NO_MASKING, ['public.customers'])).toEqual([]);
  });

  it('an unqualified name may mean a masked table of that name in any schema (as masking reads it)', () => {
    expect(piiColumnsOf(masking, ['customers'])).toEqual(['public.customers.email', 'public.customers.ssn', 'billing.customers.card_number']);
    expect(piiColumnsOf(masking, ['other.customers'])).toEqual([]);
  });

  it('names each column once, however often its table is named', () => {
    expect(piiColumnsOf(masking, ['public.employees', 'employees', 'public.employees'])).toEqual(['public.employees.salary']);
  });
});

describe('ApprovalGate: what the request shows reviewers', () => {
  it('the PII columns of the tables the statement touches, from the masking rules in force, whoever the agent is', async () => {
    for (const user of ['agent', 'dpo']) {
      const store = new MemoryApprovalStore();
      let rules = NO_MASKING;
      const gate = gateOver(store, holdsEverything(30, [{ name: 'customers' }, { schema: 'public', name: 'orders' }]), { masking: () => rules });
      rules = masking; // read when the statement is held, not when the gate is built
      const abort = new AbortController();
      const d = gate.judge(query('SELECT * FROM customers JOIN public.orders USING (id)'), { ...session(), user }, abort.signal);
      const rec = await until(async () => (await store.pending())[0]);
      expect(rec.piiColumns).toEqual(['public.customers.email', 'public.customers.ssn', 'billing.customers.card_number']);
      abort.abort();
      await d;
    }
  });
});

async function until<T>(fn: () => Promise<T | undefined>): Promise<T> {
  for (let i = 0; i < 200; i++) {
    const v = await fn();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error('timed out');
}
