import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { Classifier, loadParser } from '../../src/classify/classifier.js';
import { PolicyJudge, type PolicySource } from '../../src/policy/policy-judge.js';
import type { Policy } from '../../src/policy/policy.js';
import { compileRules, listRuleFiles, loadRules } from '../../src/policy/rules-loader.js';
import type { TxStatus } from '../../src/protocol/codes.js';
import { decodeFrontendMessage } from '../../src/protocol/frontend.js';
import type { Decision } from '../../src/session/decision.js';
import type { ReceivedMessage, Request } from '../../src/session/request.js';
import type { SessionInfo } from '../../src/session/session-info.js';
import { fe, typed, typedFrame } from '../helpers/wire.js';

/** Allowed, and without a row cap (the rule and statements it carries are for the audit log). */
const allowedWithoutCap = (d: unknown): boolean => (d as { action?: string }).action === 'allow' && (d as { rowCap?: unknown }).rowCap === undefined;

/**
 * PolicyJudge.judge over whole requests: frames built the way node-postgres builds them
 * (pg-protocol `serialize`, through test/helpers/wire.ts), decoded with our frontend decoder,
 * judged against a fake session.
 */
const SHIPPED_RULES = fileURLToPath(new URL('../../rules', import.meta.url));
const classifier = new Classifier();
let shipped: Policy;

beforeAll(async () => {
  await loadParser();
  shipped = loadRules(SHIPPED_RULES);
});

class FakeSession implements SessionInfo {
  readonly id = 1;
  readonly clientAddress = '127.0.0.1';
  readonly tls = false;
  readonly user: string;
  readonly database = 'app';
  readonly startupParams: Map<string, string>;
  txStatus: TxStatus = 'I';
  readonly transactionSince = null;
  notify(): void {}
  readonly serverParams = new Map<string, string>([
    ['standard_conforming_strings', 'on'],
    ['client_encoding', 'UTF8'],
  ]);
  /** Protocol-level statement name → candidate SQL texts (what the StatementTracker knows). */
  readonly statements = new Map<string, string[]>();
  /** Portal → candidate statement names. */
  readonly portals = new Map<string, string[]>();

  constructor(startup: Record<string, string> = {}) {
    this.startupParams = new Map(Object.entries({ user: 'agent', database: 'app', ...startup }));
    this.user = this.startupParams.get('user') ?? 'agent';
  }

  statementCandidates(name: string): string[] {
    return this.statements.get(name) ?? [];
  }

  portalCandidates(portal: string): string[] {
    return this.portals.get(portal) ?? [];
  }
}

/** A rules source whose snapshot a test can swap, as RulesStore does on reload. */
class SwappableRules implements PolicySource {
  constructor(public current: Policy) {}
}

function rx(message: Buffer): ReceivedMessage {
  const frame = typedFrame(message);
  return { frame, msg: decodeFrontendMessage(frame) };
}

function request(kind: Request['kind'], messages: Buffer[], end: Request['end']): Request {
  const received = messages.map(rx);
  return { kind, messages: received, end, bytes: received.reduce((n, m) => n + m.frame.bytes.length, 0) };
}

const query = (sql: string): Request => request('simple', [fe.query(sql)], 'none');
const batch = (...messages: Buffer[]): Request => request('extended', [...messages, fe.sync()], 'Sync');

function policyOf(yaml: string): Policy {
  return compileRules([{ file: 'test.yaml', text: yaml }]);
}

/** The shipped rule files plus one more document, validated together as the loader would. */
function shippedPlus(yaml: string): Policy {
  const docs = listRuleFiles(SHIPPED_RULES).map((file) => ({ file, text: readFileSync(file, 'utf8') }));
  return compileRules([...docs, { file: 'zz-site.yaml', text: yaml }]);
}

/** Without an estimator every decision is synchronous; a Promise here would be a defect. */
const judgeWith = (policy: Policy) => {
  const judge = new PolicyJudge(new SwappableRules(policy), classifier);
  return {
    judge(request: Request, session: SessionInfo): Decision {
      const d = judge.judge(request, session);
      if (d instanceof Promise) throw new Error('unexpected asynchronous decision without an estimator');
      return d;
    },
    checkStartup: (params: ReadonlyMap<string, string>) => judge.checkStartup(params),
  };
};

function denied(d: Decision | Promise<Decision>): { rule: string; code: string } {
  if (d instanceof Promise) throw new Error('unexpected asynchronous decision without an estimator');
  if (d.action !== 'deny') throw new Error(`expected a deny, got ${JSON.stringify(d)}`);
  return { rule: d.rule, code: d.error.code };
}

const DENY_SECRET_SCHEMA = `
policy:
  rules:
    - name: secret-schema
      match: { relations: ['secret.*'] }
      action: deny
`;

describe('PolicyJudge: simple Query', () => {
  it('allows a multi-statement Query when every statement is allowed', () => {
    expect(judgeWith(shipped).judge(query('SELECT 1; SELECT * FROM t; UPDATE t SET a = 1'), new FakeSession())).toSatisfy(allowedWithoutCap);
  });

  it('gives a multi-statement Query the strictest verdict of its statements (review)', () => {
    expect(denied(judgeWith(shipped).judge(query('SELECT 1; DROP TABLE t'), new FakeSession()))).toEqual({ rule: 'schema-changes', code: '42501' });
  });

  it('gives a multi-statement Query the strictest verdict of its statements (deny beats review)', () => {
    const d = judgeWith(shipped).judge(query("DROP TABLE t; SELECT pg_read_file('/etc/passwd'); SELECT 1"), new FakeSession());
    expect(denied(d).rule).toBe('server-files-and-network');
  });

  it('refuses a statement that needs review while no approval channel exists, with 42501', () => {
    const d = judgeWith(shipped).judge(query('SET ROLE postgres'), new FakeSession());
    expect(denied(d)).toEqual({ rule: 'privilege-changes', code: '42501' });
  });

  it('refuses unparsable SQL with 42601 and the position of the error', () => {
    const d = judgeWith(shipped).judge(query('SELECT 1; SELEC 2'), new FakeSession());
    expect(d.action).toBe('deny');
    if (d.action !== 'deny') return;
    expect(d.rule).toBe('parse-error');
    expect(d.error.code).toBe('42601');
    expect(d.error.position).toBe(11);
  });

  it('allows an empty Query string (the server answers EmptyQueryResponse)', () => {
    expect(judgeWith(shipped).judge(query(''), new FakeSession())).toSatisfy(allowedWithoutCap);
  });

  it('refuses a Query whose text is not valid UTF-8 with 22021', () => {
    const bad = typed('Q', Buffer.from([0x53, 0x45, 0x4c, 0x45, 0x43, 0x54, 0x20, 0x27, 0xff, 0xfe, 0x27, 0x00]));
    const d = judgeWith(policyOf('policy: { default: allow }')).judge(request('simple', [bad], 'none'), new FakeSession());
    expect(denied(d).code).toBe('22021');
  });
});

describe('PolicyJudge: extended protocol batches', () => {
  it('judges a Parse in the batch', () => {
    const d = judgeWith(shipped).judge(batch(fe.parse("SELECT pg_read_file('x')"), fe.bind(), fe.execute()), new FakeSession());
    expect(denied(d).rule).toBe('server-files-and-network');
  });

  it('refuses a Parse whose text is not valid UTF-8 with 22021', () => {
    const bad = typed('P', Buffer.from([0x00, 0x53, 0x45, 0x4c, 0x45, 0x43, 0x54, 0x20, 0x27, 0xc3, 0x28, 0x27, 0x00, 0x00, 0x00]));
    expect(denied(judgeWith(shipped).judge(batch(bad), new FakeSession())).code).toBe('22021');
  });

  it('judges a Bind of a statement prepared by an earlier request by that statement, even when the Parse in the batch is fine', () => {
    const session = new FakeSession();
    session.statements.set('old', ['DROP TABLE t']);
    const d = judgeWith(shipped).judge(batch(fe.parse('SELECT 1'), fe.bind({ statement: 'old' }), fe.execute()), session);
    expect(denied(d).rule).toBe('schema-changes');
  });

  it('judges a Bind of a statement with several candidate texts by the strictest of them', () => {
    const session = new FakeSession();
    session.statements.set('s', ['SELECT 1', "SELECT pg_ls_dir('.')"]);
    expect(denied(judgeWith(shipped).judge(batch(fe.bind({ statement: 's' }), fe.execute()), session)).rule).toBe('server-files-and-network');
  });

  it('judges a Bind of a statement re-parsed in the same batch by the new text, not the old one', () => {
    const session = new FakeSession();
    session.statements.set('s1', ['DROP TABLE t']);
    const d = judgeWith(shipped).judge(batch(fe.parse('SELECT 1', 's1'), fe.bind({ statement: 's1' }), fe.execute()), session);
    expect(d).toSatisfy(allowedWithoutCap);
  });

  it('treats a Bind of an unknown statement as unanalysable: review', () => {
    const d = judgeWith(shipped).judge(batch(fe.bind({ statement: 'never-parsed' }), fe.execute()), new FakeSession());
    expect(denied(d).rule).toBe('unanalysable');
  });

  it('judges an Execute of a portal bound by an earlier request by what the portal runs', () => {
    const session = new FakeSession();
    session.statements.set('s', ["SELECT pg_read_file('x')"]);
    session.portals.set('p', ['s']);
    expect(denied(judgeWith(shipped).judge(batch(fe.execute('p', 100)), session)).rule).toBe('server-files-and-network');
  });

  it('treats an Execute of an unknown portal as unanalysable: review', () => {
    expect(denied(judgeWith(shipped).judge(batch(fe.execute('ghost', 10)), new FakeSession())).rule).toBe('unanalysable');
  });

  it('allows a plain batch of allowed statements', () => {
    const d = judgeWith(shipped).judge(batch(fe.parse('SELECT $1::int', 's1', [23]), fe.bind({ statement: 's1', values: ['1'] }), fe.describe('P'), fe.execute()), new FakeSession());
    expect(d).toSatisfy(allowedWithoutCap);
  });

  it('refuses SET standard_conforming_strings sent through Parse', () => {
    const d = judgeWith(shipped).judge(batch(fe.parse('SET standard_conforming_strings = off'), fe.bind(), fe.execute()), new FakeSession());
    expect(denied(d)).toEqual({ rule: 'standard-conforming-strings', code: '42501' });
  });
});

describe('PolicyJudge: SQL-level PREPARE and EXECUTE', () => {
  it('allows EXECUTE of a statement prepared earlier in the session', () => {
    const judge = judgeWith(shipped);
    const session = new FakeSession();
    expect(judge.judge(query('PREPARE p AS SELECT * FROM t WHERE id = $1'), session)).toSatisfy(allowedWithoutCap);
    expect(judge.judge(query('EXECUTE p(1)'), session)).toSatisfy(allowedWithoutCap);
  });

  it('judges EXECUTE as what was prepared, under the rules in force now', () => {
    const rules = new SwappableRules(policyOf('policy: { default: allow }'));
    const judge = new PolicyJudge(rules, classifier);
    const session = new FakeSession();
    expect(judge.judge(query('PREPARE wipe AS DELETE FROM accounts'), session)).toSatisfy(allowedWithoutCap);
    rules.current = policyOf(`
policy:
  rules:
    - name: writes-need-review
      match: { kind: [write] }
      action: review
`);
    expect(denied(judge.judge(query('EXECUTE wipe'), session)).rule).toBe('writes-need-review');
    expect(judge.judge(query('EXECUTE other'), session)).toMatchObject({ action: 'deny', rule: 'unanalysable' });
  });

  it('judges a protocol Bind of a name created by SQL PREPARE as that statement', () => {
    const rules = new SwappableRules(policyOf('policy: { default: allow }'));
    const judge = new PolicyJudge(rules, classifier);
    const session = new FakeSession();
    judge.judge(query('PREPARE wipe AS DELETE FROM accounts'), session);
    rules.current = policyOf(`
policy:
  rules:
    - name: no-account-writes
      match: { kind: [write], relations: [accounts] }
      action: deny
`);
    expect(denied(judge.judge(batch(fe.bind({ statement: 'wipe' }), fe.execute()), session)).rule).toBe('no-account-writes');
  });

  it('denies a PREPARE whose statement is denied, and does not record it', () => {
    const judge = judgeWith(shipped);
    const session = new FakeSession();
    expect(denied(judge.judge(query("PREPARE p AS SELECT pg_read_file('x')"), session)).rule).toBe('server-files-and-network');
    expect(denied(judge.judge(query('EXECUTE p'), session)).rule).toBe('unanalysable');
  });

  it('does not record the PREPARE of a request that is refused as a whole', () => {
    const judge = judgeWith(shipped);
    const session = new FakeSession();
    expect(denied(judge.judge(query('PREPARE p AS SELECT 1; DROP TABLE t'), session)).rule).toBe('schema-changes');
    expect(denied(judge.judge(query('EXECUTE p'), session)).rule).toBe('unanalysable');
  });

  it('denies an EXECUTE whose parameters call a denied function', () => {
    const judge = judgeWith(shipped);
    const session = new FakeSession();
    judge.judge(query('PREPARE p(text) AS SELECT $1'), session);
    expect(denied(judge.judge(query("EXECUTE p(pg_read_file('/etc/passwd'))"), session)).rule).toBe('server-files-and-network');
  });

  it('denies a role switch by set_config in an EXECUTE parameter', () => {
    // PostgreSQL evaluates EXECUTE parameters as expressions: set_config runs (checked on 15).
    const judge = judgeWith(shipped);
    const session = new FakeSession();
    expect(judge.judge(query('PREPARE p(text) AS SELECT $1'), session)).toSatisfy(allowedWithoutCap);
    expect(denied(judge.judge(query("EXECUTE p(set_config('role', 'postgres', false))"), session)).rule).toBe('role-switch-by-set-config');
  });

  it('denies standard_conforming_strings off by set_config in an EXECUTE parameter', () => {
    const judge = judgeWith(shipped);
    const session = new FakeSession();
    judge.judge(query('PREPARE p(text) AS SELECT $1'), session);
    expect(denied(judge.judge(query("EXECUTE p(set_config('standard_conforming_strings', 'off', false))"), session)).rule).toBe('standard-conforming-strings');
  });

  it('keeps an EXECUTE parameter that cannot be analysed unanalysable', () => {
    const judge = judgeWith(shipped);
    const session = new FakeSession();
    judge.judge(query('PREPARE p(text) AS SELECT $1'), session);
    expect(denied(judge.judge(query("EXECUTE p(set_config(lower('ROLE'), 'postgres', false))"), session)).rule).toBe('unanalysable');
  });

  it('keeps prepared statements per session', () => {
    const judge = judgeWith(shipped);
    const a = new FakeSession();
    const b = new FakeSession();
    judge.judge(query('PREPARE p AS SELECT 1'), a);
    expect(judge.judge(query('EXECUTE p'), a)).toSatisfy(allowedWithoutCap);
    expect(denied(judge.judge(query('EXECUTE p'), b)).rule).toBe('unanalysable');
  });
});

describe('PolicyJudge: cursors', () => {
  it('denies DECLARE c CURSOR FOR SELECT pg_read_file(...) at DECLARE, and a later FETCH is unanalysable', () => {
    const judge = judgeWith(shipped);
    const session = new FakeSession();
    session.txStatus = 'T';
    expect(denied(judge.judge(query("DECLARE c CURSOR FOR SELECT pg_read_file('/etc/passwd')"), session)).rule).toBe('server-files-and-network');
    expect(denied(judge.judge(query('FETCH ALL FROM c'), session)).rule).toBe('unanalysable');
  });

  it('judges FETCH and MOVE as what the cursor reads', () => {
    const rules = new SwappableRules(policyOf('policy: { default: allow }'));
    const judge = new PolicyJudge(rules, classifier);
    const session = new FakeSession();
    session.txStatus = 'T';
    expect(judge.judge(query('DECLARE c CURSOR FOR SELECT * FROM payroll'), session)).toSatisfy(allowedWithoutCap);
    expect(judge.judge(query('FETCH 10 FROM c'), session)).toSatisfy(allowedWithoutCap);
    rules.current = policyOf(`
policy:
  rules:
    - name: no-payroll
      match: { relations: [payroll] }
      action: deny
`);
    expect(denied(judge.judge(query('FETCH 10 FROM c'), session)).rule).toBe('no-payroll');
    expect(denied(judge.judge(query('MOVE NEXT IN c'), session)).rule).toBe('no-payroll');
  });
});

describe('PolicyJudge: names that are closed or deallocated', () => {
  it('forgets a cursor closed with CLOSE: a later FETCH of that name is unanalysable', () => {
    const judge = judgeWith(shipped);
    const session = new FakeSession();
    session.txStatus = 'T';
    expect(judge.judge(query('DECLARE c CURSOR FOR SELECT 1'), session)).toSatisfy(allowedWithoutCap);
    expect(judge.judge(query('CLOSE c'), session)).toSatisfy(allowedWithoutCap);
    expect(denied(judge.judge(query('FETCH ALL FROM c'), session)).rule).toBe('unanalysable');
  });

  it('forgets a prepared statement after DEALLOCATE: a later EXECUTE of that name is unanalysable', () => {
    const judge = judgeWith(shipped);
    const session = new FakeSession();
    expect(judge.judge(query('PREPARE p AS SELECT 1'), session)).toSatisfy(allowedWithoutCap);
    expect(judge.judge(query('DEALLOCATE p'), session)).toSatisfy(allowedWithoutCap);
    expect(denied(judge.judge(query('EXECUTE p'), session)).rule).toBe('unanalysable');
  });
});

describe('PolicyJudge: search_path', () => {
  it('adds the schemas of an allowed SET search_path to the candidates of later statements', () => {
    const judge = judgeWith(policyOf(DENY_SECRET_SCHEMA));
    const session = new FakeSession();
    expect(judge.judge(query('SELECT * FROM users'), session)).toSatisfy(allowedWithoutCap);
    expect(judge.judge(query('SET search_path = secret, public'), session)).toSatisfy(allowedWithoutCap);
    expect(denied(judge.judge(query('SELECT * FROM users'), session)).rule).toBe('secret-schema');
  });

  it('keeps a schema once named even after the search path changes again (candidates only grow)', () => {
    const judge = judgeWith(policyOf(DENY_SECRET_SCHEMA));
    const session = new FakeSession();
    judge.judge(query('SET search_path = secret'), session);
    judge.judge(query('SET search_path = public'), session);
    expect(denied(judge.judge(query('SELECT * FROM users'), session)).rule).toBe('secret-schema');
  });

  it('adds the schemas of set_config(search_path)', () => {
    const judge = judgeWith(policyOf(DENY_SECRET_SCHEMA));
    const session = new FakeSession();
    judge.judge(query("SELECT set_config('search_path', 'secret', false)"), session);
    expect(denied(judge.judge(query('SELECT * FROM users'), session)).rule).toBe('secret-schema');
  });

  it('applies a SET search_path to later statements of the same Query', () => {
    const judge = judgeWith(policyOf(DENY_SECRET_SCHEMA));
    expect(denied(judge.judge(query('SET search_path = secret; SELECT * FROM users'), new FakeSession())).rule).toBe('secret-schema');
  });

  it('applies a SET search_path to later statements of the same extended batch', () => {
    const judge = judgeWith(policyOf(DENY_SECRET_SCHEMA));
    const d = judge.judge(batch(fe.parse('SET search_path = secret'), fe.bind(), fe.execute(), fe.parse('SELECT * FROM users'), fe.bind(), fe.execute()), new FakeSession());
    expect(denied(d).rule).toBe('secret-schema');
  });

  it('takes the search path from startup options -c search_path=...', () => {
    const judge = judgeWith(policyOf(DENY_SECRET_SCHEMA));
    const session = new FakeSession({ options: '-c search_path=secret,public' });
    expect(denied(judge.judge(query('SELECT * FROM users'), session)).rule).toBe('secret-schema');
  });

  it('takes the search path from startup options --search_path=...', () => {
    const judge = judgeWith(policyOf(DENY_SECRET_SCHEMA));
    expect(denied(judge.judge(query('SELECT * FROM users'), new FakeSession({ options: '--search_path=secret' }))).rule).toBe('secret-schema');
  });

  it('takes the search path from startup options --search-path=... (dashes become underscores)', () => {
    const judge = judgeWith(policyOf(DENY_SECRET_SCHEMA));
    expect(denied(judge.judge(query('SELECT * FROM users'), new FakeSession({ options: '--search-path=secret' }))).rule).toBe('secret-schema');
  });

  it('takes the search path from a search_path startup parameter', () => {
    const judge = judgeWith(policyOf(DENY_SECRET_SCHEMA));
    expect(denied(judge.judge(query('SELECT * FROM users'), new FakeSession({ search_path: 'secret' }))).rule).toBe('secret-schema');
  });

  it('keeps the case of schemas in SET search_path (PostgreSQL quotes each SET value as an identifier)', () => {
    const judge = judgeWith(
      policyOf(`
policy:
  rules:
    - name: mixed-case-schema
      match: { relations: ['Secret.*'] }
      action: deny
`),
    );
    const session = new FakeSession();
    judge.judge(query('SET search_path = "Secret"'), session);
    expect(denied(judge.judge(query('SELECT * FROM users'), session)).rule).toBe('mixed-case-schema');
  });
});

describe('PolicyJudge: identity and transaction context', () => {
  it('applies in_transaction rules by the session transaction status', () => {
    const judge = judgeWith(
      policyOf(`
policy:
  rules:
    - name: no-ddl-in-tx
      match: { kind: [ddl], in_transaction: true }
      action: deny
`),
    );
    const session = new FakeSession();
    expect(judge.judge(query('CREATE TABLE t (a int)'), session)).toSatisfy(allowedWithoutCap);
    session.txStatus = 'T';
    expect(denied(judge.judge(query('CREATE TABLE t (a int)'), session)).rule).toBe('no-ddl-in-tx');
    session.txStatus = 'E';
    expect(denied(judge.judge(query('CREATE TABLE t (a int)'), session)).rule).toBe('no-ddl-in-tx');
  });

  it('matches applications by the application_name the client sent', () => {
    const judge = judgeWith(
      policyOf(`
policy:
  rules:
    - name: bi-read-only
      match: { kind: [write], applications: ['metabase*'] }
      action: deny
`),
    );
    expect(denied(judge.judge(query('DELETE FROM t'), new FakeSession({ application_name: 'metabase-1' }))).rule).toBe('bi-read-only');
    expect(judge.judge(query('DELETE FROM t'), new FakeSession({ application_name: 'psql' }))).toSatisfy(allowedWithoutCap);
  });

  it('matches users by the startup user', () => {
    const judge = judgeWith(
      policyOf(`
policy:
  rules:
    - name: agents-no-ddl
      match: { kind: [ddl], users: ['agent*'] }
      action: deny
`),
    );
    expect(denied(judge.judge(query('DROP TABLE t'), new FakeSession({ user: 'agent_7' }))).rule).toBe('agents-no-ddl');
    expect(judge.judge(query('DROP TABLE t'), new FakeSession({ user: 'dba' }))).toSatisfy(allowedWithoutCap);
  });
});

describe('PolicyJudge: server-reported settings', () => {
  it('refuses everything once the server reports standard_conforming_strings off', () => {
    const session = new FakeSession();
    session.serverParams.set('standard_conforming_strings', 'off');
    expect(denied(judgeWith(shipped).judge(query('SELECT 1'), session))).toEqual({ rule: 'standard-conforming-strings', code: '42501' });
    expect(denied(judgeWith(shipped).judge(batch(fe.parse('SELECT 1'), fe.bind(), fe.execute()), session)).rule).toBe('standard-conforming-strings');
  });

  it('refuses everything once the server reports a client_encoding other than UTF8', () => {
    const session = new FakeSession();
    session.serverParams.set('client_encoding', 'SJIS');
    expect(denied(judgeWith(shipped).judge(query('SELECT 1'), session))).toEqual({ rule: 'client-encoding', code: '0A000' });
  });
});

describe('PolicyJudge: fast path', () => {
  it('denies a FunctionCall with the shipped rules', () => {
    const fc = request('function-call', [fe.functionCall({ oid: 2614, args: ['/etc/passwd'] })], 'none');
    expect(denied(judgeWith(shipped).judge(fc, new FakeSession()))).toEqual({ rule: 'fastpath', code: '42501' });
  });
});

describe('PolicyJudge.checkStartup', () => {
  const judge = () => judgeWith(shipped);
  const check = (params: Record<string, string>) => judge().checkStartup(new Map(Object.entries({ user: 'agent', database: 'app', ...params })));

  it.each([
    ['options -c standard_conforming_strings=off', { options: '-c standard_conforming_strings=off' }],
    ['options -cstandard_conforming_strings=off', { options: '-cstandard_conforming_strings=off' }],
    ['options --standard-conforming-strings=off', { options: '--standard-conforming-strings=off' }],
    ['options with another setting first', { options: '-c work_mem=64MB -c standard_conforming_strings=false' }],
    ['a standard_conforming_strings startup parameter', { standard_conforming_strings: 'off' }],
    ['client_encoding=SJIS', { client_encoding: 'SJIS' }],
    ['options -c client_encoding=BIG5', { options: '-c client_encoding=BIG5' }],
    ['options --client-encoding=GBK', { options: '--client-encoding=GBK' }],
    ['an upper-case CLIENT_ENCODING startup parameter (names are case-insensitive)', { CLIENT_ENCODING: 'SJIS' }],
    ['options -c Standard_Conforming_Strings=off', { options: '-c Standard_Conforming_Strings=off' }],
    ['options with an escaped space before the setting', { options: '-c application_name=a\\ b -c standard_conforming_strings=off' }],
  ])('refuses %s with a FATAL 42501', (_name, params) => {
    const err = check(params);
    expect(err).not.toBeNull();
    expect(err?.severity).toBe('FATAL');
    expect(err?.code).toBe('42501');
  });

  it.each([
    ['client_encoding=UTF8', { client_encoding: 'UTF8' }],
    ['client_encoding=utf8 with standard_conforming_strings=on', { client_encoding: 'utf8', standard_conforming_strings: 'on' }],
    ['harmless options', { options: '-c statement_timeout=5s --work_mem=64MB', application_name: 'psql' }],
    ['no parameters beyond user and database', {}],
  ])('accepts %s', (_name, params) => {
    expect(check(params)).toBeNull();
  });
});

describe('PolicyJudge: shipped rules plus site rules', () => {
  it('applies a site deny rule next to the shipped ones', () => {
    const policy = shippedPlus(`
policy:
  rules:
    - name: site-no-secrets
      match: { relations: [secrets] }
      action: deny
`);
    expect(denied(judgeWith(policy).judge(query('SELECT * FROM secrets'), new FakeSession())).rule).toBe('site-no-secrets');
    expect(denied(judgeWith(policy).judge(query('DROP TABLE t'), new FakeSession())).rule).toBe('schema-changes');
  });
});
