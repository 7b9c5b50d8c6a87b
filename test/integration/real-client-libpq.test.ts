import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UPSTREAM_URL } from '../helpers/proxy.js';
import { libpqEnv, run } from '../helpers/spawn.js';
import {
  DENY_REASON,
  REVIEWER_DENIAL,
  RULE_DENIAL,
  runWithReviewer,
  startCompatEnv,
  vaultIds,
  type CompatEnv,
  type Decision,
  type ProgramRun,
  type RequestView,
  type Verdict,
} from '../helpers/real-clients.js';

/**
 * The libpq programs, unchanged, through pgwarden with masking and review rules on: what their
 * basic-use tests (psql.test.ts, pgbench.test.ts, pg-dump.test.ts) do not cover. psql shows PII
 * masked and everything else as the server sent it, waits on a held statement until a scripted
 * reviewer approves it over the REST API, and prints 42501 for denials; pgbench does the same
 * in its protocol modes; pg_dump of a table under review completes once approved.
 */
let env: CompatEnv;
let dir: string;

beforeAll(async () => {
  env = await startCompatEnv('pgw_rc_libpq');
  dir = mkdtempSync(path.join(tmpdir(), 'pgw-rc-libpq-'));
});

afterAll(async () => {
  await env?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** libpq environment for the proxy (or the server itself), with an application_name. */
function libpq(app: string, direct = false): Record<string, string> {
  const base = direct ? libpqEnv(UPSTREAM_URL, env.db) : libpqEnv(`postgres://postgres@127.0.0.1:${env.proxyPort}/${env.db}`);
  return { ...base, PGAPPNAME: app };
}

function expectHeldWhileRunning(decisions: Decision[]): void {
  for (const d of decisions) {
    expect(d.status).toBe(200);
    expect(d.before).toMatchObject({ running: true });
  }
}

describe('psql', () => {
  const APP = 'pgw-psql';
  const psql = (args: string[], opts: { direct?: boolean; stdin?: string } = {}): Promise<ProgramRun> =>
    runWithReviewer(env, 'psql', ['-X', '-v', 'ON_ERROR_STOP=1', ...args], { application: APP, extraEnv: libpq(APP, opts.direct), ...(opts.stdin !== undefined ? { stdin: opts.stdin } : {}) });

  it('prints PII columns masked and every other column exactly as psql prints them directly', async () => {
    const query = 'SELECT id, name, email, ssn, credit_limit, balance, joined FROM customers ORDER BY id';
    const [proxied, direct] = await Promise.all([psql(['-A', '-F', '|', '-c', query]), psql(['-A', '-F', '|', '-c', query], { direct: true })]);
    expect(direct.stdout).toBe(
      'id|name|email|ssn|credit_limit|balance|joined\n1|Alice|alice@example.com|123-45-6789|5000|1234.50|2021-03-04\n2|Bob|bob@example.org|987-65-4321|250|-7.25|2022-11-30\n(2 rows)\n',
    );
    expect([proxied.code, proxied.stderr]).toEqual([0, '']);
    expect(proxied.stdout).toBe(
      'id|name|email|ssn|credit_limit|balance|joined\n1|Alice|a***@example.com|***|***|1234.50|2021-03-04\n2|Bob|b***@example.org|***|***|-7.25|2022-11-30\n(2 rows)\n',
    );
    // The aligned format sizes columns by content: masked text is left-aligned, not numeric.
    const aligned = await psql(['-c', 'SELECT credit_limit, balance FROM customers WHERE id = 2']);
    expect(aligned.stdout).toBe(' credit_limit | balance \n--------------+---------\n ***          |   -7.25\n(1 row)\n\n');
  });

  it('waits on a held statement with a NOTICE and prints its rows once a reviewer approves', async () => {
    const r = await psql(['-A', '-t', '-c', 'SELECT id, label FROM vault ORDER BY id']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('1|gold\n2|silver\n');
    expect(r.decisions).toHaveLength(1);
    const [d] = r.decisions;
    expect(d!.view).toMatchObject({ rule: 'vault-review', session: { application: APP }, statements: [{ text: 'SELECT id, label FROM vault ORDER BY id' }] });
    // psql had printed nothing yet when the reviewer approved.
    expect(d!.before).toMatchObject({ running: true, stdout: '' });
    expect(r.stderr.split('\n')[0]).toBe(`NOTICE:  pgwarden: statement held for review (request ${d!.id})`);
    expect(r.stderr).toContain('DETAIL:  Rule "vault-review": the vault needs a second pair of eyes.');
  });

  it('prints ERROR 42501 with the reviewer and reason for a denied statement and stops the script', async () => {
    const r = await psql(['-v', 'VERBOSITY=verbose', '-f', '-'], { stdin: "DELETE FROM vault WHERE id = 1;\nSELECT 'not reached';\n" });
    expect(r.decisions.map((d) => [d.verdict.verb, d.view.statements[0]!.text])).toEqual([['deny', 'DELETE FROM vault WHERE id = $1;']]);
    expectHeldWhileRunning(r.decisions);
    expect(r.code).toBe(3); // ON_ERROR_STOP in a script
    expect(r.stdout).toBe('');
    const lines = r.stderr.split('\n');
    expect(lines).toContain(`psql:<stdin>:1: ERROR:  42501: ${REVIEWER_DENIAL}`);
    expect(lines).toContain(`DETAIL:  Approval request ${r.decisions[0]!.id} was denied; the statement was not run.`);
    expect(await vaultIds(env.db)).toEqual([1, 2]);
  });

  it('prints ERROR 42501 naming the rule for a statement the rules deny, without a hold', async () => {
    const r = await psql(['-v', 'VERBOSITY=verbose', '-c', "SELECT pg_read_file('/etc/hostname')"]);
    expect(r.decisions).toEqual([]);
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n').slice(0, 2)).toEqual([`ERROR:  42501: ${RULE_DENIAL}`, 'DETAIL:  reading server files is not allowed']);
  });
});

describe('pgbench', () => {
  const APP = 'pgw-pgbench';
  function script(name: string, text: string): string {
    const file = path.join(dir, name);
    writeFileSync(file, text);
    return file;
  }
  const pgbench = (mode: string, file: string): Promise<ProgramRun> =>
    runWithReviewer(env, 'pgbench', ['--no-vacuum', '-n', '-M', mode, '-c', '1', '-t', '1', '-f', file], { application: APP, extraEnv: libpq(APP) });
  const processed = (r: ProgramRun) => /^number of transactions actually processed: (\d+\/\d+)$/m.exec(r.stdout)?.[1];

  // \gset stores the row in variables and \shell echoes them (globbing off, for "***"): what
  // pgbench received.
  it.each(['simple', 'extended', 'prepared'])('receives PII columns masked and other columns intact (-M %s)', async (mode) => {
    const file = script(`masked-${mode}.sql`, 'SELECT id, name, email, ssn, credit_limit, balance, joined FROM customers WHERE id = 2 \\gset c_\n\\shell set -f ; echo seen: :c_id :c_name :c_email :c_ssn :c_credit_limit :c_balance :c_joined\n');
    const r = await pgbench(mode, file);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('seen: 2 Bob b***@example.org *** *** -7.25 2022-11-30\n');
    expect(processed(r)).toBe('1/1');
  });

  it('waits on a held statement and completes the transaction once a reviewer approves (-M extended)', async () => {
    const file = script('held.sql', 'SELECT label FROM vault WHERE id = 2 \\gset v_\n\\shell echo "vault:" :v_label\n');
    const r = await pgbench('extended', file);
    expect(r.decisions.map((d) => [d.verdict.verb, d.view.rule, d.view.statements[0]!.text])).toEqual([['approve', 'vault-review', 'SELECT label FROM vault WHERE id = $1']]);
    expectHeldWhileRunning(r.decisions);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('vault: silver\n');
    expect(processed(r)).toBe('1/1');
  });

  it('completes a held statement in -M prepared once every hold is approved', async () => {
    // -M prepared sends Parse/Sync before the first Bind/Execute, and pgwarden holds each (see
    // the postgres.js and psycopg tests for that bug): every hold is the same vault read.
    const file = script('held-prepared.sql', 'SELECT label FROM vault WHERE id = 1 \\gset v_\n\\shell echo "vault:" :v_label\n');
    const r = await pgbench('prepared', file);
    expect(r.decisions.length).toBeGreaterThanOrEqual(1);
    for (const d of r.decisions) expect([d.verdict.verb, d.view.statements[0]!.text]).toEqual(['approve', 'SELECT label FROM vault WHERE id = $1']);
    expectHeldWhileRunning(r.decisions);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('vault: gold\n');
  });

  it('aborts the client with the reviewer denial, exit code 2, and deletes nothing', async () => {
    const r = await pgbench('simple', script('denied.sql', 'DELETE FROM vault WHERE id = 2;\n'));
    expect(r.decisions.map((d) => [d.verdict.verb, d.verdict.reason])).toEqual([['deny', DENY_REASON]]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`pgbench: error: client 0 script 0 aborted in command 0 query 0: ERROR:  ${REVIEWER_DENIAL}\nDETAIL:  Approval request ${r.decisions[0]!.id} was denied`);
    expect(await vaultIds(env.db)).toEqual([1, 2]);
  });

  it('aborts the client with the rule denial (-M extended)', async () => {
    const r = await pgbench('extended', script('rule.sql', "SELECT pg_read_file('/etc/hostname');\n"));
    expect(r.decisions).toEqual([]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`aborted in command 0 query 0: ERROR:  ${RULE_DENIAL}\nDETAIL:  reading server files is not allowed`);
  });
});

describe('pg_dump', () => {
  const APP = 'pgw-pg_dump';
  /** Drops the lines that differ on every run (\restrict key, version comments). */
  const comparable = (dump: string) =>
    dump
      .split('\n')
      .filter((l) => !/^\\(un)?restrict /.test(l) && !/^-- Dumped (from|by) /.test(l))
      .join('\n');
  /**
   * pg_dump 15.8+ starts with `SELECT set_config(name, 'view, foreign-table', false) FROM
   * pg_settings WHERE name = 'restrict_nonsystem_relation_kind'`, which pgwarden cannot analyse
   * (a computed setting name) and so holds under `unanalysable: review` (see the last test).
   */
  const isPreamble = (d: Decision) => /^SELECT set_config\(name, \$1, false\) FROM pg_settings WHERE name = \$2/.test(d.view.statements[0]!.text);
  const dump = (verdict?: (v: RequestView) => Verdict, table = 'public.vault') =>
    runWithReviewer(env, 'pg_dump', ['-t', table], { application: APP, extraEnv: libpq(APP), ...(verdict ? { verdict } : {}) });

  it('dumps a table under review once a reviewer approves, the same dump as taken directly', async () => {
    const [r, direct] = await Promise.all([dump(), run('pg_dump', ['-t', 'public.vault'], { env: libpq('direct', true) })]);
    // pg_dump locks the table and then copies it out: each is held and approved.
    expect(r.decisions.filter((d) => !isPreamble(d)).map((d) => [d.verdict.verb, d.view.rule, d.view.statements.map((x) => x.text)])).toEqual([
      ['approve', 'vault-review', ['LOCK TABLE public.vault IN ACCESS SHARE MODE']],
      ['approve', 'vault-review', ['COPY public.vault (id, label) TO stdout;']],
    ]);
    expectHeldWhileRunning(r.decisions);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('COPY public.vault (id, label) FROM stdin;\n1\tgold\n2\tsilver\n\\.\n');
    expect(comparable(r.stdout)).toBe(comparable(direct.stdout));
  });

  it('fails with the reviewer denial and writes no data when the dump is denied', async () => {
    const r = await dump((v) => (/^SELECT set_config/.test(v.statements[0]!.text)
      ? { verb: 'approve', reviewer: 'alice', reason: 'pg_dump preamble' }
      : { verb: 'deny', reviewer: 'bob', reason: 'no vault dumps today' }));
    const denied = r.decisions.filter((d) => d.verdict.verb === 'deny');
    expect(denied.map((d) => d.view.statements[0]!.text)).toEqual(['LOCK TABLE public.vault IN ACCESS SHARE MODE']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('pgwarden: statement denied by reviewer bob: no vault dumps today');
    expect(r.stdout).not.toContain('gold');
  });

  // KNOWN ISSUE (reported): pg_dump's preamble since PostgreSQL 15.8/16.4 (CVE-2024-7348) is
  // judged unanalysable, so with `unanalysable: review` (the shipped rules) every pg_dump, even
  // of a table no rule names, waits for a reviewer.
  it('dumps a table no rule names without asking a reviewer', async () => {
    const r = await dump(undefined, 'public.products');
    expect(r.code).toBe(0);
    expect(r.decisions).toEqual([]);
  });
});
