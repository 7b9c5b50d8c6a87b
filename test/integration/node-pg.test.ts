import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { serialize } from 'pg-protocol/dist/serializer.js';
import { createTestDatabase, directClient, startTestProxy } from '../helpers/proxy.js';

/**
 * node-postgres (`pg`) through pgwarden, asserting what an application sees: values, errors with
 * their SQLSTATE, transaction behaviour, cancel, COPY, notifications, large payloads.
 */

type Proxy = Awaited<ReturnType<typeof startTestProxy>>;

/** pg sets these from the BackendKeyData message; they are public at runtime but not in @types/pg. */
interface BackendKey {
  processID: number;
  secretKey: number;
}

function backendKeyOf(client: pg.Client): BackendKey {
  const { processID, secretKey } = client as unknown as Partial<BackendKey>;
  if (typeof processID !== 'number' || typeof secretKey !== 'number') throw new Error('client has no BackendKeyData');
  return { processID, secretKey };
}

interface PgErrorLike {
  code?: string;
}

async function errorOf(p: Promise<unknown>): Promise<PgErrorLike & Error> {
  try {
    await p;
  } catch (err) {
    return err as PgErrorLike & Error;
  }
  throw new Error('expected the promise to reject');
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Sends a CancelRequest to the proxy on a new connection, as libpq and pg do; resolves with what the proxy answered. */
function sendCancelRequest(port: number, key: BackendKey): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const received: Buffer[] = [];
    socket.on('connect', () => socket.write(serialize.cancel(key.processID, key.secretKey)));
    socket.on('data', (d: Buffer) => received.push(d));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(received)));
  });
}

/** Waits until the upstream shows `sql` running in `database` (so a cancel cannot arrive before it starts). */
async function waitUntilRunning(database: string, sql: string): Promise<void> {
  const admin = directClient('postgres');
  await admin.connect();
  try {
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      const r = await admin.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND query = $2",
        [database, sql],
      );
      if (r.rows[0]?.n === 1) return;
      await new Promise((res) => setTimeout(res, 20));
    }
    throw new Error(`statement never started: ${sql}`);
  } finally {
    await admin.end();
  }
}

/** Handlers pg calls on an active Submittable (lib/client.js); not part of @types/pg. */
interface CommandCompleteMessage {
  text: string;
}
interface CopyDataMessage {
  chunk: Buffer;
}

/**
 * A minimal COPY driver for pg: sends the statement as a simple Query, streams `input` as CopyData
 * when the server asks (CopyInResponse), collects CopyData the server sends (COPY TO STDOUT).
 */
class RawCopy implements pg.Submittable {
  readonly result: Promise<{ tag: string; output: Buffer }>;
  private resolve!: (v: { tag: string; output: Buffer }) => void;
  private reject!: (e: Error) => void;
  private tag = '';
  private readonly output: Buffer[] = [];

  constructor(
    private readonly sql: string,
    private readonly input: Buffer[] = [],
    private readonly failWith?: string,
  ) {
    this.result = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  submit(connection: pg.Connection): void {
    connection.query(this.sql);
  }

  handleCopyInResponse(connection: pg.Connection): void {
    for (const chunk of this.input) connection.stream.write(serialize.copyData(chunk));
    connection.stream.write(this.failWith === undefined ? serialize.copyDone() : serialize.copyFail(this.failWith));
  }

  handleCopyData(msg: CopyDataMessage): void {
    this.output.push(Buffer.from(msg.chunk));
  }

  handleCommandComplete(msg: CommandCompleteMessage): void {
    this.tag = msg.text;
  }

  handleError(err: Error): void {
    this.reject(err);
  }

  handleReadyForQuery(): void {
    this.resolve({ tag: this.tag, output: Buffer.concat(this.output) });
  }

  handleRowDescription(): void {}
  handleDataRow(): void {}
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}
}

describe('node-postgres through pgwarden', () => {
  let proxy: Proxy;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  const clients: pg.Client[] = [];

  async function connect(): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: proxy.url(db.name) });
    clients.push(c);
    await c.connect();
    return c;
  }

  async function closeAll(): Promise<void> {
    const open = clients.splice(0);
    await Promise.all(open.map((c) => c.end().catch(() => undefined)));
  }

  beforeAll(async () => {
    db = await createTestDatabase('pgw_nodepg');
    proxy = await startTestProxy();
  });

  afterEach(closeAll);

  afterAll(async () => {
    await closeAll();
    await proxy.shutdown(1000);
    await db.drop();
  });

  describe('parameters and types', () => {
    it('round-trips int, numeric, timestamptz, bytea, json, arrays and NULL as text parameters', async () => {
      const c = await connect();
      const when = new Date('2024-02-29T23:59:58.123Z');
      const r = await c.query(
        'SELECT $1::int AS i, $2::numeric AS n, $3::timestamptz AS t, $4::bytea AS b, $5::json AS j, ' +
          '$6::int[] AS a, $7::text AS nul, $8::int8 AS big, $9::jsonb AS jb, $10::text[] AS ta',
        [
          -2147483648,
          '12345678901234567890.000000000000000001',
          when,
          Buffer.from([0, 1, 2, 0xfe, 0xff]),
          JSON.stringify({ a: [1, 'x', null] }),
          [1, null, 3],
          null,
          '9007199254740993',
          { nested: { k: 'v' } },
          ['a', 'b c', 'quote"d', null],
        ],
      );
      expect(r.rows).toEqual([
        {
          i: -2147483648,
          n: '12345678901234567890.000000000000000001',
          t: when,
          b: Buffer.from([0, 1, 2, 0xfe, 0xff]),
          j: { a: [1, 'x', null] },
          a: [1, null, 3],
          nul: null,
          big: '9007199254740993',
          jb: { nested: { k: 'v' } },
          ta: ['a', 'b c', 'quote"d', null],
        },
      ]);
      expect(r.fields.map((f) => f.format)).toEqual(Array(10).fill('text'));
    });

    it('returns binary-format results identical to what a direct connection gets', async () => {
      const c = await connect();
      // queryMode 'extended': pg only asks for binary results through Bind (simple Query is always text).
      const query = {
        text:
          "SELECT 42::int AS i, 12345.678901234567890::numeric AS n, timestamptz '2024-01-02T03:04:05.678Z' AS t, " +
          "'\\x0001ff'::bytea AS b, '{\"a\":1}'::json AS j, '{1,2,3}'::int[] AS a, NULL::text AS nul, " +
          "9007199254740993::int8 AS big, true AS bo, ARRAY['a','b c'] AS ta",
        binary: true,
        queryMode: 'extended',
      };
      const viaProxy = await c.query(query);
      const direct = directClient(db.name);
      await direct.connect();
      try {
        const expected = await direct.query(query);
        expect(viaProxy.fields.map((f) => f.format)).toEqual(Array(10).fill('binary'));
        expect(viaProxy.fields).toEqual(expected.fields);
        expect(viaProxy.rows).toEqual(expected.rows);
        // pg decodes these binary types faithfully (its numeric/timestamptz/bytea binary decoding is lossy
        // either way, and an int[] holding NULL takes it seconds to decode).
        expect(viaProxy.rows[0]).toMatchObject({ i: 42, a: [1, 2, 3], big: '9007199254740993', bo: true, nul: null, ta: ['a', 'b c'] });
      } finally {
        await direct.end();
      }
    });

    it('sends a Buffer parameter in binary format and the server receives the exact bytes', async () => {
      const c = await connect();
      const bytes = Buffer.from([0, 0x5c, 0x27, 0xff, 0, 0x80]);
      const r = await c.query<{ len: number; hex: string }>("SELECT length($1::bytea) AS len, encode($1::bytea, 'hex') AS hex", [bytes]);
      expect(r.rows).toEqual([{ len: 6, hex: '005c27ff0080' }]);
    });

    it('stores and reads back typed values through a table', async () => {
      const c = await connect();
      await c.query(
        'CREATE TABLE typed_values (id int PRIMARY KEY, amount numeric(20,4), at timestamptz, payload bytea, doc jsonb, tags text[])',
      );
      const at = new Date('2020-06-15T12:00:00.000Z');
      const ins = await c.query('INSERT INTO typed_values VALUES ($1, $2, $3, $4, $5, $6), ($7, NULL, NULL, NULL, NULL, NULL)', [
        1,
        '99999999.1234',
        at,
        Buffer.from('héllo', 'utf8'),
        { list: [1, 2, 3] },
        ['x', 'y'],
        2,
      ]);
      expect(ins.rowCount).toBe(2);
      const r = await c.query('SELECT * FROM typed_values ORDER BY id');
      expect(r.rows).toEqual([
        { id: 1, amount: '99999999.1234', at, payload: Buffer.from('héllo', 'utf8'), doc: { list: [1, 2, 3] }, tags: ['x', 'y'] },
        { id: 2, amount: null, at: null, payload: null, doc: null, tags: null },
      ]);
    });

    it('accepts a statement with 40,000 parameters (the protocol allows up to 65,535)', async () => {
      const c = await connect();
      const n = 40_000;
      const placeholders = Array.from({ length: n }, (_, i) => `$${i + 1}`).join(',');
      const values = Array.from({ length: n }, (_, i) => i + 1);
      const r = await c.query<{ len: number; total: string }>(
        `SELECT array_length(a, 1) AS len, (SELECT sum(x) FROM unnest(a) x)::text AS total FROM (SELECT ARRAY[${placeholders}]::int[] AS a) s`,
        values,
      );
      expect(r.rows).toEqual([{ len: n, total: String((n * (n + 1)) / 2) }]);
    });
  });

  describe('simple and extended query flows', () => {
    it('runs a multi-statement simple query and returns one result per statement', async () => {
      const c = await connect();
      const results = (await c.query(
        'CREATE TABLE multi (id int); INSERT INTO multi VALUES (1), (2), (3); SELECT sum(id)::int AS s FROM multi; DROP TABLE multi',
      )) as unknown as pg.QueryResult[];
      expect(results.map((r) => r.command)).toEqual(['CREATE', 'INSERT', 'SELECT', 'DROP']);
      expect(results[1]?.rowCount).toBe(3);
      expect(results[2]?.rows).toEqual([{ s: 6 }]);
    });

    it('stops a multi-statement simple query at the first error and reports it', async () => {
      const c = await connect();
      await c.query('CREATE TABLE multi_err (id int)');
      const err = await errorOf(c.query('INSERT INTO multi_err VALUES (1); SELECT 1/0; INSERT INTO multi_err VALUES (2)'));
      expect(err.code).toBe('22012');
      // The whole message ran as one implicit transaction, so the first INSERT was rolled back.
      const r = await c.query<{ n: number }>('SELECT count(*)::int AS n FROM multi_err');
      expect(r.rows).toEqual([{ n: 0 }]);
    });

    it('reuses a named prepared statement many times with the right results', async () => {
      const c = await connect();
      for (let i = 0; i < 300; i++) {
        const r = await c.query<{ doubled: number; label: string }>({
          name: 'double_it',
          text: 'SELECT $1::int * 2 AS doubled, $2::text AS label',
          values: [i, `n${i}`],
        });
        expect(r.rows).toEqual([{ doubled: i * 2, label: `n${i}` }]);
      }
      const prepared = await c.query<{ name: string; statement: string }>('SELECT name, statement FROM pg_prepared_statements');
      expect(prepared.rows).toEqual([{ name: 'double_it', statement: 'SELECT $1::int * 2 AS doubled, $2::text AS label' }]);
    });

    it('keeps several named statements apart when they are interleaved', async () => {
      const c = await connect();
      for (let i = 0; i < 50; i++) {
        const a = await c.query<{ a: number }>({ name: 'stmt_a', text: 'SELECT $1::int + 1 AS a', values: [i] });
        const b = await c.query<{ b: string; c: boolean }>({ name: 'stmt_b', text: 'SELECT $1::text AS b, true AS c', values: [`v${i}`] });
        expect(a.rows).toEqual([{ a: i + 1 }]);
        expect(b.rows).toEqual([{ b: `v${i}`, c: true }]);
      }
    });

    it('re-parses the unnamed statement for each new parameterised query with different columns', async () => {
      const c = await connect();
      const first = await c.query('SELECT $1::int AS a', [1]);
      const second = await c.query('SELECT $1::text AS b, 2 AS c', ['two']);
      const third = await c.query('SELECT $1::int AS a', [3]);
      expect(first.fields.map((f) => f.name)).toEqual(['a']);
      expect(second.fields.map((f) => f.name)).toEqual(['b', 'c']);
      expect(second.rows).toEqual([{ b: 'two', c: 2 }]);
      expect(third.rows).toEqual([{ a: 3 }]);
    });

    it('reports a parse error of a named statement and lets the same name be prepared afterwards', async () => {
      const c = await connect();
      const err = await errorOf(c.query({ name: 'broken', text: 'SELEC $1::int', values: [1] }));
      expect(err.code).toBe('42601');
      const r = await c.query({ name: 'broken', text: 'SELECT $1::int AS ok', values: [7] });
      expect(r.rows).toEqual([{ ok: 7 }]);
    });
  });

  describe('transactions', () => {
    it('commits and rolls back as the server does', async () => {
      const c = await connect();
      await c.query('CREATE TABLE tx_basic (id int)');
      await c.query('BEGIN');
      await c.query('INSERT INTO tx_basic VALUES ($1)', [1]);
      await c.query('ROLLBACK');
      await c.query('BEGIN');
      await c.query('INSERT INTO tx_basic VALUES ($1)', [2]);
      await c.query('COMMIT');
      const direct = directClient(db.name);
      await direct.connect();
      try {
        const r = await direct.query<{ id: number }>('SELECT id FROM tx_basic ORDER BY id');
        expect(r.rows).toEqual([{ id: 2 }]);
      } finally {
        await direct.end();
      }
    });

    it('rolls back to a savepoint and keeps the work before it', async () => {
      const c = await connect();
      await c.query('CREATE TABLE tx_savepoint (id int)');
      await c.query('BEGIN');
      await c.query('INSERT INTO tx_savepoint VALUES (1)');
      await c.query('SAVEPOINT s1');
      await c.query('INSERT INTO tx_savepoint VALUES (2)');
      const err = await errorOf(c.query('INSERT INTO tx_savepoint VALUES ($1::int)', ['not a number']));
      expect(err.code).toBe('22P02');
      await c.query('ROLLBACK TO SAVEPOINT s1');
      await c.query('INSERT INTO tx_savepoint VALUES (3)');
      await c.query('RELEASE SAVEPOINT s1');
      await c.query('COMMIT');
      const r = await c.query<{ id: number }>('SELECT id FROM tx_savepoint ORDER BY id');
      expect(r.rows).toEqual([{ id: 1 }, { id: 3 }]);
    });

    it('refuses statements in a failed transaction with 25P02 until ROLLBACK, then works again', async () => {
      const c = await connect();
      await c.query('BEGIN');
      const first = await errorOf(c.query('SELECT 1/0'));
      expect(first.code).toBe('22012');
      // ReadyForQuery said 'E': every statement but ROLLBACK is refused, simple or extended.
      const simple = await errorOf(c.query('SELECT 1'));
      expect(simple.code).toBe('25P02');
      const extended = await errorOf(c.query('SELECT $1::int', [1]));
      expect(extended.code).toBe('25P02');
      const named = await errorOf(c.query({ name: 'in_failed_tx', text: 'SELECT $1::int AS x', values: [1] }));
      expect(named.code).toBe('25P02');
      const rollback = await c.query('ROLLBACK');
      expect(rollback.command).toBe('ROLLBACK');
      // Back to 'I': a statement outside any transaction runs, and a new transaction can start.
      const r = await c.query<{ x: number }>('SELECT $1::int AS x', [5]);
      expect(r.rows).toEqual([{ x: 5 }]);
      await c.query('BEGIN');
      const inTx = await c.query<{ n: string }>("SELECT current_setting('transaction_isolation') AS n");
      expect(inTx.rows).toEqual([{ n: 'read committed' }]);
      await c.query('COMMIT');
    });

    it('turns COMMIT of a failed transaction into a rollback', async () => {
      const c = await connect();
      await c.query('CREATE TABLE tx_failed_commit (id int PRIMARY KEY)');
      await c.query('BEGIN');
      await c.query('INSERT INTO tx_failed_commit VALUES (1)');
      const dup = await errorOf(c.query('INSERT INTO tx_failed_commit VALUES (1)'));
      expect(dup.code).toBe('23505');
      const commit = await c.query('COMMIT');
      expect(commit.command).toBe('ROLLBACK');
      const r = await c.query<{ n: number }>('SELECT count(*)::int AS n FROM tx_failed_commit');
      expect(r.rows).toEqual([{ n: 0 }]);
    });
  });

  describe('cancel', () => {
    it('issues a BackendKeyData of its own, not the server backend pid', async () => {
      const c = await connect();
      const r = await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      const key = backendKeyOf(c);
      expect(key.processID).not.toBe(r.rows[0]?.pid);
    });

    it('cancels SELECT pg_sleep(10) with a CancelRequest sent to the proxy, and the connection stays usable', async () => {
      const c = await connect();
      const key = backendKeyOf(c);
      const sleeping = errorOf(c.query('SELECT pg_sleep(10)'));
      await waitUntilRunning(db.name, 'SELECT pg_sleep(10)');
      const sentAt = Date.now();
      const answer = await sendCancelRequest(proxy.port, key);
      expect(answer.length).toBe(0);
      const err = await withTimeout(sleeping, 2000, 'the cancelled query to fail');
      expect(err.code).toBe('57014');
      expect(Date.now() - sentAt).toBeLessThan(2000);
      const r = await c.query<{ ok: number }>('SELECT $1::int AS ok', [1]);
      expect(r.rows).toEqual([{ ok: 1 }]);
    });

    it('ignores a CancelRequest with the wrong secret key', async () => {
      const c = await connect();
      const key = backendKeyOf(c);
      const running = c.query<{ done: string }>("SELECT pg_sleep(0.7), 'finished' AS done");
      await waitUntilRunning(db.name, "SELECT pg_sleep(0.7), 'finished' AS done");
      await sendCancelRequest(proxy.port, { processID: key.processID, secretKey: key.secretKey ^ 0x5a5a5a5a });
      const r = await running;
      expect(r.rows[0]?.done).toBe('finished');
    });

    it('ignores a CancelRequest carrying the server backend pid instead of the issued one', async () => {
      const c = await connect();
      const pid = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid ?? 0;
      const key = backendKeyOf(c);
      const running = c.query<{ done: string }>("SELECT pg_sleep(0.7), 'finished-too' AS done");
      await waitUntilRunning(db.name, "SELECT pg_sleep(0.7), 'finished-too' AS done");
      await sendCancelRequest(proxy.port, { processID: pid, secretKey: key.secretKey });
      const r = await running;
      expect(r.rows[0]?.done).toBe('finished-too');
    });
  });

  describe('COPY', () => {
    it('loads rows with COPY FROM STDIN and reads them back with COPY TO STDOUT', async () => {
      const c = await connect();
      await c.query('CREATE TABLE copy_rows (id int, name text, note text)');
      const lines = Array.from({ length: 1000 }, (_, i) => `${i}\tname ${i}\t${i % 7 === 0 ? '\\N' : `note\\t${i}`}\n`);
      // Split across CopyData messages at arbitrary points, as drivers do.
      const payload = Buffer.from(lines.join(''));
      const chunks = [payload.subarray(0, 13), payload.subarray(13, 5000), payload.subarray(5000)];
      const loaded = await c.query(new RawCopy('COPY copy_rows FROM STDIN', chunks)).result;
      expect(loaded.tag).toBe('COPY 1000');
      const stats = await c.query<{ n: number; nulls: number; tabbed: string }>(
        "SELECT count(*)::int AS n, count(*) FILTER (WHERE note IS NULL)::int AS nulls, max(note) FILTER (WHERE id = 1) AS tabbed FROM copy_rows",
      );
      expect(stats.rows).toEqual([{ n: 1000, nulls: 143, tabbed: 'note\t1' }]);
      const out = await c.query(new RawCopy('COPY (SELECT * FROM copy_rows ORDER BY id) TO STDOUT')).result;
      expect(out.tag).toBe('COPY 1000');
      expect(out.output.toString()).toBe(lines.join(''));
    });

    it('reports bad COPY data with its SQLSTATE and keeps the connection usable', async () => {
      const c = await connect();
      await c.query('CREATE TABLE copy_bad (id int)');
      const err = await errorOf(c.query(new RawCopy('COPY copy_bad FROM STDIN', [Buffer.from('1\nnot-a-number\n3\n')])).result);
      expect(err.code).toBe('22P02');
      const r = await c.query<{ n: number }>('SELECT count(*)::int AS n FROM copy_bad');
      expect(r.rows).toEqual([{ n: 0 }]);
    });

    it('aborts COPY FROM STDIN on CopyFail and keeps the connection usable', async () => {
      const c = await connect();
      await c.query('CREATE TABLE copy_fail (id int)');
      const err = await errorOf(c.query(new RawCopy('COPY copy_fail FROM STDIN', [Buffer.from('1\n2\n')], 'client gave up')).result);
      expect(err.code).toBe('57014');
      expect(err.message).toContain('client gave up');
      const r = await c.query<{ n: number }>('SELECT count(*)::int AS n FROM copy_fail');
      expect(r.rows).toEqual([{ n: 0 }]);
    });

    it('runs COPY FROM STDIN inside a transaction that is then rolled back', async () => {
      const c = await connect();
      await c.query('CREATE TABLE copy_tx (id int)');
      await c.query('BEGIN');
      const loaded = await c.query(new RawCopy('COPY copy_tx FROM STDIN', [Buffer.from('1\n2\n3\n')])).result;
      expect(loaded.tag).toBe('COPY 3');
      const inside = await c.query<{ n: number }>('SELECT count(*)::int AS n FROM copy_tx');
      expect(inside.rows).toEqual([{ n: 3 }]);
      await c.query('ROLLBACK');
      const after = await c.query<{ n: number }>('SELECT count(*)::int AS n FROM copy_tx');
      expect(after.rows).toEqual([{ n: 0 }]);
    });
  });

  describe('LISTEN/NOTIFY', () => {
    it('delivers a notification with its payload from one proxied connection to another', async () => {
      const listener = await connect();
      const notifier = await connect();
      await listener.query('LISTEN pgw_events');
      const received = new Promise<pg.Notification>((resolve) => listener.once('notification', resolve));
      const notifierPid = (await notifier.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
      await notifier.query("SELECT pg_notify('pgw_events', $1)", ['payload with ünïcode and \t tab']);
      const n = await withTimeout(received, 3000, 'the notification');
      expect(n.channel).toBe('pgw_events');
      expect(n.payload).toBe('payload with ünïcode and \t tab');
      expect(n.processId).toBe(notifierPid);
    });

    it('delivers a NOTIFY sent inside a transaction only after COMMIT', async () => {
      const listener = await connect();
      const notifier = await connect();
      await listener.query('LISTEN pgw_tx_events');
      const seen: string[] = [];
      listener.on('notification', (n) => seen.push(n.payload ?? ''));
      const first = new Promise<void>((resolve) => listener.once('notification', () => resolve()));
      await notifier.query('BEGIN');
      await notifier.query("NOTIFY pgw_tx_events, 'in-tx'");
      await new Promise((r) => setTimeout(r, 200));
      expect(seen).toEqual([]);
      await notifier.query('COMMIT');
      await withTimeout(first, 3000, 'the notification after COMMIT');
      expect(seen).toEqual(['in-tx']);
    });
  });

  describe('volume', () => {
    it('returns 100,000 rows whose sum matches', async () => {
      const c = await connect();
      const r = await c.query<{ g: number; h: string }>('SELECT g, md5(g::text) AS h FROM generate_series(1, 100000) g');
      expect(r.rows.length).toBe(100_000);
      let sum = 0;
      for (const row of r.rows) sum += row.g;
      expect(sum).toBe(5_000_050_000);
      expect(r.rows[99_999]).toEqual({ g: 100_000, h: createHash('md5').update('100000').digest('hex') });
    });

    it('returns 100,000 rows of an extended-protocol query', async () => {
      const c = await connect();
      const r = await c.query<{ g: number }>('SELECT g FROM generate_series(1, $1::int) g', [100_000]);
      expect(r.rowCount).toBe(100_000);
      expect(r.rows.reduce((s, row) => s + row.g, 0)).toBe(5_000_050_000);
    });

    it('round-trips a 10 MB bytea parameter unchanged', async () => {
      const c = await connect();
      const big = randomBytes(10 * 1024 * 1024);
      const r = await c.query<{ b: Buffer; h: string; len: number }>('SELECT $1::bytea AS b, md5($1::bytea) AS h, length($1::bytea) AS len', [
        big,
      ]);
      const row = r.rows[0];
      expect(row?.len).toBe(big.length);
      expect(row?.h).toBe(createHash('md5').update(big).digest('hex'));
      expect(row?.b.equals(big)).toBe(true);
    });

    it('serves 50 concurrent connections each running queries', async () => {
      const setup = await connect();
      await setup.query('CREATE TABLE concurrent_hits (client int, n int)');
      const worker = async (id: number): Promise<{ pid: number; key: number }> => {
        const c = await connect();
        for (let n = 0; n < 10; n++) {
          await c.query('INSERT INTO concurrent_hits VALUES ($1, $2)', [id, n]);
        }
        const r = await c.query<{ pid: number; mine: number }>(
          'SELECT pg_backend_pid() AS pid, (SELECT count(*)::int FROM concurrent_hits WHERE client = $1) AS mine',
          [id],
        );
        expect(r.rows[0]?.mine).toBe(10);
        return { pid: r.rows[0]?.pid ?? -1, key: backendKeyOf(c).processID };
      };
      const results = await Promise.all(Array.from({ length: 50 }, (_, i) => worker(i)));
      expect(new Set(results.map((r) => r.pid)).size).toBe(50);
      expect(new Set(results.map((r) => r.key)).size).toBe(50);
      const total = await setup.query<{ n: number; clients: number }>(
        'SELECT count(*)::int AS n, count(DISTINCT client)::int AS clients FROM concurrent_hits',
      );
      expect(total.rows).toEqual([{ n: 500, clients: 50 }]);
      expect(proxy.sessionCount).toBeGreaterThanOrEqual(51);
      await closeAll();
      const deadline = Date.now() + 3000;
      while (proxy.sessionCount > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(proxy.sessionCount).toBe(0);
    });
  });
});
