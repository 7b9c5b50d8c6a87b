import { BackendTag } from '../protocol/codes.js';
import { redactMessage } from '../masking/redact-messages.js';
import type { AnswerMasker } from './decision.js';
import { ReadyWindows } from './ready-windows.js';

/**
 * The answers of masked requests, between their ReadyForQuery numbers (see ReadyWindows). Every
 * RowDescription, DataRow, ErrorResponse and NoticeResponse in such a window goes through the
 * request's AnswerMasker.
 *
 * An Execute of a statement described in an earlier request gets no RowDescription, so the
 * session forwards a Describe (portal) of its own right before it; its answer (RowDescription or
 * NoData) plans the masks and is swallowed here, since the client did not ask for it. The
 * client's own describes are answered as usual (their RowDescription rewritten), so what the
 * client cached always names masked columns as text.
 */
interface MaskWindow {
  from: number;
  to: number;
  masker: AnswerMasker;
  /** The describes forwarded in this request, in order: the client's, or injected. */
  describes: ('client' | 'injected')[];
  done: (masker: AnswerMasker) => void;
}

export class MaskWindows {
  private readonly windows = new ReadyWindows<MaskWindow>();

  get idle(): boolean {
    return this.windows.idle;
  }

  track(masker: AnswerMasker, from: number, to: number, describes: ('client' | 'injected')[], done: (m: AnswerMasker) => void): void {
    this.windows.add({ from, to, masker, describes, done });
  }

  onReady(readySeen: number): void {
    this.windows.finish(readySeen, (w) => w.done(w.masker));
  }

  drain(): void {
    this.windows.drain((w) => w.done(w.masker));
  }

  /**
   * A server message: undefined when no masked request is being answered (forward as usual),
   * null to swallow it, else the bytes to forward instead.
   */
  onFrame(readySeen: number, tag: number, bytes: Buffer): Buffer | null | undefined {
    const w = this.windows.current(readySeen);
    if (!w) return undefined;
    switch (tag) {
      case BackendTag.RowDescription: {
        const source = w.describes.length > 0 ? w.describes.shift() : undefined;
        const out = w.masker.onRowDescription(bytes);
        return source === 'injected' ? null : out;
      }
      case BackendTag.NoData: {
        const source = w.describes.shift();
        w.masker.clearPlan();
        return source === 'injected' ? null : bytes;
      }
      case BackendTag.DataRow:
        return w.masker.onDataRow(bytes);
      case BackendTag.CommandComplete:
      case BackendTag.EmptyQueryResponse:
      case BackendTag.PortalSuspended:
        w.masker.endResult();
        return bytes;
      case BackendTag.ErrorResponse:
        // The server skips to Sync: no answers to the remaining describes.
        w.describes.length = 0;
        w.masker.endResult();
        return redactMessage(bytes);
      case BackendTag.NoticeResponse:
        return redactMessage(bytes);
      case BackendTag.CopyOutResponse:
        return w.masker.onCopyOut(bytes);
      case BackendTag.CopyData:
        return w.masker.onCopyData(bytes);
      case BackendTag.CopyDone:
        return w.masker.onCopyDone(bytes);
      default:
        return bytes;
    }
  }
}
