import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { canonicalJson } from './canonical-json.js';
import { auditEventSchema, chainFieldsSchema, type AuditEvent, type SealedEntry } from './events.js';

/**
 * Tamper evidence (pure). Each writer (one pgwarden process) keeps its own chain: entries carry
 * `chain` (the writer's id), `seq` (1, 2, 3 ... without gaps), `prev` (the hash of the chain's
 * previous entry), `hash` = sha256(body) and `hmac` = HMAC-SHA256(key, prev "\n" body), where
 * body is the canonical JSON of the entry without `hash` and `hmac`.
 *
 * Without the key nobody can produce a valid hmac, so an altered or inserted entry is detected;
 * a deleted entry leaves a gap in `seq`; a reordered one breaks `seq` order and the `prev` link.
 * Deleting the newest entries of a chain is only visible against a head record kept elsewhere
 * (the Redis heads hash, or the head an auditor noted from `audit verify`).
 */
export const GENESIS = '0'.repeat(64);

export interface ChainHead {
  seq: number;
  hash: string;
}

function bodyOf(entry: Record<string, unknown>): string {
  const { hash: _h, hmac: _m, ...rest } = entry;
  return canonicalJson(rest);
}

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');
const hmacOf = (key: Buffer, prev: string, body: string): string => createHmac('sha256', key).update(prev).update('\n').update(body).digest('hex');

/** Appends `event` to a chain whose newest entry is `head` (null: a new chain). Pure. */
export function seal(event: AuditEvent, chain: string, head: ChainHead | null, key: Buffer): SealedEntry {
  const unsealed = { ...event, chain, seq: head ? head.seq + 1 : 1, prev: head ? head.hash : GENESIS };
  const body = canonicalJson(unsealed);
  return { ...unsealed, hash: sha256(body), hmac: hmacOf(key, unsealed.prev, body) } as SealedEntry;
}

/** One stored entry as read back: where it is (stream id, file:line) and its JSON text. */
export interface StoredRecord {
  where: string;
  raw: string;
  /** Fields stored beside the entry (the Redis stream's `chain` and `seq`), when there are any. */
  chain?: string;
  seq?: string;
}

export interface Problem {
  where: string;
  chain: string;
  seq: number | null;
  problem: string;
}

export interface ChainSummary {
  chain: string;
  first: number;
  last: number;
  count: number;
  head: string;
}

export interface VerifyReport {
  ok: boolean;
  entries: number;
  chains: ChainSummary[];
  problems: Problem[];
}

export interface VerifyOptions {
  key: Buffer;
  /** Chain heads recorded outside the entries (Redis); a chain ending before its head was truncated. */
  heads?: ReadonlyMap<string, ChainHead>;
  /** Retention trims the oldest entries: accept chains that start after seq 1. */
  allowTrimmedStart?: boolean;
}

function equalHex(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

/** Checks every chain in `records` (in storage order) and reports each broken link. */
export function verifyChains(records: Iterable<StoredRecord>, options: VerifyOptions): VerifyReport {
  const problems: Problem[] = [];
  const chains = new Map<string, ChainSummary>();
  let entries = 0;
  for (const rec of records) {
    entries++;
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(rec.raw) as Record<string, unknown>;
    } catch {
      problems.push({ where: rec.where, chain: rec.chain ?? '?', seq: null, problem: 'unreadable entry (not JSON)' });
      continue;
    }
    const fields = chainFieldsSchema.safeParse({ chain: parsed.chain, seq: parsed.seq, prev: parsed.prev, hash: parsed.hash, hmac: parsed.hmac });
    if (!fields.success) {
      problems.push({ where: rec.where, chain: rec.chain ?? '?', seq: null, problem: 'entry has no valid chain fields' });
      continue;
    }
    const { chain, seq, prev, hash, hmac } = fields.data;
    const report = (problem: string) => problems.push({ where: rec.where, chain, seq, problem });
    if ((rec.chain !== undefined && rec.chain !== chain) || (rec.seq !== undefined && rec.seq !== String(seq))) {
      report(`stored fields (chain ${rec.chain}, seq ${rec.seq}) do not match the entry`);
    }
    const body = bodyOf(parsed);
    if (!equalHex(sha256(body), hash)) report('entry altered: its hash does not match its content');
    else if (!equalHex(hmacOf(options.key, prev, body), hmac)) report('entry altered or forged: HMAC does not verify with the audit key');
    else {
      const { hash: _h, hmac: _m, chain: _c, seq: _s, prev: _p, ...event } = parsed;
      if (!auditEventSchema.safeParse(event).success) report('entry does not match the audit event schema');
    }
    const state = chains.get(chain);
    if (!state) {
      if (seq !== 1 && !options.allowTrimmedStart) report(`chain starts at seq ${seq}: entries 1..${seq - 1} are missing (deleted, or trimmed by retention)`);
      chains.set(chain, { chain, first: seq, last: seq, count: 1, head: hash });
      continue;
    }
    if (seq === state.last + 1) {
      if (prev !== state.head) report(`does not link to seq ${state.last}: its prev hash differs (entry inserted or replaced)`);
    } else if (seq > state.last + 1) {
      report(seq - 1 === state.last + 1 ? `entry ${seq - 1} is missing (deleted)` : `entries ${state.last + 1}..${seq - 1} are missing (deleted)`);
    } else {
      report(`seq ${seq} comes after seq ${state.last} (entries reordered or duplicated)`);
    }
    state.last = seq;
    state.head = hash;
    state.count++;
  }
  for (const [chain, head] of options.heads ?? []) {
    const state = chains.get(chain);
    if (!state) {
      problems.push({ where: 'end', chain, seq: head.seq, problem: `the head record says seq ${head.seq}, but the chain has no entries (all deleted)` });
    } else if (state.last < head.seq) {
      problems.push({ where: 'end', chain, seq: head.seq, problem: `entries ${state.last + 1}..${head.seq} are missing at the end (tail deleted)` });
    } else if (state.last === head.seq && state.head !== head.hash) {
      problems.push({ where: 'end', chain, seq: head.seq, problem: 'the newest entry differs from the head record' });
    }
  }
  return { ok: problems.length === 0, entries, chains: [...chains.values()], problems };
}
