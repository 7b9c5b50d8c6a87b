import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Classifier, loadParser } from '../../src/classify/classifier.js';
import { silentLogger } from '../../src/logger.js';
import { PolicyJudge } from '../../src/policy/policy-judge.js';
import { RulesStore } from '../../src/policy/rules-store.js';
import { createTestDatabase, directClient, startTestProxy } from '../helpers/proxy.js';

/**
 * A search_path set as a role default (ALTER ROLE ... SET search_path) is applied by the server
 * and never reported to the client; pgwarden reads it at session start so that an unqualified
 * table name is judged against the schema it really resolves to.
 */
const role = `pgw_role_${randomBytes(4).toString('hex')}`;
let db: Awaited<ReturnType<typeof createTestDatabase>>;
let rulesDir: string;
let rules: RulesStore;
let proxy: Awaited<ReturnType<typeof startTestProxy>>;

beforeAll(async () => {
  db = await createTestDatabase('pgw_rsp');
  const d = directClient(db.name);
  await d.connect();
  await d.query('CREATE SCHEMA vault');
  await d.query('CREATE TABLE vault.payroll (id int, salary int)');
  await d.query('INSERT INTO vault.payroll VALUES (1, 100)');
  await d.query(`CREATE ROLE ${role} LOGIN`);
  await d.query(`GRANT USAGE ON SCHEMA vault TO ${role}`);
  await d.query(`GRANT SELECT ON vault.payroll TO ${role}`);
  await d.query(`ALTER ROLE ${role} SET search_path = vault, public`);
  await d.end();
  rulesDir = mkdtempSync(path.join(tmpdir(), 'pgw-rsp-'));
  writeFileSync(
    path.join(rulesDir, 'policy.yaml'),
    'policy:\n  default: allow\n  rules:\n    - name: no-vault\n      match: { relations: ["vault.*"] }\n      action: deny\n',
  );
  await loadParser();
  rules = new RulesStore(rulesDir, silentLogger);
  proxy = await startTestProxy({}, { judge: new PolicyJudge(rules, new Classifier()) });
});

afterAll(async () => {
  await proxy?.shutdown(1000);
  rules?.close();
  rmSync(rulesDir, { recursive: true, force: true });
  await db?.drop();
  const d = directClient('postgres');
  await d.connect();
  await d.query(`DROP ROLE IF EXISTS ${role}`);
  await d.end();
});

describe('search_path from role defaults', () => {
  it('denies an unqualified read that the role default resolves into a denied schema', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: role, database: db.name });
    await c.connect();
    try {
      const err = await c.query('SELECT * FROM payroll').then(
        () => null,
        (e: pg.DatabaseError) => e,
      );
      expect(err?.code).toBe('42501');
      expect(err?.message).toBe('pgwarden: statement denied by rule "no-vault"');
      const ok = await c.query('SELECT current_user AS u');
      expect(ok.rows).toEqual([{ u: role }]);
    } finally {
      await c.end();
    }
  });

  it('still allows the same unqualified name for a role whose search_path does not include the schema', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'postgres', database: db.name });
    await c.connect();
    try {
      const err = await c.query('SELECT * FROM payroll').then(
        () => null,
        (e: pg.DatabaseError) => e,
      );
      // For postgres the name does not resolve (vault is not on its path): the server says so.
      expect(err?.code).toBe('42P01');
    } finally {
      await c.end();
    }
  });
});
