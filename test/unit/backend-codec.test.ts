import { describe, expect, it } from 'vitest';
import type { BackendMessage } from 'pg-protocol/dist/messages.js';
import { Parser } from 'pg-protocol/dist/parser.js';
import {
  SSL_ACCEPT,
  SSL_REFUSE,
  authCode,
  decodeBackendKeyData,
  decodeBackendMessage,
  encodeAuthenticationSASL,
  encodeBackendKeyData,
  encodeErrorResponse,
  encodeNoticeResponse,
  encodeReadyForQuery,
  readyForQueryStatus,
  type PgErrorFields,
} from '../../src/protocol/backend.js';
import { AuthCode, BackendTag, StartupCode, type TxStatus } from '../../src/protocol/codes.js';
import { Framer, type Frame } from '../../src/protocol/framer.js';
import { encodeCancelRequest, encodeStartupMessage } from '../../src/protocol/frontend-encode.js';
import { decodeStartupPacket } from '../../src/protocol/frontend.js';
import { SqlState, pgError } from '../../src/protocol/pg-error.js';
import { fe, protocolVersion } from '../helpers/wire.js';

/** Parses bytes with pg-protocol's own Parser (what node-postgres clients run). */
function parseAll(bytes: Buffer): BackendMessage[] {
  const out: BackendMessage[] = [];
  new Parser().parse(bytes, (m) => out.push(m));
  return out;
}

function parseOne(bytes: Buffer): BackendMessage {
  const all = parseAll(bytes);
  expect(all).toHaveLength(1);
  const [only] = all;
  if (only === undefined) throw new Error('no message parsed');
  return only;
}

/** Frames one complete message with the framer, as the session does with server output. */
function frameOf(bytes: Buffer, mode: 'typed' | 'startup' = 'typed'): Frame {
  const framer = new Framer(Number.MAX_SAFE_INTEGER, mode);
  framer.push(bytes);
  const frame = framer.next();
  if (frame === null) throw new Error('incomplete message');
  expect(framer.pendingBytes).toBe(0);
  return frame;
}

/** The (type, value) fields of an ErrorResponse/NoticeResponse body, read by hand. */
function rawFields(bytes: Buffer): [string, string][] {
  const fields: [string, string][] = [];
  let i = 5;
  while (bytes[i] !== 0) {
    const type = String.fromCharCode(bytes[i] ?? 0);
    const end = bytes.indexOf(0, i + 1);
    if (end < 0) throw new Error('unterminated field');
    fields.push([type, bytes.toString('utf8', i + 1, end)]);
    i = end + 1;
  }
  expect(i).toBe(bytes.length - 1);
  return fields;
}

type Fielded = BackendMessage & { severity?: string; code?: string; message?: string; detail?: string; hint?: string };

describe('encodeErrorResponse', () => {
  const fields: PgErrorFields = {
    severity: 'ERROR',
    code: SqlState.InsufficientPrivilege,
    message: 'pgwarden: statement refused by rule "no-ddl" — ünïcödé',
    detail: 'DROP TABLE customers',
    hint: 'ask a DBA',
  };

  it('round-trips through pg-protocol as an error with every field', () => {
    const bytes = encodeErrorResponse(fields);
    const msg = parseOne(bytes) as Fielded;
    expect(msg.name).toBe('error');
    expect(msg).toBeInstanceOf(Error);
    expect(msg.severity).toBe('ERROR');
    expect(msg.code).toBe('42501');
    expect(msg.message).toBe(fields.message);
    expect(msg.detail).toBe('DROP TABLE customers');
    expect(msg.hint).toBe('ask a DBA');
  });

  it('has tag E and a length that counts everything but the tag', () => {
    const bytes = encodeErrorResponse(fields);
    expect(bytes[0]).toBe(BackendTag.ErrorResponse);
    expect(bytes.readInt32BE(1)).toBe(bytes.length - 1);
  });

  it('writes S, V, C, M (then D, H) and a final terminator', () => {
    expect(rawFields(encodeErrorResponse(fields))).toEqual([
      ['S', 'ERROR'],
      ['V', 'ERROR'],
      ['C', '42501'],
      ['M', fields.message],
      ['D', 'DROP TABLE customers'],
      ['H', 'ask a DBA'],
    ]);
  });

  it('round-trips a statement position as the P field', () => {
    const bytes = encodeErrorResponse({ severity: 'ERROR', code: SqlState.SyntaxError, message: 'syntax error', position: 17 });
    expect(rawFields(bytes)).toContainEqual(['P', '17']);
    const msg = parseOne(bytes) as Fielded & { position?: string };
    expect(msg.position).toBe('17');
  });

  it('omits detail and hint when absent', () => {
    const bytes = encodeErrorResponse({ severity: 'FATAL', code: '08P01', message: 'bad' });
    expect(rawFields(bytes).map(([t]) => t)).toEqual(['S', 'V', 'C', 'M']);
    const msg = parseOne(bytes) as Fielded;
    expect(msg.detail).toBeUndefined();
    expect(msg.hint).toBeUndefined();
    expect(msg.severity).toBe('FATAL');
  });

  it('decodes with decodeBackendMessage after framing', () => {
    const msg = decodeBackendMessage(frameOf(encodeErrorResponse(fields))) as Fielded;
    expect(msg.name).toBe('error');
    expect(msg.code).toBe('42501');
    expect(msg.message).toBe(fields.message);
  });

  it('encodes every catalogued pgwarden error so a client can parse it', () => {
    const errors: PgErrorFields[] = [
      pgError.protocolViolation('x'),
      pgError.protocolViolation('too big', SqlState.ProgramLimitExceeded),
      pgError.startupTimeout(),
      pgError.tooManyConnections(10),
      pgError.shuttingDown(),
      pgError.terminatedByShutdown(),
      pgError.upstreamUnavailable(),
      pgError.upstreamClosed(),
      pgError.upstreamTlsRequired(),
      pgError.replicationRefused(),
      pgError.missingUser(),
      pgError.dataBeforeTls(),
    ];
    for (const e of errors) {
      const msg = parseOne(encodeErrorResponse(e)) as Fielded;
      expect(msg.code).toBe(e.code);
      expect(msg.code).toMatch(/^[0-9A-Z]{5}$/);
      expect(msg.message).toBe(e.message);
      expect(msg.hint).toBe(e.hint);
      expect(msg.severity).toBe('FATAL');
    }
  });

  it('encodes statement-level refusals as ERROR (the connection stays usable) that a client can parse', () => {
    const errors: PgErrorFields[] = [
      pgError.policyDenied('no-ddl', 'DDL is reviewed'),
      pgError.policyDenied('no-ddl', 'DDL is reviewed', 'custom message'),
      pgError.reviewUnavailable('schema-changes', 'ddl'),
      pgError.unparsable('syntax error at or near "SELEC"', 1),
      pgError.unparsable('syntax error at end of input'),
      pgError.invalidUtf8(),
      pgError.guard(SqlState.FeatureNotSupported, 'not allowed', 'because'),
    ];
    for (const e of errors) {
      const msg = parseOne(encodeErrorResponse(e)) as Fielded & { position?: string };
      expect(msg.severity).toBe('ERROR');
      expect(msg.code).toBe(e.code);
      expect(msg.code).toMatch(/^[0-9A-Z]{5}$/);
      expect(msg.message).toBe(e.message);
      expect(msg.detail).toBe(e.detail);
      expect(msg.position).toBe(e.position === undefined ? undefined : String(e.position));
    }
  });
});

describe('encodeNoticeResponse', () => {
  it('round-trips through pg-protocol as a notice', () => {
    const bytes = encodeNoticeResponse({ severity: 'WARNING', code: '01000', message: 'masked 2 columns', hint: 'see rules' });
    expect(bytes[0]).toBe(BackendTag.NoticeResponse);
    expect(bytes.readInt32BE(1)).toBe(bytes.length - 1);
    const msg = parseOne(bytes) as Fielded;
    expect(msg.name).toBe('notice');
    expect(msg.severity).toBe('WARNING');
    expect(msg.code).toBe('01000');
    expect(msg.message).toBe('masked 2 columns');
    expect(msg.hint).toBe('see rules');
  });
});

describe('encodeReadyForQuery', () => {
  for (const status of ['I', 'T', 'E'] as const satisfies readonly TxStatus[]) {
    it(`encodes transaction status ${status} as Z, length 5, status byte`, () => {
      const bytes = encodeReadyForQuery(status);
      expect([...bytes]).toEqual([0x5a, 0, 0, 0, 5, status.charCodeAt(0)]);
      const msg = parseOne(bytes) as BackendMessage & { status?: string };
      expect(msg.name).toBe('readyForQuery');
      expect(msg.status).toBe(status);
      expect(readyForQueryStatus(frameOf(bytes))).toBe(status);
    });
  }

  it('parses as three messages when the three statuses are sent back to back', () => {
    const all = parseAll(Buffer.concat([encodeReadyForQuery('I'), encodeReadyForQuery('T'), encodeReadyForQuery('E')]));
    expect(all.map((m) => (m as BackendMessage & { status?: string }).status)).toEqual(['I', 'T', 'E']);
  });
});

describe('encodeBackendKeyData', () => {
  it('round-trips a 4-byte key through pg-protocol', () => {
    const key = Buffer.from([0x12, 0x34, 0x56, 0x78]);
    const bytes = encodeBackendKeyData(0x05000001, key);
    expect(bytes[0]).toBe(BackendTag.BackendKeyData);
    expect(bytes.readInt32BE(1)).toBe(12);
    const msg = parseOne(bytes) as BackendMessage & { processID?: number; secretKey?: number };
    expect(msg.name).toBe('backendKeyData');
    expect(msg.processID).toBe(0x05000001);
    expect(msg.secretKey).toBe(0x12345678);
  });

  it('round-trips a 32-byte (protocol 3.2) key through decodeBackendKeyData', () => {
    const key = Buffer.alloc(32);
    for (let i = 0; i < key.length; i++) key[i] = 255 - i;
    const bytes = encodeBackendKeyData(0x7f123456, key);
    expect(bytes.readInt32BE(1)).toBe(4 + 4 + 32);
    const decoded = decodeBackendKeyData(frameOf(bytes));
    expect(decoded.processId).toBe(0x7f123456);
    expect(decoded.secretKey.equals(key)).toBe(true);
  });

  it('decodeBackendKeyData copies the key out of the received buffer', () => {
    const bytes = encodeBackendKeyData(1, Buffer.from([1, 2, 3, 4]));
    const decoded = decodeBackendKeyData(frameOf(bytes));
    bytes.fill(0);
    expect([...decoded.secretKey]).toEqual([1, 2, 3, 4]);
  });
});

describe('encodeAuthenticationSASL', () => {
  it('round-trips the mechanism list through pg-protocol', () => {
    const bytes = encodeAuthenticationSASL(['SCRAM-SHA-256', 'SCRAM-SHA-256-PLUS']);
    expect(bytes[0]).toBe(BackendTag.Authentication);
    expect(bytes.readInt32BE(1)).toBe(bytes.length - 1);
    const msg = parseOne(bytes) as BackendMessage & { mechanisms?: string[] };
    expect(msg.name).toBe('authenticationSASL');
    expect(msg.mechanisms).toEqual(['SCRAM-SHA-256', 'SCRAM-SHA-256-PLUS']);
    expect(authCode(frameOf(bytes))).toBe(AuthCode.SASL);
  });

  it('encodes the list ending with an empty name', () => {
    const bytes = encodeAuthenticationSASL(['SCRAM-SHA-256']);
    expect(bytes.subarray(9).toString('latin1')).toBe('SCRAM-SHA-256\0\0');
  });

  it('decodes the same with decodeBackendMessage', () => {
    const msg = decodeBackendMessage(frameOf(encodeAuthenticationSASL(['SCRAM-SHA-256']))) as BackendMessage & {
      mechanisms?: string[];
    };
    expect(msg.mechanisms).toEqual(['SCRAM-SHA-256']);
  });
});

describe('decodeBackendMessage', () => {
  it('throws for an incomplete message instead of returning nothing', () => {
    const bytes = encodeErrorResponse({ severity: 'ERROR', code: 'XX000', message: 'x' });
    const frame: Frame = { tag: bytes[0] ?? 0, bytes: bytes.subarray(0, bytes.length - 2), bodyOffset: 5 };
    expect(() => decodeBackendMessage(frame)).toThrow();
  });

  it('decodes the message itself when the frame is a view into a larger buffer', () => {
    const rfq = encodeReadyForQuery('T');
    const big = Buffer.concat([encodeReadyForQuery('I'), rfq, encodeReadyForQuery('E')]);
    const frame: Frame = { tag: BackendTag.ReadyForQuery, bytes: big.subarray(6, 12), bodyOffset: 5 };
    expect((decodeBackendMessage(frame) as BackendMessage & { status?: string }).status).toBe('T');
  });
});

describe('SSL answers', () => {
  it('are the single unframed bytes S and N', () => {
    expect([...SSL_ACCEPT]).toEqual([0x53]);
    expect([...SSL_REFUSE]).toEqual([0x4e]);
  });
});

describe('encodeStartupMessage', () => {
  it('decodes back to the same protocol version and parameters, in order', () => {
    const params = new Map([
      ['user', 'agent'],
      ['database', 'shop'],
      ['application_name', 'pgwarden ✓'],
      ['options', ''],
    ]);
    const bytes = encodeStartupMessage(StartupCode.ProtocolV3, params);
    expect(bytes.readInt32BE(0)).toBe(bytes.length);
    const msg = decodeStartupPacket(frameOf(bytes, 'startup'));
    expect(msg.type).toBe('StartupMessage');
    if (msg.type !== 'StartupMessage') return;
    expect(msg.protocolVersion).toBe(StartupCode.ProtocolV3);
    expect([...msg.params]).toEqual([...params]);
  });

  it('carries protocol 3.2', () => {
    const msg = decodeStartupPacket(frameOf(encodeStartupMessage(protocolVersion(3, 2), new Map([['user', 'u']])), 'startup'));
    expect(msg.type === 'StartupMessage' && msg.protocolVersion).toBe(protocolVersion(3, 2));
  });

  it('is byte-identical to what node-postgres sends for the same parameters', () => {
    const params = new Map([
      ['user', 'u'],
      ['database', 'd'],
      ['client_encoding', 'UTF8'],
    ]);
    const ours = encodeStartupMessage(StartupCode.ProtocolV3, params);
    expect(ours.equals(fe.startup({ user: 'u', database: 'd' }))).toBe(true);
  });

  it('encodes an empty parameter list as version plus one terminator', () => {
    const bytes = encodeStartupMessage(StartupCode.ProtocolV3, new Map());
    expect([...bytes]).toEqual([0, 0, 0, 9, 0, 3, 0, 0, 0]);
  });
});

describe('encodeCancelRequest', () => {
  it('decodes back with a 4-byte key', () => {
    const key = Buffer.from([9, 8, 7, 6]);
    const bytes = encodeCancelRequest(424242, key);
    expect(bytes.length).toBe(16);
    expect(bytes.readInt32BE(0)).toBe(16);
    expect(decodeStartupPacket(frameOf(bytes, 'startup'))).toEqual({ type: 'CancelRequest', processId: 424242, secretKey: key });
  });

  it('decodes back with a 32-byte key', () => {
    const key = Buffer.alloc(32, 0xab);
    const bytes = encodeCancelRequest(0x7fffffff, key);
    expect(bytes.readInt32BE(0)).toBe(12 + 32);
    const msg = decodeStartupPacket(frameOf(bytes, 'startup'));
    expect(msg.type).toBe('CancelRequest');
    if (msg.type !== 'CancelRequest') return;
    expect(msg.processId).toBe(0x7fffffff);
    expect(msg.secretKey.equals(key)).toBe(true);
  });

  it('is byte-identical to what node-postgres sends for a 4-byte key', () => {
    const ours = encodeCancelRequest(1234, Buffer.from([0, 0, 0x10, 0x01]));
    expect(ours.equals(Buffer.from(fe.cancel(1234, 0x1001)))).toBe(true);
  });
});
