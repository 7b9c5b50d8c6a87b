import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditEventSchema } from '../../src/audit/events.js';
import { silentLogger } from '../../src/logger.js';
import { startInstance, type RunningInstance } from '../../src/server/run.js';
import { createTestDatabase, directClient, testConfig, UPSTREAM_URL } from '../helpers/proxy.js';
import { libpqEnv, run, runOk } from '../helpers/spawn.js';

/**
 * PII masking through the proxy with real clients against a seeded schema: no raw value of a
 * masked column reaches the client, whatever the SQL, and everything else is byte-for-byte what
 * PostgreSQL sent.
 */
const RULES = `
masking:
  - table: public.customers
    columns:
      email: partial_email
      ssn: redact
      phone: { strategy: keep_last, count: 4 }
      card_number: hash
    exempt: [dpo]
  - table: public.employees
    columns:
      salary: redact
  - table: public.partners
    columns:
      contact_email: partial_email
    exempt: [dpo]
  - table: public.staff
    columns:
      private_email: redact
  - table: public.late_table         # created by a test, through pgwarden
    columns:
      secret: redact
policy:
  default: allow
  unanalysable: review
  rules:
    - name: schema-changes
      match: { kind: [ddl] }
      except: { applications: [masking-ddl-test] }
      action: review
`;

const RAW = ['alice@example.com', 'bob@example.org', '123-45-6789', '987-65-4321', '+1-555-0100', '4111111111111111', '5500005555555559', '182000', 'sam.private@staff.example'];

let db: { name: string; drop: () => Promise<void> };
let inst: RunningInstance;
let dir: string;
let url: (user?: string) => string;

beforeAll(async () => {
  db = await createTestDatabase('pgw_mask');
  const c = directClient(db.name);
  await c.connect();
  await c.query(`
    CREATE TABLE customers (id int PRIMARY KEY, name text, email text UNIQUE, ssn text, phone text, card_number text);
    INSERT INTO customers VALUES (1, 'Alice', 'alice@example.com', '123-45-6789', '+1-555-0100', '4111111111111111'),
                                 (2, 'Bob', 'bob@example.org', '987-65-4321', '+1-555-0199', '5500005555555559');
    CREATE TABLE employees (id int, name text, salary int);
    INSERT INTO employees VALUES (1, 'Eve', 182000);
    CREATE TABLE orders (id int, customer_id int, total numeric);
    INSERT INTO orders VALUES (10, 1, 42.50), (11, 2, 7.00);
    CREATE SCHEMA other;
    CREATE TABLE other.customers (id int, email text);
    INSERT INTO other.customers VALUES (1, 'visible@other.example');
    CREATE VIEW customer_contacts AS SELECT id, name, email AS contact, phone FROM customers;
    CREATE TABLE partners (id int, contact_email text);
    INSERT INTO partners VALUES (1, 'pat@partner.example');
    CREATE TABLE staff (id int, name text, private_email text);
    INSERT INTO staff VALUES (1, 'Sam', 'sam.private@staff.example');
    -- A view column named like a masked column of another table (partners.contact_email, dpo exempt),
    -- and a view above it.
    CREATE VIEW staff_contacts AS SELECT id, private_email AS contact_email FROM staff;
    CREATE VIEW staff_contacts_2 AS SELECT contact_email AS c FROM staff_contacts;
  `);
  // Roles are cluster-wide: another run may have created it.
  await c.query('CREATE ROLE dpo LOGIN').catch((e: { code?: string }) => {
    if (e.code !== '42710') throw e;
  });
  await c.query('GRANT ALL ON ALL TABLES IN SCHEMA public TO dpo');
  await c.end();
  dir = mkdtempSync(path.join(tmpdir(), 'pgw-mask-'));
  mkdirSync(path.join(dir, 'rules'));
  writeFileSync(path.join(dir, 'rules', 'policy.yaml'), RULES);
  inst = await startInstance(
    testConfig({ rulesDir: path.join(dir, 'rules'), audit: { enabled: true, journalDir: path.join(dir, 'journal') }, masking: { hashKey: 'a-masking-key-for-tests-0123456789abcdef' } }),
    silentLogger,
  );
  url = (user = 'postgres') => `postgres://${user}@127.0.0.1:${inst.proxy.port}/${db.name}`;
});

afterAll(async () => {
  await inst?.stop();
  await db?.drop();
  rmSync(dir, { recursive: true, force: true });
});

async function q(sql: string, params?: unknown[], user?: string): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: url(user) });
  await c.connect();
  try {
    return await c.query(sql, params);
  } finally {
    await c.end();
  }
}

function noRaw(value: unknown): void {
  const text = JSON.stringify(value);
  for (const raw of RAW) expect(text, `raw value ${raw} leaked`).not.toContain(raw);
}

describe('plain column references', () => {
  it('masks each strategy and leaves other columns as they are (simple protocol)', async () => {
    const c = new pg.Client({ connectionString: url() });
    await c.connect();
    const r: pg.QueryArrayResult = await c.query({ text: 'SELECT id, name, email, ssn, phone, card_number FROM customers ORDER BY id', rowMode: 'array' });
    await c.end();
    expect(r.rows[0]).toEqual([1, 'Alice', 'a***@example.com', '***', '***0100', expect.stringMatching(/^[0-9a-f]{32}$/)]);
    noRaw(r.rows);
    // hash is deterministic: the same card gives the same value in another query
    const again = await q('SELECT card_number FROM customers WHERE id = 1');
    expect(again.rows[0].card_number).toBe(r.rows[0]![5]);
  });

  it('masks through aliases, quoted identifiers, schema-qualified names and SELECT *', async () => {
    for (const sql of ['SELECT email AS x FROM customers', 'SELECT "email" FROM public.customers', 'SELECT * FROM customers', 'SELECT c.* FROM customers c', 'SELECT x.email FROM customers x JOIN orders o ON o.customer_id = x.id']) {
      const r = await q(sql);
      noRaw(r.rows);
      expect(r.rows.length, sql).toBeGreaterThan(0);
    }
  });

  it('extended protocol with parameters, and a masked integer column arrives as text', async () => {
    const r = await q('SELECT name, salary FROM employees WHERE id = $1', [1]);
    expect(r.rows).toEqual([{ name: 'Eve', salary: '***' }]);
    expect(r.fields.find((f) => f.name === 'salary')?.dataTypeID).toBe(25);
  });

  it('binary result format: masked columns come as text, the others stay binary and parse', async () => {
    const c = new pg.Client({ connectionString: url() });
    await c.connect();
    try {
      const r = await c.query({ text: 'SELECT e.id, e.salary, c.email, c.phone FROM employees e, customers c WHERE c.id = $1', values: [1], binary: true } as unknown as pg.QueryConfig);
      expect(r.rows).toEqual([{ id: 1, salary: '***', email: 'a***@example.com', phone: '***0100' }]);
      expect(r.fields.map((f) => [f.name, f.dataTypeID, f.format])).toEqual([
        ['id', 23, 'binary'],
        ['salary', 25, 'text'],
        ['email', 25, 'text'],
        ['phone', 25, 'text'],
      ]);
    } finally {
      await c.end();
    }
  });

  it('the same table name in another schema is not masked unless the rules name it', async () => {
    const r = await q('SELECT email FROM other.customers');
    expect(r.rows).toEqual([{ email: 'visible@other.example' }]);
  });

  it('exempt identities see raw values', async () => {
    const r = await q('SELECT email FROM customers WHERE id = 1', [], 'dpo');
    expect(r.rows).toEqual([{ email: 'alice@example.com' }]);
  });

  it('non-PII results are byte-for-byte what PostgreSQL sends', async () => {
    const viaProxy = await q('SELECT id, customer_id, total FROM orders ORDER BY id');
    const d = directClient(db.name);
    await d.connect();
    const direct = await d.query('SELECT id, customer_id, total FROM orders ORDER BY id');
    await d.end();
    expect(viaProxy.rows).toEqual(direct.rows);
    expect(viaProxy.fields.map((f) => f.dataTypeID)).toEqual(direct.fields.map((f) => f.dataTypeID));
  });
});

describe('expressions, whole rows, set operations, subqueries', () => {
  const corpus = parseYaml(readFileSync(new URL('../fixtures/masking-bypass.yaml', import.meta.url), 'utf8')) as { sql: string; why: string }[];
  it.each(corpus.map((e) => [e.why, e.sql]))('%s: %s', async (_why, sql) => {
    if (/\bCOPY\b/.test(sql)) {
      // node-postgres has no COPY: psql, as an agent's shell would run it.
      const r = await run('psql', ['-X', '-q', '-c', sql], { env: libpqEnv(url()) });
      noRaw([r.stdout, r.stderr]);
      return;
    }
    const c = new pg.Client({ connectionString: url() });
    await c.connect();
    try {
      const r = await c.query(sql);
      noRaw(Array.isArray(r) ? r.map((x) => x.rows) : r.rows);
    } finally {
      await c.end();
    }
  });

  it('count(email) is a number and stays clean', async () => {
    const r = await q('SELECT count(email) AS n FROM customers');
    expect(r.rows).toEqual([{ n: '2' }]);
  });
});

describe('views, cursors, prepared statements, RETURNING', () => {
  it('a view over a masked table masks the columns that come from masked ones', async () => {
    const r = await q('SELECT * FROM customer_contacts ORDER BY id');
    expect(r.rows[0]).toEqual({ id: 1, name: 'Alice', contact: 'a***@example.com', phone: '***0100' });
  });

  it('a view column named like another table’s masked column stays masked for a user exempt from that table', async () => {
    // partners.contact_email is masked (dpo exempt); staff_contacts.contact_email is staff.private_email (dpo not exempt).
    expect((await q('SELECT contact_email FROM staff_contacts', [], 'dpo')).rows).toEqual([{ contact_email: '***' }]);
    expect((await q('SELECT c FROM staff_contacts_2', [], 'dpo')).rows).toEqual([{ c: '***' }]);
    for (const sql of ['SELECT lower(contact_email) AS e FROM staff_contacts', "SELECT contact_email || '' AS e FROM staff_contacts", 'SELECT s.e FROM (SELECT contact_email AS e FROM staff_contacts) s', "SELECT c || '' AS e FROM staff_contacts_2"]) {
      const r = await q(sql, [], 'dpo');
      expect(r.rows, sql).toEqual([{ e: '***' }]);
    }
    // The exemption itself still holds for the table it names.
    expect((await q('SELECT contact_email FROM partners', [], 'dpo')).rows).toEqual([{ contact_email: 'pat@partner.example' }]);
  });

  it('DECLARE … FETCH', async () => {
    const c = new pg.Client({ connectionString: url() });
    await c.connect();
    await c.query('BEGIN');
    await c.query('DECLARE cur CURSOR FOR SELECT id, ssn FROM customers ORDER BY id');
    const r = await c.query('FETCH 1 FROM cur');
    const r2 = await c.query('FETCH ALL FROM cur');
    await c.query('COMMIT');
    await c.end();
    expect(r.rows).toEqual([{ id: 1, ssn: '***' }]);
    noRaw(r2.rows);
  });

  it('SQL-level PREPARE / EXECUTE', async () => {
    const c = new pg.Client({ connectionString: url() });
    await c.connect();
    await c.query('PREPARE p(int) AS SELECT email FROM customers WHERE id = $1');
    const r = await c.query('EXECUTE p(1)');
    await c.end();
    expect(r.rows).toEqual([{ email: 'a***@example.com' }]);
  });

  it('protocol-level named statements reused without a fresh Describe (postgres.js)', async () => {
    const sql = postgres(url(), { max: 1, prepare: true });
    try {
      for (let i = 0; i < 3; i++) {
        const rows = await sql`SELECT id, email, phone FROM customers WHERE id = ${1}`;
        expect([...rows]).toEqual([{ id: 1, email: 'a***@example.com', phone: '***0100' }]);
      }
      const cursorRows: unknown[] = [];
      await sql`SELECT ssn FROM customers`.cursor(1, (rows) => {
        cursorRows.push(...rows);
      });
      expect(cursorRows).toEqual([{ ssn: '***' }, { ssn: '***' }]);
    } finally {
      await sql.end();
    }
  });

  it('RETURNING of INSERT / UPDATE / DELETE', async () => {
    const ins = await q("INSERT INTO customers VALUES (3, 'Carol', 'carol@example.net', '555-55-5555', '+1-555-0123', '4000000000000002') RETURNING email, ssn");
    expect(ins.rows).toEqual([{ email: 'c***@example.net', ssn: '***' }]);
    const del = await q('DELETE FROM customers WHERE id = 3 RETURNING *');
    expect(JSON.stringify(del.rows)).not.toContain('carol@example.net');
    expect(JSON.stringify(del.rows)).not.toContain('555-55-5555');
  });
});

describe('errors, notices and side channels', () => {
  it('a notice raised with a masked value is redacted', async () => {
    const d = directClient(db.name);
    await d.connect();
    await d.query(`CREATE OR REPLACE FUNCTION shout(v text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'value: %', v; RETURN 'x'; END $$`);
    await d.end();
    const c = new pg.Client({ connectionString: url() });
    const notices: string[] = [];
    c.on('notice', (n) => notices.push(JSON.stringify(n)));
    await c.connect();
    await c.query('SELECT shout(email) FROM customers WHERE id = 1');
    await c.end();
    expect(notices.length).toBe(1);
    expect(notices[0]).not.toContain('alice@example.com');
    expect(notices[0]).toContain('redacted');
  });

  it('messages, hints and object-name fields a function raises from a masked value are replaced (any SQLSTATE)', async () => {
    const d = directClient(db.name);
    await d.connect();
    await d.query(`CREATE OR REPLACE FUNCTION raise_it(v text, how int) RETURNS text LANGUAGE plpgsql AS $$ BEGIN
      CASE how
        WHEN 1 THEN RAISE EXCEPTION USING ERRCODE = '22000', MESSAGE = v;
        WHEN 2 THEN RAISE SQLSTATE 'XX001' USING MESSAGE = v;
        WHEN 3 THEN ASSERT false, v;
        WHEN 4 THEN RAISE EXCEPTION 'plain' USING HINT = v, COLUMN = v, TABLE = v, SCHEMA = v, DATATYPE = v, CONSTRAINT = v, DETAIL = v;
        WHEN 5 THEN RAISE EXCEPTION USING ERRCODE = upper(substr(replace(v, '-', ''), 1, 5));
        WHEN 6 THEN RAISE EXCEPTION 'at %', v USING ERRCODE = 'unique_violation';
        ELSE RAISE NOTICE USING MESSAGE = v, HINT = v, COLUMN = v, TABLE = v, SCHEMA = v, DATATYPE = v, CONSTRAINT = v;
      END CASE;
      RETURN 'x';
    END $$`);
    await d.end();
    /** A NoticeResponse as node-postgres reports it (the same fields as an error). */
    type Notice = { message?: string };
    /** Every field node-postgres exposes, message included (it is not enumerable on the error). */
    const fields = (e: pg.DatabaseError | Notice) => ({
      message: e.message,
      ...Object.fromEntries(['code', 'hint', 'detail', 'schema', 'table', 'column', 'dataType', 'constraint', 'where', 'internalQuery'].map((k) => [k, (e as unknown as Record<string, unknown>)[k]])),
    });
    const seen: Record<string, unknown>[] = [];
    for (const [how, column] of [
      [1, 'email'],
      [2, 'email'],
      [3, 'ssn'],
      [4, 'email'],
      [5, 'ssn'],
      [6, 'phone'],
    ] as const) {
      const e = (await q(`SELECT raise_it(${column}, ${how}) FROM customers WHERE id = 1`).catch((x: unknown) => x)) as pg.DatabaseError;
      expect(e, `form ${how}`).toBeInstanceOf(Error);
      const f = fields(e);
      seen.push(f);
      expect(f.message, `form ${how}`).toContain('redacted');
      for (const k of ['hint', 'detail', 'schema', 'table', 'column', 'dataType', 'constraint', 'where']) expect(f[k as keyof typeof f], `form ${how}: ${k}`).toBeUndefined();
    }
    // A SQLSTATE PostgreSQL defines is kept; a made-up one (here the SSN's first five digits) is not.
    expect(seen.map((f) => f.code)).toEqual(['22000', 'XX001', 'P0004', 'P0001', 'P0001', '23505']);
    const c = new pg.Client({ connectionString: url() });
    const notices: Notice[] = [];
    c.on('notice', (n) => notices.push(n));
    await c.connect();
    await c.query('SELECT raise_it(email, 0) FROM customers WHERE id = 1');
    await c.end();
    expect(notices.length).toBe(1);
    seen.push(fields(notices[0]!));
    expect(notices[0]!.message).toContain('redacted');
    for (const f of seen) {
      noRaw(f);
      expect(JSON.stringify(f)).not.toContain('12345');
    }
  });

  it('values echoed in errors are redacted', async () => {
    const e1 = (await q('SELECT email::int FROM customers').catch((e: unknown) => e)) as pg.DatabaseError;
    expect(e1.code).toBe('22P02');
    expect(e1.message).not.toContain('example.com');
    const e2 = (await q("UPDATE customers SET email = 'bob@example.org' WHERE id = 1").catch((e: unknown) => e)) as pg.DatabaseError;
    expect(e2.code).toBe('23505');
    expect(JSON.stringify(e2)).not.toContain('bob@example.org');
  });

  it('pg_notify and set_config over masked columns are refused', async () => {
    const e = (await q("SELECT pg_notify('c', email) FROM customers").catch((x: unknown) => x)) as pg.DatabaseError;
    expect(e.code).toBe('42501');
    const e2 = (await q("SELECT set_config('application_name', email, false) FROM customers").catch((x: unknown) => x)) as pg.DatabaseError;
    expect(e2.code).toBe('42501');
  });

  it('copying masked data elsewhere needs review (refused without an approval channel)', async () => {
    for (const sql of ['CREATE TABLE leak AS SELECT email FROM customers', 'INSERT INTO orders SELECT id, id, length(ssn) FROM customers', 'UPDATE customers SET name = email', 'COPY customers TO STDOUT (FORMAT binary)', "COPY customers TO STDOUT (ENCODING 'LATIN1')", 'WITH u AS (UPDATE customers SET name = email RETURNING 1) SELECT count(*) FROM u', 'COPY (UPDATE customers SET name = ssn RETURNING id) TO STDOUT', 'WITH u AS (UPDATE customers SET name = phone RETURNING id) DELETE FROM orders WHERE id IN (SELECT id FROM u)']) {
      const e = (await q(sql).catch((x: unknown) => x)) as pg.DatabaseError;
      expect(e.code, sql).toBe('42501');
    }
  });
});

describe('COPY … TO STDOUT data', () => {
  /** psql through the proxy (simple protocol), as the given user; stdout is what the user sees. */
  async function psql(sql: string, user = 'postgres', target = url(user)): Promise<string> {
    return (await runOk('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', sql], { env: libpqEnv(target) })).stdout;
  }

  it('text format: masked columns masked, the others exactly as PostgreSQL writes them', async () => {
    const out = await psql('COPY customers TO STDOUT');
    const rows = out.trimEnd().split('\n').map((l) => l.split('\t'));
    expect(rows.map((r) => r.slice(0, 5))).toEqual([
      ['1', 'Alice', 'a***@example.com', '***', '***0100'],
      ['2', 'Bob', 'b***@example.org', '***', '***0199'],
    ]);
    expect(rows[0]![5]).toMatch(/^[0-9a-f]{32}$/);
    // hash agrees with the row masker: joins between COPY output and query results still work
    expect(rows[0]![5]).toBe((await q('SELECT card_number FROM customers WHERE id = 1')).rows[0].card_number);
    noRaw(out);
  });

  it('CSV with a header and a column list, and a query with expressions and SELECT *', async () => {
    expect(await psql('COPY customers (id, email, name) TO STDOUT WITH (FORMAT csv, HEADER)')).toBe('id,email,name\n1,"a***@example.com",Alice\n2,"b***@example.org",Bob\n');
    expect(await psql('COPY (SELECT id, upper(email), name, count(*) OVER () FROM customers ORDER BY id) TO STDOUT WITH CSV')).toBe('1,"***",Alice,2\n2,"***",Bob,2\n');
    const star = await psql('COPY (SELECT * FROM public.customers WHERE id = 1) TO STDOUT WITH CSV');
    expect(star).toMatch(/^1,Alice,"a\*\*\*@example\.com","\*\*\*","\*\*\*0100","[0-9a-f]{32}"\n$/);
    const employees = await psql("COPY (SELECT e.name, e.salary, c.email FROM employees e, customers c WHERE c.id = 2) TO STDOUT (DELIMITER '|', NULL 'none')");
    expect(employees).toBe('Eve|***|b***@example.org\n');
    noRaw([star, employees]);
  });

  it('values with delimiters, quotes, backslashes and newlines, and NULLs, in one multi-statement request', async () => {
    const sql = [
      'BEGIN',
      "INSERT INTO customers VALUES (7, E'Tab\\there, \"q\"', E'we\\\\ird\\t,\"x\"\\n@example.com', NULL, E'+1\\n555-0177', NULL)",
      'COPY customers (id, name, email, ssn, phone) TO STDOUT',
      "COPY customers (id, name, email, ssn, phone) TO STDOUT WITH (FORMAT csv, QUOTE '''', ESCAPE '\\', NULL 'NULL')",
      'ROLLBACK',
    ].join('; ');
    const out = await psql(sql);
    const lines = out.split('\n').filter((l) => l.startsWith('7'));
    expect(lines).toEqual(['7\tTab\\there, "q"\tw***@example.com\t\\N\t***0177', "7,'Tab\there, \"q\"','w***@example.com',NULL,'***0177'"]);
    expect(out).not.toContain('ird');
    noRaw(out);
  });

  it('another schema’s same-named table, an exempt user and an unmasked table pass through byte for byte', async () => {
    expect(await psql('COPY other.customers TO STDOUT')).toBe('1\tvisible@other.example\n');
    expect(await psql('COPY customers (id, email) TO STDOUT', 'dpo')).toBe('1\talice@example.com\n2\tbob@example.org\n');
    const direct = await runOk('psql', ['-X', '-q', '-c', 'COPY orders TO STDOUT WITH CSV HEADER'], { env: libpqEnv(UPSTREAM_URL, db.name) });
    expect(await psql('COPY orders TO STDOUT WITH CSV HEADER')).toBe(direct.stdout);
  });

  it('postgres.js (extended protocol) COPY stream is masked too', async () => {
    const sql = postgres(url(), { max: 1, onnotice: () => {} });
    try {
      const chunks: Buffer[] = [];
      const stream = await sql`COPY customers (id, email, ssn) TO STDOUT WITH CSV`.readable();
      for await (const chunk of stream) chunks.push(chunk as Buffer);
      expect(Buffer.concat(chunks).toString()).toBe('1,"a***@example.com","***"\n2,"b***@example.org","***"\n');
    } finally {
      await sql.end();
    }
  });

  it('binary COPY and a non-UTF8 client encoding are refused, not sent unmasked', async () => {
    const bin = await run('psql', ['-X', '-q', '-c', 'COPY customers TO STDOUT (FORMAT binary)'], { env: libpqEnv(url()) });
    expect(bin.code).not.toBe(0);
    expect(bin.stderr).toContain('binary format cannot be masked');
    // (Connecting with client_encoding SJIS is refused at startup; changing it on the way is too.)
    const enc = await run('psql', ['-X', '-q', '-c', "SET client_encoding TO 'SJIS'; COPY customers TO STDOUT"], { env: libpqEnv(url()) });
    expect(enc.code).not.toBe(0);
    expect(enc.stderr).toMatch(/ERROR: .*client_encoding/);
    noRaw([bin.stdout, enc.stdout]);
  });
});

describe('DDL through pgwarden', () => {
  /** A connection whose DDL the test rules allow. */
  async function ddlClient(): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: url(), application_name: 'masking-ddl-test' });
    await c.connect();
    return c;
  }

  it('a masked table created, or a masked view column renamed, is masked from the very next statement', async () => {
    const c = await ddlClient();
    try {
      await c.query('CREATE TABLE late_table (id int, secret text)');
      await c.query("INSERT INTO late_table VALUES (1, 'late-secret-value')");
      expect((await c.query('SELECT id, secret FROM late_table')).rows).toEqual([{ id: 1, secret: '***' }]);
      await c.query('ALTER VIEW staff_contacts_2 RENAME COLUMN c TO c_renamed');
      expect((await c.query("SELECT c_renamed || '' AS e FROM staff_contacts_2")).rows).toEqual([{ e: '***' }]);
    } finally {
      await c.query('ALTER VIEW staff_contacts_2 RENAME COLUMN c_renamed TO c').catch(() => undefined);
      await c.query('DROP TABLE IF EXISTS late_table');
      await c.end();
    }
  });

  it('DDL inside a transaction block is read again once the transaction commits', async () => {
    const c = await ddlClient();
    try {
      await c.query('BEGIN');
      await c.query('ALTER VIEW staff_contacts_2 RENAME COLUMN c TO c_tx');
      await c.query('SELECT 1 FROM staff_contacts_2');
      await c.query('COMMIT');
      expect((await c.query("SELECT c_tx || '' AS e FROM staff_contacts_2")).rows).toEqual([{ e: '***' }]);
    } finally {
      await c.query('ROLLBACK').catch(() => undefined);
      await c.query('ALTER VIEW staff_contacts_2 RENAME COLUMN c_tx TO c').catch(() => undefined);
      await c.end();
    }
  });
});

describe('rules reload and the audit log', () => {
  it('a rules edit re-plans masks for open connections, without reconnecting', async () => {
    const c = new pg.Client({ connectionString: url() });
    await c.connect();
    try {
      expect((await c.query('SELECT total FROM orders WHERE id = 10')).rows).toEqual([{ total: '42.50' }]);
      const extra = `${RULES.replace('masking:\n', 'masking:\n  - table: public.orders\n    columns:\n      total: redact\n')}`;
      writeFileSync(path.join(dir, 'rules', 'policy.yaml'), extra);
      const deadline = Date.now() + 5000;
      let total: unknown = '42.50';
      while (Date.now() < deadline && total === '42.50') {
        await new Promise((r) => setTimeout(r, 100));
        total = (await c.query('SELECT total FROM orders WHERE id = 10')).rows[0].total;
      }
      expect(total).toBe('***');
    } finally {
      writeFileSync(path.join(dir, 'rules', 'policy.yaml'), RULES);
      await c.end();
    }
  });

  it('masked statements are recorded with the columns and strategies, never the values', async () => {
    await q("SELECT email, ssn FROM customers WHERE name <> 'nobody'");
    await q('SELECT phone FROM customers WHERE id = $1', [1]);
    const deadline = Date.now() + 3000;
    let masked: Record<string, unknown>[] = [];
    let text = '';
    while (Date.now() < deadline && masked.length < 2) {
      await inst.audit.sink!.flushed();
      text = readdirSync(path.join(dir, 'journal'))
        .filter((f) => f.endsWith('.jsonl'))
        .map((f) => readFileSync(path.join(dir, 'journal', f), 'utf8'))
        .join('\n');
      masked = text
        .split('\n')
        .filter((l) => l.includes('"statement.masked"'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((e) => ['SELECT email, ssn FROM customers WHERE name <> $1', 'SELECT phone FROM customers WHERE id = $1'].includes((e.statements as { text: string }[] | undefined)?.[0]?.text ?? ''));
      if (masked.length < 2) await new Promise((r) => setTimeout(r, 50));
    }
    expect(masked.length).toBe(2);
    const [simple, extended] = masked as { request: string; statements: { text: string; fingerprint: string }[]; kinds: string[]; tables: string[]; rulesVersion?: string; columns: { column: string; strategy: string }[] }[];
    expect(simple!.request).toBe('simple');
    expect(simple!.statements).toEqual([{ text: 'SELECT email, ssn FROM customers WHERE name <> $1', fingerprint: expect.stringMatching(/^[0-9a-f]{16}$/) }]);
    expect(simple!.kinds).toEqual(['read']);
    expect(simple!.tables).toEqual(['customers']);
    expect(simple!.rulesVersion).toEqual(expect.any(String));
    expect(simple!.columns).toEqual(expect.arrayContaining([{ column: 'public.customers.email', strategy: 'partial_email' }]));
    expect(extended!.request).toBe('extended');
    expect(extended!.statements.map((x) => x.text)).toEqual(['SELECT phone FROM customers WHERE id = $1']);
    // The entry is one the audit schema accepts (chain fields aside).
    for (const e of masked) {
      const { chain: _c, seq: _s, prev: _p, hmac: _h, ...event } = e;
      expect(auditEventSchema.safeParse(event).success, JSON.stringify(e)).toBe(true);
    }
    for (const raw of RAW) expect(text).not.toContain(raw);
  });
});
