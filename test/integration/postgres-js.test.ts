import { once } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { createTestDatabase, directClient, startTestProxy } from '../helpers/proxy.js';

/**
 * postgres.js through pgwarden. This driver exercises the extended protocol harder than pg:
 * named statements by default, pipelining on one connection, Execute with a row limit
 * (PortalSuspended) followed by Flush for cursors, COPY started from an extended batch, and its
 * own CancelRequest.
 */

type Proxy = Awaited<ReturnType<typeof startTestProxy>>;
type Sql = ReturnType<typeof postgres>;

interface PgErrorLike {
  code?: string;
}

async function errorOf(p: PromiseLike<unknown>): Promise<PgErrorLike & Error> {
  try {
    await p;
  } catch (err) {
    return err as PgErrorLike & Error;
  }
  throw new Error('expected the query to fail');
}

function withTimeout<T>(p: PromiseLike<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([Promise.resolve(p), timeout]).finally(() => clearTimeout(timer));
}

/** Waits until the upstream shows a statement containing `fragment` running in `database`. */
async function waitUntilRunning(database: string, fragment: string): Promise<void> {
  const admin = directClient('postgres');
  await admin.connect();
  try {
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      const r = await admin.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND strpos(query, $2) > 0 AND pid <> pg_backend_pid()",
        [database, fragment],
      );
      if ((r.rows[0]?.n ?? 0) > 0) return;
      await new Promise((res) => setTimeout(res, 20));
    }
    throw new Error(`statement never started: ${fragment}`);
  } finally {
    await admin.end();
  }
}

describe('postgres.js through pgwarden', () => {
  let proxy: Proxy;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  const open: Sql[] = [];

  /** One connection (max: 1), so statements, pipelining and session state are observable. */
  function connect(options: postgres.Options<Record<string, postgres.PostgresType>> = {}): Sql {
    const sql = postgres(proxy.url(db.name), { max: 1, onnotice: () => {}, ...options });
    open.push(sql);
    return sql;
  }

  beforeAll(async () => {
    db = await createTestDatabase('pgw_pgjs');
    proxy = await startTestProxy();
  });

  afterEach(async () => {
    await Promise.all(open.splice(0).map((sql) => sql.end({ timeout: 2 })));
  });

  afterAll(async () => {
    await Promise.all(open.splice(0).map((sql) => sql.end({ timeout: 2 })));
    await proxy.shutdown(1000);
    await db.drop();
  });

  describe('prepared statements and pipelining', () => {
    it('prepares a named statement once and reuses it for every call', async () => {
      const sql = connect();
      for (let i = 0; i < 200; i++) {
        const rows = await sql<{ d: number; s: string }[]>`select ${i}::int * 2 as d, ${`v${i}`}::text as s`;
        expect([...rows]).toEqual([{ d: i * 2, s: `v${i}` }]);
      }
      const prepared = await sql<{ name: string; statement: string }[]>`select name, statement from pg_prepared_statements`;
      const mine = prepared.filter((p) => p.statement === 'select $1::int * 2 as d, $2::text as s');
      expect(mine).toHaveLength(1);
      expect(mine[0]?.name).not.toBe('');
    });

    it('answers 500 queries pipelined on one connection, each with its own result', async () => {
      const sql = connect();
      const pids = new Set<number>();
      const results = await Promise.all(
        Array.from({ length: 500 }, async (_, i) => {
          if (i % 3 === 0) {
            const [row] = await sql<{ i: number; pid: number }[]>`select ${i}::int as i, pg_backend_pid() as pid`;
            if (row) pids.add(row.pid);
            return row?.i;
          }
          if (i % 3 === 1) {
            const [row] = await sql<{ i: number }[]>`select length(${'x'.repeat(i)}::text) as i`;
            return row?.i;
          }
          const rows = await sql<{ g: number }[]>`select g from generate_series(1, ${i}::int) g`;
          return rows.length;
        }),
      );
      expect(results).toEqual(Array.from({ length: 500 }, (_, i) => i));
      expect(pids.size).toBe(1);
    });

    it('fails only the broken query of a pipeline', async () => {
      const sql = connect();
      const settled = await Promise.allSettled([
        sql`select 1 as a`,
        sql`select 1/0 as b`,
        sql`select ${'not a number'}::int as c`,
        sql`select 4 as d`,
        sql`selec 5`,
        sql`select 6 as f`,
      ]);
      expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled', 'rejected', 'fulfilled']);
      const codes = settled.map((s) => (s.status === 'rejected' ? (s.reason as PgErrorLike).code : undefined));
      expect(codes).toEqual([undefined, '22012', '22P02', undefined, '42601', undefined]);
      const last = settled[5];
      expect(last?.status === 'fulfilled' ? [...last.value] : null).toEqual([{ f: 6 }]);
    });

    it('runs a multi-statement simple query', async () => {
      const sql = connect();
      const results = await sql.unsafe('select 1 as a; select 2 as b, 3 as c').simple();
      const sets = results as unknown as Array<Record<string, number>[]>;
      expect(sets.map((rows) => [...rows])).toEqual([[{ a: 1 }], [{ b: 2, c: 3 }]]);
    });

    it('runs unprepared statements when prepare is off', async () => {
      const sql = connect({ prepare: false });
      for (let i = 0; i < 20; i++) {
        const [row] = await sql<{ n: number }[]>`select ${i}::int as n`;
        expect(row?.n).toBe(i);
      }
      const prepared = await sql<{ n: number }[]>`select count(*)::int as n from pg_prepared_statements`;
      expect([...prepared]).toEqual([{ n: 0 }]);
    });
  });

  describe('transactions and errors', () => {
    it('commits the work of sql.begin and returns its value', async () => {
      const sql = connect();
      await sql`create table begin_commit (id int)`;
      const value = await sql.begin(async (tx) => {
        await tx`insert into begin_commit values (1), (2)`;
        const [row] = await tx<{ n: number }[]>`select count(*)::int as n from begin_commit`;
        return row?.n;
      });
      expect(value).toBe(2);
      const [after] = await sql<{ n: number }[]>`select count(*)::int as n from begin_commit`;
      expect(after?.n).toBe(2);
    });

    it('rolls back sql.begin when the callback throws', async () => {
      const sql = connect();
      await sql`create table begin_rollback (id int)`;
      const err = await errorOf(
        sql.begin(async (tx) => {
          await tx`insert into begin_rollback values (1)`;
          throw new Error('application changed its mind');
        }),
      );
      expect(err.message).toBe('application changed its mind');
      const [row] = await sql<{ n: number }[]>`select count(*)::int as n from begin_rollback`;
      expect(row?.n).toBe(0);
    });

    it('rolls back sql.begin on a server error and reports its SQLSTATE', async () => {
      const sql = connect();
      await sql`create table begin_unique (id int primary key)`;
      const err = await errorOf(
        sql.begin(async (tx) => {
          await tx`insert into begin_unique values (1)`;
          await tx`insert into begin_unique values (1)`;
        }),
      );
      expect(err.code).toBe('23505');
      const [row] = await sql<{ n: number }[]>`select count(*)::int as n from begin_unique`;
      expect(row?.n).toBe(0);
    });

    it('undoes only the work of a failed savepoint', async () => {
      const sql = connect();
      await sql`create table begin_savepoint (id int)`;
      await sql.begin(async (tx) => {
        await tx`insert into begin_savepoint values (1)`;
        const err = await errorOf(
          tx.savepoint(async (sp) => {
            await sp`insert into begin_savepoint values (2)`;
            await sp`select 1/0`;
          }),
        );
        expect(err.code).toBe('22012');
        await tx`insert into begin_savepoint values (3)`;
      });
      const rows = await sql<{ id: number }[]>`select id from begin_savepoint order by id`;
      expect([...rows]).toEqual([{ id: 1 }, { id: 3 }]);
    });

    it('reports errors with their SQLSTATE and details and keeps the connection usable', async () => {
      const sql = connect();
      const syntax = await errorOf(sql`select from where`);
      expect(syntax.code).toBe('42601');
      const missing = await errorOf(sql`select * from no_such_table`);
      expect(missing.code).toBe('42P01');
      const raised = await errorOf(sql.unsafe("do $$ begin raise exception using errcode = 'P0001', message = 'custom failure', detail = 'extra detail'; end $$"));
      expect(raised.code).toBe('P0001');
      expect(raised.message).toBe('custom failure');
      expect((raised as unknown as { detail?: string }).detail).toBe('extra detail');
      const [row] = await sql<{ ok: boolean }[]>`select true as ok`;
      expect(row?.ok).toBe(true);
    });
  });

  describe('cursors (Execute with a row limit)', () => {
    it('delivers a result in batches of 10 rows through cursor(10)', async () => {
      const sql = connect();
      const batches: number[] = [];
      let sum = 0;
      for await (const rows of sql<{ g: number }[]>`select g from generate_series(1, ${95}::int) g`.cursor(10)) {
        batches.push(rows.length);
        for (const r of rows) sum += r.g;
      }
      expect(batches).toEqual([10, 10, 10, 10, 10, 10, 10, 10, 10, 5]);
      expect(sum).toBe((95 * 96) / 2);
    });

    it('closes a cursor abandoned after two batches and keeps the connection usable', async () => {
      const sql = connect();
      const seen: number[] = [];
      for await (const rows of sql<{ g: number }[]>`select g from generate_series(1, 1000) g`.cursor(7)) {
        seen.push(...rows.map((r) => r.g));
        if (seen.length >= 14) break;
      }
      expect(seen).toEqual(Array.from({ length: 14 }, (_, i) => i + 1));
      const [row] = await sql<{ n: number }[]>`select ${41}::int + 1 as n`;
      expect(row?.n).toBe(42);
    });

    it('pages through a cursor inside a transaction while other statements run in between', async () => {
      const sql = connect();
      await sql`create table cursor_tx (id int)`;
      const total = await sql.begin(async (tx) => {
        let count = 0;
        for await (const rows of tx<{ g: number }[]>`select g from generate_series(1, 50) g`.cursor(20)) {
          count += rows.length;
        }
        await tx`insert into cursor_tx select generate_series(1, ${count}::int)`;
        const [row] = await tx<{ n: number }[]>`select count(*)::int as n from cursor_tx`;
        return row?.n;
      });
      expect(total).toBe(50);
    });
  });

  describe('COPY', () => {
    it('writes rows with COPY FROM STDIN and reads them back with COPY TO STDOUT', async () => {
      const sql = connect();
      await sql`create table copy_js (id int, name text)`;
      const writable = await sql`copy copy_js (id, name) from stdin`.writable();
      const expected: string[] = [];
      for (let i = 0; i < 2000; i++) {
        const line = `${i}\tname-${i}\n`;
        expected.push(line);
        writable.write(line);
      }
      writable.end();
      await once(writable, 'finish');
      const [count] = await sql<{ n: number; s: string }[]>`select count(*)::int as n, sum(id)::text as s from copy_js`;
      expect(count).toEqual({ n: 2000, s: String((1999 * 2000) / 2) });

      // Read back less than 16 KiB: postgres.js 3.4 pauses its socket when the COPY readable's buffer
      // passes its highWaterMark and only resumes it from read(), which never comes once the stream
      // has ended, so a larger COPY TO that is buffered before being consumed leaves the connection
      // stuck (reproducible without pgwarden).
      const readable = await sql`copy (select id, name from copy_js where id < 1000 order by id) to stdout`.readable();
      const chunks: Buffer[] = [];
      for await (const chunk of readable) chunks.push(Buffer.from(chunk as Uint8Array));
      expect(Buffer.concat(chunks).toString()).toBe(expected.slice(0, 1000).join(''));

      const [after] = await sql<{ ok: number }[]>`select 1 as ok`;
      expect(after?.ok).toBe(1);
    });

    it('abandons COPY FROM STDIN when the stream is destroyed (CopyFail) and keeps the connection usable', async () => {
      const sql = connect();
      await sql`create table copy_js_abort (id int)`;
      const writable = await sql`copy copy_js_abort from stdin`.writable();
      const destroyedWith = new Promise<Error>((resolve) => writable.on('error', resolve));
      const closed = new Promise<void>((resolve) => writable.on('close', () => resolve()));
      writable.write('1\n2\n');
      await new Promise((resolve) => setTimeout(resolve, 50));
      writable.destroy(new Error('upload abandoned'));
      await closed;
      expect((await destroyedWith).message).toBe('upload abandoned');
      const [row] = await withTimeout(sql<{ n: number }[]>`select count(*)::int as n from copy_js_abort`, 3000, 'a query after CopyFail');
      expect(row?.n).toBe(0);
      const again = await sql`copy copy_js_abort from stdin`.writable();
      again.end('7\n8\n');
      await once(again, 'finish');
      const [loaded] = await sql<{ n: number }[]>`select count(*)::int as n from copy_js_abort`;
      expect(loaded?.n).toBe(2);
    });
  });

  describe('cancel', () => {
    it('cancels a running pg_sleep(10) with query.cancel() within 2 seconds', async () => {
      const sql = connect();
      const query = sql`select pg_sleep(10) as slept_js`;
      const failed = errorOf(query);
      await waitUntilRunning(db.name, 'slept_js');
      const started = Date.now();
      query.cancel();
      const err = await withTimeout(failed, 2000, 'the cancelled query');
      expect(err.code).toBe('57014');
      expect(Date.now() - started).toBeLessThan(2000);
      const [row] = await sql<{ ok: number }[]>`select ${1}::int as ok`;
      expect(row?.ok).toBe(1);
    });

  });
});
