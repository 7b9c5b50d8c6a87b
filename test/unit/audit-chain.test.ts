import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../../src/audit/canonical-json.js';
import { GENESIS, seal, verifyChains, type ChainHead, type StoredRecord } from '../../src/audit/chain.js';
import type { AuditEvent, SealedEntry } from '../../src/audit/events.js';

const KEY = Buffer.from('audit-key-for-unit-tests-0123456789abcdef');
const WRONG_KEY = Buffer.from('some-other-key-nobody-should-have');

const session = { id: 7, user: 'alice', database: 'shop', application: 'psql', client: '10.0.0.1:5000' };

type DeniedEvent = Extract<AuditEvent, { type: 'statement.denied' }>;

function denied(n: number): DeniedEvent {
  return {
    v: 1,
    ts: `2024-05-01T12:00:${String(n).padStart(2, '0')}.000Z`,
    type: 'statement.denied',
    session,
    request: 'simple',
    statements: [{ text: `DELETE FROM orders WHERE id = $1 -- #${n}`, fingerprint: 'fp' + n }],
    kinds: ['delete'],
    tables: ['public.orders'],
    rule: 'no-delete',
    sqlstate: '42501',
  };
}

/** Seals `count` events into one chain. */
function chainOf(count: number, chain = 'pgw-a@1', key = KEY): SealedEntry[] {
  const out: SealedEntry[] = [];
  let head: ChainHead | null = null;
  for (let i = 1; i <= count; i++) {
    const e = seal(denied(i), chain, head, key);
    out.push(e);
    head = { seq: e.seq, hash: e.hash };
  }
  return out;
}

/** Stored records as a journal file would give them: file:line, one JSON text each. */
function stored(entries: readonly object[], file = 'audit.jsonl'): StoredRecord[] {
  return entries.map((e, i) => ({ where: `${file}:${i + 1}`, raw: JSON.stringify(e) }));
}

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

/** Recomputes `hash` over the (altered) content, as someone without the key could. */
function rehash(entry: SealedEntry): SealedEntry {
  const { hash: _h, hmac: _m, ...rest } = entry;
  return { ...entry, hash: sha256(canonicalJson(rest)) };
}

describe('seal', () => {
  it('numbers a new chain from 1, links it to the genesis hash and each next entry to the previous one', () => {
    const [a, b, c] = chainOf(3);
    expect([a!.seq, b!.seq, c!.seq]).toEqual([1, 2, 3]);
    expect(a!.prev).toBe(GENESIS);
    expect(GENESIS).toBe('0'.repeat(64));
    expect(b!.prev).toBe(a!.hash);
    expect(c!.prev).toBe(b!.hash);
    expect(a!.chain).toBe('pgw-a@1');
  });

  it('keeps the event fields and adds a sha256 hash and an HMAC of 64 hex digits each', () => {
    const e = seal(denied(1), 'c', null, KEY);
    expect(e).toMatchObject({ type: 'statement.denied', rule: 'no-delete', sqlstate: '42501', session });
    expect(e.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(e.hmac).toMatch(/^[0-9a-f]{64}$/);
    expect(e.hash).not.toBe(e.hmac);
  });

  it('hashes the canonical JSON of the entry without hash and hmac', () => {
    const e = seal(denied(1), 'c', null, KEY);
    const { hash: _h, hmac: _m, ...body } = e;
    expect(e.hash).toBe(sha256(canonicalJson(body)));
  });

  it('gives a different HMAC under another key but the same hash', () => {
    const a = seal(denied(1), 'c', null, KEY);
    const b = seal(denied(1), 'c', null, WRONG_KEY);
    expect(b.hash).toBe(a.hash);
    expect(b.hmac).not.toBe(a.hmac);
  });

  it('is deterministic: the same event on the same head gives the same entry', () => {
    const head = { seq: 4, hash: 'a'.repeat(64) };
    expect(seal(denied(5), 'c', head, KEY)).toEqual(seal(denied(5), 'c', head, KEY));
    expect(seal(denied(5), 'c', head, KEY).seq).toBe(5);
    expect(seal(denied(5), 'c', head, KEY).prev).toBe('a'.repeat(64));
  });
});

describe('verifyChains', () => {
  it('accepts an intact chain and summarises it', () => {
    const entries = chainOf(5);
    const report = verifyChains(stored(entries), { key: KEY });
    expect(report).toEqual({
      ok: true,
      entries: 5,
      chains: [{ chain: 'pgw-a@1', first: 1, last: 5, count: 5, head: entries[4]!.hash }],
      problems: [],
    });
  });

  it('accepts an intact chain whose head record matches its newest entry', () => {
    const entries = chainOf(3);
    const heads = new Map([['pgw-a@1', { seq: 3, hash: entries[2]!.hash }]]);
    expect(verifyChains(stored(entries), { key: KEY, heads }).ok).toBe(true);
  });

  it('accepts an empty log', () => {
    expect(verifyChains([], { key: KEY })).toEqual({ ok: true, entries: 0, chains: [], problems: [] });
  });

  it('reports an entry whose content was altered: the hash does not match', () => {
    const entries = chainOf(4);
    const altered = { ...entries[1]!, rule: 'allow-everything' };
    const report = verifyChains(stored([entries[0]!, altered, entries[2]!, entries[3]!]), { key: KEY });
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:2', chain: 'pgw-a@1', seq: 2, problem: 'entry altered: its hash does not match its content' },
    ]);
  });

  it('reports an altered entry that was re-hashed without the key: the HMAC does not verify, and the next entry no longer links', () => {
    const entries = chainOf(4);
    const altered = rehash({ ...entries[1]!, sqlstate: '00000' } as SealedEntry);
    const report = verifyChains(stored([entries[0]!, altered, entries[2]!, entries[3]!]), { key: KEY });
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:2', chain: 'pgw-a@1', seq: 2, problem: 'entry altered or forged: HMAC does not verify with the audit key' },
      { where: 'audit.jsonl:3', chain: 'pgw-a@1', seq: 3, problem: 'does not link to seq 2: its prev hash differs (entry inserted or replaced)' },
    ]);
  });

  it('reports an entry replaced by one forged with another key and correctly linked', () => {
    const entries = chainOf(3);
    const forged = seal({ ...denied(2), rule: 'forged' }, 'pgw-a@1', { seq: 1, hash: entries[0]!.hash }, WRONG_KEY);
    const report = verifyChains(stored([entries[0]!, forged, entries[2]!]), { key: KEY });
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:2', chain: 'pgw-a@1', seq: 2, problem: 'entry altered or forged: HMAC does not verify with the audit key' },
      { where: 'audit.jsonl:3', chain: 'pgw-a@1', seq: 3, problem: 'does not link to seq 2: its prev hash differs (entry inserted or replaced)' },
    ]);
  });

  it('reports a forged entry inserted between two genuine ones', () => {
    const entries = chainOf(3);
    const forged = seal({ ...denied(9), rule: 'forged' }, 'pgw-a@1', { seq: 1, hash: entries[0]!.hash }, WRONG_KEY);
    const report = verifyChains(stored([entries[0]!, forged, entries[1]!, entries[2]!]), { key: KEY });
    expect(report.ok).toBe(false);
    expect(report.entries).toBe(4);
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:2', chain: 'pgw-a@1', seq: 2, problem: 'entry altered or forged: HMAC does not verify with the audit key' },
      { where: 'audit.jsonl:3', chain: 'pgw-a@1', seq: 2, problem: 'seq 2 comes after seq 2 (entries reordered or duplicated)' },
    ]);
  });

  it('reports a forged entry appended with the next seq but a made-up prev hash', () => {
    const entries = chainOf(2);
    const forged = seal(denied(3), 'pgw-a@1', { seq: 2, hash: 'f'.repeat(64) }, KEY);
    const report = verifyChains(stored([...entries, forged]), { key: KEY });
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:3', chain: 'pgw-a@1', seq: 3, problem: 'does not link to seq 2: its prev hash differs (entry inserted or replaced)' },
    ]);
  });

  it('reports a deleted middle entry as a gap', () => {
    const entries = chainOf(5);
    const report = verifyChains(stored([entries[0]!, entries[1]!, entries[3]!, entries[4]!]), { key: KEY });
    expect(report.problems).toEqual([{ where: 'audit.jsonl:3', chain: 'pgw-a@1', seq: 4, problem: 'entry 3 is missing (deleted)' }]);
    expect(report.chains).toEqual([{ chain: 'pgw-a@1', first: 1, last: 5, count: 4, head: entries[4]!.hash }]);
  });

  it('reports several deleted middle entries as one range', () => {
    const entries = chainOf(6);
    const report = verifyChains(stored([entries[0]!, entries[4]!, entries[5]!]), { key: KEY });
    expect(report.problems).toEqual([{ where: 'audit.jsonl:2', chain: 'pgw-a@1', seq: 5, problem: 'entries 2..4 are missing (deleted)' }]);
  });

  it('reports a chain whose first entry was deleted, unless trimmed starts are allowed', () => {
    const rest = chainOf(4).slice(1);
    const strict = verifyChains(stored(rest), { key: KEY });
    expect(strict.ok).toBe(false);
    expect(strict.problems).toEqual([
      { where: 'audit.jsonl:1', chain: 'pgw-a@1', seq: 2, problem: 'chain starts at seq 2: entries 1..1 are missing (deleted, or trimmed by retention)' },
    ]);
    const trimmed = verifyChains(stored(rest), { key: KEY, allowTrimmedStart: true });
    expect(trimmed.ok).toBe(true);
    expect(trimmed.chains).toEqual([{ chain: 'pgw-a@1', first: 2, last: 4, count: 3, head: rest[2]!.hash }]);
  });

  it('still reports a gap after a trimmed start', () => {
    const entries = chainOf(6);
    const report = verifyChains(stored([entries[2]!, entries[3]!, entries[5]!]), { key: KEY, allowTrimmedStart: true });
    expect(report.problems).toEqual([{ where: 'audit.jsonl:3', chain: 'pgw-a@1', seq: 6, problem: 'entry 5 is missing (deleted)' }]);
  });

  it('reports swapped entries', () => {
    const [e1, e2, e3] = chainOf(3);
    const report = verifyChains(stored([e1!, e3!, e2!]), { key: KEY });
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:2', chain: 'pgw-a@1', seq: 3, problem: 'entry 2 is missing (deleted)' },
      { where: 'audit.jsonl:3', chain: 'pgw-a@1', seq: 2, problem: 'seq 2 comes after seq 3 (entries reordered or duplicated)' },
    ]);
  });

  // BUG (reported): after an out-of-order entry the verifier resets its position to the smaller
  // seq, so the entry that follows a swap is reported as a gap although every entry is present.
  it.fails('does not claim an entry is missing when two middle entries were only swapped', () => {
    const [e1, e2, e3, e4] = chainOf(4);
    const report = verifyChains(stored([e1!, e3!, e2!, e4!]), { key: KEY });
    expect(report.problems.map((p) => p.problem)).not.toContain('entry 3 is missing (deleted)');
  });

  it('reports a duplicated entry once, and the chain goes on after it', () => {
    const [e1, e2, e3] = chainOf(3);
    const report = verifyChains(stored([e1!, e2!, e2!, e3!]), { key: KEY });
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:3', chain: 'pgw-a@1', seq: 2, problem: 'seq 2 comes after seq 2 (entries reordered or duplicated)' },
    ]);
    expect(report.entries).toBe(4);
  });

  it('does not see a deleted tail without a head record, and reports it against one', () => {
    const entries = chainOf(5);
    const kept = entries.slice(0, 3);
    expect(verifyChains(stored(kept), { key: KEY }).ok).toBe(true);
    const heads = new Map([['pgw-a@1', { seq: 5, hash: entries[4]!.hash }]]);
    const report = verifyChains(stored(kept), { key: KEY, heads });
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual([{ where: 'end', chain: 'pgw-a@1', seq: 5, problem: 'entries 4..5 are missing at the end (tail deleted)' }]);
  });

  it('reports a newest entry that differs from the head record', () => {
    const entries = chainOf(3);
    const heads = new Map([['pgw-a@1', { seq: 3, hash: 'e'.repeat(64) }]]);
    const report = verifyChains(stored(entries), { key: KEY, heads });
    expect(report.problems).toEqual([{ where: 'end', chain: 'pgw-a@1', seq: 3, problem: 'the newest entry differs from the head record' }]);
  });

  it('reports a chain that has a head record but no entries at all', () => {
    const other = chainOf(2, 'pgw-b@1');
    const heads = new Map([
      ['pgw-a@1', { seq: 4, hash: 'a'.repeat(64) }],
      ['pgw-b@1', { seq: 2, hash: other[1]!.hash }],
    ]);
    const report = verifyChains(stored(other), { key: KEY, heads });
    expect(report.problems).toEqual([
      { where: 'end', chain: 'pgw-a@1', seq: 4, problem: 'the head record says seq 4, but the chain has no entries (all deleted)' },
    ]);
  });

  it('reports stored fields beside the entry that do not match it', () => {
    const entries = chainOf(2);
    const records: StoredRecord[] = [
      { where: '1700000000000-0', raw: JSON.stringify(entries[0]), chain: 'pgw-a@1', seq: '1' },
      { where: '1700000000000-1', raw: JSON.stringify(entries[1]), chain: 'pgw-x@9', seq: '7' },
    ];
    const report = verifyChains(records, { key: KEY });
    expect(report.problems).toEqual([
      { where: '1700000000000-1', chain: 'pgw-a@1', seq: 2, problem: 'stored fields (chain pgw-x@9, seq 7) do not match the entry' },
    ]);
  });

  it('accepts stored fields beside the entry that match it', () => {
    const entries = chainOf(2);
    const records: StoredRecord[] = entries.map((e, i) => ({ where: `id-${i}`, raw: JSON.stringify(e), chain: e.chain, seq: String(e.seq) }));
    expect(verifyChains(records, { key: KEY }).problems).toEqual([]);
  });

  it('reports a line that is not JSON and checks the rest', () => {
    const entries = chainOf(2);
    const records = stored(entries);
    records.splice(1, 0, { where: 'audit.jsonl:X', raw: '{"type":"statement.den' });
    const report = verifyChains(records, { key: KEY });
    expect(report.entries).toBe(3);
    expect(report.problems).toEqual([{ where: 'audit.jsonl:X', chain: '?', seq: null, problem: 'unreadable entry (not JSON)' }]);
    expect(report.chains).toEqual([{ chain: 'pgw-a@1', first: 1, last: 2, count: 2, head: entries[1]!.hash }]);
  });

  it('names the stored chain of an unreadable stream entry', () => {
    const report = verifyChains([{ where: '17-0', raw: 'not json', chain: 'pgw-a@1', seq: '3' }], { key: KEY });
    expect(report.problems).toEqual([{ where: '17-0', chain: 'pgw-a@1', seq: null, problem: 'unreadable entry (not JSON)' }]);
  });

  it('reports JSON that carries no chain fields', () => {
    const report = verifyChains([{ where: 'audit.jsonl:1', raw: JSON.stringify(denied(1)) }], { key: KEY });
    expect(report.problems).toEqual([{ where: 'audit.jsonl:1', chain: '?', seq: null, problem: 'entry has no valid chain fields' }]);
  });

  it('reports a correctly sealed entry that is not a valid audit event', () => {
    const bogus = { ...denied(1), sqlstate: 42501 } as unknown as AuditEvent;
    const report = verifyChains(stored([seal(bogus, 'c', null, KEY)]), { key: KEY });
    expect(report.problems).toEqual([{ where: 'audit.jsonl:1', chain: 'c', seq: 1, problem: 'entry does not match the audit event schema' }]);
  });

  it('fails every entry under the wrong key', () => {
    const report = verifyChains(stored(chainOf(3)), { key: WRONG_KEY });
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual(
      [1, 2, 3].map((seq) => ({ where: `audit.jsonl:${seq}`, chain: 'pgw-a@1', seq, problem: 'entry altered or forged: HMAC does not verify with the audit key' })),
    );
  });

  it('verifies two interleaved chains independently', () => {
    const a = chainOf(3, 'pgw-a@1');
    const b = chainOf(2, 'pgw-b@1');
    const interleaved = [a[0]!, b[0]!, a[1]!, b[1]!, a[2]!];
    const report = verifyChains(stored(interleaved), { key: KEY });
    expect(report).toEqual({
      ok: true,
      entries: 5,
      chains: [
        { chain: 'pgw-a@1', first: 1, last: 3, count: 3, head: a[2]!.hash },
        { chain: 'pgw-b@1', first: 1, last: 2, count: 2, head: b[1]!.hash },
      ],
      problems: [],
    });
  });

  it('attributes a deletion in one of two interleaved chains to that chain only', () => {
    const a = chainOf(3, 'pgw-a@1');
    const b = chainOf(3, 'pgw-b@1');
    const report = verifyChains(stored([a[0]!, b[0]!, a[1]!, b[2]!, a[2]!]), { key: KEY });
    expect(report.problems).toEqual([{ where: 'audit.jsonl:4', chain: 'pgw-b@1', seq: 3, problem: 'entry 2 is missing (deleted)' }]);
  });

  it('rejects an entry moved from one chain to another (the HMAC covers the chain name)', () => {
    const a = chainOf(2, 'pgw-a@1');
    const moved = rehash({ ...a[1]!, chain: 'pgw-b@1' });
    const report = verifyChains(stored([a[0]!, moved]), { key: KEY, allowTrimmedStart: true });
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:2', chain: 'pgw-b@1', seq: 2, problem: 'entry altered or forged: HMAC does not verify with the audit key' },
    ]);
  });
});

describe('canonicalJson', () => {
  it('does not depend on the order keys were added in', () => {
    expect(canonicalJson({ b: 1, a: 2, c: 3 })).toBe('{"a":2,"b":1,"c":3}');
    expect(canonicalJson({ c: 3, a: 2, b: 1 })).toBe(canonicalJson({ a: 2, b: 1, c: 3 }));
  });

  it('sorts keys of nested objects, also inside arrays', () => {
    expect(canonicalJson({ z: { y: 1, x: [{ b: true, a: null }] }, a: 'q' })).toBe('{"a":"q","z":{"x":[{"a":null,"b":true}],"y":1}}');
  });

  it('keeps the order of arrays', () => {
    expect(canonicalJson([3, 1, 2, 'b', 'a'])).toBe('[3,1,2,"b","a"]');
  });

  it('drops undefined fields', () => {
    expect(canonicalJson({ a: 1, b: undefined, c: { d: undefined } })).toBe('{"a":1,"c":{}}');
  });

  it('writes no whitespace and escapes strings like JSON', () => {
    expect(canonicalJson({ 'k"ey': 'line\nbreak "q"', n: -1.5 })).toBe('{"k\\"ey":"line\\nbreak \\"q\\"","n":-1.5}');
  });

  it.each([[NaN], [Infinity], [-Infinity]])('rejects the non-finite number %s', (n) => {
    expect(() => canonicalJson({ a: [n] })).toThrow(new TypeError('canonicalJson: non-finite number'));
  });

  it('rejects values that are not plain data', () => {
    expect(() => canonicalJson({ f: () => 1 })).toThrow(new TypeError('canonicalJson: unsupported function'));
    expect(() => canonicalJson({ n: 10n })).toThrow(new TypeError('canonicalJson: unsupported bigint'));
  });
});
