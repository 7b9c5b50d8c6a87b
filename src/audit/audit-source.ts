import { statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import type { ChainHead, StoredRecord } from './chain.js';
import { journalFiles, readLines } from './journal.js';
import { toRecord, type RedisAuditLog } from './redis-log.js';

/**
 * Reading the audit log back (for `pgwarden audit verify | export | tail`): the Redis stream, or
 * the journal directory in the embedded mode.
 */
export interface AuditSource {
  readonly description: string;
  /** Every stored entry, in storage order. */
  records(): AsyncIterable<StoredRecord>;
  /** Chain heads recorded beside the entries (Redis only). */
  heads(): Promise<ReadonlyMap<string, ChainHead> | undefined>;
  /** The newest `count` entries, oldest first. */
  last(count: number): Promise<StoredRecord[]>;
  /** Calls `onRecord` for entries added from now on, until `signal` aborts. */
  follow(onRecord: (r: StoredRecord) => void, signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

export class RedisSource implements AuditSource {
  constructor(private readonly log: RedisAuditLog) {}

  get description(): string {
    return `Redis stream ${this.log.stream}`;
  }

  async *records(): AsyncGenerator<StoredRecord> {
    for await (const row of this.log.all()) yield row.record;
  }

  heads(): Promise<ReadonlyMap<string, ChainHead>> {
    return this.log.heads();
  }

  async last(count: number): Promise<StoredRecord[]> {
    const rows = await this.log.redis.xrevrange(this.log.stream, '+', '-', 'COUNT', count);
    return rows.reverse().map(([id, fields]) => toRecord(id, fields));
  }

  async follow(onRecord: (r: StoredRecord) => void, signal: AbortSignal): Promise<void> {
    // A separate connection: XREAD BLOCK holds it.
    const reader = this.log.redis.duplicate();
    signal.addEventListener('abort', () => reader.disconnect(), { once: true });
    let after = '$';
    try {
      while (!signal.aborted) {
        const res = await reader.xread('COUNT', 1000, 'BLOCK', 1000, 'STREAMS', this.log.stream, after);
        for (const [, entries] of res ?? []) {
          for (const [id, fields] of entries) {
            after = id;
            onRecord(toRecord(id, fields));
          }
        }
      }
    } catch (err) {
      if (!signal.aborted) throw err;
    }
  }

  async close(): Promise<void> {
    this.log.redis.disconnect();
  }
}

export class JournalSource implements AuditSource {
  constructor(private readonly dir: string) {}

  get description(): string {
    return `journal ${this.dir}`;
  }

  async *records(): AsyncGenerator<StoredRecord> {
    for (const file of journalFiles(this.dir)) {
      const lines = await readLines(file);
      for (let i = 0; i < lines.length; i++) yield { where: `${path.basename(file)}:${i + 1}`, raw: lines[i]! };
    }
  }

  async heads(): Promise<undefined> {
    return undefined;
  }

  async last(count: number): Promise<StoredRecord[]> {
    const all: { ts: string; rec: StoredRecord }[] = [];
    for await (const rec of this.records()) all.push({ ts: tsOf(rec.raw), rec });
    all.sort((a, b) => (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : 0));
    return all.slice(-count).map((x) => x.rec);
  }

  /** Polls the journal files for appended lines (a file per chain; new chains appear as files). */
  async follow(onRecord: (r: StoredRecord) => void, signal: AbortSignal): Promise<void> {
    const offsets = new Map<string, number>();
    for (const file of journalFiles(this.dir)) offsets.set(file, statSync(file).size);
    while (!signal.aborted) {
      await new Promise((r) => setTimeout(r, 300));
      for (const file of journalFiles(this.dir)) {
        const from = offsets.get(file) ?? 0;
        const size = statSync(file).size;
        if (size <= from) continue;
        const handle = await open(file, 'r');
        const buf = Buffer.alloc(size - from);
        await handle.read(buf, 0, buf.length, from);
        await handle.close();
        const text = buf.toString('utf8');
        const complete = text.lastIndexOf('\n') + 1;
        offsets.set(file, from + Buffer.byteLength(text.slice(0, complete)));
        for (const line of text.slice(0, complete).split('\n')) if (line) onRecord({ where: path.basename(file), raw: line });
      }
    }
  }

  async close(): Promise<void> {}
}

function tsOf(raw: string): string {
  try {
    return String((JSON.parse(raw) as { ts?: unknown }).ts ?? '');
  } catch {
    return '';
  }
}
