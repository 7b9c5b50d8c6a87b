import type { Socket } from 'node:net';

/**
 * Collects the buffers to write to one socket while a received chunk is processed, merging
 * adjacent views of the same underlying memory, so that forwarding an unchanged chunk costs one
 * write of the original bytes (no copy) and a chunk with a rewritten message costs one writev.
 */
export class OutputBatch {
  private parts: Buffer[] = [];
  private bytes = 0;
  /** The run being extended: a view is only created when the run ends (no allocation per message). */
  private run: Buffer | null = null;
  private runEnd = 0;

  get length(): number {
    return this.bytes;
  }

  push(buf: Buffer): void {
    if (buf.length === 0) return;
    this.bytes += buf.length;
    const run = this.run;
    if (run !== null && run.buffer === buf.buffer && run.byteOffset + this.runEnd === buf.byteOffset) {
      this.runEnd += buf.length;
      return;
    }
    this.closeRun();
    this.run = buf;
    this.runEnd = buf.length;
  }

  private closeRun(): void {
    const run = this.run;
    if (run === null) return;
    this.parts.push(this.runEnd === run.length ? run : Buffer.from(run.buffer, run.byteOffset, this.runEnd));
    this.run = null;
  }

  private drain(): Buffer[] {
    this.closeRun();
    const parts = this.parts;
    this.parts = [];
    this.bytes = 0;
    return parts;
  }

  /** Writes everything collected; returns false when the socket asks the writer to wait for 'drain'. */
  flushTo(socket: Socket): boolean {
    if (this.bytes === 0) return true;
    const parts = this.drain();
    if (parts.length === 1) return socket.write(parts[0]!);
    socket.cork();
    let ok = true;
    for (const p of parts) ok = socket.write(p) && ok;
    socket.uncork();
    return ok;
  }

  /** The collected bytes as one buffer. */
  take(): Buffer {
    const bytes = this.bytes;
    const parts = this.drain();
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, bytes);
  }
}
