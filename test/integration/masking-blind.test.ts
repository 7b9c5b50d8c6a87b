import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/logger.js';
import { startInstance, type RunningInstance } from '../../src/server/run.js';
import { createTestDatabase, directClient, testConfig } from '../helpers/proxy.js';

/**
 * Masking when pgwarden cannot read its catalog of masked columns (here: the catalog connection
 * points at a closed port). Without the catalog it cannot tell which views are built on masked
 * tables, so it fails closed: every statement reading a table or view other than the system
 * catalogs is refused with 58000, and nothing unmasked reaches the client.
 */
const RULES = `
masking:
  - table: public.customers
    columns: { email: redact }
`;

let db: { name: string; drop: () => Promise<void> };
let inst: RunningInstance;
let dir: string;

beforeAll(async () => {
  db = await createTestDatabase('pgw_blind');
  const c = directClient(db.name);
  await c.connect();
  await c.query(`
    CREATE TABLE customers (id int, email text);
    INSERT INTO customers VALUES (1, 'alice@example.com');
    CREATE VIEW contacts AS SELECT id, email AS contact FROM customers;
    CREATE TABLE orders (id int);
  `);
  await c.end();
  dir = mkdtempSync(path.join(tmpdir(), 'pgw-blind-'));
  mkdirSync(path.join(dir, 'rules'));
  writeFileSync(path.join(dir, 'rules', 'masking.yaml'), RULES);
  inst = await startInstance(
    testConfig({
      rulesDir: path.join(dir, 'rules'),
      audit: { enabled: true, journalDir: path.join(dir, 'journal') },
      masking: { hashKey: 'a-masking-key-for-tests-0123456789abcdef', catalogUrl: 'postgres://postgres@127.0.0.1:1' },
    }),
    silentLogger,
  );
});

afterAll(async () => {
  await inst?.stop();
  await db?.drop();
  rmSync(dir, { recursive: true, force: true });
});

async function q(sql: string): Promise<{ rows?: unknown[]; code?: string; message?: string }> {
  const c = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${inst.proxy.port}/${db.name}` });
  await c.connect();
  try {
    return { rows: (await c.query({ text: sql, rowMode: 'array' })).rows };
  } catch (err) {
    const e = err as { code?: string; message?: string };
    return { code: e.code, message: e.message };
  } finally {
    await c.end();
  }
}

describe('masking without its catalog (fail closed)', () => {
  it('refuses a read of the masked table', async () => {
    expect(await q('SELECT email FROM customers')).toMatchObject({ code: '58000', message: expect.stringContaining('masking catalog is unavailable') });
  });

  it('refuses a read of a view on it, which only the catalog could tell apart', async () => {
    const r = await q('SELECT contact FROM contacts');
    expect(JSON.stringify(r)).not.toContain('alice@example.com');
    expect(r.code).toBe('58000');
  });

  it('refuses reads of other tables and views too, since any of them could be built on a masked table', async () => {
    expect((await q('SELECT id FROM orders')).code).toBe('58000');
  });

  it('still answers statements that read no user relation, and the system catalogs', async () => {
    expect((await q('SELECT 1 + 1')).rows).toEqual([[2]]);
    expect((await q("SELECT relname FROM pg_catalog.pg_class WHERE relname = 'orders'")).rows).toEqual([['orders']]);
    expect((await q("SELECT relname FROM pg_class WHERE relname = 'orders'")).rows).toEqual([['orders']]);
  });
});

describe('masking catalog behind a lock held by another transaction', () => {
  let db2: { name: string; drop: () => Promise<void> };
  let inst2: RunningInstance;
  let dir2: string;
  const holder = () => directClient(db2.name);

  beforeAll(async () => {
    db2 = await createTestDatabase('pgw_locked');
    const c = directClient(db2.name);
    await c.connect();
    await c.query(`
      CREATE TABLE customers (id int, email text);
      INSERT INTO customers VALUES (1, 'alice@example.com');
      CREATE VIEW contacts AS SELECT id, email AS contact FROM customers;
    `);
    await c.end();
    dir2 = mkdtempSync(path.join(tmpdir(), 'pgw-locked-'));
    mkdirSync(path.join(dir2, 'rules'));
    writeFileSync(path.join(dir2, 'rules', 'masking.yaml'), RULES);
    inst2 = await startInstance(
      testConfig({ rulesDir: path.join(dir2, 'rules'), audit: { enabled: true, journalDir: path.join(dir2, 'journal') }, masking: { hashKey: 'a-masking-key-for-tests-0123456789abcdef' } }),
      silentLogger,
    );
  });

  afterAll(async () => {
    await inst2?.stop();
    await db2?.drop();
    rmSync(dir2, { recursive: true, force: true });
  });

  it('refuses (58000) within the side connection lock timeout instead of hanging, and masks again once the lock is gone', async () => {
    const lock = holder();
    await lock.connect();
    await lock.query('BEGIN');
    await lock.query('LOCK TABLE contacts IN ACCESS EXCLUSIVE MODE');
    const c = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${inst2.proxy.port}/${db2.name}` });
    await c.connect();
    try {
      const started = Date.now();
      const err = await c.query('SELECT email FROM customers').then(
        () => null,
        (e: { code?: string }) => e,
      );
      expect(err?.code).toBe('58000');
      expect(Date.now() - started).toBeLessThan(15_000);
      await lock.query('ROLLBACK');
      expect((await c.query({ text: 'SELECT email FROM customers', rowMode: 'array' })).rows).toEqual([['***']]);
    } finally {
      await lock.end();
      await c.end();
    }
  }, 30_000);
});
