import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { GENESIS, seal, verifyChains, type ChainHead, type Sealed, type StoredRecord } from '../../src/audit/chain.js';
import type { AuditEvent } from '../../src/audit/events.js';

const KEY = Buffer.from('audit-key-for-unit-tests-0123456789abcdef');
const WRONG_KEY = Buffer.from('some-other-key-nobody-should-have');

const FORGED = 'entry altered or forged: its HMAC does not verify with the audit key';

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
function chainOf(count: number, chain = 'pgw-a@1', key = KEY): Sealed[] {
  const out: Sealed[] = [];
  let head: ChainHead | null = null;
  for (let i = 1; i <= count; i++) {
    const e = seal(denied(i), chain, head, key);
    out.push(e);
    head = { seq: e.seq, hash: e.hash };
  }
  return out;
}

/** Stored records as a journal file would give them: file:line, the stored text of each entry. */
function stored(entries: readonly (Sealed | string)[], file = 'audit.jsonl'): StoredRecord[] {
  return entries.map((e, i) => ({ where: `${file}:${i + 1}`, raw: typeof e === 'string' ? e : e.json }));
}

const parse = (json: string): Record<string, unknown> => JSON.parse(json) as Record<string, unknown>;
const hmac = (key: Buffer, body: string): string => createHmac('sha256', key).update(body).digest('hex');

/** The stored text with some fields changed (same key order, the old hmac kept at the end). */
function altered(entry: Sealed, change: Record<string, unknown>): string {
  return JSON.stringify({ ...parse(entry.json), ...change });
}

/** Replaces the trailing hmac by one computed with `key` over the (possibly altered) text before it. */
function reseal(raw: string, key: Buffer): string {
  const { hmac: _m, ...body } = parse(raw);
  const text = JSON.stringify(body);
  return `${text.slice(0, -1)},"hmac":"${hmac(key, text)}"}`;
}

describe('seal', () => {
  it('numbers a new chain from 1, links it to the genesis value and each next entry to the previous hmac', () => {
    const [a, b, c] = chainOf(3);
    expect([a!.seq, b!.seq, c!.seq]).toEqual([1, 2, 3]);
    expect(a!.prev).toBe(GENESIS);
    expect(GENESIS).toBe('0'.repeat(64));
    expect(b!.prev).toBe(a!.hash);
    expect(c!.prev).toBe(b!.hash);
    expect(a!.type).toBe('statement.denied');
    expect(parse(a!.json).chain).toBe('pgw-a@1');
    expect(parse(b!.json).prev).toBe(a!.hash);
  });

  it('stores the event JSON with chain, seq and prev added and the hmac as its last field', () => {
    const event = denied(1);
    const e = seal(event, 'c', null, KEY);
    const stored = parse(e.json);
    expect(stored).toEqual({ ...event, chain: 'c', seq: 1, prev: GENESIS, hmac: e.hash });
    expect(Object.keys(stored)).toEqual([...Object.keys(event), 'chain', 'seq', 'prev', 'hmac']);
    expect(e.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(e.json.endsWith(`,"hmac":"${e.hash}"}`)).toBe(true);
    expect(e).toEqual({ json: e.json, type: 'statement.denied', seq: 1, prev: GENESIS, hash: e.hash });
  });

  it('authenticates exactly the text stored before the hmac (no re-serialisation)', () => {
    const event = denied(4);
    const head = { seq: 3, hash: 'b'.repeat(64) };
    const e = seal(event, 'pgw-a@1', head, KEY);
    const body = JSON.stringify({ ...event, chain: 'pgw-a@1', seq: 4, prev: 'b'.repeat(64) });
    expect(e.hash).toBe(hmac(KEY, body));
    expect(e.json).toBe(`${body.slice(0, -1)},"hmac":"${hmac(KEY, body)}"}`);
  });

  it('gives a different hmac under another key, and the stored texts differ only in it', () => {
    const a = seal(denied(1), 'c', null, KEY);
    const b = seal(denied(1), 'c', null, WRONG_KEY);
    expect(b.hash).not.toBe(a.hash);
    expect(b.json).not.toBe(a.json);
    expect(b.json.replace(b.hash, a.hash)).toBe(a.json);
  });

  it('is deterministic: the same event on the same head gives the same entry', () => {
    const head = { seq: 4, hash: 'a'.repeat(64) };
    expect(seal(denied(5), 'c', head, KEY)).toEqual(seal(denied(5), 'c', head, KEY));
    expect(seal(denied(5), 'c', head, KEY).seq).toBe(5);
    expect(seal(denied(5), 'c', head, KEY).prev).toBe('a'.repeat(64));
    expect(seal(denied(6), 'c', head, KEY).hash).not.toBe(seal(denied(5), 'c', head, KEY).hash);
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
    expect(verifyChains(stored(entries), { key: KEY, heads })).toMatchObject({ ok: true, problems: [] });
  });

  it('accepts an empty log', () => {
    expect(verifyChains([], { key: KEY })).toEqual({ ok: true, entries: 0, chains: [], problems: [] });
  });

  it('accepts the stored text re-serialised compactly (JSON round trip gives the same bytes)', () => {
    const entries = chainOf(3);
    const again = entries.map((e) => JSON.stringify(JSON.parse(e.json)));
    expect(again).toEqual(entries.map((e) => e.json));
    expect(verifyChains(stored(again), { key: KEY }).ok).toBe(true);
  });

  it('rejects a whitespace-only change to the stored text: the HMAC covers the exact bytes', () => {
    const entries = chainOf(3);
    const pretty = JSON.stringify(JSON.parse(entries[1]!.json), null, 1);
    expect(JSON.parse(pretty)).toEqual(JSON.parse(entries[1]!.json)); // same content
    const report = verifyChains(stored([entries[0]!, pretty, entries[2]!]), { key: KEY });
    expect(report.ok).toBe(false);
    expect(report.problems[0]).toEqual({ where: 'audit.jsonl:2', chain: 'pgw-a@1', seq: 2, problem: FORGED });
  });

  it.each([
    ['a trailing space', (raw: string) => `${raw} `],
    ['a trailing newline', (raw: string) => `${raw}\n`],
    ['a space after a comma', (raw: string) => raw.replace('","', '", "')],
    ['the hmac in capitals', (raw: string) => raw.replace(/"hmac":"([0-9a-f]+)"/, (_, h: string) => `"hmac":"${h.toUpperCase()}"`)],
  ])('rejects the stored text with %s', (_, change) => {
    const [e1] = chainOf(1);
    const raw = change(e1!.json);
    expect(raw).not.toBe(e1!.json);
    expect(verifyChains(stored([raw]), { key: KEY }).problems).toEqual([{ where: 'audit.jsonl:1', chain: 'pgw-a@1', seq: 1, problem: FORGED }]);
  });

  it('rejects an entry whose hmac is not the last field, even with the fields unchanged', () => {
    const [e1] = chainOf(1);
    const { hmac: m, ...rest } = parse(e1!.json);
    const moved = JSON.stringify({ hmac: m, ...rest });
    expect(verifyChains(stored([moved]), { key: KEY }).problems).toEqual([{ where: 'audit.jsonl:1', chain: 'pgw-a@1', seq: 1, problem: FORGED }]);
  });

  it('reports an entry whose content was altered (hmac kept) once, as altered, not also as missing', () => {
    const entries = chainOf(4);
    const report = verifyChains(stored([entries[0]!, altered(entries[1]!, { rule: 'allow-everything' }), entries[2]!, entries[3]!]), { key: KEY });
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:2', chain: 'pgw-a@1', seq: 2, problem: FORGED },
    ]);
  });

  it('reports an altered entry whose hmac was recomputed without the audit key in the same way', () => {
    const entries = chainOf(4);
    const forged = reseal(altered(entries[1]!, { sqlstate: '00000' }), WRONG_KEY);
    expect(forged).toMatch(/"sqlstate":"00000"/);
    expect(parse(forged).hmac).not.toBe(entries[1]!.hash);
    const report = verifyChains(stored([entries[0]!, forged, entries[2]!, entries[3]!]), { key: KEY });
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:2', chain: 'pgw-a@1', seq: 2, problem: FORGED },
    ]);
  });

  it('checks the helper: resealing with the audit key itself makes an altered entry verify', () => {
    // Guards the two tests above: their failure comes from the key, not from a broken reseal().
    const [e1] = chainOf(1);
    const resealed = reseal(altered(e1!, { rule: 'other' }), KEY);
    expect(verifyChains(stored([resealed]), { key: KEY }).ok).toBe(true);
  });

  it('reports an entry replaced by one forged with another key and correctly linked', () => {
    const entries = chainOf(3);
    const forged = seal({ ...denied(2), rule: 'forged' }, 'pgw-a@1', { seq: 1, hash: entries[0]!.hash }, WRONG_KEY);
    const report = verifyChains(stored([entries[0]!, forged, entries[2]!]), { key: KEY });
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:2', chain: 'pgw-a@1', seq: 2, problem: FORGED },
    ]);
    expect(report.chains).toEqual([{ chain: 'pgw-a@1', first: 1, last: 3, count: 2, head: entries[2]!.hash }]);
  });

  it('reports a forged entry inserted between two genuine ones, and only that entry', () => {
    const entries = chainOf(3);
    const forged = seal({ ...denied(9), rule: 'forged' }, 'pgw-a@1', { seq: 1, hash: entries[0]!.hash }, WRONG_KEY);
    const report = verifyChains(stored([entries[0]!, forged, entries[1]!, entries[2]!]), { key: KEY });
    expect(report.ok).toBe(false);
    expect(report.entries).toBe(4);
    expect(report.problems).toEqual([{ where: 'audit.jsonl:2', chain: 'pgw-a@1', seq: 2, problem: FORGED }]);
    expect(report.chains).toEqual([{ chain: 'pgw-a@1', first: 1, last: 3, count: 3, head: entries[2]!.hash }]);
  });

  it('reports an entry appended with the next seq but a made-up prev', () => {
    const entries = chainOf(2);
    const forged = seal(denied(3), 'pgw-a@1', { seq: 2, hash: 'f'.repeat(64) }, KEY);
    const report = verifyChains(stored([...entries, forged]), { key: KEY });
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:3', chain: 'pgw-a@1', seq: 3, problem: 'does not link to seq 2: its prev differs (entry inserted or replaced)' },
    ]);
  });

  it('reports the entry after one replaced with a validly sealed other entry: it no longer links', () => {
    const entries = chainOf(3);
    const other = seal({ ...denied(2), rule: 'replacement' }, 'pgw-a@1', { seq: 1, hash: entries[0]!.hash }, KEY);
    const report = verifyChains(stored([entries[0]!, other, entries[2]!]), { key: KEY });
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:3', chain: 'pgw-a@1', seq: 3, problem: 'does not link to seq 2: its prev differs (entry inserted or replaced)' },
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

  it('reports a chain whose first entries were deleted as one range', () => {
    const rest = chainOf(5).slice(3);
    expect(verifyChains(stored(rest), { key: KEY }).problems).toEqual([
      { where: 'audit.jsonl:1', chain: 'pgw-a@1', seq: 4, problem: 'chain starts at seq 4: entries 1..3 are missing (deleted, or trimmed by retention)' },
    ]);
  });

  it('still reports a gap after a trimmed start', () => {
    const entries = chainOf(6);
    const report = verifyChains(stored([entries[2]!, entries[3]!, entries[5]!]), { key: KEY, allowTrimmedStart: true });
    expect(report.problems).toEqual([{ where: 'audit.jsonl:3', chain: 'pgw-a@1', seq: 6, problem: 'entry 5 is missing (deleted)' }]);
  });

  it('reports swapped entries once, as moved, and nothing as missing', () => {
    const [e1, e2, e3] = chainOf(3);
    const report = verifyChains(stored([e1!, e3!, e2!]), { key: KEY });
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:3', chain: 'pgw-a@1', seq: 2, problem: 'stored after seq 3: entries reordered or duplicated' },
    ]);
    expect(report.chains).toEqual([{ chain: 'pgw-a@1', first: 1, last: 3, count: 3, head: e3!.hash }]);
  });

  it('does not claim an entry is missing when two middle entries were only swapped (1,3,2,4)', () => {
    const [e1, e2, e3, e4] = chainOf(4);
    const report = verifyChains(stored([e1!, e3!, e2!, e4!]), { key: KEY });
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:3', chain: 'pgw-a@1', seq: 2, problem: 'stored after seq 3: entries reordered or duplicated' },
    ]);
    expect(report.problems.some((p) => p.problem.includes('missing'))).toBe(false);
    expect(report.chains).toEqual([{ chain: 'pgw-a@1', first: 1, last: 4, count: 4, head: e4!.hash }]);
  });

  it('does not claim the tail is missing when the two newest entries were swapped (1,2,4,3 with heads)', () => {
    const [e1, e2, e3, e4] = chainOf(4);
    const heads = new Map([['pgw-a@1', { seq: 4, hash: e4!.hash }]]);
    const report = verifyChains(stored([e1!, e2!, e4!, e3!]), { key: KEY, heads });
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:4', chain: 'pgw-a@1', seq: 3, problem: 'stored after seq 4: entries reordered or duplicated' },
    ]);
    expect(report.problems.some((p) => p.problem.includes('missing') || p.problem.includes('head record'))).toBe(false);
  });

  it('reports an entry moved far back once', () => {
    const entries = chainOf(5);
    const report = verifyChains(stored([entries[1]!, entries[2]!, entries[3]!, entries[4]!, entries[0]!]), { key: KEY });
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:5', chain: 'pgw-a@1', seq: 1, problem: 'stored after seq 5: entries reordered or duplicated' },
    ]);
  });

  it('reports a duplicated entry once, and the chain goes on after it', () => {
    const [e1, e2, e3] = chainOf(3);
    const report = verifyChains(stored([e1!, e2!, e2!, e3!]), { key: KEY });
    expect(report.problems).toEqual([{ where: 'audit.jsonl:3', chain: 'pgw-a@1', seq: 2, problem: 'seq 2 appears twice (entry duplicated)' }]);
    expect(report.entries).toBe(4);
    expect(report.chains).toEqual([{ chain: 'pgw-a@1', first: 1, last: 3, count: 4, head: e3!.hash }]);
  });

  it('reports a copy of an older entry appended later as stored out of order and duplicated', () => {
    const [e1, e2, e3] = chainOf(3);
    const report = verifyChains(stored([e1!, e2!, e3!, e2!]), { key: KEY });
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:4', chain: 'pgw-a@1', seq: 2, problem: 'stored after seq 3: entries reordered or duplicated' },
      { where: 'audit.jsonl:4', chain: 'pgw-a@1', seq: 2, problem: 'seq 2 appears twice (entry duplicated)' },
    ]);
  });

  it('returns problems in storage order, whichever check found them', () => {
    const entries = chainOf(4);
    const forged = seal(denied(9), 'pgw-a@1', { seq: 3, hash: entries[2]!.hash }, WRONG_KEY);
    // line 2 shows the gap (found after reading everything), line 3 the forgery (found while reading)
    const report = verifyChains(stored([entries[0]!, entries[2]!, forged, entries[3]!]), { key: KEY });
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:2', chain: 'pgw-a@1', seq: 3, problem: 'entry 2 is missing (deleted)' },
      { where: 'audit.jsonl:3', chain: 'pgw-a@1', seq: 4, problem: FORGED },
    ]);
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

  it('lists head problems after the problems of the entries', () => {
    const entries = chainOf(4);
    const heads = new Map([['pgw-a@1', { seq: 6, hash: 'a'.repeat(64) }]]);
    const report = verifyChains(stored([entries[0]!, entries[2]!, entries[3]!]), { key: KEY, heads });
    expect(report.problems).toEqual([
      { where: 'audit.jsonl:2', chain: 'pgw-a@1', seq: 3, problem: 'entry 2 is missing (deleted)' },
      { where: 'end', chain: 'pgw-a@1', seq: 6, problem: 'entries 5..6 are missing at the end (tail deleted)' },
    ]);
  });

  it('reports stored fields beside the entry that do not match it', () => {
    const entries = chainOf(2);
    const records: StoredRecord[] = [
      { where: '1700000000000-0', raw: entries[0]!.json, chain: 'pgw-a@1', seq: '1' },
      { where: '1700000000000-1', raw: entries[1]!.json, chain: 'pgw-x@9', seq: '7' },
    ];
    const report = verifyChains(records, { key: KEY });
    expect(report.problems).toEqual([
      { where: '1700000000000-1', chain: 'pgw-a@1', seq: 2, problem: 'stored fields (chain pgw-x@9, seq 7) do not match the entry' },
    ]);
  });

  it('accepts stored fields beside the entry that match it', () => {
    const entries = chainOf(2);
    const records: StoredRecord[] = entries.map((e, i) => ({ where: `id-${i}`, raw: e.json, chain: 'pgw-a@1', seq: String(e.seq) }));
    expect(verifyChains(records, { key: KEY })).toMatchObject({ ok: true, entries: 2, problems: [] });
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

  it('reports an entry cut short as unreadable', () => {
    const [e1, e2] = chainOf(2);
    const report = verifyChains(stored([e1!, e2!.json.slice(0, -10)]), { key: KEY });
    expect(report.problems).toEqual([{ where: 'audit.jsonl:2', chain: '?', seq: null, problem: 'unreadable entry (not JSON)' }]);
  });

  it('names the stored chain of an unreadable stream entry', () => {
    const report = verifyChains([{ where: '17-0', raw: 'not json', chain: 'pgw-a@1', seq: '3' }], { key: KEY });
    expect(report.problems).toEqual([{ where: '17-0', chain: 'pgw-a@1', seq: null, problem: 'unreadable entry (not JSON)' }]);
  });

  it('reports JSON that carries no chain fields', () => {
    const report = verifyChains([{ where: 'audit.jsonl:1', raw: JSON.stringify(denied(1)) }], { key: KEY });
    expect(report.problems).toEqual([{ where: 'audit.jsonl:1', chain: '?', seq: null, problem: 'entry has no valid chain fields' }]);
  });

  it('reports an entry whose seq is not a positive integer', () => {
    const [e1] = chainOf(1);
    for (const seq of [0, 1.5, '1']) {
      const report = verifyChains(stored([altered(e1!, { seq })]), { key: KEY });
      expect(report.problems).toEqual([{ where: 'audit.jsonl:1', chain: '?', seq: null, problem: 'entry has no valid chain fields' }]);
    }
  });

  it('reports a correctly sealed entry that is not a valid audit event', () => {
    const bogus = { ...denied(1), sqlstate: 42501 } as unknown as AuditEvent;
    const report = verifyChains(stored([seal(bogus, 'c', null, KEY)]), { key: KEY });
    expect(report.problems).toEqual([{ where: 'audit.jsonl:1', chain: 'c', seq: 1, problem: 'entry does not match the audit event schema' }]);
  });

  it('fails every entry under the wrong key', () => {
    const report = verifyChains(stored(chainOf(3)), { key: WRONG_KEY });
    expect(report.ok).toBe(false);
    expect(report.chains).toEqual([]);
    expect(report.problems).toEqual([1, 2, 3].map((seq) => ({ where: `audit.jsonl:${seq}`, chain: 'pgw-a@1', seq, problem: FORGED })));
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

  it('does not take entries of one chain stored between those of another as reordering', () => {
    const a = chainOf(3, 'pgw-a@1');
    const b = chainOf(3, 'pgw-b@1');
    const report = verifyChains(stored([a[0]!, a[1]!, a[2]!, b[0]!, b[1]!, b[2]!]), { key: KEY });
    expect(report).toMatchObject({ ok: true, problems: [] });
  });

  it('rejects an entry moved from one chain to another (the HMAC covers the chain name)', () => {
    const a = chainOf(2, 'pgw-a@1');
    const moved = altered(a[1]!, { chain: 'pgw-b@1' });
    const report = verifyChains(stored([a[0]!, moved]), { key: KEY, allowTrimmedStart: true });
    expect(report.problems).toEqual([{ where: 'audit.jsonl:2', chain: 'pgw-b@1', seq: 2, problem: FORGED }]);
  });

  it('rejects an entry given another seq (the HMAC covers seq and prev)', () => {
    const entries = chainOf(3);
    const renumbered = altered(entries[2]!, { seq: 2 });
    const report = verifyChains(stored([entries[0]!, renumbered]), { key: KEY });
    expect(report.problems).toEqual([{ where: 'audit.jsonl:2', chain: 'pgw-a@1', seq: 2, problem: FORGED }]);
  });
});
