import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { AuditUnavailable, ChainSink, noAudit } from '../../src/audit/audit-sink.js';
import { seal, verifyChains, type ChainHead, type Sealed } from '../../src/audit/chain.js';
import type { AuditEvent, AuditEventInput } from '../../src/audit/events.js';
import { chainFileName, chainOfFileName, Journal, journalFiles, readLines } from '../../src/audit/journal.js';
import type { AppendItem, RedisAuditLog } from '../../src/audit/redis-log.js';
import { silentLogger } from '../../src/logger.js';

const KEY = Buffer.from('sink-test-key-0123456789abcdef');
const CHAIN = 'pgw-host@2024-05-01T12:00:00Z';

/** A stored entry: the event with the chain fields seal() adds. */
type StoredEntry = AuditEvent & { chain: string; seq: number; prev: string; hmac: string };

const session = { id: 3, user: 'alice', database: 'shop', application: 'psql', client: '10.0.0.1:5000' };

function allowed(n: number): AuditEventInput {
  return {
    type: 'statement.allowed',
    session,
    request: 'simple',
    statements: [{ text: `SELECT * FROM t WHERE id = $1 /* ${n} */`, fingerprint: `fp${n}` }],
    kinds: ['select'],
    tables: ['public.t'],
    rule: 'read-only',
  };
}

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-audit-sink-'));
});

afterEach(() => {
  vi.restoreAllMocks();
  rmSync(dir, { recursive: true, force: true });
});

const open = (extra: { batchMax?: number; chain?: string; journalDir?: string } = {}) =>
  ChainSink.open({ chain: extra.chain ?? CHAIN, key: KEY, journalDir: extra.journalDir ?? dir, redis: null, log: silentLogger, ...(extra.batchMax ? { batchMax: extra.batchMax } : {}) });

const journalPath = (chain = CHAIN) => path.join(dir, chainFileName(chain));
const fileText = (chain = CHAIN) => readFileSync(journalPath(chain), 'utf8');
const fileEntries = (chain = CHAIN) =>
  fileText(chain)
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as StoredEntry);

describe('ChainSink without Redis (journal only)', () => {
  it('creates the journal file for its chain when opened', async () => {
    const sink = await open();
    expect(sink.chain).toBe(CHAIN);
    expect(sink.isSpooling).toBe(false);
    expect(fileText()).toBe('');
    expect(journalFiles(dir)).toEqual([journalPath()]);
    await sink.close();
  });

  it('gives records consecutive sequence numbers from 1', async () => {
    const sink = await open();
    const seqs = [sink.record(allowed(1)), sink.record(allowed(2)), sink.record(allowed(3))].map((r) => r.seq);
    expect(seqs).toEqual([1, 2, 3]);
    await sink.close();
  });

  it('resolves durable only once the entry is in the journal file', async () => {
    const sink = await open();
    const r = sink.record(allowed(1));
    let settled = false;
    void r.durable.then(() => (settled = true));
    expect(fileText()).toBe(''); // nothing is written within the recording turn
    await Promise.resolve();
    expect(settled).toBe(false);
    await r.durable;
    const [entry] = fileEntries();
    expect(entry).toMatchObject({ v: 1, type: 'statement.allowed', rule: 'read-only', chain: CHAIN, seq: 1, session });
    expect(entry!.ts).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    await sink.close();
  });

  it('writes the events recorded in one turn as one batch, in order', async () => {
    const sink = await open();
    const append = vi.spyOn(Journal.prototype, 'append');
    const recorded = Array.from({ length: 40 }, (_, i) => sink.record(allowed(i + 1)));
    await Promise.all(recorded.map((r) => r.durable));
    expect(append).toHaveBeenCalledTimes(1);
    expect(append.mock.calls[0]![0]).toHaveLength(40);
    const entries = fileEntries();
    expect(entries.map((e) => e.seq)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(entries.map((e) => (e.type === 'statement.allowed' ? e.statements[0]!.fingerprint : ''))).toEqual(
      Array.from({ length: 40 }, (_, i) => `fp${i + 1}`),
    );
    await sink.close();
  });

  it('splits a large turn into batches of batchMax entries', async () => {
    const sink = await open({ batchMax: 10 });
    const append = vi.spyOn(Journal.prototype, 'append');
    const recorded = Array.from({ length: 25 }, (_, i) => sink.record(allowed(i + 1)));
    await Promise.all(recorded.map((r) => r.durable));
    expect(append.mock.calls.map((c) => c[0].length)).toEqual([10, 10, 5]);
    expect(fileEntries().map((e) => e.seq)).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
    await sink.close();
  });

  it('writes events of later turns in later batches, continuing the chain', async () => {
    const sink = await open();
    await sink.record(allowed(1)).durable;
    const second = sink.record(allowed(2));
    expect(second.seq).toBe(2);
    await second.durable;
    const entries = fileEntries();
    expect(entries.map((e) => e.seq)).toEqual([1, 2]);
    expect(entries[1]!.prev).toBe(entries[0]!.hmac);
    await sink.close();
  });

  it('writes a journal that verifies as one intact chain', async () => {
    const sink = await open();
    const recorded = Array.from({ length: 5 }, (_, i) => sink.record(allowed(i + 1)));
    await Promise.all(recorded.map((r) => r.durable));
    sink.record({ type: 'connection.closed', session, durationMs: 1234.5, statements: 5 });
    await sink.close();
    const lines = await readLines(journalPath());
    expect(lines).toHaveLength(6);
    const report = verifyChains(
      lines.map((raw, i) => ({ where: `${journalPath()}:${i + 1}`, raw })),
      { key: KEY },
    );
    const last = JSON.parse(lines[5]!) as StoredEntry;
    expect(last.hmac).toMatch(/^[0-9a-f]{64}$/);
    expect(report).toEqual({ ok: true, entries: 6, chains: [{ chain: CHAIN, first: 1, last: 6, count: 6, head: last.hmac }], problems: [] });
  });

  it('writes each entry as the exact text seal() produced, one per line', async () => {
    const sink = await open();
    await Promise.all([sink.record(allowed(1)).durable, sink.record(allowed(2)).durable]);
    await sink.close();
    const lines = await readLines(journalPath());
    expect(lines).toHaveLength(2);
    let head: ChainHead | null = null;
    for (const line of lines) {
      const { chain: _c, seq: _s, prev: _p, hmac: _m, ...event } = JSON.parse(line) as StoredEntry;
      const again = seal(event as AuditEvent, CHAIN, head, KEY);
      expect(line).toBe(again.json);
      head = { seq: again.seq, hash: again.hash };
    }
  });

  it('keeps chains of different writers in different files', async () => {
    const other = 'pgw-other/host@2024-05-01T13:00:00Z';
    const a = await open();
    const b = await open({ chain: other });
    await Promise.all([a.record(allowed(1)).durable, b.record(allowed(2)).durable, b.record(allowed(3)).durable]);
    await Promise.all([a.close(), b.close()]);
    expect(fileEntries().map((e) => e.seq)).toEqual([1]);
    expect(fileEntries(other).map((e) => [e.chain, e.seq])).toEqual([
      [other, 1],
      [other, 2],
    ]);
    expect(chainOfFileName(path.basename(journalPath(other)))).toBe(other);
  });

  it('waits for recorded entries when closed, and flushed() resolves when all are on disk', async () => {
    const sink = await open();
    sink.record(allowed(1));
    sink.record(allowed(2));
    await sink.flushed();
    expect(fileEntries().map((e) => e.seq)).toEqual([1, 2]);
    const third = sink.record(allowed(3));
    await sink.close();
    expect(fileEntries().map((e) => e.seq)).toEqual([1, 2, 3]);
    await expect(third.durable).resolves.toBeUndefined();
  });

  it('refuses records after close', async () => {
    const sink = await open();
    await sink.close();
    const r = sink.record(allowed(1));
    expect(r.seq).toBe(0);
    await expect(r.durable).rejects.toBeInstanceOf(AuditUnavailable);
    await expect(r.durable).rejects.toThrow('the audit sink is closed');
    expect(fileText()).toBe('');
  });

  it('cannot be opened when the journal directory cannot be created', async () => {
    const blocker = path.join(dir, 'not-a-dir');
    writeFileSync(blocker, 'x');
    await expect(open({ journalDir: path.join(blocker, 'audit') })).rejects.toMatchObject({ code: 'ENOTDIR' });
  });

  it('rejects durable with AuditUnavailable when the journal write fails, and records again afterwards', async () => {
    const sink = await open();
    vi.spyOn(Journal.prototype, 'append').mockRejectedValueOnce(new Error('ENOSPC: no space left on device, write'));
    const lost = [sink.record(allowed(1)), sink.record(allowed(2))];
    for (const r of lost) {
      await expect(r.durable).rejects.toBeInstanceOf(AuditUnavailable);
      await expect(r.durable).rejects.toThrow('ENOSPC: no space left on device, write');
    }
    const next = sink.record(allowed(3));
    expect(next.seq).toBe(3);
    await expect(next.durable).resolves.toBeUndefined();
    expect(fileEntries().map((e) => e.seq)).toEqual([3]);
    await sink.close();
  });
});

/** A RedisAuditLog stand-in: records every append, fails while `down` is set. */
function fakeRedis() {
  const state = { down: false, calls: [] as { chain: string; items: AppendItem[] }[] };
  const log = {
    append: vi.fn(async (chain: string, items: readonly AppendItem[]) => {
      if (state.down) throw new Error('connect ECONNREFUSED 127.0.0.1:6379');
      state.calls.push({ chain, items: items.map((it) => ({ seq: it.seq, prev: it.prev, hash: it.hash, type: it.type, json: it.json })) });
      return items.length;
    }),
  };
  return { state, redis: log as unknown as RedisAuditLog };
}

const openWithRedis = (redis: RedisAuditLog, chain = CHAIN) =>
  ChainSink.open({ chain, key: KEY, journalDir: dir, redis, log: silentLogger, retryMs: 5 });

/** What an append item for a stored line must hold: its chain fields and the line itself. */
function itemOf(json: string): AppendItem {
  const e = JSON.parse(json) as StoredEntry;
  return { seq: e.seq, prev: e.prev, hash: e.hmac, type: e.type, json };
}

const spoolFile = (chain = CHAIN) => path.join(dir, 'spool', chainFileName(chain));

describe('ChainSink with Redis', () => {
  it('appends the sealed entries to Redis: seq, prev, hmac as hash, type and the exact text', async () => {
    const { state, redis } = fakeRedis();
    const sink = await openWithRedis(redis);
    await Promise.all([sink.record(allowed(1)).durable, sink.record(allowed(2)).durable]);
    expect(state.calls).toHaveLength(1);
    const { chain, items } = state.calls[0]!;
    expect(chain).toBe(CHAIN);
    expect(items.map((it) => it.seq)).toEqual([1, 2]);
    for (const it of items) expect(it).toEqual(itemOf(it.json));
    expect(items[1]!.prev).toBe(items[0]!.hash);
    expect(verifyChains(items.map((it, i) => ({ where: `id-${i}`, raw: it.json })), { key: KEY }).ok).toBe(true);
    expect(existsSync(spoolFile())).toBe(false);
    await sink.close();
  });

  it('spools to the local journal while Redis fails, then replays the spool in order and empties it', async () => {
    const { state, redis } = fakeRedis();
    const sink = await openWithRedis(redis);
    await sink.record(allowed(1)).durable;
    state.down = true;
    await Promise.all([sink.record(allowed(2)).durable, sink.record(allowed(3)).durable]);
    expect(sink.isSpooling).toBe(true);
    expect(sink.failing).toBe(false); // spooled entries are durable
    const spooled = await readLines(spoolFile());
    expect(spooled.map((l) => (JSON.parse(l) as StoredEntry).seq)).toEqual([2, 3]);
    state.down = false;
    await vi.waitFor(() => expect(sink.isSpooling).toBe(false));
    expect(state.calls.map((c) => c.items.map((it) => it.seq))).toEqual([[1], [2, 3]]);
    expect(state.calls[1]!.items).toEqual(spooled.map(itemOf));
    expect(state.calls[1]!.items[0]!.prev).toBe(state.calls[0]!.items[0]!.hash);
    expect(readFileSync(spoolFile(), 'utf8')).toBe('');
    await sink.record(allowed(4)).durable;
    expect(state.calls.at(-1)!.items.map((it) => it.seq)).toEqual([4]);
    const all = state.calls.flatMap((c) => c.items).map((it, i) => ({ where: `id-${i}`, raw: it.json }));
    expect(verifyChains(all, { key: KEY })).toMatchObject({ ok: true, entries: 4 });
    await sink.close();
  });

  it('replays the spool file an earlier run of the same writer left, then removes it', async () => {
    const earlier = 'pgw-host@2024-04-30T08:00:00Z';
    const old: Sealed[] = [];
    let head: ChainHead | null = null;
    for (let i = 1; i <= 3; i++) {
      const e = seal({ v: 1, ts: '2024-04-30T08:00:00.000Z', ...allowed(i) } as AuditEvent, earlier, head, KEY);
      old.push(e);
      head = { seq: e.seq, hash: e.hash };
    }
    mkdirSync(path.join(dir, 'spool'), { recursive: true });
    writeFileSync(spoolFile(earlier), old.map((e) => `${e.json}\n`).join(''));
    const other = 'pgw-elsewhere@2024-04-30T08:00:00Z';
    writeFileSync(spoolFile(other), `${old[0]!.json}\n`);
    const { state, redis } = fakeRedis();
    const sink = await openWithRedis(redis);
    expect(sink.isSpooling).toBe(true);
    await vi.waitFor(() => expect(sink.isSpooling).toBe(false));
    expect(state.calls).toEqual([{ chain: earlier, items: old.map((e) => ({ seq: e.seq, prev: e.prev, hash: e.hash, type: e.type, json: e.json })) }]);
    expect(existsSync(spoolFile(earlier))).toBe(false);
    expect(existsSync(spoolFile(other))).toBe(true); // another writer's spool is not ours to replay
    await sink.close();
  });
});

describe('ChainSink.failing', () => {
  it('is set by a failed write, cleared by the next successful one, and set again once closed', async () => {
    const sink = await open();
    expect(sink.failing).toBe(false);
    vi.spyOn(Journal.prototype, 'append').mockRejectedValueOnce(new Error('EIO: i/o error, write'));
    await expect(sink.record(allowed(1)).durable).rejects.toBeInstanceOf(AuditUnavailable);
    expect(sink.failing).toBe(true);
    await sink.record(allowed(2)).durable;
    expect(sink.failing).toBe(false);
    await sink.close();
    expect(sink.failing).toBe(true);
  });
});

describe('noAudit', () => {
  it('records nothing and is always durable', async () => {
    const r = noAudit.record(allowed(1));
    expect(r.seq).toBe(0);
    expect(noAudit.failing).toBe(false);
    await expect(r.durable).resolves.toBeUndefined();
    await expect(noAudit.close()).resolves.toBeUndefined();
  });
});

describe('Journal', () => {
  it('drops a torn last line when reopened', async () => {
    const file = path.join(dir, 'torn.jsonl');
    writeFileSync(file, '{"seq":1}\n{"seq":2}\n{"seq":3,"ty');
    const j = await Journal.open(file);
    expect(statSync(j.file).size).toBe('{"seq":1}\n{"seq":2}\n'.length);
    expect(readFileSync(file, 'utf8')).toBe('{"seq":1}\n{"seq":2}\n');
    await j.append(['{"seq":3}']);
    expect(await j.lines()).toEqual(['{"seq":1}', '{"seq":2}', '{"seq":3}']);
    await j.close();
  });

  it('empties a file holding only a torn line', async () => {
    const file = path.join(dir, 'only-torn.jsonl');
    writeFileSync(file, '{"seq":1,"ty');
    const j = await Journal.open(file);
    expect(statSync(j.file).size).toBe(0);
    expect(readFileSync(file, 'utf8')).toBe('');
    await j.close();
  });

  it('keeps a file whose last line is complete', async () => {
    const file = path.join(dir, 'whole.jsonl');
    writeFileSync(file, '{"seq":1}\n{"seq":2}\n');
    const j = await Journal.open(file);
    expect(statSync(j.file).size).toBe(20);
    expect(await j.lines()).toEqual(['{"seq":1}', '{"seq":2}']);
    await j.close();
  });

  it('drops a torn line that follows more than 64 KiB of complete lines', async () => {
    const file = path.join(dir, 'big.jsonl');
    const line = `{"pad":"${'x'.repeat(1000)}"}`;
    const whole = `${Array.from({ length: 100 }, () => line).join('\n')}\n`;
    writeFileSync(file, `${whole}{"pad":"${'y'.repeat(70_000)}`);
    const j = await Journal.open(file);
    expect(statSync(j.file).size).toBe(Buffer.byteLength(whole));
    expect(await j.lines()).toHaveLength(100);
    await j.close();
  });

  it('skips a torn last line when read without reopening', async () => {
    const file = path.join(dir, 'read.jsonl');
    writeFileSync(file, 'a\nb\nc');
    expect(await readLines(file)).toEqual(['a', 'b']);
  });

  it('appends whole lines and counts the bytes', async () => {
    const file = path.join(dir, 'sub', 'dir', 'new.jsonl');
    const j = await Journal.open(file);
    await j.append(['{"a":1}', '{"b":"é"}']);
    expect(statSync(j.file).size).toBe(Buffer.byteLength('{"a":1}\n{"b":"é"}\n'));
    expect(readFileSync(file, 'utf8')).toBe('{"a":1}\n{"b":"é"}\n');
    await j.clear();
    expect(statSync(j.file).size).toBe(0);
    expect(readFileSync(file, 'utf8')).toBe('');
    await j.close();
  });

  it('lists journal files of a directory in order, not descending into subdirectories', () => {
    mkdirSync(path.join(dir, 'spool'));
    writeFileSync(path.join(dir, 'spool', 'x.jsonl'), '');
    writeFileSync(path.join(dir, 'b.jsonl'), '');
    writeFileSync(path.join(dir, 'a.jsonl'), '');
    writeFileSync(path.join(dir, 'notes.txt'), '');
    expect(journalFiles(dir)).toEqual([path.join(dir, 'a.jsonl'), path.join(dir, 'b.jsonl')]);
    expect(journalFiles(path.join(dir, 'missing'))).toEqual([]);
  });

  it('encodes chain names into safe file names and back', () => {
    expect(chainFileName('pgw/host@2024-05-01T12:00:00Z')).toBe('pgw%2Fhost%402024-05-01T12%3A00%3A00Z.jsonl');
    expect(chainOfFileName('pgw%2Fhost%402024-05-01T12%3A00%3A00Z.jsonl')).toBe('pgw/host@2024-05-01T12:00:00Z');
  });
});
