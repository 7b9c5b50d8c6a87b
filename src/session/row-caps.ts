import { encodeErrorResponse } from '../protocol/backend.js';
import { pgError } from '../protocol/pg-error.js';
import type { RowCap } from './decision.js';
import { ReadyWindows } from './ready-windows.js';

/**
 * Enforces row caps on server output (pure bookkeeping; the session does the I/O).
 *
 * Each capped request is answered between two ReadyForQuery numbers (`from`, `to`); DataRows in
 * that window are counted. Counts for a portal or cursor key carry over to the next request that
 * uses the key, so Execute row limits and repeated FETCH add up. Past the cap every further
 * message of the result is dropped and the first end-of-result message is replaced by pgwarden's
 * error (54000).
 */
interface ActiveCap {
  from: number;
  to: number;
  cap: RowCap;
  count: number;
  exceeded: boolean;
  reported: boolean;
}

export type DataRowVerdict = 'forward' | 'drop' | 'exceeded';

export class RowCaps {
  private readonly caps = new ReadyWindows<ActiveCap>();
  private readonly counts = new Map<string, number>();

  /** A capped request was forwarded; its answer lies between ReadyForQuery `from` and `to`. */
  track(cap: RowCap, from: number, to: number): void {
    if (cap.key !== null && cap.fresh) this.counts.delete(cap.key);
    const count = cap.key !== null ? (this.counts.get(cap.key) ?? 0) : 0;
    this.caps.add({ from, to, cap, count, exceeded: false, reported: false });
  }

  /** Binding a portal anew starts its count from zero. */
  portalBound(portal: string): void {
    this.counts.delete(`portal:${portal}`);
  }

  /** ReadyForQuery number `readySeen` arrived: finished caps hand their counts on. */
  onReady(readySeen: number): void {
    this.caps.finish(readySeen, this.handOnCount);
  }

  /** A finished cap leaves its count to the next request on the same portal or cursor. */
  private readonly handOnCount = (done: ActiveCap): void => {
    if (done.cap.key !== null) this.counts.set(done.cap.key, done.count);
  };

  private current(readySeen: number): ActiveCap | undefined {
    return this.caps.current(readySeen);
  }

  /** A DataRow: forward it, drop it, or 'exceeded' (drop it; the cap was just passed). */
  onDataRow(readySeen: number): DataRowVerdict {
    const c = this.current(readySeen);
    if (!c || ++c.count <= c.cap.limit) return 'forward';
    if (c.exceeded) return 'drop';
    c.exceeded = true;
    return 'exceeded';
  }

  /**
   * A message that ends or describes a result (CommandComplete, PortalSuspended,
   * EmptyQueryResponse, RowDescription, ErrorResponse): null to handle it normally, else what to
   * send instead (pgwarden's error once, then nothing).
   */
  onResultMessage(readySeen: number): Buffer[] | null {
    const c = this.current(readySeen);
    if (!c?.exceeded) return null;
    if (c.reported) return [];
    c.reported = true;
    return [encodeErrorResponse(pgError.rowCapExceeded(c.cap.limit, c.cap.tables))];
  }

  /** The cap just exceeded, for logging. */
  describe(readySeen: number): { tables: string[]; limit: number } | undefined {
    const c = this.current(readySeen);
    return c ? { tables: c.cap.tables, limit: c.cap.limit } : undefined;
  }
}
