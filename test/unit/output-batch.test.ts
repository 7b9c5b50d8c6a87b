import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { OutputBatch } from '../../src/session/output-batch.js';

/** Records what a socket would see; `accept` decides what each write() returns. */
class FakeSocket {
  readonly calls: string[] = [];
  readonly writes: Buffer[] = [];
  corked = 0;
  constructor(private readonly accept: (n: number) => boolean = () => true) {}
  write(chunk: Buffer): boolean {
    this.calls.push('write');
    this.writes.push(chunk);
    return this.accept(this.writes.length);
  }
  cork(): void {
    this.calls.push('cork');
    this.corked++;
  }
  uncork(): void {
    this.calls.push('uncork');
    this.corked--;
  }
  get written(): Buffer {
    return Buffer.concat(this.writes);
  }
  asSocket(): Socket {
    return this as unknown as Socket;
  }
}

/** A buffer with its own memory (not from the shared pool) filled with a recognisable pattern. */
function ownBuffer(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

describe('OutputBatch', () => {
  it('merges adjacent views of one buffer into a single write of the original memory', () => {
    const chunk = ownBuffer(100);
    const batch = new OutputBatch();
    batch.push(chunk.subarray(0, 10));
    batch.push(chunk.subarray(10, 45));
    batch.push(chunk.subarray(45, 100));
    expect(batch.length).toBe(100);
    const socket = new FakeSocket();
    expect(batch.flushTo(socket.asSocket())).toBe(true);
    expect(socket.writes).toHaveLength(1);
    expect(socket.calls).toEqual(['write']);
    const [only] = socket.writes;
    expect(only?.buffer).toBe(chunk.buffer);
    expect(only?.byteOffset).toBe(chunk.byteOffset);
    expect(only?.equals(chunk)).toBe(true);
  });

  it('keeps non-adjacent views of one buffer separate (a message was dropped in between)', () => {
    const chunk = ownBuffer(30);
    const batch = new OutputBatch();
    batch.push(chunk.subarray(0, 10));
    batch.push(chunk.subarray(20, 30));
    const socket = new FakeSocket();
    batch.flushTo(socket.asSocket());
    expect(socket.writes).toHaveLength(2);
    expect(socket.written.equals(Buffer.concat([chunk.subarray(0, 10), chunk.subarray(20, 30)]))).toBe(true);
  });

  it('does not merge a view with one that precedes it in memory', () => {
    const chunk = ownBuffer(20);
    const batch = new OutputBatch();
    batch.push(chunk.subarray(10, 20));
    batch.push(chunk.subarray(0, 10));
    const out = batch.take();
    expect(out.equals(Buffer.concat([chunk.subarray(10, 20), chunk.subarray(0, 10)]))).toBe(true);
  });

  it('does not merge buffers from different memory', () => {
    const a = ownBuffer(8, 1);
    const b = ownBuffer(8, 2);
    const batch = new OutputBatch();
    batch.push(a);
    batch.push(b);
    const socket = new FakeSocket();
    batch.flushTo(socket.asSocket());
    expect(socket.writes).toEqual([a, b]);
  });

  it('splices a rewritten message between two runs of the original chunk, in order, under cork', () => {
    const chunk = ownBuffer(50);
    const rewritten = Buffer.from('REWRITTEN');
    const batch = new OutputBatch();
    batch.push(chunk.subarray(0, 10));
    batch.push(chunk.subarray(10, 20));
    batch.push(rewritten);
    batch.push(chunk.subarray(30, 40));
    batch.push(chunk.subarray(40, 50));
    const socket = new FakeSocket();
    batch.flushTo(socket.asSocket());
    expect(socket.calls).toEqual(['cork', 'write', 'write', 'write', 'uncork']);
    expect(socket.corked).toBe(0);
    expect(socket.writes.map((w) => w.length)).toEqual([20, 9, 20]);
    expect(socket.written.equals(Buffer.concat([chunk.subarray(0, 20), rewritten, chunk.subarray(30, 50)]))).toBe(true);
  });

  it('take() returns all bytes concatenated in push order and empties the batch', () => {
    const chunk = ownBuffer(40);
    const other = ownBuffer(5, 9);
    const batch = new OutputBatch();
    batch.push(chunk.subarray(0, 15));
    batch.push(chunk.subarray(15, 25));
    batch.push(other);
    batch.push(chunk.subarray(30, 40));
    const out = batch.take();
    expect(out.equals(Buffer.concat([chunk.subarray(0, 25), other, chunk.subarray(30, 40)]))).toBe(true);
    expect(out.length).toBe(40);
    expect(batch.length).toBe(0);
    expect(batch.take().length).toBe(0);
  });

  it('take() of one merged run is a view of the original memory (no copy)', () => {
    const chunk = ownBuffer(64);
    const batch = new OutputBatch();
    batch.push(chunk.subarray(0, 32));
    batch.push(chunk.subarray(32, 64));
    const out = batch.take();
    expect(out.buffer).toBe(chunk.buffer);
    expect(out.byteOffset).toBe(chunk.byteOffset);
    expect(out.length).toBe(64);
  });

  it('ignores empty buffers, even between adjacent views', () => {
    const chunk = ownBuffer(20);
    const batch = new OutputBatch();
    batch.push(chunk.subarray(0, 10));
    batch.push(Buffer.alloc(0));
    batch.push(chunk.subarray(10, 20));
    expect(batch.length).toBe(20);
    const socket = new FakeSocket();
    batch.flushTo(socket.asSocket());
    expect(socket.writes).toHaveLength(1);
    expect(socket.written.equals(chunk)).toBe(true);
  });

  it('writes nothing and reports ready when empty', () => {
    const socket = new FakeSocket();
    expect(new OutputBatch().flushTo(socket.asSocket())).toBe(true);
    expect(socket.calls).toEqual([]);
  });

  it('is empty after flushTo and can be reused', () => {
    const batch = new OutputBatch();
    const socket = new FakeSocket();
    batch.push(Buffer.from('abc'));
    batch.flushTo(socket.asSocket());
    expect(batch.length).toBe(0);
    batch.push(Buffer.from('def'));
    batch.flushTo(socket.asSocket());
    expect(socket.written.toString()).toBe('abcdef');
  });

  it('reports backpressure from a single write', () => {
    const batch = new OutputBatch();
    batch.push(Buffer.from('x'));
    expect(batch.flushTo(new FakeSocket(() => false).asSocket())).toBe(false);
  });

  it('reports backpressure when any of several writes asks to wait, and still writes them all', () => {
    const batch = new OutputBatch();
    batch.push(ownBuffer(3, 1));
    batch.push(ownBuffer(3, 2));
    batch.push(ownBuffer(3, 3));
    const socket = new FakeSocket((n) => n !== 1);
    expect(batch.flushTo(socket.asSocket())).toBe(false);
    expect(socket.writes).toHaveLength(3);
    expect(socket.calls.at(-1)).toBe('uncork');
  });

  it('writes exactly the pushed bytes for a random mix of views and new buffers', () => {
    const chunk = ownBuffer(4096, 3);
    for (let round = 0; round < 200; round++) {
      const batch = new OutputBatch();
      const expected: Buffer[] = [];
      let offset = 0;
      while (offset < chunk.length) {
        const len = 1 + ((round * 31 + offset * 17) % 300);
        const end = Math.min(chunk.length, offset + len);
        if ((offset + round) % 3 === 0) {
          const replacement = ownBuffer(end - offset, round);
          batch.push(replacement);
          expected.push(replacement);
        } else if ((offset + round) % 5 !== 0) {
          batch.push(chunk.subarray(offset, end));
          expected.push(chunk.subarray(offset, end));
        }
        offset = end;
      }
      const want = Buffer.concat(expected);
      expect(batch.length).toBe(want.length);
      const socket = new FakeSocket();
      batch.flushTo(socket.asSocket());
      expect(socket.written.equals(want)).toBe(true);
    }
  });
});
