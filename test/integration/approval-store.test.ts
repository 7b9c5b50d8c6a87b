import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ApprovalConflict,
  RedisApprovalStore,
  redisApprovalEvents,
  type ApprovalEvents,
  type ApprovalRequest,
  type ApprovalStore,
} from '../../src/approval/approval-store.js';
import { MemoryApprovalStore } from '../../src/approval/memory-approval-store.js';
import { startTestRedis, type TestRedis } from '../helpers/redis-server.js';

/**
 * The approval state machine, the same expectations for both stores: the Redis one shared by
 * every instance (against a real Redis) and the in-process one (`approval.store: memory`, the
 * demo). One winner per race, an approval runs exactly once, N distinct approvers, grants that
 * expire by themselves, and a change notification for every transition.
 */
interface Backend {
  store: ApprovalStore;
  /** The same requests as another instance (process) sees them. */
  sibling(): ApprovalStore;
  /** A new subscription to the store's change events. */
  events(): ApprovalEvents;
  close(): Promise<void>;
}

async function redisBackend(): Promise<Backend> {
  const server: TestRedis = await startTestRedis();
  const clients: Redis[] = [];
  const client = () => {
    const r = new Redis(server.url);
    clients.push(r);
    return r;
  };
  const prefix = `pgw-test:approvals:${randomBytes(4).toString('hex')}`;
  const store = new RedisApprovalStore(client(), prefix);
  return {
    store,
    sibling: () => new RedisApprovalStore(client(), prefix),
    events: () => redisApprovalEvents(client(), store.eventsChannel),
    close: async () => {
      for (const c of clients) c.disconnect();
      await server.stop();
    },
  };
}

async function memoryBackend(): Promise<Backend> {
  const store = new MemoryApprovalStore();
  // One process has one store: every holder and page of it uses this same object.
  return { store, sibling: () => store, events: () => store.events(), close: async () => {} };
}

const held = (over: Partial<ApprovalRequest> = {}) => ({
  expiresAt: Date.now() + 60_000,
  instance: 'proxy-a/w0',
  session: { id: 1, user: 'agent', database: 'shop', application: 'bot', client: '10.0.0.1:5000' },
  statements: [{ text: 'DROP TABLE orders', fingerprint: '0123456789abcdef' }],
  kinds: ['ddl'],
  tables: ['orders'],
  rule: 'schema-changes',
  reason: 'DDL changes the schema',
  required: 1,
  fingerprint: 'f'.repeat(32),
  piiColumns: [],
  reviewerGroups: [],
  grantable: true,
  ...over,
});

describe.each([
  { name: 'RedisApprovalStore', open: redisBackend },
  { name: 'MemoryApprovalStore', open: memoryBackend },
])('$name', ({ open }) => {
  let backend: Backend;
  let store: ApprovalStore;

  beforeAll(async () => {
    backend = await open();
    store = backend.store;
  });

  afterAll(async () => {
    await backend?.close();
  });

  it('creates a pending request that every instance can list and read', async () => {
    const r = await store.create(held());
    expect(r).toMatchObject({ state: 'pending', approvals: [], rule: 'schema-changes' });
    expect(r.id).toMatch(/^[0-9a-f]{16}$/);
    expect((await store.pending()).map((p) => p.id)).toContain(r.id);
    expect(await backend.sibling().get(r.id)).toEqual(r);
  });

  it('approve → claim → finish runs exactly once; a second claim fails', async () => {
    const r = await store.create(held());
    const approved = await store.approve(r.id, 'alice', 'looks fine');
    expect(approved).toMatchObject({ state: 'approved', verdict: { by: 'alice', reason: 'looks fine' } });
    expect((await store.pending()).map((p) => p.id)).not.toContain(r.id);
    const [a, b] = await Promise.allSettled([store.claim(r.id), store.claim(r.id)]);
    expect([a.status, b.status].sort()).toEqual(['fulfilled', 'rejected']);
    const loser = (a.status === 'rejected' ? a.reason : (b as PromiseRejectedResult).reason) as ApprovalConflict;
    expect(loser).toBeInstanceOf(ApprovalConflict);
    expect(loser.state).toBe('executing');
    expect((await store.finish(r.id)).state).toBe('done');
  });

  it('lets only one verdict win when a deny and an approve race', async () => {
    const r = await store.create(held());
    const results = await Promise.allSettled([store.approve(r.id, 'alice'), store.deny(r.id, 'bob', 'not during business hours')]);
    expect(results.filter((x) => x.status === 'fulfilled')).toHaveLength(1);
    const final = (await store.get(r.id))!;
    expect(['approved', 'denied']).toContain(final.state);
  });

  it('needs N distinct approvers; the same reviewer twice counts once', async () => {
    const r = await store.create(held({ required: 2 }));
    expect((await store.approve(r.id, 'alice')).state).toBe('pending');
    await expect(store.approve(r.id, 'alice')).rejects.toThrow(/already has this reviewer's approval/);
    const done = await store.approve(r.id, 'carol');
    expect(done.state).toBe('approved');
    expect(done.approvals.map((a) => a.reviewer)).toEqual(['alice', 'carol']);
  });

  it('refuses verdicts on expired, withdrawn or unknown requests', async () => {
    const late = await store.create(held({ expiresAt: Date.now() - 1 }));
    await expect(store.approve(late.id, 'alice')).rejects.toMatchObject({ state: 'expired' });
    expect((await store.expire(late.id)).state).toBe('expired');
    const gone = await store.create(held());
    expect((await store.withdraw(gone.id)).state).toBe('withdrawn');
    await expect(store.deny(gone.id, 'bob', 'x')).rejects.toMatchObject({ state: 'withdrawn' });
    await expect(store.approve('ffffffffffffffff', 'alice')).rejects.toThrow(/no approval request/);
  });

  it('announces every transition on the events channel', async () => {
    const sub = backend.events();
    const seen: { id: string; state: string }[] = [];
    await sub.subscribe((e) => seen.push(e));
    const r = await store.create(held());
    await store.approve(r.id, 'alice');
    await store.claim(r.id);
    await store.finish(r.id);
    const deadline = Date.now() + 2000;
    while (seen.filter((e) => e.id === r.id).length < 4 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
    expect(seen.filter((e) => e.id === r.id).map((e) => e.state)).toEqual(['pending', 'approved', 'executing', 'done']);
    sub.close();
  });

  it('keeps a grant for exactly one agent, database and statement, until it expires by itself', async () => {
    const g = await store.grant('agent', 'shop', 'fp1', 0.002, 'alice'); // 120 ms
    expect(await store.findGrant('agent', 'shop', 'fp1')).toMatchObject({ id: g.id, by: 'alice' });
    expect(await store.findGrant('other', 'shop', 'fp1')).toBeNull();
    expect(await store.findGrant('agent', 'prod', 'fp1')).toBeNull();
    expect(await store.findGrant('agent', 'shop', 'fp2')).toBeNull();
    await new Promise((r) => setTimeout(r, 250));
    expect(await store.findGrant('agent', 'shop', 'fp1')).toBeNull();
  });

  it('caps pending requests per database user across callers; finished ones free a slot', async () => {
    const user = `capped_${Date.now()}`;
    const mk = () => store.create(held({ session: { id: 9, user, database: 'shop', application: '', client: 'x' } }), 2);
    const r1 = await mk();
    await mk();
    await expect(mk()).rejects.toMatchObject({ name: 'ApprovalCapReached', pending: 2 });
    await store.deny(r1.id, 'alice', 'no');
    expect((await mk()).state).toBe('pending');
    // a request past its deadline no longer counts
    const other = `late_${Date.now()}`;
    await store.create(held({ session: { id: 9, user: other, database: 'shop', application: '', client: 'x' }, expiresAt: Date.now() - 1 }), 1);
    expect((await store.create(held({ session: { id: 9, user: other, database: 'shop', application: '', client: 'x' } }), 1)).state).toBe('pending');
  });

  it('lists decided requests newest first as recent, and overdue pending ones for the janitor', async () => {
    const a = await store.create(held());
    const b = await store.create(held());
    await store.deny(a.id, 'alice', 'no');
    await new Promise((r) => setTimeout(r, 5));
    await store.withdraw(b.id);
    const recent = (await store.recent()).map((r) => r.id);
    expect(recent.indexOf(b.id)).toBeLessThan(recent.indexOf(a.id));
    expect(recent.indexOf(a.id)).toBeGreaterThanOrEqual(0);
    const late = await store.create(held({ expiresAt: Date.now() - 10 }));
    expect(await store.overdue()).toContain(late.id);
    expect((await store.pending()).map((r) => r.id)).not.toContain(late.id);
  });
});
