import type { Frame } from '../protocol/framer.js';
import type { FrontendMessage } from '../protocol/frontend.js';

/**
 * A request is the unit that gets judged: one simple Query, one extended-protocol batch (up to
 * Sync or Flush), one fast-path FunctionCall, or COPY FROM STDIN data. Judging whole batches
 * (pgdog's Client::buffer) means a Bind can never run a statement that was not judged with it
 * or before it.
 */
export type RequestKind = 'simple' | 'extended' | 'function-call' | 'copy-data';

export interface ReceivedMessage {
  readonly frame: Frame;
  readonly msg: FrontendMessage;
}

export interface Request {
  readonly kind: RequestKind;
  readonly messages: readonly ReceivedMessage[];
  /**
   * How an extended batch ended: 'Sync' (the server will answer ReadyForQuery), 'Flush', or
   * 'partial' when it was cut at a boundary (size limit, or a message that starts another request).
   */
  readonly end: 'Sync' | 'Flush' | 'partial' | 'none';
  /** Sum of message sizes: what holding this request costs in memory. */
  readonly bytes: number;
}
