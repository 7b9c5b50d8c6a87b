import { describe, expect, it } from 'vitest';
import { decodeFrontendMessage } from '../../src/protocol/frontend.js';
import { RequestAssembler } from '../../src/session/request-assembler.js';
import type { ReceivedMessage, Request } from '../../src/session/request.js';
import { fe, seededRandom, typedFrame } from '../helpers/wire.js';

function rx(message: Buffer): ReceivedMessage {
  const frame = typedFrame(message);
  return { frame, msg: decodeFrontendMessage(frame) };
}

/** Adds every message in order and returns all requests completed along the way. */
function feed(assembler: RequestAssembler, messages: readonly ReceivedMessage[]): Request[] {
  const out: Request[] = [];
  for (const m of messages) out.push(...assembler.add(m.frame, m.msg));
  return out;
}

const types = (req: Request | undefined): string[] => (req ? req.messages.map((m) => m.msg.type) : []);
const sizeOf = (messages: readonly ReceivedMessage[]): number => messages.reduce((n, m) => n + m.frame.bytes.length, 0);

const BIG = 1024 * 1024;

describe('RequestAssembler: simple protocol', () => {
  it('makes a Query a request of its own, immediately', () => {
    const q = rx(fe.query('SELECT 1'));
    const out = new RequestAssembler(BIG).add(q.frame, q.msg);
    expect(out).toHaveLength(1);
    expect(out[0]).toEqual({ kind: 'simple', messages: [q], end: 'none', bytes: q.frame.bytes.length });
  });

  it('keeps two Queries as two requests in order', () => {
    const a = rx(fe.query('SELECT 1'));
    const b = rx(fe.query('SELECT 2'));
    const out = feed(new RequestAssembler(BIG), [a, b]);
    expect(out.map((r) => r.messages[0])).toEqual([a, b]);
    expect(out.map((r) => r.kind)).toEqual(['simple', 'simple']);
  });
});

describe('RequestAssembler: extended protocol', () => {
  it('holds Parse/Bind/Describe/Execute and releases them with Sync as one request ending in Sync', () => {
    const assembler = new RequestAssembler(BIG);
    const batch = [
      rx(fe.parse('SELECT $1::int', 's1', [23])),
      rx(fe.bind({ statement: 's1', values: ['1'] })),
      rx(fe.describe('P')),
      rx(fe.execute()),
    ];
    for (const m of batch) {
      expect(assembler.add(m.frame, m.msg)).toEqual([]);
    }
    expect(assembler.pendingCount).toBe(4);
    const sync = rx(fe.sync());
    const out = assembler.add(sync.frame, sync.msg);
    expect(out).toHaveLength(1);
    expect(out[0]?.kind).toBe('extended');
    expect(out[0]?.end).toBe('Sync');
    expect(out[0]?.messages).toEqual([...batch, sync]);
    expect(out[0]?.bytes).toBe(sizeOf([...batch, sync]));
    expect(assembler.pendingCount).toBe(0);
  });

  it('holds Close with the batch', () => {
    const out = feed(new RequestAssembler(BIG), [rx(fe.close('S', 's1')), rx(fe.close('P', 'p1')), rx(fe.sync())]);
    expect(out).toHaveLength(1);
    expect(types(out[0])).toEqual(['Close', 'Close', 'Sync']);
  });

  it('ends a batch at Flush, and the next Sync starts a new request', () => {
    const out = feed(new RequestAssembler(BIG), [
      rx(fe.parse('SELECT 1')),
      rx(fe.bind()),
      rx(fe.execute()),
      rx(fe.flush()),
      rx(fe.sync()),
    ]);
    expect(out).toHaveLength(2);
    expect(out[0]?.end).toBe('Flush');
    expect(types(out[0])).toEqual(['Parse', 'Bind', 'Execute', 'Flush']);
    expect(out[1]?.end).toBe('Sync');
    expect(types(out[1])).toEqual(['Sync']);
  });

  it('releases a lone Sync as an extended request of one message', () => {
    const sync = rx(fe.sync());
    expect(new RequestAssembler(BIG).add(sync.frame, sync.msg)).toEqual([
      { kind: 'extended', messages: [sync], end: 'Sync', bytes: 5 },
    ]);
  });

  it('cuts unsynced extended messages as a partial batch before a Query', () => {
    const assembler = new RequestAssembler(BIG);
    const parse = rx(fe.parse('SELECT 1'));
    const bind = rx(fe.bind());
    const query = rx(fe.query('SELECT 2'));
    const out = feed(assembler, [parse, bind, query]);
    expect(out).toEqual([
      { kind: 'extended', messages: [parse, bind], end: 'partial', bytes: sizeOf([parse, bind]) },
      { kind: 'simple', messages: [query], end: 'none', bytes: query.frame.bytes.length },
    ]);
    expect(assembler.pendingCount).toBe(0);
  });

  it('does not let later messages change a request already returned', () => {
    const assembler = new RequestAssembler(BIG);
    const [first] = feed(assembler, [rx(fe.parse('SELECT 1')), rx(fe.sync())]);
    feed(assembler, [rx(fe.parse('SELECT 2')), rx(fe.bind())]);
    expect(types(first)).toEqual(['Parse', 'Sync']);
    expect(first?.bytes).toBe(sizeOf(first?.messages ?? []));
  });
});

describe('RequestAssembler: fast path and COPY', () => {
  it('makes a FunctionCall a request of its own', () => {
    const call = rx(fe.functionCall({ oid: 1598, args: ['x'] }));
    expect(new RequestAssembler(BIG).add(call.frame, call.msg)).toEqual([
      { kind: 'function-call', messages: [call], end: 'none', bytes: call.frame.bytes.length },
    ]);
  });

  it('cuts pending extended messages before a FunctionCall', () => {
    const out = feed(new RequestAssembler(BIG), [rx(fe.parse('SELECT 1')), rx(fe.functionCall({ oid: 1598 }))]);
    expect(out.map((r) => [r.kind, r.end])).toEqual([
      ['extended', 'partial'],
      ['function-call', 'none'],
    ]);
  });

  it('passes CopyData, CopyDone and CopyFail one by one as copy-data requests in arrival order', () => {
    const messages = [rx(fe.copyData(Buffer.from('1\ta\n'))), rx(fe.copyData(Buffer.from('2\tb\n'))), rx(fe.copyDone())];
    const out = feed(new RequestAssembler(BIG), messages);
    expect(out.map((r) => r.kind)).toEqual(['copy-data', 'copy-data', 'copy-data']);
    expect(out.map((r) => r.messages[0])).toEqual(messages);
    expect(out.every((r) => r.end === 'none' && r.messages.length === 1)).toBe(true);
    const fail = rx(fe.copyFail('abort'));
    expect(new RequestAssembler(BIG).add(fail.frame, fail.msg)).toEqual([
      { kind: 'copy-data', messages: [fail], end: 'none', bytes: fail.frame.bytes.length },
    ]);
  });

  it('cuts pending extended messages before CopyData (COPY started by an unsynced Execute)', () => {
    const out = feed(new RequestAssembler(BIG), [
      rx(fe.parse('COPY t FROM STDIN')),
      rx(fe.bind()),
      rx(fe.execute()),
      rx(fe.copyData(Buffer.from('x\n'))),
    ]);
    expect(out.map((r) => [r.kind, r.end])).toEqual([
      ['extended', 'partial'],
      ['copy-data', 'none'],
    ]);
    expect(types(out[0])).toEqual(['Parse', 'Bind', 'Execute']);
  });

  it('returns nothing for Terminate and AuthResponse, leaving pending messages untouched', () => {
    const assembler = new RequestAssembler(BIG);
    feed(assembler, [rx(fe.parse('SELECT 1'))]);
    expect(feed(assembler, [rx(fe.password('pw')), rx(fe.end())])).toEqual([]);
    expect(assembler.pendingCount).toBe(1);
  });
});

describe('RequestAssembler: batches larger than maxBatchBytes', () => {
  it('releases a partial part as soon as the held bytes exceed the limit', () => {
    const assembler = new RequestAssembler(100);
    const big = rx(fe.parse(`SELECT '${'x'.repeat(60)}'`));
    expect(big.frame.bytes.length).toBeGreaterThan(50);
    expect(big.frame.bytes.length).toBeLessThanOrEqual(100);
    expect(assembler.add(big.frame, big.msg)).toEqual([]);
    const bind = rx(fe.bind({ values: ['y'.repeat(40)] }));
    const out = assembler.add(bind.frame, bind.msg);
    expect(out).toHaveLength(1);
    expect(out[0]?.end).toBe('partial');
    expect(out[0]?.messages).toEqual([big, bind]);
    expect(out[0]?.bytes).toBe(sizeOf([big, bind]));
    expect(assembler.pendingCount).toBe(0);
  });

  it('does not cut at exactly the limit', () => {
    const parse = rx(fe.parse('SELECT 1'));
    const assembler = new RequestAssembler(parse.frame.bytes.length);
    expect(assembler.add(parse.frame, parse.msg)).toEqual([]);
    expect(assembler.pendingCount).toBe(1);
  });

  it('releases a single message larger than the limit on its own', () => {
    const assembler = new RequestAssembler(16);
    const parse = rx(fe.parse('SELECT 1 + 1 AS two'));
    expect(assembler.add(parse.frame, parse.msg)).toEqual([
      { kind: 'extended', messages: [parse], end: 'partial', bytes: parse.frame.bytes.length },
    ]);
  });

  it('loses and reorders nothing in a long JDBC-style batch without Sync, then Sync', () => {
    const maxBatchBytes = 256;
    const assembler = new RequestAssembler(maxBatchBytes);
    const input: ReceivedMessage[] = [rx(fe.parse('INSERT INTO t VALUES ($1, $2)', 'ins', [23, 25]))];
    for (let i = 0; i < 200; i++) {
      input.push(rx(fe.bind({ statement: 'ins', values: [String(i), `row ${i}`] })), rx(fe.execute()));
    }
    input.push(rx(fe.sync()));
    const out = feed(assembler, input);
    expect(out.length).toBeGreaterThan(10);
    expect(out.flatMap((r) => r.messages)).toEqual(input);
    expect(out.every((r) => r.kind === 'extended')).toBe(true);
    expect(out.slice(0, -1).every((r) => r.end === 'partial')).toBe(true);
    expect(out.at(-1)?.end).toBe('Sync');
    const largest = Math.max(...input.map((m) => m.frame.bytes.length));
    for (const r of out) {
      expect(r.bytes).toBe(sizeOf(r.messages));
      expect(r.bytes).toBeLessThanOrEqual(maxBatchBytes + largest);
    }
    expect(assembler.pendingCount).toBe(0);
  });

  it('keeps every message, in order, for a random mix of messages and limits (seeded)', () => {
    const random = seededRandom(2024);
    const makers: (() => Buffer)[] = [
      () => fe.parse(`SELECT ${'1,'.repeat(Math.floor(random() * 40))}1`),
      () => fe.bind({ values: ['v'.repeat(Math.floor(random() * 80))] }),
      () => fe.describe('P'),
      () => fe.execute('', Math.floor(random() * 3)),
      () => fe.close('S', 's'),
      () => fe.sync(),
      () => fe.flush(),
      () => fe.query('SELECT 1'),
      () => fe.functionCall({ oid: 1598 }),
      () => fe.copyData(Buffer.alloc(Math.floor(random() * 50))),
      () => fe.copyDone(),
    ];
    for (let round = 0; round < 200; round++) {
      const maxBatchBytes = 16 + Math.floor(random() * 400);
      const assembler = new RequestAssembler(maxBatchBytes);
      const input: ReceivedMessage[] = [];
      for (let i = 0; i < 60; i++) input.push(rx(makers[Math.floor(random() * makers.length)]?.() ?? fe.sync()));
      input.push(rx(fe.sync()));
      const out = feed(assembler, input);
      expect(out.flatMap((r) => r.messages)).toEqual(input);
      for (const r of out) {
        expect(r.bytes).toBe(sizeOf(r.messages));
        const last = r.messages.at(-1)?.msg.type;
        if (r.kind === 'extended') {
          expect(r.end === 'Sync' || r.end === 'Flush' ? r.end : 'partial').toBe(last === 'Sync' || last === 'Flush' ? last : 'partial');
          expect(r.messages.slice(0, -1).some((m) => m.msg.type === 'Sync' || m.msg.type === 'Flush')).toBe(false);
        } else {
          expect(r.messages).toHaveLength(1);
          expect(r.end).toBe('none');
        }
      }
      expect(assembler.pendingCount).toBe(0);
    }
  });
});
