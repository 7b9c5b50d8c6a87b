import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UPSTREAM_URL, startTestProxy } from '../helpers/proxy.js';
import { libpqEnv, run, runOk, type RunResult } from '../helpers/spawn.js';

/**
 * psql through the proxy must look exactly like psql against the server: its backslash
 * commands send catalog queries (simple protocol), \copy streams COPY data, and errors must
 * arrive with the server's text.
 */
const DB = `pgw_psql_${randomBytes(5).toString('hex')}`;

const SCHEMA = `
CREATE TABLE customers (
  id serial PRIMARY KEY,
  email text NOT NULL UNIQUE,
  name text,
  created_at timestamptz NOT NULL DEFAULT now(),
  credit numeric(10,2) DEFAULT 0 CHECK (credit >= 0)
);
COMMENT ON TABLE customers IS 'people who buy things';
CREATE INDEX customers_name_idx ON customers (lower(name));
CREATE TABLE orders (
  id bigserial PRIMARY KEY,
  customer_id int NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
  total numeric(12,2) NOT NULL
);
CREATE TABLE copy_target (id int PRIMARY KEY, label text);
CREATE TABLE copy_bulk (n int, payload text);
CREATE VIEW big_customers AS SELECT * FROM customers WHERE credit > 100;
INSERT INTO customers (email, name, credit) VALUES ('a@example.com', 'Ann', 10), ('b@example.com', 'Bob', 200);
`;

let proxy: Awaited<ReturnType<typeof startTestProxy>>;
let viaProxy: Record<string, string>;
let direct: Record<string, string>;

beforeAll(async () => {
  const admin = libpqEnv(UPSTREAM_URL, 'postgres');
  await runOk('createdb', [DB], { env: admin });
  direct = libpqEnv(UPSTREAM_URL, DB);
  await runOk('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', '-'], { env: direct, stdin: SCHEMA });
  proxy = await startTestProxy();
  viaProxy = libpqEnv(proxy.url(DB));
});

afterAll(async () => {
  await proxy?.shutdown(1000);
  await run('dropdb', ['--force', '--if-exists', DB], { env: libpqEnv(UPSTREAM_URL, 'postgres') });
});

function psql(env: Record<string, string>, args: string[], stdin?: string): Promise<RunResult> {
  return run('psql', ['-X', ...args], { env, stdin, timeoutMs: 30_000 });
}

/** Runs the same psql invocation directly and through the proxy. */
async function both(args: string[], stdin?: string): Promise<{ proxied: RunResult; server: RunResult }> {
  const [proxied, server] = await Promise.all([psql(viaProxy, args, stdin), psql(direct, args, stdin)]);
  return { proxied, server };
}

describe('psql backslash commands', () => {
  it('prints the same \\dt listing through the proxy as directly', async () => {
    const { proxied, server } = await both(['-c', '\\dt']);
    expect(server.stdout).toContain('customers');
    expect(proxied.stderr).toBe('');
    expect(proxied.code).toBe(0);
    expect(proxied.stdout).toBe(server.stdout);
  });

  it('prints the same \\d table description (columns, indexes, checks, references) as directly', async () => {
    const { proxied, server } = await both(['-c', '\\d customers']);
    expect(server.stdout).toContain('customers_name_idx');
    expect(server.stdout).toContain('Referenced by:');
    expect(proxied.stderr).toBe('');
    expect(proxied.code).toBe(0);
    expect(proxied.stdout).toBe(server.stdout);
  });

  it('prints the same \\d+ view definition and \\dt+ comments as directly', async () => {
    const { proxied, server } = await both(['-c', '\\d+ big_customers', '-c', '\\dt+ customers']);
    expect(server.stdout).toContain('View definition:');
    expect(server.stdout).toContain('people who buy things');
    expect(proxied.stderr).toBe('');
    // \dt+ shows sizes, equal here because nothing writes to the table in between.
    expect(proxied.stdout).toBe(server.stdout);
  });

  it('connects with a postgres:// URL argument instead of PGHOST/PGPORT', async () => {
    const r = await run('psql', ['-X', '-A', '-t', proxy.url(DB), '-c', 'SELECT count(*) FROM customers'], {
      timeoutMs: 30_000,
    });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('2\n');
  });
});

describe('psql queries', () => {
  it('shows the result of every statement of a multi-statement -c line', async () => {
    const { proxied, server } = await both(['-c', "select 1 as first; select 'two' as second"]);
    expect(proxied.stderr).toBe('');
    expect(proxied.code).toBe(0);
    expect(proxied.stdout).toContain(' first \n-------\n     1\n(1 row)');
    expect(proxied.stdout).toContain(' second \n--------\n two\n(1 row)');
    expect(proxied.stdout).toBe(server.stdout);
  });

  it('stops at the first error with ON_ERROR_STOP and shows the server error text, as directly', async () => {
    const script = "SELECT 'before' AS step;\nSELECT 1/0;\nSELECT 'after' AS step;\n";
    const { proxied, server } = await both(['-v', 'ON_ERROR_STOP=1', '-A', '-t', '-f', '-'], script);
    expect(proxied.code).toBe(3);
    expect(proxied.stdout).toBe('before\n');
    expect(proxied.stderr).toBe('psql:<stdin>:2: ERROR:  division by zero\n');
    expect(proxied).toEqual({ ...server });
  });

  it('shows constraint violation details and does not run the rest of the script', async () => {
    const script = [
      'CREATE TABLE script_t (id int PRIMARY KEY);',
      'INSERT INTO script_t VALUES (1);',
      'INSERT INTO script_t VALUES (1);',
      'INSERT INTO script_t VALUES (2);',
      '',
    ].join('\n');
    const r = await psql(viaProxy, ['-v', 'ON_ERROR_STOP=1', '-f', '-'], script);
    expect(r.code).toBe(3);
    expect(r.stderr).toBe(
      'psql:<stdin>:3: ERROR:  duplicate key value violates unique constraint "script_t_pkey"\n' +
        'DETAIL:  Key (id)=(1) already exists.\n',
    );
    const rows = await psql(direct, ['-A', '-t', '-c', 'SELECT array_agg(id ORDER BY id) FROM script_t']);
    expect(rows.stdout).toBe('{1}\n');
  });

  it('reports an error inside a transaction and rolls it back when the script ends', async () => {
    const script = [
      'BEGIN;',
      "INSERT INTO copy_target VALUES (900, 'in tx');",
      'SELECT * FROM no_such_table;',
      "INSERT INTO copy_target VALUES (901, 'ignored');",
      'COMMIT;',
      '',
    ].join('\n');
    const r = await psql(viaProxy, ['-f', '-'], script);
    expect(r.stderr).toContain('psql:<stdin>:3: ERROR:  relation "no_such_table" does not exist');
    expect(r.stderr).toContain(
      'psql:<stdin>:4: ERROR:  current transaction is aborted, commands ignored until end of transaction block',
    );
    expect(r.stdout).toContain('ROLLBACK');
    const rows = await psql(direct, ['-A', '-t', '-c', 'SELECT count(*) FROM copy_target WHERE id >= 900']);
    expect(rows.stdout).toBe('0\n');
  });
});

describe('psql \\copy', () => {
  it('loads piped data with \\copy ... from stdin and returns it with \\copy ... to stdout', async () => {
    const data = "1\tone\n2\ttwo with\\ttab\n3\t\\N\n";
    const load = await psql(viaProxy, ['-c', '\\copy copy_target from stdin'], data);
    expect(load.stderr).toBe('');
    expect(load.code).toBe(0);
    expect(load.stdout).toBe('COPY 3\n');

    const dump = await psql(viaProxy, ['-c', '\\copy (SELECT * FROM copy_target WHERE id < 900 ORDER BY id) to stdout']);
    expect(dump.stderr).toBe('');
    expect(dump.code).toBe(0);
    expect(dump.stdout).toBe(data);
  });

  it('reports a bad COPY row with the server error and line number, and loads nothing', async () => {
    const data = '10\tok\nnot-a-number\tbad\n';
    const r = await psql(viaProxy, ['-c', '\\copy copy_target from stdin'], data);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('ERROR:  invalid input syntax for type integer: "not-a-number"');
    expect(r.stderr).toContain('CONTEXT:  COPY copy_target, line 2');
    const rows = await psql(direct, ['-A', '-t', '-c', 'SELECT count(*) FROM copy_target WHERE id = 10']);
    expect(rows.stdout).toBe('0\n');
  });

  it('streams a multi-megabyte \\copy in both directions intact', async () => {
    const lines: string[] = [];
    for (let i = 0; i < 100_000; i++) lines.push(`${i}\t${'x'.repeat(i % 97)}-${i}`);
    const data = lines.join('\n') + '\n';
    const load = await psql(viaProxy, ['-c', '\\copy copy_bulk from stdin'], data);
    expect(load.stderr).toBe('');
    expect(load.stdout).toBe('COPY 100000\n');

    const dump = await psql(viaProxy, ['-c', '\\copy (SELECT * FROM copy_bulk ORDER BY n) to stdout']);
    expect(dump.stderr).toBe('');
    expect(dump.stdout.length).toBe(data.length);
    expect(dump.stdout === data).toBe(true);
  });
});
