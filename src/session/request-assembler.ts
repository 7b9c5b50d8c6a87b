import type { Frame } from '../protocol/framer.js';
import type { FrontendMessage } from '../protocol/frontend.js';
import type { ReceivedMessage, Request } from './request.js';

/**
 * Groups decoded frontend messages into requests (pure, no I/O).
 *
 * - Query and FunctionCall are requests of their own.
 * - Parse/Bind/Describe/Execute/Close accumulate until Sync or Flush ("Extended Query": the
 *   server only answers at those points, so nothing is lost by waiting for them).
 * - A batch that grows past `maxBatchBytes` without Sync is judged and released in parts, so a
 *   long JDBC batch neither deadlocks nor grows memory without bound; every part is still judged.
 * - CopyData/CopyDone/CopyFail pass as 'copy-data' requests in arrival order.
 */
export class RequestAssembler {
  private pending: ReceivedMessage[] = [];
  private pendingBytes = 0;

  constructor(private readonly maxBatchBytes: number) {}

  /** Adds one message; returns the requests it completes, in order (usually zero or one). */
  add(frame: Frame, msg: FrontendMessage): Request[] {
    const received: ReceivedMessage = { frame, msg };
    switch (msg.type) {
      case 'Parse':
      case 'Bind':
      case 'Describe':
      case 'Execute':
      case 'Close':
        this.pending.push(received);
        this.pendingBytes += frame.bytes.length;
        return this.pendingBytes > this.maxBatchBytes ? [this.cut('partial')] : [];
      case 'Sync':
      case 'Flush':
        this.pending.push(received);
        this.pendingBytes += frame.bytes.length;
        return [this.cut(msg.type)];
      case 'Query':
        return this.withPending({ kind: 'simple', messages: [received], end: 'none', bytes: frame.bytes.length });
      case 'FunctionCall':
        return this.withPending({ kind: 'function-call', messages: [received], end: 'none', bytes: frame.bytes.length });
      case 'CopyData':
      case 'CopyDone':
      case 'CopyFail':
        return this.withPending({ kind: 'copy-data', messages: [received], end: 'none', bytes: frame.bytes.length });
      case 'Terminate':
      case 'AuthResponse':
        // Handled by the session before assembly; unsynced messages before Terminate are dropped.
        return [];
    }
  }

  /** Messages buffered without a Sync yet (dropped if the client terminates). */
  get pendingCount(): number {
    return this.pending.length;
  }

  private withPending(req: Request): Request[] {
    return this.pending.length > 0 ? [this.cut('partial'), req] : [req];
  }

  private cut(end: Request['end']): Request {
    const req: Request = { kind: 'extended', messages: this.pending, end, bytes: this.pendingBytes };
    this.pending = [];
    this.pendingBytes = 0;
    return req;
  }
}
