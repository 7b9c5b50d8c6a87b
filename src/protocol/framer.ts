import { MAX_STARTUP_PACKET_BYTES } from './codes.js';
import { ProtocolViolation } from './protocol-violation.js';

/**
 * Splits a byte stream into whole protocol messages.
 *
 * Two framings exist ("Message Formats"): the untyped startup packets (Int32 length, then body:
 * StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) and typed messages (Byte1 tag, Int32
 * length counting itself, then body). The caller switches `mode` between frames.
 *
 * Cost model: a frame that lies inside one received chunk is returned as a zero-copy view of it;
 * a frame split across chunks is copied exactly once, into a buffer of its final size, so a
 * 64 MiB message arriving in 64 KiB reads costs one copy, not a quadratic number of concats.
 */
export type FramingMode = 'startup' | 'typed';

export interface Frame {
  /** Tag byte for typed messages; 0 for startup packets. */
  readonly tag: number;
  /** The whole message as received (tag and length included): what gets forwarded. */
  readonly bytes: Buffer;
  /** Offset of the body within `bytes` (5 for typed, 4 for startup). */
  readonly bodyOffset: number;
}

export class Framer {
  mode: FramingMode;
  private chunks: Buffer[] = [];
  /** Read offset into chunks[0]. */
  private head = 0;
  private buffered = 0;

  constructor(
    private readonly maxMessageBytes: number,
    mode: FramingMode = 'typed',
    /**
     * For client input: the largest length a tag may declare, or null for a tag that does not
     * exist. Checked on the header, before any body is buffered, as PostgreSQL's SocketBackend
     * does: an unknown type or a Sync claiming megabytes is refused at once.
     */
    private readonly typedLimit?: (tag: number) => number | null,
  ) {
    this.mode = mode;
  }

  /** Bytes received but not yet returned as frames. */
  get pendingBytes(): number {
    return this.buffered;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /**
   * The next complete frame, or null when more bytes are needed.
   * Throws ProtocolViolation for a length no valid message can have.
   */
  next(): Frame | null {
    const typed = this.mode === 'typed';
    const headerLen = typed ? 5 : 4;
    if (this.buffered < headerLen) return null;
    const first = this.chunks[0]!;
    let tag = 0;
    let length: number;
    if (first.length - this.head >= headerLen) {
      if (typed) {
        tag = first[this.head]!;
        length = first.readInt32BE(this.head + 1);
      } else {
        length = first.readInt32BE(this.head);
      }
    } else {
      const header = this.peek(headerLen);
      if (typed) {
        tag = header[0]!;
        length = header.readInt32BE(1);
      } else {
        length = header.readInt32BE(0);
      }
    }
    let total: number;
    if (typed) {
      if (this.typedLimit) {
        const limit = this.typedLimit(tag);
        if (limit === null) throw new ProtocolViolation(`invalid frontend message type ${tag}`);
        if (length > limit && limit < this.maxMessageBytes) {
          throw new ProtocolViolation(`invalid message length ${length} for message type "${String.fromCharCode(tag)}"`);
        }
      }
      // The length counts itself (4 bytes) but not the tag.
      if (length < 4) throw new ProtocolViolation(`invalid message length ${length}`);
      if (length > this.maxMessageBytes) {
        throw new ProtocolViolation(
          `message of ${length} bytes exceeds the maximum message size of ${this.maxMessageBytes} bytes`,
          '54000',
        );
      }
      total = length + 1;
    } else {
      // A startup packet holds at least the Int32 request code.
      if (length < 8 || length > MAX_STARTUP_PACKET_BYTES) {
        throw new ProtocolViolation(`invalid length of startup packet (${length} bytes)`);
      }
      total = length;
    }
    if (this.buffered < total) return null;
    const bytes = this.take(total);
    return { tag, bytes, bodyOffset: headerLen };
  }

  /** Copies the first n buffered bytes without consuming them (n is small: a header). */
  private peek(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let offset = this.head;
    for (const chunk of this.chunks) {
      const copied = chunk.copy(out, filled, offset, Math.min(chunk.length, offset + n - filled));
      filled += copied;
      offset = 0;
      if (filled === n) break;
    }
    return out;
  }

  /** Consumes n bytes: a view when they lie in one chunk, else one copy. */
  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    this.buffered -= n;
    if (first.length - this.head >= n) {
      const view = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) {
        this.chunks.shift();
        this.head = 0;
      }
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0]!;
      const want = n - filled;
      const available = chunk.length - this.head;
      if (available <= want) {
        chunk.copy(out, filled, this.head);
        filled += available;
        this.chunks.shift();
        this.head = 0;
      } else {
        chunk.copy(out, filled, this.head, this.head + want);
        this.head += want;
        filled += want;
      }
    }
    return out;
  }
}
