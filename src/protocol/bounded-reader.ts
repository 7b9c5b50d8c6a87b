import { isUtf8 } from 'node:buffer';
import { ProtocolViolation } from './protocol-violation.js';

/**
 * A reader over one message body that refuses to read past its end.
 *
 * pg-protocol's BufferReader is built for trusted server output: its cstring() scans past the end
 * of the buffer when the terminator is missing. Client input is hostile, so every read here is
 * bounds-checked and a short or unterminated field is a protocol violation.
 */
export class BoundedReader {
  private offset: number;

  constructor(
    private readonly buf: Buffer,
    start: number,
    private readonly end: number = buf.length,
  ) {
    this.offset = start;
  }

  get remaining(): number {
    return this.end - this.offset;
  }

  private need(n: number, what: string): void {
    if (n < 0 || this.offset + n > this.end) throw new ProtocolViolation(`message too short: missing ${what}`);
  }

  byte(what: string): number {
    this.need(1, what);
    return this.buf[this.offset++]!;
  }

  int16(what: string): number {
    this.need(2, what);
    const v = this.buf.readInt16BE(this.offset);
    this.offset += 2;
    return v;
  }

  int32(what: string): number {
    this.need(4, what);
    const v = this.buf.readInt32BE(this.offset);
    this.offset += 4;
    return v;
  }

  /** A NUL-terminated string, decoded as UTF-8. */
  cstring(what: string): string {
    return this.cstringBytes(what).toString('utf8');
  }

  /** The bytes of a NUL-terminated string (a view), consuming the terminator. */
  private cstringBytes(what: string): Buffer {
    const nul = this.buf.indexOf(0, this.offset);
    if (nul < 0 || nul >= this.end) throw new ProtocolViolation(`invalid string in message: unterminated ${what}`);
    const bytes = this.buf.subarray(this.offset, nul);
    this.offset = nul + 1;
    return bytes;
  }

  /**
   * A NUL-terminated string plus whether its bytes are valid UTF-8. Invalid bytes would be
   * decoded to U+FFFD here while the server sees the raw bytes: SQL text must be checked so that
   * the firewall never judges a different string from the one the server would run.
   */
  cstringUtf8(what: string): { text: string; valid: boolean } {
    const bytes = this.cstringBytes(what);
    return { text: bytes.toString('utf8'), valid: isUtf8(bytes) };
  }

  /** n raw bytes as a view (no copy). */
  bytes(n: number, what: string): Buffer {
    this.need(n, what);
    const v = this.buf.subarray(this.offset, this.offset + n);
    this.offset += n;
    return v;
  }

  /** A count field: non-negative and small enough that `each` bytes per item could still fit. */
  count(what: string, minBytesEach: number): number {
    // Counts are unsigned Int16 on the wire (PostgreSQL reads them with pq_getmsgint(msg, 2)).
    this.need(2, what);
    const n = this.buf.readUInt16BE(this.offset);
    this.offset += 2;
    if (n * minBytesEach > this.remaining) throw new ProtocolViolation(`invalid ${what}: ${n}`);
    return n;
  }

  /** Every message must be consumed exactly; trailing bytes mean a framing mismatch. */
  finish(message: string): void {
    if (this.offset !== this.end) throw new ProtocolViolation(`invalid message format: trailing bytes in ${message}`);
  }
}
