import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { maskBinary, maskText, strategyLabel, type MaskStrategy } from '../../src/masking/strategies.js';

const KEY = Buffer.from('test-mask-key-0123456789');
const OTHER_KEY = Buffer.from('another-mask-key');

const b = (s: string): Buffer => Buffer.from(s, 'utf8');
/** maskText on a JS string, result decoded back to a string (null stays null). */
const mt = (s: MaskStrategy, v: string | Buffer, key: Buffer = KEY): string | null => {
  const out = maskText(s, typeof v === 'string' ? b(v) : v, key);
  return out === null ? null : out.toString('utf8');
};
const mb = (s: MaskStrategy, v: Buffer, oid: number, key: Buffer = KEY): string | null => {
  const out = maskBinary(s, v, oid, key);
  return out === null ? null : out.toString('utf8');
};

const first = (count: number): MaskStrategy => ({ kind: 'keep_first', count });
const last = (count: number): MaskStrategy => ({ kind: 'keep_last', count });
const EMAIL: MaskStrategy = { kind: 'partial_email' };
const HASH: MaskStrategy = { kind: 'hash' };

const INT4 = 23;
const OID = 26;
const BYTEA = 17;
const CITEXT_LIKE = 16_385; // an extension type: its oid is unknown to pgwarden

/** Invalid UTF-8: a stray 0xff, a truncated 'é', an overlong '/', an encoded surrogate. */
const INVALID: readonly Buffer[] = [
  Buffer.from([0x61, 0x62, 0xff, 0x63, 0x64]),
  Buffer.from([0x61, 0x62, 0x63, 0xc3]),
  Buffer.from([0x61, 0xc0, 0xaf, 0x62, 0x63]),
  Buffer.from([0x61, 0xed, 0xa0, 0x80, 0x62]),
];

describe('redact / fixed / null', () => {
  it.each(['alice', 'é中文😀', ''])('redact replaces %j with the configured text', (v) => {
    expect(mt({ kind: 'redact', text: '***' }, v)).toBe('***');
    expect(mt({ kind: 'redact', text: '[gelöscht]' }, v)).toBe('[gelöscht]');
  });

  it('redact and fixed encode their text as UTF-8', () => {
    expect(maskText({ kind: 'redact', text: 'é' }, b('x'), KEY)).toEqual(Buffer.from([0xc3, 0xa9]));
    expect(maskText({ kind: 'fixed', value: '中' }, b('x'), KEY)).toEqual(Buffer.from([0xe4, 0xb8, 0xad]));
  });

  it.each(['alice', 'é中文😀', ''])('fixed replaces %j with the fixed value', (v) => {
    expect(mt({ kind: 'fixed', value: 'unknown@example.invalid' }, v)).toBe('unknown@example.invalid');
  });

  it.each(['alice', 'é中文😀', ''])('null turns %j into SQL NULL', (v) => {
    expect(maskText({ kind: 'null' }, b(v), KEY)).toBeNull();
  });
});

describe('keep_first', () => {
  it('keeps the first N characters and always appends exactly three stars', () => {
    expect(mt(first(2), 'alice')).toBe('al***');
    expect(mt(first(4), 'abcde')).toBe('abcd***');
    // The hidden length is not revealed: 1 and 96 hidden characters look the same.
    expect(mt(first(4), 'abcd' + 'x'.repeat(96))).toBe('abcd***');
  });

  it('reveals nothing when the value has at most N characters', () => {
    expect(mt(first(4), 'abcd')).toBe('***');
    expect(mt(first(4), 'abc')).toBe('***');
    expect(mt(first(1), 'a')).toBe('***');
    expect(mt(first(3), '')).toBe('***');
    expect(mt(first(0), '')).toBe('***');
  });

  it('count 0 hides everything', () => {
    expect(mt(first(0), 'alice')).toBe('***');
  });

  it('counts code points, not bytes or UTF-16 units', () => {
    expect(mt(first(2), 'éèêë')).toBe('éè***');
    expect(mt(first(1), '中文字')).toBe('中***');
    expect(mt(first(1), '😀abc')).toBe('😀***');
    expect(mt(first(2), '😀😁😂')).toBe('😀😁***');
    // 'é中😀' is 3 characters (2+3+4 bytes, 4 UTF-16 units): with N = 3 nothing is revealed.
    expect(mt(first(3), 'é中😀')).toBe('***');
    expect(mt(first(2), 'é中😀')).toBe('é中***');
  });

  it('keeps the leading bytes of the value verbatim (no BOM stripping, no normalization)', () => {
    expect(maskText(first(2), Buffer.from([0xef, 0xbb, 0xbf, 0x61, 0x62]), KEY)).toEqual(
      Buffer.from([0xef, 0xbb, 0xbf, 0x61, 0x2a, 0x2a, 0x2a]),
    );
  });

  it.each([-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])('rejects count %s', (count) => {
    expect(() => maskText(first(count), b('alice'), KEY)).toThrow(RangeError);
  });
});

describe('keep_last', () => {
  it('keeps the last N characters behind exactly three stars', () => {
    expect(mt(last(4), '4111111111111111')).toBe('***1111');
    expect(mt(last(4), '555-867-5309')).toBe('***5309');
    expect(mt(last(2), 'abc')).toBe('***bc');
  });

  it('reveals nothing when the value has at most N characters', () => {
    expect(mt(last(4), '5309')).toBe('***');
    expect(mt(last(4), '309')).toBe('***');
    expect(mt(last(2), '')).toBe('***');
    expect(mt(last(0), '')).toBe('***');
  });

  it('count 0 hides everything', () => {
    expect(mt(last(0), 'alice')).toBe('***');
  });

  it('counts code points, not bytes or UTF-16 units', () => {
    expect(mt(last(1), 'café')).toBe('***é');
    expect(mt(last(2), '北京市')).toBe('***京市');
    expect(mt(last(1), 'abc😀')).toBe('***😀');
    expect(mt(last(2), '😀😁😂')).toBe('***😁😂');
    expect(mt(last(3), '😀é中')).toBe('***');
  });

  it.each([-1, 2.5, Number.NaN])('rejects count %s', (count) => {
    expect(() => maskText(last(count), b('alice'), KEY)).toThrow(RangeError);
  });
});

describe('partial_email', () => {
  it('keeps the first character of the local part and the domain', () => {
    expect(mt(EMAIL, 'alice@example.com')).toBe('a***@example.com');
    expect(mt(EMAIL, 'b@x.org')).toBe('b***@x.org');
  });

  it('uses code points for the first character', () => {
    expect(mt(EMAIL, 'élodie@exemple.fr')).toBe('é***@exemple.fr');
    expect(mt(EMAIL, '张伟@例子.中国')).toBe('张***@例子.中国');
    expect(mt(EMAIL, '😀smile@example.com')).toBe('😀***@example.com');
  });

  it.each(['alice', 'alice.example.com', '', '@example.com', '@'])('redacts %j fully (no @ or empty local part)', (v) => {
    expect(mt(EMAIL, v)).toBe('***');
  });

  it('with several @ the last one separates the domain, and the rest of the local part is hidden', () => {
    expect(mt(EMAIL, '"al@ice"@example.com')).toBe('"***@example.com');
    expect(mt(EMAIL, 'a@b@c.example')).toBe('a***@c.example');
    expect(mt(EMAIL, 'secret@internal@example.com')).not.toContain('internal');
  });
});

describe('hash', () => {
  it('is HMAC-SHA256 truncated to 32 lowercase hex characters (RFC 4231 test case 2)', () => {
    // Known answer: HMAC-SHA256("Jefe", "what do ya want for nothing?") =
    // 5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843
    expect(mt(HASH, 'what do ya want for nothing?', b('Jefe'))).toBe('5bdcc146bf60754e6a042426089575c7');
  });

  it('is deterministic for one key', () => {
    for (const v of ['alice@example.com', 'é中文😀', '']) {
      const h = mt(HASH, v);
      expect(h).toMatch(/^[0-9a-f]{32}$/);
      expect(mt(HASH, v)).toBe(h);
    }
  });

  it('depends on the key', () => {
    expect(mt(HASH, 'alice@example.com', KEY)).not.toBe(mt(HASH, 'alice@example.com', OTHER_KEY));
  });

  it('separates different values, including ones that differ only in the encoding of a character', () => {
    expect(mt(HASH, 'alice')).not.toBe(mt(HASH, 'alicf'));
    expect(mt(HASH, 'caf\u00e9')).not.toBe(mt(HASH, 'cafe\u0301'));
    expect(mt(HASH, '')).not.toBe(mt(HASH, ' '));
  });

  it('does not contain the input', () => {
    const secret = 'ssn-078-05-1120';
    const h = mt(HASH, secret)!;
    expect(h).not.toContain(secret);
    expect(h).not.toContain('078-05-1120');
    expect(h).toHaveLength(32);
  });

  it('refuses an empty key instead of degrading to an unkeyed hash', () => {
    expect(() => maskText(HASH, b('alice'), Buffer.alloc(0))).toThrow(/key/);
    expect(() => maskBinary(HASH, Buffer.from([0, 0, 0, 1]), INT4, Buffer.alloc(0))).toThrow(/key/);
    expect(() => maskBinary(HASH, b('alice'), 25, Buffer.alloc(0))).toThrow(/key/);
  });
});

describe('invalid UTF-8 is opaque', () => {
  it.each(INVALID.map((v) => [v.toString('hex'), v] as const))(
    '%s: keep_first, keep_last and partial_email redact fully',
    (_hex, v) => {
      expect(mt(first(1), v)).toBe('***');
      expect(mt(last(1), v)).toBe('***');
      expect(mt(first(0), v)).toBe('***');
      expect(mt(EMAIL, Buffer.concat([v, b('@example.com')]))).toBe('***');
    },
  );

  it.each(INVALID.map((v) => [v.toString('hex'), v] as const))('%s: hash still hashes the raw bytes', (_hex, v) => {
    const expected = createHmac('sha256', KEY).update(v).digest('hex').slice(0, 32);
    expect(mt(HASH, v)).toBe(expected);
  });

  it('invalid values with a common prefix hash differently', () => {
    expect(mt(HASH, INVALID[0]!)).not.toBe(mt(HASH, INVALID[1]!));
  });

  it('the masked output is valid UTF-8', () => {
    for (const v of INVALID) {
      for (const s of [first(2), last(2), EMAIL, HASH]) {
        const out = maskText(s, v, KEY)!;
        expect(() => new TextDecoder('utf-8', { fatal: true }).decode(out)).not.toThrow();
      }
    }
  });
});

describe('maskBinary', () => {
  const int4 = (n: number): Buffer => {
    const buf = Buffer.alloc(4);
    buf.writeInt32BE(n);
    return buf;
  };

  it('an int4 value cannot be partially revealed: keep_* and partial_email become ***', () => {
    const v = int4(123456789);
    expect(mb(last(4), v, INT4)).toBe('***');
    expect(mb(last(0), v, INT4)).toBe('***');
    expect(mb(first(1), v, INT4)).toBe('***');
    expect(mb(EMAIL, v, INT4)).toBe('***');
  });

  it('non-text binary values are never echoed, even when their bytes happen to be printable', () => {
    // Bytes 'abcdefgh' as a bytea / int8 value: partial reveal would show raw bytes, not the text form.
    expect(mb(first(2), b('abcdefgh'), BYTEA)).toBe('***');
    expect(mb(last(2), b('abcdefgh'), 20)).toBe('***');
    expect(mb(EMAIL, b('alice@example.com'), BYTEA)).toBe('***');
  });

  it('unknown oids (citext and other extension types) are treated as non-text', () => {
    expect(mb(first(2), b('alice'), CITEXT_LIKE)).toBe('***');
    expect(mb(EMAIL, b('alice@example.com'), CITEXT_LIKE)).toBe('***');
  });

  it('still rejects a bad count on non-text types', () => {
    expect(() => maskBinary(last(-1), int4(1), INT4, KEY)).toThrow(RangeError);
  });

  it('redact, fixed and null behave as in text format', () => {
    expect(mb({ kind: 'redact', text: 'hidden' }, int4(42), INT4)).toBe('hidden');
    expect(mb({ kind: 'fixed', value: '0' }, int4(42), INT4)).toBe('0');
    expect(maskBinary({ kind: 'null' }, int4(42), INT4, KEY)).toBeNull();
  });

  it.each([
    ['text', 25],
    ['varchar', 1043],
    ['bpchar', 1042],
    ['name', 19],
  ])('%s (oid %i) carries UTF-8 text and masks exactly like maskText', (_name, oid) => {
    const strategies: MaskStrategy[] = [first(2), last(3), EMAIL, HASH, { kind: 'redact', text: 'x' }, { kind: 'fixed', value: 'y' }];
    for (const v of ['alice@example.com', 'é中文😀 ', '张伟@例子.中国', '', 'ab']) {
      for (const s of strategies) {
        expect(mb(s, b(v), oid)).toBe(mt(s, v));
      }
    }
    expect(mb(first(2), b('alice'), oid)).toBe('al***');
    expect(mb(EMAIL, b('alice@example.com'), oid)).toBe('a***@example.com');
    expect(maskBinary({ kind: 'null' }, b('alice'), oid, KEY)).toBeNull();
    for (const v of INVALID) expect(mb(first(1), v, oid)).toBe('***');
  });

  it('hash of a non-text value is keyed by type oid: same bytes, different types, different hashes', () => {
    const v = int4(42);
    const asInt4 = mb(HASH, v, INT4);
    const asOid = mb(HASH, v, OID);
    expect(asInt4).toMatch(/^[0-9a-f]{32}$/);
    expect(asOid).toMatch(/^[0-9a-f]{32}$/);
    expect(asInt4).not.toBe(asOid);
    // ... and never equal to the hash of the same bytes as text.
    expect(asInt4).not.toBe(mt(HASH, v));
    expect(mb(HASH, v, 25)).toBe(mt(HASH, v));
  });

  it('hash of a non-text value is HMAC over 0x00, the big-endian oid, then the raw bytes', () => {
    const v = int4(42);
    const expected = createHmac('sha256', KEY)
      .update(Buffer.from([0x00, 0x00, 0x00, 0x00, INT4]))
      .update(v)
      .digest('hex')
      .slice(0, 32);
    expect(mb(HASH, v, INT4)).toBe(expected);
  });

  it('hash of a non-text value is deterministic, key-dependent and value-dependent', () => {
    expect(mb(HASH, int4(42), INT4)).toBe(mb(HASH, int4(42), INT4));
    expect(mb(HASH, int4(42), INT4)).not.toBe(mb(HASH, int4(42), INT4, OTHER_KEY));
    expect(mb(HASH, int4(42), INT4)).not.toBe(mb(HASH, int4(43), INT4));
  });
});

describe('strategyLabel', () => {
  it.each([
    [{ kind: 'redact', text: 'secret-looking text' }, 'redact'],
    [{ kind: 'partial_email' }, 'partial_email'],
    [{ kind: 'keep_first', count: 2 }, 'keep_first(2)'],
    [{ kind: 'keep_last', count: 4 }, 'keep_last(4)'],
    [{ kind: 'hash' }, 'hash'],
    [{ kind: 'null' }, 'null'],
    [{ kind: 'fixed', value: 'unknown@example.invalid' }, 'fixed'],
  ] satisfies [MaskStrategy, string][])('%j → %s', (s, label) => {
    expect(strategyLabel(s)).toBe(label);
  });
});

describe('unknown strategies fail closed', () => {
  it('throws instead of returning the value unmasked', () => {
    const bogus = { kind: 'passthrough' } as unknown as MaskStrategy;
    expect(() => maskText(bogus, b('alice'), KEY)).toThrow(/unknown mask strategy/);
    expect(() => maskBinary(bogus, b('alice'), INT4, KEY)).toThrow(/unknown mask strategy/);
    expect(() => maskBinary(bogus, b('alice'), 25, KEY)).toThrow(/unknown mask strategy/);
    expect(() => strategyLabel(bogus)).toThrow(/unknown mask strategy/);
  });
});
