import type { RequestOutcome } from './decision.js';
import { ReadyWindows } from './ready-windows.js';

/**
 * Collects how forwarded requests ended (pure bookkeeping; the session feeds it server messages).
 * Like row caps, each observed request is answered between two ReadyForQuery numbers; the
 * messages in that window are counted: DataRows, CommandComplete tags, the first ErrorResponse.
 */
interface Watched {
  from: number;
  to: number;
  started: number;
  done: (o: RequestOutcome) => void;
  rowsReturned: number;
  rowsAffected: number;
  copyOut: boolean;
  sqlstate?: string;
}

/** CommandComplete tags whose count is rows changed (INSERT's is its second number). */
const AFFECTING = new Set(['INSERT', 'UPDATE', 'DELETE', 'MERGE']);

export class Outcomes {
  private readonly watched = new ReadyWindows<Watched>();

  get idle(): boolean {
    return this.watched.idle;
  }

  watch(done: (o: RequestOutcome) => void, from: number, to: number): void {
    this.watched.add({ from, to, started: performance.now(), done, rowsReturned: 0, rowsAffected: 0, copyOut: false });
  }

  private current(readySeen: number): Watched | undefined {
    return this.watched.current(readySeen);
  }

  onDataRow(readySeen: number): void {
    const w = this.current(readySeen);
    if (w) w.rowsReturned++;
  }

  onCopyOut(readySeen: number): void {
    const w = this.current(readySeen);
    if (w) w.copyOut = true;
  }

  /** `tag` is the CommandComplete command tag, e.g. "UPDATE 3", "INSERT 0 5", "COPY 10". */
  onCommandComplete(readySeen: number, tag: string): void {
    const w = this.current(readySeen);
    if (!w) return;
    const sp = tag.indexOf(' ');
    if (sp < 0) return;
    const verb = tag.slice(0, sp);
    const count = Number(tag.slice(tag.lastIndexOf(' ') + 1));
    if (!Number.isSafeInteger(count)) return;
    if (AFFECTING.has(verb)) w.rowsAffected += count;
    else if (verb === 'COPY') {
      if (w.copyOut) w.rowsReturned += count;
      else w.rowsAffected += count;
      w.copyOut = false;
    }
  }

  onError(readySeen: number, sqlstate: string): void {
    const w = this.current(readySeen);
    if (w && w.sqlstate === undefined) w.sqlstate = sqlstate;
  }

  onReady(readySeen: number): void {
    this.watched.finish(readySeen, report);
  }

  /** The connection ended: whatever was still running ended with it. */
  abandon(sqlstate: string): void {
    this.watched.drain((w) => {
      w.sqlstate ??= sqlstate;
      report(w);
    });
  }
}

function report(w: Watched): void {
  w.done({
    durationMs: Math.round((performance.now() - w.started) * 1000) / 1000,
    rowsReturned: w.rowsReturned,
    rowsAffected: w.rowsAffected,
    ...(w.sqlstate !== undefined ? { sqlstate: w.sqlstate } : {}),
  });
}
