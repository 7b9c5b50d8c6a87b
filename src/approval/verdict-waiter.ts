import type { Logger } from '../logger.js';
import type { ApprovalEvent, ApprovalEvents } from './approval-store.js';

/**
 * Wakes holders when their request changes state, on any instance: one subscription per
 * process to the store's events (Redis pub/sub on the events channel, or in-process for the
 * memory store), dispatching by request id.
 *
 * A notification only says "look again"; the store's record is the truth. Pub/sub loses
 * messages while the subscriber reconnects, so holders also look again every `pollMs`.
 */
/** Why a holder woke: its request changed, the poll interval or the deadline came, or the agent left. */
export type WakeReason = 'changed' | 'timeout' | 'aborted';

export class VerdictWaiter {
  private readonly waiting = new Map<string, Set<() => void>>();
  private readonly ready: Promise<void>;

  constructor(
    private readonly events: ApprovalEvents,
    log: Logger,
    private readonly pollMs = 1000,
  ) {
    this.ready = events.subscribe((event) => this.onEvent(event)).then(
      () => undefined,
      (err: unknown) => log.warn({ message: (err as Error).message }, 'approval events subscription failed; holders poll instead'),
    );
  }

  /** Resolves once the subscription is in place (tests and start-up ordering). */
  whenReady(): Promise<void> {
    return this.ready;
  }

  private onEvent(event: ApprovalEvent): void {
    const set = this.waiting.get(event.id);
    if (set) for (const wake of [...set]) wake();
  }

  /**
   * Waits until request `id` changes, the poll interval passes or `deadline` (ms since the
   * epoch) is reached ('timeout'), or `signal` aborts; says which.
   */
  next(id: string, deadline: number, signal: AbortSignal): Promise<WakeReason> {
    if (signal.aborted) return Promise.resolve('aborted');
    return new Promise((resolve) => {
      let set = this.waiting.get(id);
      if (!set) this.waiting.set(id, (set = new Set()));
      const holders = set;
      const done = (reason: WakeReason): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        holders.delete(wake);
        if (holders.size === 0 && this.waiting.get(id) === holders) this.waiting.delete(id);
        resolve(reason);
      };
      const onAbort = () => done('aborted');
      const wake = () => done('changed');
      const timer = setTimeout(() => done('timeout'), Math.max(0, Math.min(this.pollMs, deadline - Date.now())));
      holders.add(wake);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  get holders(): number {
    return this.waiting.size;
  }

  close(): void {
    this.events.close();
  }
}
