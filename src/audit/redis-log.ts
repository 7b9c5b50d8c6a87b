import type { Redis } from 'ioredis';
import type { ChainHead, StoredRecord } from './chain.js';

/**
 * The audit stream in Redis. Entries are XADDed with the fields `chain`, `seq`, `type` and
 * `entry` (the sealed entry's JSON); the hash `<stream>:heads` maps each chain to "seq hash" of
 * its newest entry, so that deleting the newest entries is detected by `audit verify`.
 *
 * Appends run as one Lua script per batch, so the stream and the heads hash change together,
 * and an append is idempotent: entries at or below the chain's head are skipped. That makes
 * replaying a spool safe after a batch whose reply was lost (applied or not, we cannot know).
 * A seq that does not continue the head (another process writing the same chain) is an error.
 */
const APPEND_SCRIPT = `
local stream, heads = KEYS[1], KEYS[2]
local chain, trimKind, trimArg = ARGV[1], ARGV[2], ARGV[3]
local head = redis.call('HGET', heads, chain)
local headSeq, headHash = 0, ''
if head then
  local sp = string.find(head, ' ', 1, true)
  headSeq = tonumber(string.sub(head, 1, sp - 1))
  headHash = string.sub(head, sp + 1)
end
local added = 0
for i = 4, #ARGV, 5 do
  local seq, prev, hash, etype, entry = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if seq < headSeq or (seq == headSeq and hash == headHash) then
    -- already appended (a replay after an uncertain failure)
  elseif head and (seq ~= headSeq + 1 or prev ~= headHash) then
    return redis.error_reply('PGWARDEN_CHAIN chain ' .. chain .. ' is at seq ' .. headSeq .. ', cannot append seq ' .. seq)
  else
    if trimKind == 'MAXLEN' or trimKind == 'MINID' then
      redis.call('XADD', stream, trimKind, '~', trimArg, '*', 'chain', chain, 'seq', tostring(seq), 'type', etype, 'entry', entry)
    else
      redis.call('XADD', stream, '*', 'chain', chain, 'seq', tostring(seq), 'type', etype, 'entry', entry)
    end
    head, headSeq, headHash = true, seq, hash
    added = added + 1
  end
end
if added > 0 then redis.call('HSET', heads, chain, headSeq .. ' ' .. headHash) end
return added
`;

export interface Retention {
  /** Keep about this many entries (XADD MAXLEN ~). */
  maxLen?: number;
  /** Keep about this much time (XADD MINID ~ now - retentionMs). */
  retentionMs?: number;
}

/** What one appended entry needs: its chain fields, type and stored JSON. */
export interface AppendItem {
  seq: number;
  prev: string;
  hash: string;
  type: string;
  json: string;
}

type AppendCommand = (stream: string, heads: string, ...args: string[]) => Promise<number>;

export class RedisAuditLog {
  readonly headsKey: string;

  constructor(
    readonly redis: Redis,
    readonly stream: string,
    private readonly retention: Retention = {},
  ) {
    this.headsKey = `${stream}:heads`;
    if (!(redis as unknown as { pgwardenAuditAppend?: AppendCommand }).pgwardenAuditAppend) {
      redis.defineCommand('pgwardenAuditAppend', { numberOfKeys: 2, lua: APPEND_SCRIPT });
    }
  }

  /** Appends a batch of one chain's entries, in order; resolves with how many were new. */
  append(chain: string, items: readonly AppendItem[]): Promise<number> {
    const args: string[] = [chain];
    if (this.retention.maxLen !== undefined) args.push('MAXLEN', String(this.retention.maxLen));
    else if (this.retention.retentionMs !== undefined) args.push('MINID', String(Date.now() - this.retention.retentionMs));
    else args.push('', '');
    for (const it of items) args.push(String(it.seq), it.prev, it.hash, it.type, it.json);
    const cmd = (this.redis as unknown as { pgwardenAuditAppend: AppendCommand }).pgwardenAuditAppend;
    return cmd.call(this.redis, this.stream, this.headsKey, ...args);
  }

  async heads(): Promise<Map<string, ChainHead>> {
    const raw = await this.redis.hgetall(this.headsKey);
    const out = new Map<string, ChainHead>();
    for (const [chain, value] of Object.entries(raw)) {
      const sp = value.indexOf(' ');
      out.set(chain, { seq: Number(value.slice(0, sp)), hash: value.slice(sp + 1) });
    }
    return out;
  }

  /** Entries after stream id `after` ('-' for the start), at most `count`. */
  async range(after: string, count: number): Promise<{ id: string; record: StoredRecord }[]> {
    const start = after === '-' ? '-' : `(${after}`;
    const rows = await this.redis.xrange(this.stream, start, '+', 'COUNT', count);
    return rows.map(([id, fields]) => ({ id, record: toRecord(id, fields) }));
  }

  /** Every entry, in stream order, paged. */
  async *all(pageSize = 1000): AsyncGenerator<{ id: string; record: StoredRecord }> {
    let after = '-';
    for (;;) {
      const page = await this.range(after, pageSize);
      for (const row of page) yield row;
      if (page.length < pageSize) return;
      after = page[page.length - 1]!.id;
    }
  }
}

export function toRecord(id: string, fields: string[]): StoredRecord {
  const map = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) map.set(fields[i]!, fields[i + 1]!);
  return { where: `stream id ${id}`, raw: map.get('entry') ?? '', chain: map.get('chain'), seq: map.get('seq') };
}
