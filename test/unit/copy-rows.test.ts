import { describe, expect, it } from 'vitest';
import { copyFormat, type CopyFormat } from '../../src/masking/copy-format.js';
import { CopyRowMasker } from '../../src/masking/copy-rows.js';
import type { MaskStrategy } from '../../src/masking/strategies.js';

const KEY = Buffer.from('k'.repeat(32));
const REDACT: MaskStrategy = { kind: 'redact', text: '***' };
const TEXT = copyFormat([]) as CopyFormat;
const CSV = copyFormat([{ DefElem: { defname: 'format', arg: { String: { sval: 'csv' } } } }]) as CopyFormat;

function mask(format: CopyFormat, plan: (MaskStrategy | null)[], ...payloads: string[]): string {
  const m = new CopyRowMasker(format, plan, KEY);
  return payloads.map((p) => m.push(Buffer.from(p)).toString()).join('') + m.end().toString();
}

describe('COPY row masking', () => {
  it('text: escaped delimiters and backslashes stay inside their column', () => {
    expect(mask(TEXT, [null, REDACT, null], 'a\\\tb\tsecret\\\\\tc\\\\\n')).toBe('a\\\tb\t***\tc\\\\\n');
    expect(mask(TEXT, [REDACT, null], '\\N\tx\n')).toBe('\\N\tx\n');
  });

  it('text: a masked value with special characters is escaped on the way out', () => {
    const fixed: MaskStrategy = { kind: 'fixed', value: 'a\tb\\c\nd' };
    expect(mask(TEXT, [fixed], 'x\n')).toBe('a\\tb\\\\c\\nd\n');
  });

  it('a row split over several payloads is masked once complete; a tail at CopyDone is masked too', () => {
    expect(mask(TEXT, [null, REDACT], '1\tsec', 'ret\n2\tother')).toBe('1\t***\n2\t***');
    expect(mask(CSV, [REDACT, null], '"multi\nline', ' secret",x\n')).toBe('"***",x\n');
  });

  it('CSV: quoted fields with doubled quotes, delimiters and newlines; empty unquoted is NULL', () => {
    expect(mask(CSV, [null, REDACT, null], '"a,""b""",",secret,""\n",z\n')).toBe('"a,""b""","***",z\n');
    expect(mask(CSV, [REDACT, REDACT], ',""\n')).toBe(',"***"\n');
  });

  it('a row whose column count does not match the plan is redacted whole', () => {
    const m = new CopyRowMasker(TEXT, [null, REDACT], KEY);
    expect(m.push(Buffer.from('1\t2\t3\n')).toString()).toBe('***\t***\n');
    expect(m.mismatched).toBe(1);
  });

  it('a header line passes only when the header option is certainly on', () => {
    const withHeader = copyFormat([
      { DefElem: { defname: 'format', arg: { String: { sval: 'csv' } } } },
      { DefElem: { defname: 'header' } },
    ]) as CopyFormat;
    expect(mask(withHeader, [null, REDACT], 'id,email\n1,x@y\n')).toBe('id,email\n1,"***"\n');
    const unsure = copyFormat([{ DefElem: { defname: 'header', arg: { String: { sval: 'match' } } } }]) as CopyFormat;
    expect(unsure.header).toBe(false);
  });

  it('formats masking cannot parse are reported unsupported', () => {
    expect(copyFormat([{ DefElem: { defname: 'format', arg: { String: { sval: 'binary' } } } }])).toEqual({ unsupported: 'COPY in binary format cannot be masked' });
    expect(copyFormat([{ DefElem: { defname: 'encoding', arg: { String: { sval: 'SJIS' } } } }])).toHaveProperty('unsupported');
    expect(copyFormat([{ DefElem: { defname: 'encoding', arg: { String: { sval: 'utf8' } } } }])).not.toHaveProperty('unsupported');
    expect(copyFormat([{ DefElem: { defname: 'delimiter', arg: { String: { sval: '€' } } } }])).toHaveProperty('unsupported');
  });
});
