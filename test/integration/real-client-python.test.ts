import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  APPROVE_REASON,
  DENY_REASON,
  MASKED_EMAILS,
  RAW_PII,
  REVIEWER_DENIAL,
  RULE_DENIAL,
  pythonWith,
  runWithReviewer,
  startCompatEnv,
  vaultIds,
  type CompatEnv,
  type ProgramRun,
} from '../helpers/real-clients.js';

/**
 * Python applications, unchanged, through pgwarden with masking and review rules on: psycopg 3
 * (Debian python3-psycopg; extended protocol for parameters, named prepared statements, binary
 * results) and psycopg2 (python3-psycopg2; client-side parameters, simple protocol, SQL
 * PREPARE). Each program (test/clients/*.py) runs every step once, printing a JSON line per step,
 * while a scripted reviewer approves its vault read and denies its vault DELETE over the REST API.
 */
const CLIENTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../clients');

const drivers = [
  { name: 'psycopg 3', module: 'psycopg', pkg: 'python3-psycopg', script: 'psycopg3_client.py', app: 'pgw-psycopg3', exec: pythonWith('psycopg') },
  { name: 'psycopg2', module: 'psycopg2', pkg: 'python3-psycopg2', script: 'psycopg2_client.py', app: 'pgw-psycopg2', exec: pythonWith('psycopg2') },
];

let env: CompatEnv;

beforeAll(async () => {
  env = await startCompatEnv('pgw_rc_py');
});

afterAll(async () => {
  await env?.close();
});

/** [python type name, str(value)] as the programs print each value. */
type Cell = [string, string | null];

for (const d of drivers) {
  if (!d.exec) {
    console.warn(`real-client-python: skipping ${d.name}: no python3 can import ${d.module} (install the Debian package ${d.pkg})`);
  }

  describe.skipIf(!d.exec)(`${d.name} through pgwarden`, () => {
    let run: ProgramRun;
    const decisionsFor = (text: string) => run.decisions.filter((x) => x.view.statements.map((st) => st.text).join('; ') === text);

    beforeAll(async () => {
      const dsn = (host: string, port: number) => `host=${host} port=${port} dbname=${env.db} user=postgres sslmode=disable application_name=${d.app}`;
      run = await runWithReviewer(env, d.exec!, [path.join(CLIENTS, d.script), dsn('127.0.0.1', env.proxyPort), dsn(env.upstream.host, env.upstream.port)], {
        application: d.app,
      });
    }, 60_000);

    it('runs every step to the end and exits 0', () => {
      expect(run.stderr).toBe('');
      expect(Object.keys(run.steps)).toEqual(['connect', 'simple', 'prepared', 'masked', 'held', 'held_prepared', 'denied_by_reviewer', 'denied_by_rule', 'end']);
      expect(run.code).toBe(0);
    });

    it('connects as itself to the right database and sees the real server version', () => {
      const s = run.steps.connect;
      expect(s).toMatchObject({ user: 'postgres', database: env.db, application: d.app });
      expect(s.server_version).toBe(s.direct_server_version);
    });

    it('runs a simple query with its column names, UTF-8 text and NULL', () => {
      expect(run.steps.simple).toEqual({
        step: 'simple',
        columns: ['two', 'greeting', 'nothing'],
        rows: [[['int', '2'], ['str', 'héllo wörld'], ['NoneType', null]]],
      });
    });

    it('runs parameterised and prepared statements with typed results', () => {
      const s = run.steps.prepared;
      const pen: Cell[] = [['int', '1'], ['str', 'pen'], ['Decimal', '1.50']];
      const notebook: Cell[] = [['int', '2'], ['str', 'notebook'], ['Decimal', '3.25']];
      const ruler: Cell[] = [['int', '3'], ['str', 'ruler'], ['Decimal', '0.99']];
      expect(s.exception).toBeUndefined();
      expect(s.named).toEqual([[pen], [notebook], [ruler], [pen]]);
      if (d.module === 'psycopg') {
        expect(s.unnamed).toEqual([[pen], [notebook]]);
        // psycopg made one named server-side statement and reused it.
        expect(s.server_statements).toEqual([expect.stringMatching(/^_pg3_\d+$/)]);
      } else {
        expect(s.params).toEqual([[pen], [notebook]]);
      }
    });

    it('gets PII columns masked and every other column exactly as PostgreSQL sends it', () => {
      const s = run.steps.masked;
      expect(s.exception).toBeUndefined();
      expect(s.columns).toEqual(['id', 'name', 'email', 'ssn', 'credit_limit', 'balance', 'joined']);
      const direct = s.direct as Cell[][];
      // The direct rows are the raw ones, so masking is what differs.
      expect(direct[0]![2]).toEqual(['str', 'alice@example.com']);
      expect(direct[0]![4]).toEqual(['int', '5000']);
      const proxy = s.proxy as Cell[][];
      expect(proxy).toHaveLength(2);
      proxy.forEach((row, i) => {
        // id, name, balance, joined: same value and same Python type as from the server.
        for (const c of [0, 1, 5, 6]) expect(row[c], `row ${i} column ${s.columns[c]}`).toEqual(direct[i]![c]);
        // The masked int column arrives as text, so the driver does not choke on "***".
        expect([row[2], row[3], row[4]]).toEqual([['str', MASKED_EMAILS[i]], ['str', '***'], ['str', '***']]);
      });
      expect(s.param).toEqual([[['str', 'Bob'], ['str', 'b***@example.org']]]);
      expect(s.named).toEqual([[['int', '1'], ['str', 'a***@example.com'], ['str', '***']]]);
      if (d.module === 'psycopg') {
        // Binary results: the masked columns come as text, the others still decode to the same values.
        const binary = s.binary as Cell[][];
        const binaryDirect = s.binary_direct as Cell[][];
        binary.forEach((row, i) => {
          for (const c of [0, 1, 5, 6]) expect(row[c], `binary row ${i} column ${s.columns[c]}`).toEqual(binaryDirect[i]![c]);
          expect([row[2], row[3], row[4]]).toEqual([['str', MASKED_EMAILS[i]], ['str', '***'], ['str', '***']]);
        });
      }
      const seen = JSON.stringify([s.proxy, s.param, s.named, s.binary ?? null]);
      for (const raw of RAW_PII) expect(seen, `raw ${raw} leaked`).not.toContain(raw);
    });

    it('waits on a held statement, gets the hold notice, and receives its rows once a reviewer approves', async () => {
      const s = run.steps.held;
      expect(s.exception).toBeUndefined();
      expect(s.rows).toEqual([
        [['int', '1'], ['str', 'gold']],
        [['int', '2'], ['str', 'silver']],
      ]);
      const holds = decisionsFor('SELECT id, label FROM vault WHERE id <= $1 ORDER BY id');
      expect(holds, 'the vault read was held once').toHaveLength(1);
      const approval = holds[0];
      expect(approval!.status).toBe(200);
      expect(approval!.view).toMatchObject({ rule: 'vault-review', session: { user: 'postgres', database: env.db, application: d.app } });
      // The program was still waiting in the held call when the reviewer approved.
      expect(approval!.before).toMatchObject({ running: true, steps: ['connect', 'simple', 'prepared', 'masked'] });
      const notice = `pgwarden: statement held for review (request ${approval!.id})`;
      if (d.module === 'psycopg') {
        expect(s.notices).toEqual([notice]);
      } else {
        // psycopg2 keeps each notice as libpq printed it, DETAIL and HINT included.
        expect(s.notices).toHaveLength(1);
        expect(s.notices[0].split('\n')).toEqual([
          `NOTICE:  ${notice}`,
          expect.stringMatching(/^DETAIL:  Rule "vault-review": the vault needs a second pair of eyes\. /),
          `HINT:  Reviewers decide at ${env.inst.api}/`,
        ]);
      }
      expect(approval!.verdict.reason).toBe(APPROVE_REASON);
    });

    it('waits on each execution of a held prepared statement and gets its rows once approved', () => {
      const s = run.steps.held_prepared;
      expect(s.exception).toBeUndefined();
      expect([s.first, s.second]).toEqual([[[['str', 'gold']]], [[['str', 'silver']]]]);
      const holds = run.decisions.filter((x) => x.verdict.verb === 'approve' && !x.view.statements[0]!.text.startsWith('SELECT id, label'));
      expect(holds.length).toBeGreaterThanOrEqual(2);
      for (const h of holds) {
        expect(h.status).toBe(200);
        expect(h.before).toMatchObject({ running: true, steps: ['connect', 'simple', 'prepared', 'masked', 'held'] });
      }
      // Every hold the reviewer decided reached the program as a notice.
      expect(s.notices).toHaveLength(holds.length);
      holds.forEach((h, i) => expect(s.notices[i]).toContain(`pgwarden: statement held for review (request ${h.id})`));
    });

    if (d.module === 'psycopg') {
      // KNOWN BUG (reported): with prepare=True psycopg prepares first (Parse/Sync, which runs
      // nothing) and then executes (Bind/Describe/Execute/Sync). pgwarden holds the Parse/Sync as
      // a request of its own, so two executions need three approvals.
      it('asks reviewers once per execution of a prepared held statement (prepare=True)', () => {
        expect(decisionsFor('SELECT label FROM vault WHERE id = $1')).toHaveLength(2);
      });
    } else {
      // KNOWN BUG (reported): after a held SQL PREPARE is approved, pgwarden does not record the
      // prepared statement, so each EXECUTE is judged "unanalysable" (held under that rule, with
      // no tables or PII columns for the reviewer; and its result is not masked, see
      // real-client-node.test.ts).
      it('holds EXECUTE of an approved PREPARE under the rule of its statement, with its tables', () => {
        const executes = decisionsFor('EXECUTE vault_label($1)');
        expect(executes).toHaveLength(2);
        for (const e of executes) expect(e.view).toMatchObject({ rule: 'vault-review', tables: ['vault'] });
      });
    }

    it('gets ERROR 42501 with the reviewer and reason when the held DELETE is denied, and nothing is deleted', async () => {
      const s = run.steps.denied_by_reviewer;
      const denials = decisionsFor('DELETE FROM vault WHERE id = $1');
      expect(denials).toHaveLength(1);
      const denial = denials[0]!;
      expect(denial.verdict).toMatchObject({ verb: 'deny', reason: DENY_REASON });
      expect(denial.status).toBe(200);
      expect(s.error).toEqual({
        class: 'InsufficientPrivilege',
        sqlstate: '42501',
        message: REVIEWER_DENIAL,
        detail: `Approval request ${denial.id} was denied; the statement was not run.`,
      });
      // psycopg had opened a transaction: it is failed (as after any error) and rollback recovers.
      expect(s.tx_status).toBe('INERROR');
      expect(s.after).toBe('still usable');
      expect(await vaultIds(env.db)).toEqual([1, 2]);
      // Nothing else was held: every request was one of the statements above.
      expect(run.decisions.filter((x) => x.verdict.reason.startsWith('unexpected hold'))).toEqual([]);
    });

    it('gets ERROR 42501 naming the rule for a statement the rules deny, without any hold', () => {
      const s = run.steps.denied_by_rule;
      expect(s.error).toEqual({ class: 'InsufficientPrivilege', sqlstate: '42501', message: RULE_DENIAL, detail: 'reading server files is not allowed' });
      expect(s.tx_status).toBe('INERROR');
      expect(s.after).toBe('still usable');
    });
  });
}
