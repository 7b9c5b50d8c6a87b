import { closeSync, cpSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Classifier, loadParser } from '../../src/classify/classifier.js';
import { silentLogger } from '../../src/logger.js';
import { BUNDLED_RULES_DIR } from '../../src/policy/build-judge.js';
import { PolicyJudge } from '../../src/policy/policy-judge.js';
import { RulesStore } from '../../src/policy/rules-store.js';
import { createTestDatabase, directClient, startTestProxy } from '../helpers/proxy.js';

/**
 * Hot reload of the rules as a client sees it: a valid edit takes effect within a couple of
 * seconds, an invalid edit (written in several steps, as editors do) never loosens anything, a
 * fixed file applies, and SIGHUP reloads.
 */

// directClient() relies on PGUSER when the connection string names no user.
process.env.PGUSER ??= 'postgres';

type Proxy = Awaited<ReturnType<typeof startTestProxy>>;

const REVIEW_TEXT = 'statement requires approval: schema-changes; no approval channel is configured';
const DENY_TEXT = 'pgwarden: statement denied by rule "schema-changes"';
const SHIPPED_POLICY = readFileSync(path.join(BUNDLED_RULES_DIR, 'policy.yaml'), 'utf8');
const SHIPPED_DDL_RULE = '      match: { kind: [ddl] }\n      action: review\n';

/** The shipped policy.yaml with the schema-changes rule's action (and message) replaced. */
function policyYaml(action: 'review' | 'deny', message?: string): string {
  if (!SHIPPED_POLICY.includes(SHIPPED_DDL_RULE)) throw new Error('shipped policy.yaml no longer has the expected schema-changes rule');
  const replacement = `      match: { kind: [ddl] }\n      action: ${action}\n${message ? `      message: ${JSON.stringify(message)}\n` : ''}`;
  return SHIPPED_POLICY.replace(SHIPPED_DDL_RULE, replacement);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let db: Awaited<ReturnType<typeof createTestDatabase>>;
let direct: pg.Client;
const dirs: string[] = [];
const stores: RulesStore[] = [];
const proxies: Proxy[] = [];
const clients: pg.Client[] = [];

/** A rules directory (copy of the shipped rules), a store on it and a proxy judging with it. */
async function setup(debounceMs: number): Promise<{ dir: string; rules: RulesStore; client: pg.Client }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'pgw-reload-'));
  dirs.push(dir);
  cpSync(BUNDLED_RULES_DIR, dir, { recursive: true });
  const rules = new RulesStore(dir, silentLogger);
  stores.push(rules);
  rules.watch(debounceMs);
  const proxy = await startTestProxy({}, { judge: new PolicyJudge(rules, new Classifier()) });
  proxies.push(proxy);
  const client = new pg.Client({ connectionString: proxy.url(db.name) });
  clients.push(client);
  await client.connect();
  return { dir, rules, client };
}

/** What the client sees for DROP TABLE: "code: message", or "ran" if the server executed it. */
async function dropOutcome(client: pg.Client, table = 't'): Promise<string> {
  try {
    await client.query(`DROP TABLE ${table}`);
    return 'ran';
  } catch (err) {
    if (err instanceof pg.DatabaseError) return `${err.code}: ${err.message}`;
    throw err;
  }
}

/** Runs DROP TABLE t until its outcome is `want` or the time is up; returns the last outcome. */
async function pollDrop(client: pg.Client, want: string, timeoutMs: number, table = 't'): Promise<{ outcome: string; elapsedMs: number }> {
  const start = Date.now();
  let outcome = await dropOutcome(client, table);
  while (outcome !== want && Date.now() - start < timeoutMs) {
    await sleep(25);
    outcome = await dropOutcome(client, table);
  }
  return { outcome, elapsedMs: Date.now() - start };
}

async function tableExists(table = 't'): Promise<boolean> {
  const r = await direct.query<{ oid: string | null }>('SELECT to_regclass($1)::text AS oid', [`public.${table}`]);
  return r.rows[0]?.oid !== null;
}

/** Runs DROP TABLE on `table` every few milliseconds while `during` runs; returns every outcome. */
async function hammerDrop(client: pg.Client, table: string, during: () => Promise<void>): Promise<string[]> {
  const outcomes: string[] = [];
  let writing = true;
  const hammer = (async () => {
    while (writing) {
      outcomes.push(await dropOutcome(client, table));
      await sleep(10);
    }
  })();
  try {
    await during();
  } finally {
    writing = false;
    await hammer;
  }
  return outcomes;
}

/** Atomic replace, as editors that write a temp file and rename it do. */
function replaceAtomically(file: string, text: string): void {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
  writeFileSync(temp, text);
  renameSync(temp, file);
}

beforeAll(async () => {
  db = await createTestDatabase('pgw_reload');
  direct = directClient(db.name);
  await direct.connect();
  await direct.query('CREATE TABLE t (id int PRIMARY KEY)');
  await loadParser();
});

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => undefined);
  for (const p of proxies) await p.shutdown(1000);
  for (const s of stores) s.close();
  await direct?.end().catch(() => undefined);
  await db?.drop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('rules hot reload through the proxy', () => {
  let dir: string;
  let rules: RulesStore;
  let client: pg.Client;

  beforeAll(async () => {
    ({ dir, rules, client } = await setup(50));
  });

  it('applies a valid edit that changes DROP from review to deny within 2 seconds', async () => {
    expect(await dropOutcome(client)).toBe(`42501: ${REVIEW_TEXT}`);
    writeFileSync(path.join(dir, 'policy.yaml'), policyYaml('deny'));
    const { outcome, elapsedMs } = await pollDrop(client, `42501: ${DENY_TEXT}`, 2000);
    expect(outcome).toBe(`42501: ${DENY_TEXT}`);
    expect(elapsedMs).toBeLessThan(2000);
    expect(await tableExists()).toBe(true);
  });

  it('keeps the previous rules in force during and after an invalid edit written in several steps, and lets nothing through', async () => {
    const policyFile = path.join(dir, 'policy.yaml');
    writeFileSync(policyFile, policyYaml('deny'));
    expect((await pollDrop(client, `42501: ${DENY_TEXT}`, 2000)).outcome).toBe(`42501: ${DENY_TEXT}`);
    const versionBefore = rules.current.version;

    // Each step leaves the directory invalid; several of them would allow DROP if accepted.
    const steps: [string, string][] = [
      [policyFile, 'policy:\n  default: allow\n  rules:\n    - name: schema-changes\n      match: { kind: [ddl]\n'],
      [policyFile, 'policy:\n  default: allow\n  rules:\n    - name: schema-changes\n      match: { kind: [ddl], bogus: true }\n      action: allow\n'],
      [policyFile, 'policy:\n  default: allow\n  rules:\n    - name: schema-changes\n      match: { kind: [ddl] }\n      action: permit\n'],
      [policyFile, 'policy:\n  default: allow\n  default: allow\n'],
      [policyFile, 'policy:\n  default: allow\n  unknown_section: {}\n'],
      [path.join(dir, 'zz-extra.yaml'), 'policy:\n  rules:\n    - name: extra\n      match: { kind: [ddl] }\n      action: allow\n      bogus: 1\n'],
    ];

    const outcomes = await hammerDrop(client, 't', async () => {
      for (const [file, text] of steps) {
        // Longer than the debounce, so each intermediate state is read and judged on its own.
        writeFileSync(file, text);
        await sleep(150);
      }
      await sleep(300);
    });

    expect(outcomes.length).toBeGreaterThan(20);
    expect(new Set(outcomes)).toEqual(new Set([`42501: ${DENY_TEXT}`]));
    expect(rules.current.version).toBe(versionBefore);
    expect(await tableExists()).toBe(true);

    // Fixing the files makes the new rules apply.
    unlinkSync(path.join(dir, 'zz-extra.yaml'));
    replaceAtomically(policyFile, policyYaml('deny', 'schema changes are closed for the release'));
    const fixed = await pollDrop(client, '42501: schema changes are closed for the release', 2000);
    expect(fixed.outcome).toBe('42501: schema changes are closed for the release');
    expect(rules.current.version).not.toBe(versionBefore);
    expect(await tableExists()).toBe(true);
  });

  it('never puts in force the empty file an in-place edit leaves between truncating and writing', async () => {
    const policyFile = path.join(dir, 'policy.yaml');
    writeFileSync(policyFile, policyYaml('deny'));
    expect((await pollDrop(client, `42501: ${DENY_TEXT}`, 2000)).outcome).toBe(`42501: ${DENY_TEXT}`);
    await direct.query('CREATE TABLE IF NOT EXISTS victim (id int)');
    const versionBefore = rules.current.version;
    try {
      const outcomes = await hammerDrop(client, 'victim', async () => {
        // An editor saving in place: open with O_TRUNC, then write the (bad) new text in parts.
        const fd = openSync(policyFile, 'w');
        try {
          await sleep(150);
          writeSync(fd, 'policy:\n  default: allow\n  rules:\n    - name: schema-changes\n      match: { kind: [ddl]');
          await sleep(150);
          writeSync(fd, ', bogus: true }\n      action: deny\n');
        } finally {
          closeSync(fd);
        }
        await sleep(300);
      });
      expect(outcomes.length).toBeGreaterThan(20);
      expect(new Set(outcomes)).toEqual(new Set([`42501: ${DENY_TEXT}`]));
      expect(rules.current.version).toBe(versionBefore);
      expect(await tableExists('victim')).toBe(true);
    } finally {
      // Restore valid rules, probing with the sacrificial table only.
      writeFileSync(policyFile, policyYaml('deny'));
      await pollDrop(client, `42501: ${DENY_TEXT}`, 2000, 'victim');
    }
  });

  it('applies a rules file added to the directory and stops applying it when the file is removed', async () => {
    const extra = path.join(dir, 'zz-reads.yaml');
    expect((await client.query('SELECT count(*)::int AS n FROM t')).rows).toEqual([{ n: 0 }]);
    writeFileSync(extra, 'policy:\n  rules:\n    - name: no-reads-of-t\n      match: { relations: [t] }\n      action: deny\n');
    const denied = 'pgwarden: statement denied by rule "no-reads-of-t"';
    const readOutcome = async (): Promise<string> => {
      try {
        await client.query('SELECT count(*) FROM t');
        return 'ran';
      } catch (err) {
        if (err instanceof pg.DatabaseError) return err.message;
        throw err;
      }
    };
    const start = Date.now();
    let outcome = await readOutcome();
    while (outcome !== denied && Date.now() - start < 2000) {
      await sleep(25);
      outcome = await readOutcome();
    }
    expect(outcome).toBe(denied);
    unlinkSync(extra);
    const removedAt = Date.now();
    while (outcome !== 'ran' && Date.now() - removedAt < 2000) {
      await sleep(25);
      outcome = await readOutcome();
    }
    expect(outcome).toBe('ran');
  });
});

describe('SIGHUP', () => {
  it('reloads the rules on SIGHUP', async () => {
    // A debounce far longer than the test: only the signal can make the edit apply in time.
    const { dir, rules, client } = await setup(60_000);
    expect(await dropOutcome(client)).toBe(`42501: ${REVIEW_TEXT}`);
    const versionBefore = rules.current.version;
    writeFileSync(path.join(dir, 'policy.yaml'), policyYaml('deny'));
    await sleep(300);
    expect(await dropOutcome(client)).toBe(`42501: ${REVIEW_TEXT}`);
    process.emit('SIGHUP', 'SIGHUP');
    expect(rules.current.version).not.toBe(versionBefore);
    expect(await dropOutcome(client)).toBe(`42501: ${DENY_TEXT}`);
    expect(await tableExists()).toBe(true);
  });
});
