import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { Classifier, loadParser } from '../../src/classify/classifier.js';
import { KINDS } from '../../src/classify/statement-info.js';
import { PolicyJudge } from '../../src/policy/policy-judge.js';
import type { Policy } from '../../src/policy/policy.js';
import { compileRules, listRuleFiles, loadRules } from '../../src/policy/rules-loader.js';

/**
 * The permanent bypass corpus (test/fixtures/bypass-corpus.yaml): SQL an attacker could use to
 * sneak something past a naive firewall, with the verdict pgwarden must give through
 * PolicyJudge.explain. The corpus only grows; see the header of the fixture.
 */
const SHIPPED_RULES = fileURLToPath(new URL('../../rules', import.meta.url));
const CORPUS_FILE = fileURLToPath(new URL('../fixtures/bypass-corpus.yaml', import.meta.url));
const IDENTITY = { user: 'agent', database: 'app', application: '' };

const entrySchema = z
  .object({
    sql: z.string(),
    expect: z.enum(['allow', 'review', 'deny']),
    rule: z.string().min(1).optional(),
    sqlstate: z.string().regex(/^[0-9A-Z]{5}$/).optional(),
    kinds: z.array(z.enum(KINDS)).min(1).optional(),
    why: z.string().min(10),
  })
  .strict();

const corpusSchema = z
  .object({
    shipped: z.array(entrySchema).min(1),
    site: z.object({ rules: z.string().min(1), cases: z.array(entrySchema).min(1) }).strict(),
  })
  .strict();

type Entry = z.infer<typeof entrySchema>;

// Parsed at collection time so that every entry becomes a named test of its own.
const corpus = corpusSchema.parse(parse(readFileSync(CORPUS_FILE, 'utf8'), { uniqueKeys: true }));

const classifier = new Classifier();
let shippedJudge: PolicyJudge;
let siteJudge: PolicyJudge;

beforeAll(async () => {
  await loadParser();
  shippedJudge = new PolicyJudge({ current: loadRules(SHIPPED_RULES) }, classifier);
  const docs = listRuleFiles(SHIPPED_RULES).map((file) => ({ file, text: readFileSync(file, 'utf8') }));
  const site: Policy = compileRules([...docs, { file: 'zz-site.yaml', text: corpus.site.rules }]);
  siteJudge = new PolicyJudge({ current: site }, classifier);
});

const title = (e: Entry): string => `${e.expect.padEnd(6)} ${JSON.stringify(e.sql)}`;

function check(judge: PolicyJudge, e: Entry): void {
  const r = judge.explain(e.sql, IDENTITY);
  const context = `${JSON.stringify(e.sql)}: ${e.why}\n  got ${JSON.stringify(r.decision)}`;
  expect(r.decision.action, context).toBe(e.expect);
  if (e.rule !== undefined) expect(r.decision.rule, context).toBe(e.rule);
  if (e.sqlstate !== undefined) {
    // What the client would get: the parse/encoding error, a guard's own code, or 42501.
    const code = r.error?.code ?? r.decision.sqlstate ?? (r.decision.action === 'deny' ? '42501' : undefined);
    expect(code, context).toBe(e.sqlstate);
  }
  if (e.kinds !== undefined) {
    const kinds = new Set(r.statements.flatMap((s) => s.statement.kinds));
    for (const k of e.kinds) expect([...kinds], context).toContain(k);
  }
}

describe('bypass corpus: the fixture', () => {
  it('lists every SQL text once per section, so the corpus grows without duplicates', () => {
    for (const list of [corpus.shipped, corpus.site.cases]) {
      const seen = new Set<string>();
      const dupes = list.map((e) => e.sql).filter((sql) => (seen.has(sql) ? true : (seen.add(sql), false)));
      expect(dupes).toEqual([]);
    }
  });

  it('holds a substantial corpus (entries are never removed)', () => {
    expect(corpus.shipped.length).toBeGreaterThanOrEqual(100);
    expect(corpus.site.cases.length).toBeGreaterThanOrEqual(25);
  });

  it('names a parse-error SQLSTATE only for entries decided by the parser', () => {
    for (const e of [...corpus.shipped, ...corpus.site.cases]) {
      if (e.sqlstate === '42601') expect(e.rule, e.sql).toBe('parse-error');
    }
  });
});

describe('bypass corpus: shipped rules', () => {
  it.each(corpus.shipped.map((e) => [title(e), e] as const))('%s', (_title, e) => {
    check(shippedJudge, e);
  });
});

describe('bypass corpus: shipped rules plus site relation rules', () => {
  it.each(corpus.site.cases.map((e) => [title(e), e] as const))('%s', (_title, e) => {
    check(siteJudge, e);
  });
});
