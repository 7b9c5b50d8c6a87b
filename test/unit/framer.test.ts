import { describe, expect, it } from 'vitest';
import { MAX_STARTUP_PACKET_BYTES } from '../../src/protocol/codes.js';
import { Framer, type Frame, type FramingMode } from '../../src/protocol/framer.js';
import { ProtocolViolation } from '../../src/protocol/protocol-violation.js';
import { fe, gssEncRequest, sslRequest, startupPacket, typed, typedHeader } from '../helpers/wire.js';

const MAX = 1024 * 1024;

interface ExpectedFrame {
  readonly mode: FramingMode;
  readonly bytes: Buffer;
}

interface Fixture {
  readonly name: string;
  readonly frames: readonly ExpectedFrame[];
}

const typedFrames = (...messages: Buffer[]): ExpectedFrame[] => messages.map((bytes) => ({ mode: 'typed', bytes }));

const copyPayload = Buffer.alloc(20_000);
for (let i = 0; i < copyPayload.length; i++) copyPayload[i] = (i * 31 + 7) & 0xff;

const fixtures: Fixture[] = [
  {
    name: 'a realistic session stream (GSSENC and SSL refused, startup, simple and extended queries, terminate)',
    frames: [
      { mode: 'startup', bytes: gssEncRequest() },
      { mode: 'startup', bytes: sslRequest() },
      { mode: 'startup', bytes: fe.startup({ user: 'agent', database: 'shop', application_name: 'pgwarden-test' }) },
      ...typedFrames(
        fe.password('not-a-real-password'),
        fe.query('SELECT 1; SELECT 2'),
        fe.query(''),
        fe.parse('SELECT * FROM t WHERE id = $1', 's1', [23]),
        fe.bind({ statement: 's1', values: ['42'] }),
        fe.execute(),
        fe.sync(),
        fe.end(),
      ),
    ],
  },
  {
    name: 'an extended batch Parse/Bind/Describe/Execute/Sync',
    frames: typedFrames(
      fe.parse('SELECT $1::int + $2::int, $3::text', '', [23, 23, 25]),
      fe.bind({ values: ['1', null, Buffer.from([0, 1, 2, 3])] }),
      fe.describe('P'),
      fe.execute('', 100),
      fe.sync(),
    ),
  },
  {
    name: 'a large CopyData message between small ones',
    frames: typedFrames(fe.copyData(Buffer.from('1\tone\n')), fe.copyData(copyPayload), fe.copyDone()),
  },
];

/** Feeds chunks in order, reading frames after every push; switches mode per expected frame. */
function frameAll(fixture: Fixture, chunks: readonly Buffer[]): Frame[] {
  const framer = new Framer(MAX, fixture.frames[0]?.mode ?? 'typed');
  const out: Frame[] = [];
  for (const chunk of chunks) {
    framer.push(chunk);
    for (;;) {
      const expected = fixture.frames[out.length];
      if (expected === undefined) break;
      framer.mode = expected.mode;
      const frame = framer.next();
      if (frame === null) break;
      out.push(frame);
    }
  }
  if (framer.pendingBytes !== 0) throw new Error(`framer kept ${framer.pendingBytes} bytes`);
  return out;
}

/** Describes every difference between the frames produced and the frames expected. */
function mismatches(fixture: Fixture, frames: readonly Frame[], label: string): string[] {
  const problems: string[] = [];
  if (frames.length !== fixture.frames.length) {
    problems.push(`${label}: ${frames.length} frames instead of ${fixture.frames.length}`);
  }
  fixture.frames.forEach((expected, i) => {
    const frame = frames[i];
    if (frame === undefined) return;
    const tag = expected.mode === 'typed' ? expected.bytes[0] : 0;
    if (frame.tag !== tag) problems.push(`${label}: frame ${i} has tag ${frame.tag}, expected ${tag}`);
    if (!frame.bytes.equals(expected.bytes)) problems.push(`${label}: frame ${i} bytes differ`);
    const bodyOffset = expected.mode === 'typed' ? 5 : 4;
    if (frame.bodyOffset !== bodyOffset) problems.push(`${label}: frame ${i} bodyOffset ${frame.bodyOffset}`);
  });
  return problems;
}

function violation(fn: () => unknown): ProtocolViolation {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ProtocolViolation);
    return err as ProtocolViolation;
  }
  throw new Error('expected a ProtocolViolation, but nothing was thrown');
}

describe('Framer: every byte-boundary split yields the same frames', () => {
  for (const fixture of fixtures) {
    const stream = Buffer.concat(fixture.frames.map((f) => f.bytes));

    it(`${fixture.name}: whole stream in one chunk`, () => {
      expect(mismatches(fixture, frameAll(fixture, [stream]), 'one chunk')).toEqual([]);
    });

    it(`${fixture.name}: split into two chunks at every byte boundary`, () => {
      const problems: string[] = [];
      for (let at = 1; at < stream.length; at++) {
        const frames = frameAll(fixture, [stream.subarray(0, at), stream.subarray(at)]);
        problems.push(...mismatches(fixture, frames, `split at ${at}`));
        if (problems.length > 20) break;
      }
      expect(problems).toEqual([]);
    });

    it(`${fixture.name}: fed one byte at a time`, () => {
      const chunks: Buffer[] = [];
      for (let i = 0; i < stream.length; i++) chunks.push(stream.subarray(i, i + 1));
      expect(mismatches(fixture, frameAll(fixture, chunks), 'byte by byte')).toEqual([]);
    });

    it(`${fixture.name}: split into three chunks around every message header`, () => {
      // Cuts inside the tag/length header of each message, where the framer must peek across chunks.
      const problems: string[] = [];
      let start = 0;
      for (const frame of fixture.frames) {
        for (let a = start + 1; a < start + 6 && a < stream.length; a++) {
          for (let b = a + 1; b < start + 7 && b < stream.length; b++) {
            const chunks = [stream.subarray(0, a), stream.subarray(a, b), stream.subarray(b)];
            problems.push(...mismatches(fixture, frameAll(fixture, chunks), `split at ${a},${b}`));
          }
        }
        start += frame.bytes.length;
      }
      expect(problems).toEqual([]);
    });
  }
});

describe('Framer: zero-copy and buffering', () => {
  it('returns frames that lie inside one chunk as views of that chunk (no copy)', () => {
    const messages = [fe.query('SELECT 1'), fe.parse('SELECT 2'), fe.sync()];
    const chunk = Buffer.concat(messages);
    const framer = new Framer(MAX);
    framer.push(chunk);
    let offset = 0;
    for (const message of messages) {
      const frame = framer.next();
      expect(frame).not.toBeNull();
      expect(frame?.bytes.buffer).toBe(chunk.buffer);
      expect(frame?.bytes.byteOffset).toBe(chunk.byteOffset + offset);
      expect(frame?.bytes.equals(message)).toBe(true);
      offset += message.length;
    }
    expect(framer.next()).toBeNull();
  });

  it('returns a startup packet inside one chunk as a view of that chunk', () => {
    const chunk = fe.startup({ user: 'u' });
    const framer = new Framer(MAX, 'startup');
    framer.push(chunk);
    const frame = framer.next();
    expect(frame?.bytes.buffer).toBe(chunk.buffer);
    expect(frame?.bytes.byteOffset).toBe(chunk.byteOffset);
  });

  it('copies a frame split across chunks into a buffer of exactly its size', () => {
    const message = fe.query('SELECT 42');
    // Buffer.alloc gives each chunk its own memory (Buffer.from would use the shared pool).
    const a = Buffer.alloc(7);
    message.copy(a, 0, 0, 7);
    const b = Buffer.alloc(message.length - 7);
    message.copy(b, 0, 7);
    const framer = new Framer(MAX);
    framer.push(a);
    expect(framer.next()).toBeNull();
    framer.push(b);
    const frame = framer.next();
    expect(frame?.bytes.equals(message)).toBe(true);
    expect(frame?.bytes.length).toBe(message.length);
    expect(frame?.bytes.buffer).not.toBe(a.buffer);
    expect(frame?.bytes.buffer).not.toBe(b.buffer);
  });

  it('a copied frame does not change when the received chunks are reused afterwards', () => {
    const message = fe.query('SELECT 42');
    const a = Buffer.from(message.subarray(0, 3));
    const b = Buffer.from(message.subarray(3));
    const framer = new Framer(MAX);
    framer.push(a);
    framer.push(b);
    const frame = framer.next();
    a.fill(0xee);
    b.fill(0xee);
    expect(frame?.bytes.equals(message)).toBe(true);
  });

  it('returns null until the header and then the whole body have arrived', () => {
    const message = fe.query('SELECT 1');
    const framer = new Framer(MAX);
    framer.push(message.subarray(0, 4));
    expect(framer.next()).toBeNull();
    framer.push(message.subarray(4, message.length - 1));
    expect(framer.next()).toBeNull();
    expect(framer.pendingBytes).toBe(message.length - 1);
    framer.push(message.subarray(message.length - 1));
    expect(framer.next()?.bytes.equals(message)).toBe(true);
    expect(framer.pendingBytes).toBe(0);
    expect(framer.next()).toBeNull();
  });

  it('ignores empty chunks', () => {
    const message = fe.sync();
    const framer = new Framer(MAX);
    framer.push(Buffer.alloc(0));
    framer.push(message.subarray(0, 2));
    framer.push(Buffer.alloc(0));
    framer.push(message.subarray(2));
    expect(framer.pendingBytes).toBe(5);
    expect(framer.next()?.bytes.equals(message)).toBe(true);
  });

  it('keeps the bytes after a frame for the next call, across a mode switch', () => {
    const startup = fe.startup({ user: 'u', database: 'd' });
    const query = fe.query('SELECT 1');
    const framer = new Framer(MAX, 'startup');
    framer.push(Buffer.concat([startup, query]));
    const first = framer.next();
    expect(first?.tag).toBe(0);
    expect(first?.bytes.equals(startup)).toBe(true);
    expect(framer.pendingBytes).toBe(query.length);
    framer.mode = 'typed';
    const second = framer.next();
    expect(second?.tag).toBe(0x51);
    expect(second?.bytes.equals(query)).toBe(true);
  });

  it('accepts the smallest typed message (length 4, no body)', () => {
    const framer = new Framer(MAX);
    framer.push(typedHeader('S', 4));
    const frame = framer.next();
    expect(frame?.bytes.length).toBe(5);
    expect(frame?.tag).toBe(0x53);
  });

  it('accepts a typed message of exactly the maximum size', () => {
    const framer = new Framer(1024);
    const message = typed('d', Buffer.alloc(1020));
    expect(message.readInt32BE(1)).toBe(1024);
    framer.push(message);
    expect(framer.next()?.bytes.length).toBe(1025);
  });

  it('accepts startup packets of 8 and of MAX_STARTUP_PACKET_BYTES bytes', () => {
    const framer = new Framer(MAX, 'startup');
    const smallest = sslRequest();
    const largest = startupPacket(196608, Buffer.alloc(MAX_STARTUP_PACKET_BYTES - 8));
    expect(smallest.length).toBe(8);
    expect(largest.length).toBe(MAX_STARTUP_PACKET_BYTES);
    framer.push(Buffer.concat([smallest, largest]));
    expect(framer.next()?.bytes.length).toBe(8);
    expect(framer.next()?.bytes.length).toBe(MAX_STARTUP_PACKET_BYTES);
  });
});

describe('Framer: invalid lengths are protocol violations', () => {
  for (const length of [0, 1, 3, -1, -2147483648]) {
    it(`rejects a typed message whose length field is ${length} (below 4) with 08P01`, () => {
      const framer = new Framer(MAX);
      framer.push(typedHeader('Q', length));
      const err = violation(() => framer.next());
      expect(err.sqlstate).toBe('08P01');
    });
  }

  it('rejects a typed message longer than maxMessageBytes with 54000 as soon as the header arrives', () => {
    const framer = new Framer(1024);
    framer.push(typedHeader('d', 1025));
    const err = violation(() => framer.next());
    expect(err.sqlstate).toBe('54000');
  });

  it('rejects an oversized typed message whose header is split across chunks', () => {
    const framer = new Framer(4096);
    const header = typedHeader('Q', 0x7fffffff);
    framer.push(header.subarray(0, 2));
    expect(framer.next()).toBeNull();
    framer.push(header.subarray(2));
    const err = violation(() => framer.next());
    expect(err.sqlstate).toBe('54000');
  });

  it('rejects an oversized message that follows valid ones in the same chunk, after returning them', () => {
    const framer = new Framer(1024);
    const ok = fe.query('SELECT 1');
    framer.push(Buffer.concat([ok, typedHeader('d', 5000)]));
    expect(framer.next()?.bytes.equals(ok)).toBe(true);
    expect(violation(() => framer.next()).sqlstate).toBe('54000');
  });

  for (const length of [0, 4, 7, -1, MAX_STARTUP_PACKET_BYTES + 1, 0x7fffffff]) {
    it(`rejects a startup packet whose length field is ${length}`, () => {
      const framer = new Framer(MAX, 'startup');
      const header = Buffer.alloc(8);
      header.writeInt32BE(length, 0);
      header.writeInt32BE(196608, 4);
      framer.push(header);
      const err = violation(() => framer.next());
      expect(err.sqlstate).toBe('08P01');
    });
  }

  it('rejects an invalid startup length split across chunks', () => {
    const framer = new Framer(MAX, 'startup');
    const header = Buffer.alloc(4);
    header.writeInt32BE(3, 0);
    framer.push(header.subarray(0, 1));
    framer.push(header.subarray(1, 3));
    expect(framer.next()).toBeNull();
    framer.push(header.subarray(3));
    violation(() => framer.next());
  });

  it('uses the startup limit, not maxMessageBytes, in startup mode', () => {
    const framer = new Framer(64 * 1024 * 1024, 'startup');
    framer.push(startupPacket(196608, Buffer.alloc(MAX_STARTUP_PACKET_BYTES)));
    violation(() => framer.next());
  });
});
