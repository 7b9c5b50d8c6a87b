import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  APPROVE_REASON,
  DENY_REASON,
  JDBC_JAR,
  MASKED_EMAILS,
  RAW_PII,
  REVIEWER_DENIAL,
  RULE_DENIAL,
  javaWithJdbc,
  runWithReviewer,
  startCompatEnv,
  vaultIds,
  type CompatEnv,
  type ProgramRun,
} from '../helpers/real-clients.js';

/**
 * A Java application, unchanged, through pgwarden with masking and review rules on: the Debian
 * PostgreSQL JDBC driver (libpostgresql-jdbc-java) with its defaults (SSLRequest first, extended
 * protocol, server-side named statements and binary results after prepareThreshold), plus one
 * connection in preferQueryMode=simple. test/clients/JdbcClient.java is launched from source
 * (`java -cp postgresql.jar JdbcClient.java`) and prints a JSON line per step while a scripted
 * reviewer approves its vault read and denies its vault DELETE over the REST API.
 */
const CLIENTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../clients');
const APP = 'pgw-jdbc';
const java = javaWithJdbc();
if (!java.ok) console.warn(`real-client-jdbc: skipping the JDBC tests: ${java.why}`);

/** [Java class of getObject(), getString()] as the program prints each value. */
type Cell = [string, string | null];

describe.skipIf(!java.ok)('JDBC (pgjdbc) through pgwarden', () => {
  let env: CompatEnv;
  let run: ProgramRun;

  beforeAll(async () => {
    env = await startCompatEnv('pgw_rc_jdbc');
    run = await runWithReviewer(
      env,
      'java',
      ['-cp', JDBC_JAR, path.join(CLIENTS, 'JdbcClient.java'), '127.0.0.1', String(env.proxyPort), env.upstream.host, String(env.upstream.port), env.db, APP],
      { application: APP, timeoutMs: 55_000 },
    );
  }, 60_000);

  afterAll(async () => {
    await env?.close();
  });

  it('runs every step to the end and exits 0', () => {
    expect(run.stderr).toBe('');
    expect(Object.keys(run.steps)).toEqual(['connect', 'simple', 'prepared', 'masked', 'held', 'denied_by_reviewer', 'denied_by_rule', 'end']);
    expect(run.code).toBe(0);
  });

  it('connects (after an SSLRequest answered N) as itself and sees the real server version', () => {
    const s = run.steps.connect;
    expect(s).toMatchObject({ user: 'postgres', database: env.db, application: APP });
    expect(s.server_version).toBe(s.direct_server_version);
    expect(s.driver_server_version).toBe(s.server_version);
  });

  it('runs a simple-protocol query with its column names, UTF-8 text and NULL', () => {
    expect(run.steps.simple).toEqual({
      step: 'simple',
      columns: ['two', 'greeting', 'nothing'],
      rows: [[['Integer', '2'], ['String', 'héllo wörld'], ['null', null]]],
    });
  });

  it('runs a PreparedStatement seven times, switching to a named server-side statement, with the same results', () => {
    const s = run.steps.prepared;
    expect(s.exception).toBeUndefined();
    const row = (id: number): Cell[][] => {
      const p = ({ 1: ['pen', '1.50'], 2: ['notebook', '3.25'], 3: ['ruler', '0.99'] } as const)[id as 1 | 2 | 3];
      return [[['Integer', String(id)], ['String', p[0]], ['BigDecimal', p[1]]]];
    };
    expect(s.runs).toEqual([1, 2, 3, 1, 2, 3, 1].map(row));
    // The driver really prepared a named statement (pgjdbc names them S_n).
    expect(s.server_statements).toEqual([[['String', expect.stringMatching(/^S_\d+$/)]]]);
  });

  it('gets PII columns masked and every other column exactly as PostgreSQL sends it, in every protocol mode', () => {
    const s = run.steps.masked;
    expect(s.exception).toBeUndefined();
    expect(s.columns).toEqual(['id', 'name', 'email', 'ssn', 'credit_limit', 'balance', 'joined']);
    const direct = s.direct as Cell[][];
    expect(direct[0]![2]).toEqual(['String', 'alice@example.com']);
    expect(direct[0]![4]).toEqual(['Integer', '5000']);
    // First run (unnamed statement, text results), runs 2-6 (named statement and binary results
    // from the 5th), and the simple-protocol connection: all the same.
    const results: [string, Cell[][]][] = [['first', s.proxy], ...(s.repeated as Cell[][][]).map((r, i): [string, Cell[][]] => [`run ${i + 2}`, r]), ['simple', s.simple]];
    expect(results).toHaveLength(7);
    for (const [label, rows] of results) {
      expect(rows, label).toHaveLength(2);
      rows.forEach((row, i) => {
        for (const c of [0, 1, 5, 6]) expect(row[c], `${label} row ${i} column ${s.columns[c]}`).toEqual(direct[i]![c]);
        // The masked int column arrives as text: getObject() gives a String, no parse error.
        expect([row[2], row[3], row[4]], label).toEqual([['String', MASKED_EMAILS[i]], ['String', '***'], ['String', '***']]);
      });
    }
    expect(s.param).toEqual([[['String', 'Bob'], ['String', 'b***@example.org']]]);
    const seen = JSON.stringify([s.proxy, s.repeated, s.param, s.simple]);
    for (const raw of RAW_PII) expect(seen, `raw ${raw} leaked`).not.toContain(raw);
  });

  it('waits in executeQuery on a held statement, gets the hold as a warning, and receives its rows once approved', () => {
    const s = run.steps.held;
    expect(s.exception).toBeUndefined();
    expect(s.rows).toEqual([
      [['Integer', '1'], ['String', 'gold']],
      [['Integer', '2'], ['String', 'silver']],
    ]);
    const approval = run.decisions.find((x) => x.verdict.verb === 'approve');
    expect(approval, 'the vault read was held').toBeDefined();
    expect(approval!.status).toBe(200);
    expect(approval!.verdict.reason).toBe(APPROVE_REASON);
    expect(approval!.view).toMatchObject({ rule: 'vault-review', session: { user: 'postgres', database: env.db, application: APP } });
    expect(approval!.view.statements.map((x) => x.text)).toEqual(['SELECT id, label FROM vault WHERE id <= $1 ORDER BY id']);
    expect(approval!.before).toMatchObject({ running: true, steps: ['connect', 'simple', 'prepared', 'masked'] });
    expect(s.warnings).toEqual([`pgwarden: statement held for review (request ${approval!.id})`]);
  });

  it('gets SQLException 42501 with the reviewer and reason when the held DELETE is denied; nothing is deleted', async () => {
    const s = run.steps.denied_by_reviewer;
    const denial = run.decisions.find((x) => x.verdict.verb === 'deny');
    expect(denial?.view.statements.map((x) => x.text)).toEqual(['DELETE FROM vault WHERE id = $1']);
    expect(denial?.verdict.reason).toBe(DENY_REASON);
    expect(s.error).toEqual({
      sqlstate: '42501',
      severity: 'ERROR',
      message: REVIEWER_DENIAL,
      detail: `Approval request ${denial?.id} was denied; the statement was not run.`,
    });
    expect(s.after).toBe('still usable');
    expect(run.decisions).toHaveLength(2);
    expect(await vaultIds(env.db)).toEqual([1, 2]);
  });

  it('gets SQLException 42501 naming the rule for a statement the rules deny', () => {
    const s = run.steps.denied_by_rule;
    expect(s.error).toEqual({ sqlstate: '42501', severity: 'ERROR', message: RULE_DENIAL, detail: 'reading server files is not allowed' });
    expect(s.after).toBe('still usable');
  });
});
