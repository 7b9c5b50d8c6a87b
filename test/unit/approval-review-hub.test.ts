import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { ApprovalRequest, ApprovalStore } from '../../src/approval/approval-store.js';
import { MemoryApprovalStore } from '../../src/approval/memory-approval-store.js';
import { ReviewHub } from '../../src/approval/review-hub.js';
import type { ReviewerAuth } from '../../src/approval/reviewer-auth.js';
import { silentLogger } from '../../src/logger.js';

/**
 * The hub's feed as a page sees it. The page takes a snapshot as the whole truth (a request it
 * does not list is removed), so nothing pushed before a snapshot may describe a later state
 * than the snapshot does.
 */
const held = (): Parameters<ApprovalStore['create']>[0] => ({
  expiresAt: Date.now() + 60_000,
  instance: 'test/w0',
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
});

const auth = {
  authenticate: async (token: string) => (token === 'good' ? { name: 'alice', groups: [], actsAs: [], via: 'token' as const } : null),
} as unknown as ReviewerAuth;

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

async function serve(store: ApprovalStore, memory: MemoryApprovalStore): Promise<string> {
  const hub = new ReviewHub(store, auth, memory.events(), silentLogger);
  const server = http.createServer();
  server.on('upgrade', (req, socket, head) => hub.wss.handleUpgrade(req, socket, head, (ws) => hub.wss.emit('connection', ws, req)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.push(() => {
    hub.close();
    server.close();
  });
  return `ws://127.0.0.1:${(server.address() as { port: number }).port}/ws`;
}

describe('ReviewHub', () => {
  it('never sends a push ahead of the snapshot it postdates (the snapshot would hide the request)', async () => {
    const memory = new MemoryApprovalStore();
    let snapshotRead!: () => void;
    const read = new Promise<void>((r) => (snapshotRead = r));
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    // The snapshot is read, then (Redis round trips) takes a while to reach the socket.
    const store: ApprovalStore = Object.assign(Object.create(memory) as MemoryApprovalStore, {
      pending: async (): Promise<ApprovalRequest[]> => {
        const list = await memory.pending();
        snapshotRead();
        await released;
        return list;
      },
    });
    const url = await serve(store, memory);

    const ws = new WebSocket(url);
    cleanup.push(() => ws.terminate());
    const got: { type: string; ids: string[] }[] = [];
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as { type: string; pending?: ApprovalRequest[]; request?: ApprovalRequest };
      got.push({ type: m.type, ids: m.type === 'snapshot' ? m.pending!.map((r) => r.id) : m.request ? [m.request.id] : [] });
    });
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ type: 'auth', token: 'good' }));

    // A statement is held while the snapshot is on its way.
    await read;
    const rec = await memory.create(held());
    await new Promise((r) => setTimeout(r, 50)); // the hub has heard of it
    release();

    const deadline = Date.now() + 2000;
    while (!got.some((m) => m.type === 'request') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(got).toEqual([
      { type: 'hello', ids: [] },
      { type: 'snapshot', ids: [] },
      { type: 'request', ids: [rec.id] },
    ]);
  });
});
