import { describe, expect, it } from 'vitest';
import { FrontendTag, StartupCode } from '../../src/protocol/codes.js';
import type { Frame } from '../../src/protocol/framer.js';
import { decodeFrontendMessage, decodeStartupPacket, type FrontendMessage } from '../../src/protocol/frontend.js';
import { ProtocolViolation } from '../../src/protocol/protocol-violation.js';
import {
  bytes,
  cancelRequest,
  cstr,
  fe,
  gssEncRequest,
  int16,
  int32,
  protocolVersion,
  randomBytesFrom,
  seededRandom,
  sslRequest,
  startupFrame,
  startupMessage,
  startupPacket,
  typed,
  typedFrame,
} from '../helpers/wire.js';

function decode(message: Buffer): FrontendMessage {
  return decodeFrontendMessage(typedFrame(message));
}

/** Runs fn, requires a ProtocolViolation (never another error type) and returns it. */
function violation(fn: () => unknown): ProtocolViolation {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  if (thrown === undefined) throw new Error('expected a ProtocolViolation, but the input was accepted');
  expect(thrown).toBeInstanceOf(ProtocolViolation);
  return thrown as ProtocolViolation;
}

/** Returns the message after checking its type, so tests can read its fields with their types. */
function as<T extends FrontendMessage['type']>(msg: FrontendMessage, type: T): Extract<FrontendMessage, { type: T }> {
  expect(msg.type).toBe(type);
  return msg as Extract<FrontendMessage, { type: T }>;
}

describe('decodeStartupPacket', () => {
  it('decodes SSLRequest', () => {
    expect(decodeStartupPacket(startupFrame(sslRequest()))).toEqual({ type: 'SSLRequest' });
  });

  it('decodes GSSENCRequest', () => {
    expect(decodeStartupPacket(startupFrame(gssEncRequest()))).toEqual({ type: 'GSSENCRequest' });
  });

  it('decodes a StartupMessage from node-postgres with every parameter in order', () => {
    const packet = fe.startup({ user: 'agent', database: 'shop', application_name: 'süß-app', options: '-c search_path=x' });
    const msg = decodeStartupPacket(startupFrame(packet));
    expect(msg.type).toBe('StartupMessage');
    if (msg.type !== 'StartupMessage') return;
    expect(msg.protocolVersion).toBe(StartupCode.ProtocolV3);
    expect([...msg.params]).toEqual([
      ['user', 'agent'],
      ['database', 'shop'],
      ['application_name', 'süß-app'],
      ['options', '-c search_path=x'],
      ['client_encoding', 'UTF8'],
    ]);
  });

  it('decodes a StartupMessage with an empty value and with no parameters at all', () => {
    const withEmpty = decodeStartupPacket(startupFrame(startupMessage(StartupCode.ProtocolV3, [['user', 'u'], ['options', '']])));
    expect(withEmpty).toEqual({
      type: 'StartupMessage',
      protocolVersion: StartupCode.ProtocolV3,
      params: new Map([
        ['user', 'u'],
        ['options', ''],
      ]),
    });
    const none = decodeStartupPacket(startupFrame(startupMessage(StartupCode.ProtocolV3, [])));
    expect(none).toEqual({ type: 'StartupMessage', protocolVersion: StartupCode.ProtocolV3, params: new Map() });
  });

  it('accepts protocol 3.2 and reports the requested version', () => {
    const msg = decodeStartupPacket(startupFrame(startupMessage(protocolVersion(3, 2), [['user', 'u']])));
    expect(msg.type === 'StartupMessage' && msg.protocolVersion).toBe(protocolVersion(3, 2));
  });

  it('decodes a CancelRequest with a 4-byte key (protocol 3.0)', () => {
    const key = bytes(0xde, 0xad, 0xbe, 0xef);
    const msg = decodeStartupPacket(startupFrame(cancelRequest(12345, key)));
    expect(msg).toEqual({ type: 'CancelRequest', processId: 12345, secretKey: key });
  });

  it('decodes a CancelRequest with a 32-byte key (protocol 3.2)', () => {
    const key = Buffer.alloc(32);
    for (let i = 0; i < 32; i++) key[i] = i * 7;
    const msg = decodeStartupPacket(startupFrame(cancelRequest(0x7f000001, key)));
    expect(msg.type).toBe('CancelRequest');
    if (msg.type !== 'CancelRequest') return;
    expect(msg.processId).toBe(0x7f000001);
    expect(msg.secretKey.equals(key)).toBe(true);
  });

  it('accepts a CancelRequest key of exactly 256 bytes', () => {
    const msg = decodeStartupPacket(startupFrame(cancelRequest(1, Buffer.alloc(256, 1))));
    expect(msg.type === 'CancelRequest' && msg.secretKey.length).toBe(256);
  });

  it('copies the CancelRequest key, so reusing the receive buffer cannot change it', () => {
    const packet = cancelRequest(7, bytes(1, 2, 3, 4));
    const msg = decodeStartupPacket(startupFrame(packet));
    packet.fill(0);
    expect(msg.type === 'CancelRequest' && [...msg.secretKey]).toEqual([1, 2, 3, 4]);
  });

  describe('malformed startup packets', () => {
    const cases: [string, Buffer, string][] = [
      ['SSLRequest with trailing bytes', startupPacket(StartupCode.SSLRequest, bytes(0)), '08P01'],
      ['GSSENCRequest with trailing bytes', startupPacket(StartupCode.GSSENCRequest, int32(0)), '08P01'],
      ['CancelRequest without a process id', startupPacket(StartupCode.CancelRequest), '08P01'],
      ['CancelRequest with a 2-byte process id', startupPacket(StartupCode.CancelRequest, int16(1)), '08P01'],
      ['CancelRequest without a key', startupPacket(StartupCode.CancelRequest, int32(1)), '08P01'],
      ['CancelRequest with a 3-byte key', cancelRequest(1, bytes(1, 2, 3)), '08P01'],
      ['CancelRequest with a 257-byte key', cancelRequest(1, Buffer.alloc(257)), '08P01'],
      ['protocol 2.0', startupMessage(protocolVersion(2, 0), [['user', 'u']]), '0A000'],
      ['protocol 4.0', startupMessage(protocolVersion(4, 0), [['user', 'u']]), '0A000'],
      ['protocol 0.0', startupMessage(0, [['user', 'u']]), '0A000'],
      ['an unknown request code 1234.5677', startupPacket(protocolVersion(1234, 5677)), '0A000'],
      ['a request code with the high bit set', startupMessage(0xffff0000, [['user', 'u']]), '0A000'],
      ['a duplicate parameter', startupMessage(StartupCode.ProtocolV3, [['user', 'a'], ['user', 'b']]), '08P01'],
      [
        'a duplicate parameter with the same value',
        startupMessage(StartupCode.ProtocolV3, [['database', 'd'], ['user', 'a'], ['database', 'd']]),
        '08P01',
      ],
      ['an unterminated parameter name', startupPacket(StartupCode.ProtocolV3, Buffer.from('user')), '08P01'],
      ['a name without a value', startupPacket(StartupCode.ProtocolV3, cstr('user')), '08P01'],
      ['an unterminated value', startupPacket(StartupCode.ProtocolV3, cstr('user'), Buffer.from('alice')), '08P01'],
      ['a missing final terminator', startupMessage(StartupCode.ProtocolV3, [['user', 'u']], { terminated: false }), '08P01'],
      ['bytes after the final terminator', startupPacket(StartupCode.ProtocolV3, cstr('user'), cstr('u'), bytes(0, 0x41)), '08P01'],
      ['no body after the version', startupPacket(StartupCode.ProtocolV3), '08P01'],
    ];
    for (const [name, packet, sqlstate] of cases) {
      it(`rejects ${name} with ${sqlstate}`, () => {
        expect(violation(() => decodeStartupPacket(startupFrame(packet))).sqlstate).toBe(sqlstate);
      });
    }

    it('rejects a packet too short to hold a request code', () => {
      const packet = Buffer.alloc(6);
      packet.writeInt32BE(6, 0);
      violation(() => decodeStartupPacket(startupFrame(packet)));
    });

    it('names the unsupported version in the message', () => {
      const err = violation(() => decodeStartupPacket(startupFrame(startupMessage(protocolVersion(2, 0), []))));
      expect(err.message).toContain('2.0');
    });
  });
});

describe('decodeFrontendMessage: every message type', () => {
  it('decodes Query, keeping several statements and non-ASCII text', () => {
    const sql = "SELECT 'ä'; DELETE FROM t WHERE note = '日本'";
    expect(decode(fe.query(sql))).toEqual({ type: 'Query', sql, utf8: true });
  });

  it('decodes an empty Query', () => {
    expect(decode(fe.query(''))).toEqual({ type: 'Query', sql: '', utf8: true });
  });

  it('decodes Parse with a name, SQL and parameter types (OIDs are unsigned)', () => {
    const msg = decode(fe.parse('INSERT INTO t VALUES ($1, $2, $3)', 'stmt_1', [23, 0, 0xfffffffe]));
    expect(msg).toEqual({
      type: 'Parse',
      statement: 'stmt_1',
      sql: 'INSERT INTO t VALUES ($1, $2, $3)',
      utf8: true,
      paramTypes: [23, 0, 0xfffffffe],
    });
  });

  it('decodes Parse of the unnamed statement without parameter types', () => {
    expect(decode(fe.parse('SELECT 1'))).toEqual({ type: 'Parse', statement: '', sql: 'SELECT 1', utf8: true, paramTypes: [] });
  });

  it('flags Query and Parse SQL whose bytes are not valid UTF-8', () => {
    // The server sees the raw bytes while a JS string would hold U+FFFD: the judge must know.
    const invalid: Buffer[] = [
      bytes(0x53, 0x45, 0x4c, 0xff, 0x31), // a byte that never occurs in UTF-8
      Buffer.from([0x27, 0xc0, 0xa7, 0x27]), // overlong encoding of "'"
      Buffer.from([0x27, 0xe6, 0x97]), // truncated 3-byte sequence
      Buffer.from([0xed, 0xa0, 0x80]), // UTF-16 surrogate encoded as UTF-8
    ];
    for (const sqlBytes of invalid) {
      const q = as(decode(typed('Q', sqlBytes, bytes(0))), 'Query');
      expect(q.utf8).toBe(false);
      const p = as(decode(typed(FrontendTag.Parse, cstr('s'), sqlBytes, bytes(0), int16(0))), 'Parse');
      expect(p.utf8).toBe(false);
      expect(p.statement).toBe('s');
    }
  });

  it('marks valid multi-byte UTF-8 SQL as valid', () => {
    const q = as(decode(fe.query("SELECT '€𝄞日本'")), 'Query');
    expect(q.utf8).toBe(true);
    expect(q.sql).toBe("SELECT '€𝄞日本'");
  });

  it('decodes Bind from node-postgres: text, NULL and binary values, one format code per parameter', () => {
    const binary = bytes(0, 1, 2, 255);
    const msg = as(decode(fe.bind({ portal: 'p1', statement: 's1', values: ['42', null, binary, ''] })), 'Bind');
    expect(msg.portal).toBe('p1');
    expect(msg.statement).toBe('s1');
    expect(msg.paramFormats).toEqual([0, 0, 1, 0]);
    expect(msg.params).toEqual([Buffer.from('42'), null, binary, Buffer.alloc(0)]);
    expect(msg.resultFormats).toEqual([0]);
  });

  it('decodes Bind asking for binary results', () => {
    const msg = as(decode(fe.bind({ values: [], binary: true })), 'Bind');
    expect(msg).toEqual({ type: 'Bind', portal: '', statement: '', paramFormats: [], params: [], resultFormats: [1] });
  });

  it('decodes Bind with no format codes, and with one format code for all parameters', () => {
    const none = as(decode(fe.bindMessage({ params: ['a', 'b'] })), 'Bind');
    expect(none.paramFormats).toEqual([]);
    expect(none.resultFormats).toEqual([]);
    const one = as(decode(fe.bindMessage({ paramFormats: [1], params: ['a', 'b', 'c'], resultFormats: [1, 0, 1] })), 'Bind');
    expect(one.paramFormats).toEqual([1]);
    expect(one.params.map((p) => p?.toString())).toEqual(['a', 'b', 'c']);
    expect(one.resultFormats).toEqual([1, 0, 1]);
  });

  it('returns Bind parameter values as views of the received bytes (no copy)', () => {
    const message = fe.bind({ values: ['hello'] });
    const msg = as(decode(message), 'Bind');
    const param = msg.params[0];
    expect(param?.buffer).toBe(message.buffer);
    expect(param?.toString()).toBe('hello');
  });

  it('decodes Describe of a statement and of a portal', () => {
    expect(decode(fe.describe('S', 'stmt'))).toEqual({ type: 'Describe', target: 'S', name: 'stmt' });
    expect(decode(fe.describe('P'))).toEqual({ type: 'Describe', target: 'P', name: '' });
  });

  it('decodes Execute with a portal and a row limit, and the unlimited default', () => {
    expect(decode(fe.execute('cur', 500))).toEqual({ type: 'Execute', portal: 'cur', maxRows: 500 });
    expect(decode(fe.execute())).toEqual({ type: 'Execute', portal: '', maxRows: 0 });
  });

  it('decodes Close of a statement and of a portal', () => {
    expect(decode(fe.close('S', 's1'))).toEqual({ type: 'Close', target: 'S', name: 's1' });
    expect(decode(fe.close('P'))).toEqual({ type: 'Close', target: 'P', name: '' });
  });

  it('decodes Sync, Flush, Terminate and CopyDone', () => {
    expect(decode(fe.sync())).toEqual({ type: 'Sync' });
    expect(decode(fe.flush())).toEqual({ type: 'Flush' });
    expect(decode(fe.end())).toEqual({ type: 'Terminate' });
    expect(decode(fe.copyDone())).toEqual({ type: 'CopyDone' });
  });

  it('decodes CopyData as a view of its payload', () => {
    const payload = Buffer.from('1\tAlice\n2\tBob\n');
    const message = fe.copyData(payload);
    const msg = as(decode(message), 'CopyData');
    expect(msg.data.equals(payload)).toBe(true);
    expect(msg.data.buffer).toBe(message.buffer);
    expect(msg.data.byteOffset).toBe(message.byteOffset + 5);
  });

  it('decodes an empty CopyData', () => {
    const msg = as(decode(typed('d')), 'CopyData');
    expect(msg.data.length).toBe(0);
  });

  it('decodes CopyFail with its message', () => {
    expect(decode(fe.copyFail('client aborted'))).toEqual({ type: 'CopyFail', message: 'client aborted' });
  });

  it('decodes FunctionCall with its OID, formats, arguments and result format', () => {
    const msg = as(
      decode(fe.functionCall({ oid: 0xfffffff0, argFormats: [0, 1], args: ['text', null], resultFormat: 1 })),
      'FunctionCall',
    );
    expect(msg.functionOid).toBe(0xfffffff0);
    expect(msg.argFormats).toEqual([0, 1]);
    expect(msg.args).toEqual([Buffer.from('text'), null]);
    expect(msg.resultFormat).toBe(1);
  });

  it('decodes FunctionCall without arguments', () => {
    expect(decode(fe.functionCall({ oid: 1598 }))).toEqual({
      type: 'FunctionCall',
      functionOid: 1598,
      argFormats: [],
      args: [],
      resultFormat: 0,
    });
  });

  it('decodes password, SASL initial and SASL responses as opaque AuthResponse without their contents', () => {
    const messages = [
      fe.password('hunter2'),
      typed('p', cstr('SCRAM-SHA-256'), int32(5), Buffer.from('n,,n=')),
      typed('p', Buffer.from('c=biws,r=abc,p=xyz')),
    ];
    for (const message of messages) {
      const msg = decode(message);
      expect(msg).toEqual({ type: 'AuthResponse' });
      expect(JSON.stringify(msg)).not.toContain('hunter2');
    }
  });

  it('decodes the same frame when it is a view in the middle of a larger buffer', () => {
    const message = fe.parse('SELECT $1', 'x', [25]);
    const big = Buffer.concat([Buffer.from('garbage'), message, Buffer.from([0, 0, 0])]);
    const frame: Frame = { tag: FrontendTag.Parse, bytes: big.subarray(7, 7 + message.length), bodyOffset: 5 };
    expect(decodeFrontendMessage(frame)).toEqual({ type: 'Parse', statement: 'x', sql: 'SELECT $1', utf8: true, paramTypes: [25] });
  });
});

describe('decodeFrontendMessage: malformed messages are protocol violations', () => {
  const P = FrontendTag.Parse;
  const B = FrontendTag.Bind;
  const F = FrontendTag.FunctionCall;
  const cases: [string, Buffer][] = [
    // unterminated strings
    ['Query without a terminator', typed('Q', Buffer.from('SELECT 1'))],
    ['Query with an empty body', typed('Q')],
    ['Parse with an unterminated name', typed(P, Buffer.from('s1'))],
    ['Parse with an unterminated query string', typed(P, cstr('s1'), Buffer.from('SELECT 1'))],
    ['Bind with an unterminated portal name', typed(B, Buffer.from('portal'))],
    ['Bind with an unterminated statement name', typed(B, cstr(''), Buffer.from('stmt'))],
    ['Describe with an unterminated name', typed('D', Buffer.from('Sname'))],
    ['Execute with an unterminated portal', typed('E', Buffer.from('portal'))],
    ['Close with an unterminated name', typed('C', Buffer.from('Pcur'))],
    ['CopyFail with an unterminated message', typed('f', Buffer.from('oops'))],
    // missing fields
    ['Parse without a parameter count', typed(P, cstr(''), cstr('SELECT 1'))],
    ['Parse with a 1-byte parameter count', typed(P, cstr(''), cstr('SELECT 1'), bytes(0))],
    ['Bind without format counts', typed(B, cstr(''), cstr(''))],
    ['Bind without a result format count', typed(B, cstr(''), cstr(''), int16(0), int16(0))],
    ['Execute without a row limit', typed('E', cstr(''))],
    ['Execute with a truncated row limit', typed('E', cstr(''), bytes(0, 0))],
    ['Describe without a target', typed('D')],
    ['Close without a target', typed('C')],
    ['FunctionCall without a result format', typed(F, int32(1598), int16(0), int16(0))],
    ['FunctionCall with a truncated OID', typed(F, bytes(0, 0, 6))],
    // negative counts (Int16 with the high bit set) and counts larger than the body
    ['Parse with parameter count 0xFFFF and no types', typed(P, cstr(''), cstr('SELECT 1'), int16(0xffff))],
    ['Parse with parameter count 0x8000 and one type', typed(P, cstr(''), cstr('SELECT 1'), int16(0x8000), int32(23))],
    ['Parse with 3 parameter types announced and 2 present', typed(P, cstr(''), cstr('SELECT $1'), int16(3), int32(23), int32(23))],
    ['Bind with parameter format count 0xFFFF', typed(B, cstr(''), cstr(''), int16(0xffff), int16(0), int16(0))],
    ['Bind with 4 format codes announced and 1 present', typed(B, cstr(''), cstr(''), int16(4), int16(0), int16(0), int16(0))],
    ['Bind with parameter count 0xFFFF', typed(B, cstr(''), cstr(''), int16(0), int16(0xffff), int16(0))],
    ['Bind with 2 parameters announced and 1 present', typed(B, cstr(''), cstr(''), int16(0), int16(2), int32(1), bytes(0x31), int16(0))],
    ['Bind with result format count 0xFFFF', typed(B, cstr(''), cstr(''), int16(0), int16(0), int16(0xffff))],
    ['Bind with 3 result formats announced and 1 present', typed(B, cstr(''), cstr(''), int16(0), int16(0), int16(3), int16(0))],
    ['FunctionCall with argument count 0xFFFF', typed(F, int32(1598), int16(0), int16(0xffff), int16(0))],
    // value lengths
    ['Bind with a parameter length of -2', typed(B, cstr(''), cstr(''), int16(0), int16(1), int32(-2), int16(0))],
    ['Bind with a parameter length of -2147483648', typed(B, cstr(''), cstr(''), int16(0), int16(1), int32(0x80000000), int16(0))],
    ['Bind with a parameter longer than the message', typed(B, cstr(''), cstr(''), int16(0), int16(1), int32(100), bytes(1, 2), int16(0))],
    ['FunctionCall with an argument length of -5', typed(F, int32(1598), int16(0), int16(1), int32(-5), int16(0))],
    ['FunctionCall with an argument longer than the message', typed(F, int32(1598), int16(0), int16(1), int32(9), bytes(1), int16(0))],
    // format codes
    ['Bind with parameter format code 2', fe.bindMessage({ paramFormats: [2], params: ['x'] })],
    ['Bind with parameter format code -1', fe.bindMessage({ paramFormats: [0xffff], params: ['x'] })],
    ['Bind with result format code 2', fe.bindMessage({ params: ['x'], resultFormats: [0, 2] })],
    ['Bind with 2 parameter formats for 3 parameters', fe.bindMessage({ paramFormats: [0, 1], params: ['a', 'b', 'c'] })],
    ['Bind with 2 parameter formats for no parameters', fe.bindMessage({ paramFormats: [0, 0], params: [] })],
    ['FunctionCall with argument format code 7', fe.functionCall({ oid: 1598, argFormats: [7], args: ['x'] })],
    ['FunctionCall with result format code 2', fe.functionCall({ oid: 1598, resultFormat: 2 })],
    ['FunctionCall with result format code -1', fe.functionCall({ oid: 1598, resultFormat: 0xffff })],
    // Describe/Close targets
    ['Describe of target X', typed('D', bytes(0x58), cstr('name'))],
    ['Describe of target s (lower case)', typed('D', bytes(0x73), cstr(''))],
    ['Describe of target NUL', typed('D', bytes(0), cstr(''))],
    ['Close of target Q', typed('C', bytes(0x51), cstr('x'))],
    ['Close of target p (lower case)', typed('C', bytes(0x70), cstr(''))],
    // trailing bytes
    ['Query with bytes after its terminator', typed('Q', cstr('SELECT 1'), Buffer.from('; DROP TABLE t'))],
    ['Query with two terminated strings', typed('Q', cstr('SELECT 1'), cstr('SELECT 2'))],
    ['Parse with a trailing byte', typed(P, cstr(''), cstr('SELECT 1'), int16(0), bytes(0))],
    ['Bind with a trailing byte', typed(B, cstr(''), cstr(''), int16(0), int16(0), int16(0), bytes(1))],
    ['Describe with a trailing byte', typed('D', bytes(0x53), cstr(''), bytes(0))],
    ['Execute with a trailing byte', typed('E', cstr(''), int32(0), bytes(0))],
    ['Close with a trailing byte', typed('C', bytes(0x53), cstr('s'), bytes(0x58))],
    ['Sync with a body', typed('S', bytes(0))],
    ['Flush with a body', typed('H', bytes(1))],
    ['Terminate with a body', typed('X', int32(0))],
    ['CopyDone with a body', typed('c', bytes(0))],
    ['CopyFail with a trailing byte', typed('f', cstr('stop'), bytes(0))],
    ['FunctionCall with a trailing byte', typed(F, int32(1598), int16(0), int16(0), int16(0), bytes(0))],
  ];
  for (const [name, message] of cases) {
    it(`rejects ${name}`, () => {
      const err = violation(() => decode(message));
      expect(err.sqlstate).toBe('08P01');
    });
  }

  const known = new Set<number>(Object.values(FrontendTag));
  it('rejects every tag byte that is not a frontend message type', () => {
    const accepted: number[] = [];
    for (let tag = 0; tag < 256; tag++) {
      if (known.has(tag)) continue;
      try {
        decode(typed(tag, cstr('SELECT 1')));
        accepted.push(tag);
      } catch (err) {
        expect(err).toBeInstanceOf(ProtocolViolation);
      }
    }
    expect(accepted).toEqual([]);
  });

  it('rejects backend-only tags a confused client might send (T, Z, R, K)', () => {
    for (const tag of ['T', 'Z', 'R', 'K']) violation(() => decode(typed(tag, int32(0))));
  });

  it('rejects FunctionCall with 2 argument formats for 3 arguments, as it does for Bind', () => {
    // PostgreSQL: "function call message contains 2 argument formats but 3 arguments" (fastpath.c).
    const message = fe.functionCall({ oid: 1598, argFormats: [0, 1], args: ['a', 'b', 'c'] });
    violation(() => decode(message));
  });
});

describe('decodeFrontendMessage: counts are unsigned Int16, as PostgreSQL reads them', () => {
  // postgres.c reads every count with pq_getmsgint(msg, 2), which returns an unsigned value, and
  // libpq allows up to 65535 parameters; bulk inserts from ORMs routinely exceed 32767.
  it('decodes Parse with 40000 parameter types', () => {
    const types = new Array<number>(40000).fill(23);
    const msg = as(decode(fe.parse('INSERT INTO t VALUES ($1)', '', types)), 'Parse');
    expect(msg.paramTypes.length).toBe(40000);
  });

  it('decodes Bind with 40000 parameters', () => {
    const values = new Array<string>(40000).fill('1');
    const msg = as(decode(fe.bind({ values })), 'Bind');
    expect(msg.params.length).toBe(40000);
    expect(msg.paramFormats.length).toBe(40000);
  });
});

describe('decoders never fail with anything but ProtocolViolation (fuzz)', () => {
  const validTyped: Buffer[] = [
    fe.query('SELECT * FROM customers WHERE id = 1'),
    fe.parse('SELECT $1::int, $2::text', 'stmt', [23, 25]),
    fe.bind({ portal: 'p', statement: 'stmt', values: ['1', null, Buffer.from([1, 2])], binary: true }),
    fe.bindMessage({ paramFormats: [1], params: ['a', null], resultFormats: [0, 1] }),
    fe.describe('S', 'stmt'),
    fe.describe('P', 'p'),
    fe.execute('p', 10),
    fe.close('S', 'stmt'),
    fe.close('P', 'p'),
    fe.sync(),
    fe.flush(),
    fe.end(),
    fe.copyData(Buffer.from('a\tb\n')),
    fe.copyDone(),
    fe.copyFail('nope'),
    fe.functionCall({ oid: 1598, argFormats: [0], args: ['x', null], resultFormat: 0 }),
    fe.password('pw'),
  ];
  const validStartup: Buffer[] = [
    sslRequest(),
    gssEncRequest(),
    cancelRequest(99, bytes(1, 2, 3, 4)),
    cancelRequest(99, Buffer.alloc(32, 9)),
    fe.startup({ user: 'u', database: 'd' }),
    startupMessage(protocolVersion(3, 2), [['user', 'u'], ['options', '-c x=y']]),
  ];

  /** Decodes, returning 'ok' or 'violation'; any other outcome is returned as a description. */
  function outcome(decodeIt: () => unknown): string {
    try {
      decodeIt();
      return 'ok';
    } catch (err) {
      if (err instanceof ProtocolViolation) return 'violation';
      return `unexpected ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`;
    }
  }

  function withLength(message: Buffer): Buffer {
    const copy = Buffer.from(message);
    copy.writeInt32BE(copy.length - 1, 1);
    return copy;
  }

  it('every truncation of a valid typed message decodes or is a ProtocolViolation', () => {
    const bad: string[] = [];
    for (const message of validTyped) {
      for (let end = 5; end < message.length; end++) {
        const truncated = withLength(message.subarray(0, end));
        const result = outcome(() => decode(truncated));
        if (result.startsWith('unexpected')) bad.push(`${String.fromCharCode(message[0] ?? 0)} cut at ${end}: ${result}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('truncating a message that has required fields is always a ProtocolViolation', () => {
    // Only CopyData (opaque payload) and AuthResponse (opaque) may be cut anywhere and stay valid.
    const opaque = new Set<number>([FrontendTag.CopyData, FrontendTag.AuthResponse]);
    const accepted: string[] = [];
    for (const message of validTyped) {
      if (opaque.has(message[0] ?? 0)) continue;
      for (let end = 5; end < message.length; end++) {
        if (outcome(() => decode(withLength(message.subarray(0, end)))) === 'ok') {
          accepted.push(`${String.fromCharCode(message[0] ?? 0)} cut at ${end}`);
        }
      }
    }
    expect(accepted).toEqual([]);
  });

  it('every truncation of a valid startup packet decodes or is a ProtocolViolation', () => {
    const bad: string[] = [];
    for (const packet of validStartup) {
      for (let end = 4; end < packet.length; end++) {
        const truncated = Buffer.from(packet.subarray(0, end));
        truncated.writeInt32BE(end, 0);
        const result = outcome(() => decodeStartupPacket(startupFrame(truncated)));
        if (result.startsWith('unexpected')) bad.push(`startup cut at ${end}: ${result}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('random bytes after every frontend tag decode or are a ProtocolViolation (seeded)', () => {
    const random = seededRandom(0x5eed);
    const tags = [...Object.values(FrontendTag), 0x00, 0x41, 0xff];
    const bad: string[] = [];
    for (let i = 0; i < 20_000; i++) {
      const tag = tags[Math.floor(random() * tags.length)] ?? 0;
      const body = randomBytesFrom(random, Math.floor(random() * 48));
      const result = outcome(() => decode(typed(tag, body)));
      if (result.startsWith('unexpected')) bad.push(`tag ${tag} body ${body.toString('hex')}: ${result}`);
      if (bad.length > 10) break;
    }
    expect(bad).toEqual([]);
  });

  it('random single-byte corruptions of valid messages decode or are a ProtocolViolation (seeded)', () => {
    const random = seededRandom(42);
    const bad: string[] = [];
    for (let i = 0; i < 20_000; i++) {
      const original = validTyped[Math.floor(random() * validTyped.length)] ?? fe.sync();
      const message = Buffer.from(original);
      if (message.length > 5) {
        const at = 5 + Math.floor(random() * (message.length - 5));
        message[at] = Math.floor(random() * 256);
      }
      const result = outcome(() => decode(message));
      if (result.startsWith('unexpected')) bad.push(`${message.toString('hex')}: ${result}`);
      if (bad.length > 10) break;
    }
    expect(bad).toEqual([]);
  });

  it('random startup packets decode or are a ProtocolViolation (seeded)', () => {
    const random = seededRandom(7);
    const codes = [StartupCode.SSLRequest, StartupCode.GSSENCRequest, StartupCode.CancelRequest, StartupCode.ProtocolV3, protocolVersion(3, 2)];
    const bad: string[] = [];
    for (let i = 0; i < 20_000; i++) {
      const code = random() < 0.8 ? (codes[Math.floor(random() * codes.length)] ?? 0) : Math.floor(random() * 2 ** 32);
      const body = randomBytesFrom(random, Math.floor(random() * 40));
      // Sprinkle NULs so the StartupMessage parser gets past the first string often.
      for (let j = 0; j < body.length; j++) if (random() < 0.2) body[j] = 0;
      const result = outcome(() => decodeStartupPacket(startupFrame(startupPacket(code, body))));
      if (result.startsWith('unexpected')) bad.push(`code ${code} body ${body.toString('hex')}: ${result}`);
      if (bad.length > 10) break;
    }
    expect(bad).toEqual([]);
  });
});
