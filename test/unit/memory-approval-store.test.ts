import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ApprovalEvent, ApprovalRequest } from '../../src/approval/approval-store.js';
import { approvalsEnabled } from '../../src/config/startup-checks.js';
import { MemoryApprovalStore } from '../../src/approval/memory-approval-store.js';
import { ConfigError, loadConfig } from '../../src/config/load.js';
import { configSchema } from '../../src/config/schema.js';
import { VerdictWaiter } from '../../src/approval/verdict-waiter.js';
import { silentLogger } from '../../src/logger.js';

/**
 * What the in-process store adds to the expectations it shares with the Redis store
 * (test/integration/approval-store.test.ts runs those against both): callers get copies, records
 * and grants disappear by themselves, and its events reach every open subscription, and only those.
 */
const held = (over: Partial<ApprovalRequest> = {}) => ({
  expiresAt: Date.now() + 60_000,
  instance: 'demo/w0',
  session: { id: 1, user: 'agent', database: 'shop', application: 'bot', client: '127.0.0.1:5000' },
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

const tick = () => new Promise((r) => setImmediate(r));

describe('MemoryApprovalStore', () => {
  it('hands out copies: changing a returned record changes nothing in the store', async () => {
    const store = new MemoryApprovalStore();
    const r = await store.create(held());
    r.state = 'approved';
    r.approvals.push({ reviewer: 'mallory', at: 0 });
    const got = (await store.get(r.id))!;
    expect(got).toMatchObject({ state: 'pending', approvals: [] });
    got.approvals.push({ reviewer: 'mallory', at: 0 });
    expect((await store.approve(r.id, 'alice')).approvals.map((a) => a.reviewer)).toEqual(['alice']);
  });

  it('forgets a request once its deadline plus the keep period passed, as a Redis key TTL does', async () => {
    const store = new MemoryApprovalStore(50);
    const r = await store.create(held({ expiresAt: Date.now() + 30 }));
    await store.deny(r.id, 'alice', 'no');
    expect((await store.recent()).map((x) => x.id)).toEqual([r.id]);
    await new Promise((res) => setTimeout(res, 120));
    expect(await store.get(r.id)).toBeNull();
    expect(await store.recent()).toEqual([]);
    await expect(store.finish(r.id)).rejects.toMatchObject({ name: 'ApprovalConflict', state: null });
  });

  it('announces changes after they are made, to every open subscription and not to closed ones', async () => {
    const store = new MemoryApprovalStore();
    const a = store.events();
    const b = store.events();
    const seenA: ApprovalEvent[] = [];
    const seenB: ApprovalEvent[] = [];
    let stateSeenByListener: string | undefined;
    await a.subscribe((e) => {
      seenA.push(e);
      // The store already holds the new state when the event arrives.
      void store.get(e.id).then((rec) => (stateSeenByListener = rec?.state));
    });
    await b.subscribe(() => {
      throw new Error('a broken listener');
    });
    await b.subscribe((e) => seenB.push(e)); // re-subscribing replaces the listener
    const r = await store.create(held());
    expect(seenA).toEqual([]); // not synchronously inside create()
    await tick();
    expect(seenA).toEqual([{ id: r.id, state: 'pending' }]);
    expect(seenB).toEqual([{ id: r.id, state: 'pending' }]);
    b.close();
    await store.approve(r.id, 'alice');
    await tick();
    expect(seenA.map((e) => e.state)).toEqual(['pending', 'approved']);
    expect(stateSeenByListener).toBe('approved');
    expect(seenB).toHaveLength(1);
    a.close();
  });

  it('wakes a VerdictWaiter as soon as the request is decided', async () => {
    const store = new MemoryApprovalStore();
    const waiter = new VerdictWaiter(store.events(), silentLogger, 10_000);
    await waiter.whenReady();
    const r = await store.create(held());
    const started = Date.now();
    const woke = waiter.next(r.id, Date.now() + 5000, new AbortController().signal);
    setTimeout(() => void store.approve(r.id, 'alice'), 20);
    expect(await woke).toBe('changed');
    expect(Date.now() - started).toBeLessThan(1000);
    expect(waiter.holders).toBe(0);
    waiter.close();
  });

  it('drops an expired grant when it is looked up', async () => {
    const store = new MemoryApprovalStore();
    await store.grant('agent', 'shop', 'fp', 0.001, 'alice'); // 60 ms
    expect(await store.findGrant('agent', 'shop', 'fp')).toMatchObject({ by: 'alice' });
    await new Promise((res) => setTimeout(res, 100));
    expect(await store.findGrant('agent', 'shop', 'fp')).toBeNull();
  });
});

describe('approval.store: memory', () => {
  it('turns approvals on without Redis for a single process', () => {
    expect(approvalsEnabled(configSchema.parse({ workers: 1 }))).toBe(false);
    expect(approvalsEnabled(configSchema.parse({ workers: 1, approval: { store: 'memory' } }))).toBe(true);
    expect(approvalsEnabled(configSchema.parse({ workers: 1, approval: { store: 'memory', enabled: false } }))).toBe(false);
  });

  it('is refused for a multi-worker cluster, saying that workers need Redis', () => {
    const file = path.join(tmpdir(), `pgw-memory-store-${process.pid}.yaml`);
    writeFileSync(file, 'workers: 2\napproval:\n  store: memory\n');
    try {
      expect(() => loadConfig({ file })).toThrow(ConfigError);
      expect(() => loadConfig({ file })).toThrow(/approval\.store: memory keeps approval requests inside one process, but workers is 2: set workers: 1, or keep approvals in Redis/);
    } finally {
      rmSync(file, { force: true });
    }
  });
});
