/**
 * Bookkeeping shared by everything that follows a forwarded request's answer (row caps, outcome
 * tracking): each request is answered between two ReadyForQuery numbers, `from` (the count seen
 * when it was forwarded) and `to` (the count once its last ReadyForQuery arrived). Requests are
 * answered in order, so only the oldest window can be current.
 */
export interface ReadyWindow {
  from: number;
  to: number;
}

export class ReadyWindows<T extends ReadyWindow> {
  private items: T[] = [];

  get idle(): boolean {
    return this.items.length === 0;
  }

  add(item: T): void {
    this.items.push(item);
  }

  /** The window the server is answering now, given how many ReadyForQuery arrived so far. */
  current(readySeen: number): T | undefined {
    const c = this.items[0];
    return c && readySeen >= c.from && readySeen < c.to ? c : undefined;
  }

  /** Hands every window whose last ReadyForQuery arrived to `done`, oldest first. */
  finish(readySeen: number, done: (item: T) => void): void {
    while (this.items[0] && readySeen >= this.items[0].to) done(this.items.shift()!);
  }

  /** Hands every remaining window to `done` (the connection ended). */
  drain(done: (item: T) => void): void {
    for (const item of this.items.splice(0)) done(item);
  }
}
