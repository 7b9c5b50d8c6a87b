import { beforeAll, describe, expect, it } from 'vitest';
import { Classifier, loadParser } from '../../src/classify/classifier.js';
import type { StatementInfo } from '../../src/classify/statement-info.js';
import { evaluateStatement, stricter, type EvalContext, type Verdict } from '../../src/policy/evaluate.js';
import { PolicyJudge } from '../../src/policy/policy-judge.js';
import type { Policy } from '../../src/policy/policy.js';
import { compileRules } from '../../src/policy/rules-loader.js';
import { decodeFrontendMessage } from '../../src/protocol/frontend.js';
import type { Request } from '../../src/session/request.js';
import type { SessionInfo } from '../../src/session/session-info.js';
import { fe, typedFrame } from '../helpers/wire.js';

/** Allowed, and without a row cap (the rule and statements it carries are for the audit log). */
const allowedWithoutCap = (d: unknown): boolean => (d as { action?: string }).action === 'allow' && (d as { rowCap?: unknown }).rowCap === undefined;

/**
 * Rule semantics, as documented at the top of src/policy/evaluate.ts: strictest wins; ANY for
 * deny/review, ALL for allow; unqualified names against every search path candidate; allow rules
 * skip unanalysable statements; except; identity globs; in_transaction; fallbacks; fastpath.
 */
const classifier = new Classifier();

beforeAll(async () => {
  await loadParser();
});

function policyOf(yaml: string): Policy {
  return compileRules([{ file: 'test.yaml', text: yaml }]);
}

function statement(sql: string): StatementInfo {
  const r = classifier.classify(sql);
  if (!r.ok) throw new Error(`expected ${JSON.stringify(sql)} to parse, got: ${r.message}`);
  expect(r.statements, sql).toHaveLength(1);
  return r.statements[0]!;
}

const baseCtx: EvalContext = {
  user: 'agent',
  database: 'app',
  application: 'psql',
  searchPath: ['agent', 'public', 'pg_catalog', 'pg_temp'],
  inTransaction: false,
};

function verdict(policy: Policy, sql: string, ctx: Partial<EvalContext> = {}): Verdict {
  return evaluateStatement(policy, statement(sql), { ...baseCtx, ...ctx });
}

describe('evaluate: the strictest applicable rule decides', () => {
  const policy = policyOf(`
policy:
  default: allow
  rules:
    - name: allow-reads
      match: { kind: [read] }
      action: allow
    - name: review-orders
      match: { relations: [orders] }
      action: review
    - name: deny-secrets
      match: { relations: [secrets] }
      action: deny
    - name: deny-secrets-again
      match: { relations: [secrets] }
      action: deny
      message: second deny rule
`);

  it('applies deny over review over allow when all three match', () => {
    const v = verdict(policy, 'SELECT * FROM orders JOIN secrets ON true');
    expect(v.action).toBe('deny');
    expect(v.rule).toBe('deny-secrets');
  });

  it('reports the first rule in file order among equally strict ones', () => {
    const v = verdict(policy, 'SELECT * FROM secrets');
    expect(v.rule).toBe('deny-secrets');
    expect(v.message).toBeUndefined();
  });

  it('applies review over allow', () => {
    const v = verdict(policy, 'SELECT * FROM orders');
    expect(v).toMatchObject({ action: 'review', rule: 'review-orders' });
  });

  it('applies the allow rule when only it matches', () => {
    expect(verdict(policy, 'SELECT * FROM items')).toMatchObject({ action: 'allow', rule: 'allow-reads' });
  });

  it('stricter() keeps the first verdict on a tie and takes a stricter second one', () => {
    const a: Verdict = { action: 'review', rule: 'a', reason: '' };
    const b: Verdict = { action: 'review', rule: 'b', reason: '' };
    const c: Verdict = { action: 'deny', rule: 'c', reason: '' };
    expect(stricter(a, b)).toBe(a);
    expect(stricter(a, c)).toBe(c);
    expect(stricter(c, a)).toBe(c);
  });

  it('carries the rule message into the verdict', () => {
    const p = policyOf(`
policy:
  rules:
    - name: no-drop
      match: { kind: [ddl] }
      action: deny
      message: ask a DBA
`);
    expect(verdict(p, 'DROP TABLE t')).toMatchObject({ action: 'deny', rule: 'no-drop', message: 'ask a DBA' });
  });
});

describe('evaluate: ANY for deny and review, ALL for allow', () => {
  const policy = policyOf(`
policy:
  default: review
  rules:
    - name: analytics-reads
      match: { kind: [read], relations: ['analytics.*'] }
      action: allow
`);

  it('does not allow a join of analytics.a with public.secrets', () => {
    expect(verdict(policy, 'SELECT * FROM analytics.a JOIN public.secrets ON true')).toMatchObject({ action: 'review', rule: 'default' });
  });

  it('allows a read of only analytics tables', () => {
    expect(verdict(policy, 'SELECT * FROM analytics.a JOIN analytics.b ON true')).toMatchObject({ action: 'allow', rule: 'analytics-reads' });
  });

  it('does not allow a statement naming no relation at all through a relations allow rule', () => {
    expect(verdict(policy, 'SELECT 1').action).toBe('review');
  });

  it('does not allow a read that also writes (kinds read + write) through an allow rule on kind read', () => {
    expect(verdict(policy, 'WITH d AS (DELETE FROM analytics.a RETURNING *) SELECT * FROM analytics.b').action).toBe('review');
  });

  it('denies a join when ANY relation matches a deny rule', () => {
    const p = policyOf(`
policy:
  rules:
    - name: no-secrets
      match: { relations: ['public.secrets'] }
      action: deny
`);
    expect(verdict(p, 'SELECT * FROM analytics.a JOIN public.secrets ON true')).toMatchObject({ action: 'deny', rule: 'no-secrets' });
  });

  it('matches a review rule on kind when ANY kind of the statement matches', () => {
    const p = policyOf(`
policy:
  rules:
    - name: writes
      match: { kind: [write] }
      action: review
`);
    expect(verdict(p, 'WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d').action).toBe('review');
  });

  it('requires every condition of a rule to hold (AND across conditions)', () => {
    const p = policyOf(`
policy:
  rules:
    - name: write-to-audit
      match: { kind: [write], relations: [audit_log] }
      action: deny
`);
    expect(verdict(p, 'DELETE FROM audit_log').action).toBe('deny');
    expect(verdict(p, 'SELECT * FROM audit_log').action).toBe('allow');
    expect(verdict(p, 'DELETE FROM other').action).toBe('allow');
  });

  it('allows a function only when ALL functions called are allowed', () => {
    const p = policyOf(`
policy:
  default: deny
  rules:
    - name: safe-functions
      match: { functions: [lower, upper] }
      action: allow
`);
    expect(verdict(p, "SELECT lower('a'), upper('b')").action).toBe('allow');
    expect(verdict(p, "SELECT lower('a'), md5('b')").action).toBe('deny');
  });

  it('matches settings by glob, case-insensitively on the rule side', () => {
    const p = policyOf(`
policy:
  rules:
    - name: no-memory
      match: { settings: ['Work_*'] }
      action: deny
`);
    expect(verdict(p, 'SET work_mem = 1').action).toBe('deny');
    expect(verdict(p, 'SET statement_timeout = 1').action).toBe('allow');
  });
});

describe('evaluate: unqualified names and the search path', () => {
  const allowPublic = policyOf(`
policy:
  default: review
  rules:
    - name: public-reads
      match: { kind: [read], relations: ['public.*'] }
      action: allow
`);
  const denySecret = policyOf(`
policy:
  rules:
    - name: no-secret-schema
      match: { relations: ['secret.*'] }
      action: deny
`);

  it('does not allow an unqualified name that could resolve outside the allowed schema', () => {
    expect(verdict(allowPublic, 'SELECT * FROM t').action).toBe('review');
  });

  it('allows an unqualified name when every search path candidate is allowed', () => {
    expect(verdict(allowPublic, 'SELECT * FROM t', { searchPath: ['public'] }).action).toBe('allow');
  });

  it('allows a qualified name in the allowed schema regardless of the search path', () => {
    expect(verdict(allowPublic, 'SELECT * FROM public.t').action).toBe('allow');
  });

  it('denies an unqualified name when ANY search path candidate matches a deny rule', () => {
    expect(verdict(denySecret, 'SELECT * FROM users', { searchPath: ['public', 'secret'] }).action).toBe('deny');
  });

  it('does not deny an unqualified name when no candidate schema matches', () => {
    expect(verdict(denySecret, 'SELECT * FROM users').action).toBe('allow');
  });

  it('does not deny a name qualified with another schema', () => {
    expect(verdict(denySecret, 'SELECT * FROM public.users', { searchPath: ['secret'] }).action).toBe('allow');
  });

  it('matches a rule without a schema against the table in any schema', () => {
    const p = policyOf(`
policy:
  rules:
    - name: no-users
      match: { relations: [users] }
      action: deny
`);
    expect(verdict(p, 'SELECT * FROM anything.users').action).toBe('deny');
    expect(verdict(p, 'SELECT * FROM users').action).toBe('deny');
  });

  it('matches names case-sensitively, as PostgreSQL stores them', () => {
    const p = policyOf(`
policy:
  rules:
    - name: no-quoted-users
      match: { relations: [Users] }
      action: deny
`);
    expect(verdict(p, 'SELECT * FROM "Users"').action).toBe('deny');
    expect(verdict(p, 'SELECT * FROM Users').action).toBe('allow');
  });

  it('matches an unqualified function against pg_catalog for a schema-qualified pattern', () => {
    const p = policyOf(`
policy:
  rules:
    - name: no-read-file
      match: { functions: ['pg_catalog.pg_read_file'] }
      action: deny
`);
    expect(verdict(p, "SELECT pg_read_file('x')").action).toBe('deny');
    expect(verdict(p, "SELECT pg_catalog.pg_read_file('x')").action).toBe('deny');
    expect(verdict(p, "SELECT mine.pg_read_file('x')").action).toBe('allow');
  });
});

describe('evaluate: unanalysable statements', () => {
  it('does not apply an allow rule to an unanalysable statement', () => {
    const p = policyOf(`
policy:
  default: allow
  unanalysable: deny
  rules:
    - name: allow-admin
      match: { kind: [admin] }
      action: allow
`);
    expect(verdict(p, 'DO $$ BEGIN NULL; END $$')).toMatchObject({ action: 'deny', rule: 'unanalysable' });
  });

  it('applies an allow rule that says unanalysable: true', () => {
    const p = policyOf(`
policy:
  unanalysable: deny
  rules:
    - name: allow-do
      match: { kind: [admin], unanalysable: true }
      action: allow
`);
    expect(verdict(p, 'DO $$ BEGIN NULL; END $$')).toMatchObject({ action: 'allow', rule: 'allow-do' });
  });

  it('applies a rule with unanalysable: true only to unanalysable statements', () => {
    const p = policyOf(`
policy:
  rules:
    - name: review-opaque
      match: { unanalysable: true }
      action: review
`);
    expect(verdict(p, 'CALL p()').action).toBe('review');
    expect(verdict(p, 'SELECT 1').action).toBe('allow');
  });

  it('applies a rule with unanalysable: false only to analysable statements', () => {
    const p = policyOf(`
policy:
  unanalysable: review
  rules:
    - name: deny-analysable-ddl
      match: { kind: [ddl], unanalysable: false }
      action: deny
`);
    expect(verdict(p, 'DROP TABLE t').action).toBe('deny');
    expect(verdict(p, "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'")).toMatchObject({ action: 'review', rule: 'unanalysable' });
  });

  it('lets a deny rule apply to an unanalysable statement (strictest still wins)', () => {
    const p = policyOf(`
policy:
  unanalysable: review
  rules:
    - name: no-read-file
      match: { functions: [pg_read_file] }
      action: deny
`);
    expect(verdict(p, "CALL p(pg_read_file('x'))")).toMatchObject({ action: 'deny', rule: 'no-read-file' });
  });
});

describe('evaluate: identity conditions and except', () => {
  const policy = policyOf(`
policy:
  rules:
    - name: ddl-needs-review
      match: { kind: [ddl] }
      except: { users: [migrator, 'deploy_*'] }
      action: review
    - name: batch-jobs
      match: { kind: [write], applications: ['etl-*'] }
      except: { databases: [staging] }
      action: deny
    - name: prod-only
      match: { kind: [read], databases: ['prod?'], users: ['agent*'] }
      action: deny
`);

  it('does not apply a rule to a user listed in except', () => {
    expect(verdict(policy, 'DROP TABLE t', { user: 'migrator' })).toMatchObject({ action: 'allow', rule: 'default' });
  });

  it('matches except users by glob', () => {
    expect(verdict(policy, 'DROP TABLE t', { user: 'deploy_ci' }).action).toBe('allow');
    expect(verdict(policy, 'DROP TABLE t', { user: 'deployer' }).action).toBe('review');
  });

  it('applies the rule to every other user', () => {
    expect(verdict(policy, 'DROP TABLE t', { user: 'agent' }).action).toBe('review');
  });

  it('matches applications by glob', () => {
    expect(verdict(policy, 'DELETE FROM t', { application: 'etl-nightly' }).action).toBe('deny');
    expect(verdict(policy, 'DELETE FROM t', { application: 'psql' }).action).toBe('allow');
  });

  it('does not apply a rule in an excepted database', () => {
    expect(verdict(policy, 'DELETE FROM t', { application: 'etl-nightly', database: 'staging' }).action).toBe('allow');
  });

  it('matches databases with ? as exactly one character, and users by prefix', () => {
    expect(verdict(policy, 'SELECT 1', { database: 'prod1', user: 'agent7' }).action).toBe('deny');
    expect(verdict(policy, 'SELECT 1', { database: 'prod12', user: 'agent7' }).action).toBe('allow');
    expect(verdict(policy, 'SELECT 1', { database: 'prod1', user: 'bob' }).action).toBe('allow');
  });
});

describe('evaluate: in_transaction', () => {
  const policy = policyOf(`
policy:
  rules:
    - name: no-ddl-in-tx
      match: { kind: [ddl], in_transaction: true }
      action: deny
    - name: review-ddl-outside-tx
      match: { kind: [ddl], in_transaction: false }
      action: review
`);

  it('applies an in_transaction: true rule only inside a transaction block', () => {
    expect(verdict(policy, 'DROP TABLE t', { inTransaction: true })).toMatchObject({ action: 'deny', rule: 'no-ddl-in-tx' });
  });

  it('applies an in_transaction: false rule only outside', () => {
    expect(verdict(policy, 'DROP TABLE t', { inTransaction: false })).toMatchObject({ action: 'review', rule: 'review-ddl-outside-tx' });
  });
});

describe('evaluate: fallbacks', () => {
  it('uses policy.default when no rule matches', () => {
    expect(verdict(policyOf('policy: { default: deny }'), 'SELECT 1')).toMatchObject({ action: 'deny', rule: 'default' });
    expect(verdict(policyOf('policy: { default: review }'), 'SELECT 1')).toMatchObject({ action: 'review', rule: 'default' });
    expect(verdict(policyOf('policy: { default: allow }'), 'SELECT 1')).toMatchObject({ action: 'allow', rule: 'default' });
  });

  it('defaults to allow with no policy section at all', () => {
    expect(verdict(policyOf('sensitive: { tables: [] }'), 'SELECT 1').action).toBe('allow');
  });

  it('uses policy.unanalysable (default review) for unanalysable statements no rule matches', () => {
    expect(verdict(policyOf('policy: { default: allow }'), 'CALL p()')).toMatchObject({ action: 'review', rule: 'unanalysable' });
    expect(verdict(policyOf('policy: { default: allow, unanalysable: deny }'), 'CALL p()')).toMatchObject({ action: 'deny', rule: 'unanalysable' });
  });

  it('treats a read that runs SQL from a string as unanalysable', () => {
    expect(verdict(policyOf('policy: { default: allow }'), "SELECT query_to_xml('select 1', true, true, '')").action).toBe('review');
  });
});

describe('evaluate: fastpath', () => {
  function session(): SessionInfo {
    return {
      id: 1,
      startupParams: new Map([['user', 'agent']]),
      user: 'agent',
      database: 'app',
      clientAddress: '127.0.0.1',
      tls: false,
      txStatus: 'I',
      transactionSince: null,
      notify: () => {},
      serverParams: new Map(),
      statementCandidates: () => [],
      portalCandidates: () => [],
    };
  }

  function functionCallRequest(): Request {
    const frame = typedFrame(fe.functionCall({ oid: 2614, args: ['/etc/passwd'] }));
    return { kind: 'function-call', messages: [{ frame, msg: decodeFrontendMessage(frame) }], end: 'none', bytes: frame.bytes.length };
  }

  it('denies a FunctionCall by default', () => {
    const p = policyOf('policy: { default: allow }');
    expect(p.fastpath).toBe('deny');
    const d = new PolicyJudge({ current: p }, classifier).judge(functionCallRequest(), session());
    expect(d).toMatchObject({ action: 'deny', rule: 'fastpath' });
  });

  it('allows a FunctionCall when policy.fastpath is allow', () => {
    const p = policyOf('policy: { fastpath: allow }');
    expect(new PolicyJudge({ current: p }, classifier).judge(functionCallRequest(), session())).toSatisfy(allowedWithoutCap);
  });
});

describe('evaluate: review terms', () => {
  const policy = policyOf(`
policy:
  rules:
    - name: ddl
      match: { kind: [ddl] }
      action: review
    - name: payroll
      match: { relations: [payroll] }
      action: review
      review: { approvers: 2, reviewers: [dba, hr], grants: false, timeout_seconds: 600 }
    - name: payroll-fast
      match: { relations: [payroll], kind: [ddl] }
      action: review
      review: { reviewers: [hr, security], timeout_seconds: 60 }
`);

  it('a review rule carries its terms; defaults when it names none', () => {
    expect(verdict(policy, 'DROP TABLE orders').review).toEqual({ approvers: 1, reviewers: [], grants: true });
    expect(verdict(policy, 'DELETE FROM payroll').review).toEqual({ approvers: 2, reviewers: ['dba', 'hr'], grants: false, timeoutSeconds: 600 });
  });

  it('several review rules: most approvers, no grants if any forbids, shortest timeout, groups all rules accept', () => {
    const v = verdict(policy, 'DROP TABLE payroll');
    expect(v.rule).toBe('ddl');
    expect(v.review).toEqual({ approvers: 2, reviewers: ['hr'], grants: false, timeoutSeconds: 60 });
  });

  it('review settings on a deny or allow rule are an error', () => {
    expect(() => policyOf(`
policy:
  rules:
    - name: x
      match: { kind: [ddl] }
      action: deny
      review: { approvers: 2 }
`)).toThrow(/review/);
  });

  it('the judge hands a review verdict on as a refusal carrying the terms (refused unless a gate holds it)', () => {
    const frame = typedFrame(fe.query('DELETE FROM payroll WHERE id = 1'));
    const request: Request = { kind: 'simple', messages: [{ frame, msg: decodeFrontendMessage(frame) }], end: 'none', bytes: frame.bytes.length };
    const session: SessionInfo = {
      id: 1, startupParams: new Map([['user', 'agent']]), user: 'agent', database: 'app', clientAddress: '127.0.0.1', tls: false,
      txStatus: 'I', transactionSince: null, notify: () => {}, serverParams: new Map(), statementCandidates: () => [], portalCandidates: () => [],
    };
    const d = new PolicyJudge({ current: policy }, classifier).judge(request, session);
    expect(d).toMatchObject({
      action: 'deny',
      rule: 'payroll',
      error: { code: '42501', message: 'statement requires approval: payroll; no approval channel is configured' },
      review: { approvers: 2, reviewers: ['dba', 'hr'], grants: false, timeoutSeconds: 600 },
    });
  });
});
