import { beforeAll, describe, expect, it } from 'vitest';
import { Classifier, loadParser } from '../../src/classify/classifier.js';
import { literalKey } from '../../src/classify/literal-key.js';

beforeAll(async () => {
  await loadParser();
});

describe('literalKey', () => {
  it('blanks simple numbers and strings and keeps everything else verbatim', () => {
    expect(literalKey("SELECT a FROM t WHERE id = 42 AND name = 'x''y' AND r > 1.5")).toBe(
      "SELECT a FROM t WHERE id = ? AND name = '?' AND r > ?",
    );
  });

  it('keeps parameters, identifiers with digits, quoted identifiers and comments', () => {
    expect(literalKey('SELECT t1.c2 FROM "t 3" WHERE x = $1 AND y = 7 /* 9 */ -- 8\n')).toBe(
      'SELECT t1.c2 FROM "t 3" WHERE x = $1 AND y = ? /* 9 */ -- 8\n',
    );
  });

  it.each([
    ["SELECT E'a'"],
    ["SELECT U&'a'"],
    ["SELECT B'101'"],
    ["SELECT X'ff'"],
    ["SELECT N'a'"],
    ['SELECT $$x$$'],
    ['SELECT $tag$x$tag$'],
    ['SELECT 1e5'],
    ['SELECT 0x1f'],
    ["SELECT 'a\\'"],
    ["SELECT 'é'"],
    ["SELECT 'unterminated"],
    ['SELECT 1 /* unterminated'],
    ['SELECT "unterminated'],
    ['SELECT 1.'],
    ['SELECT a FROM t'],
  ])('gives up on %s', (sql) => {
    expect(literalKey(sql)).toBeNull();
  });
});

describe('Classifier cache by literal key', () => {
  it('shares one classification between pgbench statements that differ only in values', () => {
    const c = new Classifier();
    const a = c.classify('SELECT abalance FROM pgbench_accounts WHERE aid = 48213;');
    const b = c.classify('SELECT abalance FROM pgbench_accounts WHERE aid = 7;');
    expect(b).toBe(a);
  });

  it('never shares between EXPLAIN (ANALYZE 0) and EXPLAIN (ANALYZE 1): one of them runs the DELETE', () => {
    const c = new Classifier();
    const planOnly = c.classify('EXPLAIN (ANALYZE 0) DELETE FROM t');
    const runs = c.classify('EXPLAIN (ANALYZE 1) DELETE FROM t');
    expect(planOnly.ok && planOnly.statements[0]!.kinds).toEqual(['utility']);
    expect(runs.ok && runs.statements[0]!.kinds).toContain('write');
  });

  it('never shares between set_config calls that set different settings', () => {
    const c = new Classifier();
    c.classify("SELECT set_config('application_name', 'x', false) FROM t WHERE 1 = 1");
    const role = c.classify("SELECT set_config('role', 'x', false) FROM t WHERE 1 = 1");
    expect(role.ok && role.statements[0]!.settings.map((s) => s.name)).toEqual(['role']);
    expect(role.ok && role.statements[0]!.kinds).toContain('privilege');
  });

  it('never shares statements that call functions', () => {
    const c = new Classifier();
    const first = c.classify("SELECT lower('A') FROM t WHERE id = 1");
    const second = c.classify("SELECT lower('B') FROM t WHERE id = 2");
    expect(second).not.toBe(first);
  });

  it('never shares SET statements, whose literal is the new value', () => {
    const c = new Classifier();
    c.classify("SET standard_conforming_strings = 'on'");
    const off = c.classify("SET standard_conforming_strings = 'off'");
    expect(off.ok && off.statements[0]!.settings[0]!.value).toBe('off');
  });
});
