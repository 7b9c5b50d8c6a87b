import { unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../logger.js';
import { seal, type ChainHead, type Sealed } from './chain.js';
import { AUDIT_SCHEMA_VERSION, type AuditEvent, type AuditEventInput } from './events.js';
import { chainFileName, chainOfFileName, Journal, journalFiles, readLines } from './journal.js';
import type { AppendItem, RedisAuditLog } from './redis-log.js';

/**
 * Where decisions are recorded. `record` fixes the event's place in this process's chain at
 * once (so the log order is the decision order) and returns a promise that settles when the
 * entry is durable: in Redis, or in the local journal. It rejects only when neither can take
 * the entry; callers then refuse the statement (fail closed).
 */
export interface AuditSink {
  /** Records an event someone waits for (a refusal, a verdict). */
  record(event: AuditEventInput): Recorded;
  /**
   * Records an event nothing waits for (an allowed statement, an outcome, a lifecycle fact):
   * sealed and queued in order now, written with the next batch; a failure shows in `failing`.
   * Returns its seq.
   */
  note(event: AuditEventInput): number;
  /** The last write could not be recorded anywhere (and none has succeeded since). */
  readonly failing: boolean;
  close(): Promise<void>;
}

export interface Recorded {
  seq: number;
  durable: Promise<void>;
}

/** A sink that records nothing (audit disabled, and unit tests of other parts). */
export const noAudit: AuditSink = {
  failing: false,
  record: () => ({ seq: 0, durable: Promise.resolve() }),
  note: () => 0,
  close: async () => {},
};

interface Pending {
  sealed: Sealed;
  /** Absent for notes: nobody waits for them. */
  resolve?: () => void;
  reject?: (err: Error) => void;
}

export interface ChainSinkOptions {
  /** This writer's chain: unique per running process. */
  chain: string;
  key: Buffer;
  /** The journal directory: the audit log without Redis, the spool with it. */
  journalDir: string;
  /** The Redis stream; null records to the journal only. */
  redis: RedisAuditLog | null;
  log: Logger;
  /** Entries per Redis round trip or fsync. */
  batchMax?: number;
  /** How often to retry Redis while spooling. */
  retryMs?: number;
}

export class AuditUnavailable extends Error {
  override readonly name = 'AuditUnavailable';
}

/**
 * One chain, written in order by a single drain loop. With Redis: batches go to Redis; when it
 * fails they go to the spool (fsync'd), and every later batch follows them there until the whole
 * spool has been replayed into Redis, oldest first (so the stream keeps chain order). Without
 * Redis: batches go to the journal, which is the log.
 */
export class ChainSink implements AuditSink {
  private head: ChainHead | null = null;
  private pending: Pending[] = [];
  private draining = false;
  private spooling = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private lastWriteFailed = false;
  private readonly batchMax: number;
  private readonly retryMs: number;
  /** Journal-only mode: the log; Redis mode: this chain's spool (opened on first use). */
  private journal: Journal | null = null;
  /** Spool files of earlier runs of this writer that still wait for Redis. */
  private leftovers: string[] = [];
  private idleWaiters: (() => void)[] = [];

  private constructor(private readonly opts: ChainSinkOptions) {
    this.batchMax = opts.batchMax ?? 500;
    this.retryMs = opts.retryMs ?? 1000;
  }

  static async open(opts: ChainSinkOptions): Promise<ChainSink> {
    const sink = new ChainSink(opts);
    if (!opts.redis) {
      sink.journal = await Journal.open(path.join(opts.journalDir, chainFileName(opts.chain)));
    } else {
      sink.leftovers = spoolFiles(opts.journalDir, opts.chain);
      if (sink.leftovers.length > 0) {
        sink.spooling = true;
        sink.scheduleRetry(0);
      }
    }
    return sink;
  }

  get chain(): string {
    return this.opts.chain;
  }

  get failing(): boolean {
    return this.lastWriteFailed || this.closed;
  }

  /** True while entries wait in the local spool for Redis. */
  get isSpooling(): boolean {
    return this.spooling;
  }

  record(input: AuditEventInput): Recorded {
    if (this.closed) return { seq: 0, durable: Promise.reject(new AuditUnavailable('the audit sink is closed')) };
    let resolve!: () => void;
    let reject!: (err: Error) => void;
    const durable = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const seq = this.enqueue(input, resolve, reject);
    return { seq, durable };
  }

  note(input: AuditEventInput): number {
    if (this.closed) {
      this.opts.log.error({ event: 'audit-unavailable', type: input.type }, 'audit entry after the sink was closed; not recorded');
      return 0;
    }
    return this.enqueue(input);
  }

  private enqueue(input: AuditEventInput, resolve?: () => void, reject?: (err: Error) => void): number {
    const event = { v: AUDIT_SCHEMA_VERSION, ts: isoNow(), ...input } as AuditEvent;
    const sealed = seal(event, this.opts.chain, this.head, this.opts.key);
    this.head = { seq: sealed.seq, hash: sealed.hash };
    this.pending.push(resolve ? { sealed, resolve, reject } : { sealed });
    if (!this.draining) {
      this.draining = true;
      // Let every event of this turn of the event loop join the batch.
      setImmediate(() => void this.drain());
    }
    return sealed.seq;
  }

  /** Resolves once everything recorded so far is durable (or failed). */
  flushed(): Promise<void> {
    if (!this.draining && this.pending.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, this.batchMax);
        try {
          await this.write(batch);
          this.lastWriteFailed = false;
          for (const p of batch) p.resolve?.();
        } catch (err) {
          this.lastWriteFailed = true;
          const message = (err as Error).message;
          this.opts.log.error({ event: 'audit-unavailable', chain: this.opts.chain, message }, 'audit entries could not be recorded; statements that need them are refused');
          for (const p of batch) p.reject?.(new AuditUnavailable(message));
        }
      }
    } finally {
      this.draining = false;
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private async write(batch: Pending[]): Promise<void> {
    const redis = this.opts.redis;
    if (!redis) {
      await this.journal!.append(batch.map((p) => p.sealed.json));
      return;
    }
    if (!this.spooling) {
      try {
        await redis.append(this.opts.chain, batch.map((p) => p.sealed));
        return;
      } catch (err) {
        this.spooling = true;
        this.opts.log.warn({ event: 'audit-spooling', chain: this.opts.chain, message: (err as Error).message }, 'Redis unreachable: audit entries go to the local journal until it is back');
        this.scheduleRetry(this.retryMs);
      }
    }
    this.journal ??= await Journal.open(spoolPath(this.opts.journalDir, this.opts.chain));
    await this.journal.append(batch.map((p) => p.sealed.json));
  }

  private scheduleRetry(ms: number): void {
    if (this.retryTimer || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.retryReplay();
    }, ms);
    this.retryTimer.unref();
  }

  /**
   * Replays the spool into Redis, oldest first. Runs inside the drain loop's exclusivity (no
   * batch is written meanwhile; new events wait in memory), so order is kept.
   */
  private async retryReplay(): Promise<void> {
    if (!this.spooling || this.closed) return;
    if (this.draining) {
      // A batch is being written; try again right after.
      this.scheduleRetry(10);
      return;
    }
    this.draining = true;
    const redis = this.opts.redis!;
    try {
      for (const file of [...this.leftovers, ...(this.journal ? [this.journal.file] : [])]) {
        const lines = await readLines(file);
        const chain = chainOfFileName(path.basename(file));
        for (let i = 0; i < lines.length; i += this.batchMax) {
          const items = lines.slice(i, i + this.batchMax).map(spooledItem);
          await redis.append(chain, items);
        }
        if (this.journal && file === this.journal.file) await this.journal.clear();
        else {
          await unlink(file);
          this.leftovers = this.leftovers.filter((f) => f !== file);
        }
        this.opts.log.info({ event: 'audit-replayed', chain, entries: lines.length }, 'spooled audit entries replayed into Redis');
      }
      this.spooling = false;
    } catch (err) {
      this.opts.log.debug({ message: (err as Error).message }, 'Redis still unreachable; audit entries stay in the journal');
      this.scheduleRetry(this.retryMs);
    } finally {
      this.draining = false;
    }
    if (this.pending.length > 0) {
      this.draining = true;
      void this.drain();
    } else for (const w of this.idleWaiters.splice(0)) w();
  }

  async close(): Promise<void> {
    await this.flushed();
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.journal?.close();
  }
}

/** A spooled line back into what Redis needs (the line is the sealed entry, stored as is). */
function spooledItem(json: string): AppendItem {
  const e = JSON.parse(json) as { seq: number; prev: string; hmac: string; type: string };
  return { seq: e.seq, prev: e.prev, hash: e.hmac, type: e.type, json };
}

let lastMs = 0;
let lastIso = '';
/** The current time as ISO 8601; formatted once per millisecond (entries come in bursts). */
function isoNow(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

function spoolDir(journalDir: string): string {
  return path.join(journalDir, 'spool');
}

function spoolPath(journalDir: string, chain: string): string {
  return path.join(spoolDir(journalDir), chainFileName(chain));
}

/**
 * Spool files left by earlier runs of the same writer (same chain prefix up to the run stamp),
 * e.g. after a crash during a Redis outage. They are replayed before anything new.
 */
function spoolFiles(journalDir: string, chain: string): string[] {
  const writer = chain.slice(0, chain.lastIndexOf('@') + 1);
  if (!writer) return [];
  return journalFiles(spoolDir(journalDir)).filter((f) => chainOfFileName(path.basename(f)).startsWith(writer));
}
