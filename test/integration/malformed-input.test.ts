import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import type { BackendMessage, DatabaseError } from 'pg-protocol/dist/messages.js';
import { Parser } from 'pg-protocol/dist/parser.js';
import { serialize } from 'pg-protocol/dist/serializer.js';
import { startTestProxy } from '../helpers/proxy.js';

/**
 * Hostile and broken clients on raw sockets. What a client must see: one ErrorResponse with
 * severity FATAL and the SQLSTATE PostgreSQL itself would use (08P01 protocol violation, 54000
 * for a message over the size limit), then the connection closes. What everyone else must see:
 * nothing; an already-open session on the same proxy keeps working.
 */

type Proxy = Awaited<ReturnType<typeof startTestProxy>>;

const SSL_REQUEST_CODE = 80877103;
const GSSENC_REQUEST_CODE = 80877104;
const CANCEL_REQUEST_CODE = 80877102;

// ---- byte builders (layouts: "Message Formats" in the protocol docs) ----

function int16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n & 0xffff);
  return b;
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

function cstr(s: string): Buffer {
  return Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);
}

/** A typed message with a correct length. */
function typed(tag: string, ...body: Buffer[]): Buffer {
  const payload = Buffer.concat(body);
  return Buffer.concat([Buffer.from(tag, 'latin1'), int32(payload.length + 4), payload]);
}

/** An untyped startup-phase packet: Int32 length (counting itself), Int32 code, body. */
function startupPacket(code: number, ...body: Buffer[]): Buffer {
  const payload = Buffer.concat([int32(code), ...body]);
  return Buffer.concat([int32(payload.length + 4), payload]);
}

function startupWith(params: Record<string, string>): Buffer {
  const pairs = Object.entries(params).map(([k, v]) => Buffer.concat([cstr(k), cstr(v)]));
  return startupPacket(0x00030000, ...pairs, Buffer.from([0]));
}

// ---- a raw client that parses what comes back ----

class RawClient {
  readonly messages: BackendMessage[] = [];
  /** Single unframed bytes answering SSLRequest/GSSENCRequest, in order. */
  readonly unframed: string[] = [];
  readonly closed: Promise<void>;
  isClosed = false;
  private unframedExpected = 0;
  private readonly parser = new Parser();
  private waiters: Array<() => void> = [];

  private constructor(readonly socket: net.Socket) {
    socket.on('error', () => {
      // A reset after the proxy closes is expected when we were still writing.
    });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.isClosed = true;
        this.notify();
        resolve();
      }),
    );
  }

  static connect(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new RawClient(socket));
      });
      socket.once('error', reject);
    });
  }

  /** The next received byte is an SSLRequest/GSSENCRequest answer, not a framed message. */
  expectUnframedByte(): void {
    this.unframedExpected++;
  }

  send(...parts: Buffer[]): void {
    this.socket.write(Buffer.concat(parts));
  }

  private onData(chunk: Buffer): void {
    let data = chunk;
    while (this.unframedExpected > 0 && data.length > 0) {
      this.unframed.push(String.fromCharCode(data[0]!));
      this.unframedExpected--;
      data = data.subarray(1);
    }
    if (data.length > 0) this.parser.parse(data, (m) => this.messages.push(m));
    this.notify();
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  async until(done: () => boolean, ms: number, what: string): Promise<void> {
    const deadline = Date.now() + ms;
    while (!done()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async waitForMessage(name: BackendMessage['name'], ms = 3000): Promise<BackendMessage> {
    await this.until(() => this.messages.some((m) => m.name === name) || this.isClosed, ms, `a ${name} message`);
    const found = this.messages.find((m) => m.name === name);
    if (!found) throw new Error(`connection closed without a ${name} message; got ${this.messages.map((m) => m.name).join(', ')}`);
    return found;
  }

  async waitForUnframed(ms = 3000): Promise<string> {
    await this.until(() => this.unframed.length > 0 || this.isClosed, ms, 'an unframed answer byte');
    const b = this.unframed[0];
    if (b === undefined) throw new Error('connection closed without an answer byte');
    return b;
  }

  async waitForClose(ms = 3000): Promise<void> {
    await this.until(() => this.isClosed, ms, 'the proxy to close the connection');
  }

  /** Completes a trust-auth startup and waits for ReadyForQuery. */
  async startup(database = 'postgres'): Promise<void> {
    this.send(serialize.startup({ user: 'postgres', database }));
    const ready = await this.waitForMessage('readyForQuery');
    expect(ready.name).toBe('readyForQuery');
    this.messages.length = 0;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

function errors(c: RawClient): DatabaseError[] {
  return c.messages.filter((m): m is DatabaseError => m.name === 'error');
}

/** The client got exactly one FATAL ErrorResponse with `code`, and the proxy closed the connection. */
async function expectFatalAndClose(c: RawClient, code: string, ms = 3000): Promise<DatabaseError> {
  await c.waitForClose(ms);
  const errs = errors(c);
  expect(errs.map((e) => [e.severity, e.code])).toEqual([['FATAL', code]]);
  expect(c.messages.at(-1)?.name).toBe('error');
  return errs[0]!;
}

/** An application session, inside an open transaction, that is connected the whole time. */
interface Bystander {
  pg: pg.Client;
  txStart: Date;
}

async function openBystander(p: Proxy): Promise<Bystander> {
  const client = new pg.Client({ connectionString: p.url('postgres') });
  await client.connect();
  await client.query('BEGIN');
  const r = await client.query<{ started: Date }>('SELECT now() AS started');
  const txStart = r.rows[0]?.started;
  if (!txStart) throw new Error('no transaction start time');
  return { pg: client, txStart };
}

describe('malformed and unusual input on raw sockets', () => {
  let proxy: Proxy;
  /** An application session that is open the whole time and must never notice the others. */
  let bystander: Bystander;
  let bystanderQueries = 0;
  const raws: RawClient[] = [];

  async function raw(port = proxy.port): Promise<RawClient> {
    const c = await RawClient.connect(port);
    raws.push(c);
    return c;
  }

  /** The bystander still runs queries in the transaction it opened first, and no session leaked. */
  async function expectBystanderUnaffected(p: Proxy = proxy, client: Bystander = bystander, baseline = 1): Promise<void> {
    const r = await client.pg.query<{ n: number; started: Date }>('SELECT $1::int AS n, now() AS started', [++bystanderQueries]);
    expect(r.rows[0]?.n).toBe(bystanderQueries);
    // now() is frozen at the transaction's start: still the same transaction, still the same session.
    expect(r.rows[0]?.started.getTime()).toBe(client.txStart.getTime());
    const deadline = Date.now() + 3000;
    while (p.sessionCount > baseline && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    expect(p.sessionCount).toBe(baseline);
  }

  beforeAll(async () => {
    proxy = await startTestProxy({ limits: { startupTimeoutMs: 1000 } });
    bystander = await openBystander(proxy);
  });

  afterEach(async () => {
    // A failed test must not leave its connection behind to skew the next test's session count.
    const open = raws.splice(0);
    for (const c of open) c.destroy();
    await Promise.all(open.map((c) => c.closed));
  });

  afterAll(async () => {
    await bystander.pg.end();
    await proxy.shutdown(1000);
  });

  describe('before startup', () => {
    it('refuses garbage sent instead of a startup packet with FATAL 08P01 and closes', async () => {
      const c = await raw();
      c.send(Buffer.from('GET / HTTP/1.1\r\nHost: example\r\n\r\n'));
      const err = await expectFatalAndClose(c, '08P01');
      expect(err.message).toMatch(/startup packet/);
      await expectBystanderUnaffected();
    });

    it('refuses a startup packet claiming 0x7fffffff bytes without waiting for them', async () => {
      const c = await raw();
      c.send(int32(0x7fffffff), int32(0x00030000));
      await expectFatalAndClose(c, '08P01');
      await expectBystanderUnaffected();
    });

    it('refuses a startup packet shorter than its own header', async () => {
      const c = await raw();
      c.send(int32(4), int32(0x00030000));
      await expectFatalAndClose(c, '08P01');
      await expectBystanderUnaffected();
    });

    it('times out a truncated startup packet with FATAL 08P01 after the startup timeout', async () => {
      const c = await raw();
      const full = serialize.startup({ user: 'postgres', database: 'postgres' });
      const started = Date.now();
      c.send(full.subarray(0, 12));
      await expectFatalAndClose(c, '08P01', 5000);
      expect(Date.now() - started).toBeGreaterThanOrEqual(900);
      await expectBystanderUnaffected();
    });

    it('forgets a client that hangs up in the middle of its startup packet', async () => {
      const c = await raw();
      c.send(serialize.startup({ user: 'postgres', database: 'postgres' }).subarray(0, 9));
      await new Promise((r) => setTimeout(r, 50));
      expect(proxy.sessionCount).toBe(2);
      c.socket.end();
      await c.waitForClose();
      expect(c.messages).toEqual([]);
      await expectBystanderUnaffected();
    });

    it('refuses a startup packet with a malformed parameter list', async () => {
      const c = await raw();
      // "user" with no terminating NUL for its value, and no final empty name.
      c.send(startupPacket(0x00030000, cstr('user'), Buffer.from('postgres')));
      await expectFatalAndClose(c, '08P01');
      await expectBystanderUnaffected();
    });

    it('refuses protocol version 2 with FATAL 0A000', async () => {
      const c = await raw();
      c.send(startupPacket(0x00020000, cstr('user'), cstr('postgres'), Buffer.from([0])));
      await expectFatalAndClose(c, '0A000');
      await expectBystanderUnaffected();
    });

    it('refuses a startup without a user name with FATAL 28000', async () => {
      const c = await raw();
      c.send(startupWith({ database: 'postgres' }));
      await expectFatalAndClose(c, '28000');
      await expectBystanderUnaffected();
    });

    it('refuses a replication=database startup with FATAL 42501', async () => {
      const c = await raw();
      c.send(startupWith({ user: 'postgres', database: 'postgres', replication: 'database' }));
      const err = await expectFatalAndClose(c, '42501');
      expect(err.message).toMatch(/replication/);
      await expectBystanderUnaffected();
    });

    it('refuses a physical replication startup (replication=true) with FATAL 42501', async () => {
      const c = await raw();
      c.send(startupWith({ user: 'postgres', replication: 'true' }));
      await expectFatalAndClose(c, '42501');
      await expectBystanderUnaffected();
    });

    it('accepts replication=false as an ordinary session', async () => {
      const c = await raw();
      c.send(startupWith({ user: 'postgres', database: 'postgres', replication: 'false' }));
      const ready = await c.waitForMessage('readyForQuery');
      expect(ready.name).toBe('readyForQuery');
      expect(errors(c)).toEqual([]);
      c.send(typed('X'));
      await c.waitForClose();
      await expectBystanderUnaffected();
    });
  });

  describe('encryption negotiation', () => {
    it("answers GSSENCRequest with 'N' and then accepts a normal startup", async () => {
      const c = await raw();
      c.expectUnframedByte();
      c.send(startupPacket(GSSENC_REQUEST_CODE));
      expect(await c.waitForUnframed()).toBe('N');
      await c.startup();
      c.send(serialize.query('SELECT 1'));
      const complete = await c.waitForMessage('commandComplete');
      expect(complete).toMatchObject({ text: 'SELECT 1' });
      c.send(typed('X'));
      await c.waitForClose();
      await expectBystanderUnaffected();
    });

    it("answers SSLRequest with 'N' when TLS is not configured and then accepts a plaintext startup", async () => {
      const c = await raw();
      c.expectUnframedByte();
      c.send(serialize.requestSsl());
      expect(await c.waitForUnframed()).toBe('N');
      await c.startup();
      c.send(typed('X'));
      await c.waitForClose();
      await expectBystanderUnaffected();
    });

    it("answers GSSENCRequest then SSLRequest with 'N' each (libpq's gssencmode=prefer, sslmode=prefer)", async () => {
      const c = await raw();
      c.expectUnframedByte();
      c.send(startupPacket(GSSENC_REQUEST_CODE));
      expect(await c.waitForUnframed()).toBe('N');
      c.expectUnframedByte();
      c.send(startupPacket(SSL_REQUEST_CODE));
      await c.until(() => c.unframed.length === 2 || c.isClosed, 3000, 'the second answer byte');
      expect(c.unframed).toEqual(['N', 'N']);
      await c.startup();
      c.send(typed('X'));
      await c.waitForClose();
    });

    it('refuses a startup packet sent in the same packet as the SSLRequest, without answering the request', async () => {
      const c = await raw();
      c.send(serialize.requestSsl(), serialize.startup({ user: 'postgres', database: 'postgres' }));
      const err = await expectFatalAndClose(c, '08P01');
      expect(err.message).toMatch(/unencrypted data after SSL request/);
      await expectBystanderUnaffected();
    });

    it('refuses a third encryption request on one connection', async () => {
      const c = await raw();
      c.expectUnframedByte();
      c.expectUnframedByte();
      c.send(serialize.requestSsl());
      expect(await c.waitForUnframed()).toBe('N');
      c.send(startupPacket(GSSENC_REQUEST_CODE));
      await c.until(() => c.unframed.length === 2 || c.isClosed, 3000, 'the second answer byte');
      c.send(serialize.requestSsl());
      await expectFatalAndClose(c, '08P01');
      await expectBystanderUnaffected();
    });
  });

  describe('CancelRequest', () => {
    it('closes a CancelRequest connection with an unknown key without answering', async () => {
      const c = await raw();
      c.send(startupPacket(CANCEL_REQUEST_CODE, int32(0x00123456), int32(0xdeadbeef)));
      await c.waitForClose();
      expect(c.messages).toEqual([]);
      await expectBystanderUnaffected();
    });

    it('refuses a CancelRequest with a truncated key with FATAL 08P01', async () => {
      const c = await raw();
      c.send(startupPacket(CANCEL_REQUEST_CODE, int32(1), int16(7)));
      await expectFatalAndClose(c, '08P01');
      await expectBystanderUnaffected();
    });
  });

  describe('after a successful startup', () => {
    it('refuses an unknown message type with FATAL 08P01 and closes', async () => {
      const c = await raw();
      await c.startup();
      c.send(typed('z', Buffer.from('hello')));
      const err = await expectFatalAndClose(c, '08P01');
      expect(err.message).toMatch(/message type/);
      await expectBystanderUnaffected();
    });

    it('refuses an unknown message type as soon as its header arrives, whatever length it claims', async () => {
      const c = await raw();
      await c.startup();
      // PostgreSQL checks the type byte before reading the body; a proxy that buffers the claimed
      // megabyte first lets an unauthenticated-looking peer park memory on it.
      c.send(Buffer.from('z'), int32(1024 * 1024), Buffer.from('x'));
      await expectFatalAndClose(c, '08P01', 2000);
      await expectBystanderUnaffected();
    });

    it('refuses a Sync claiming a body of 1 MB without waiting for it', async () => {
      const c = await raw();
      await c.startup();
      // Sync has no body; PostgreSQL allows at most 10,000 bytes for such small message types.
      c.send(Buffer.from('S'), int32(1024 * 1024));
      await expectFatalAndClose(c, '08P01', 2000);
      await expectBystanderUnaffected();
    });

    it('refuses a message claiming 0x7fffffff bytes with FATAL 54000 without waiting for them', async () => {
      const c = await raw();
      await c.startup();
      c.send(Buffer.from('Q'), int32(0x7fffffff), Buffer.from('SELECT 1'));
      const err = await expectFatalAndClose(c, '54000');
      expect(err.message).toMatch(/exceeds the maximum message size/);
      await expectBystanderUnaffected();
    });

    it('refuses a message length below 4 with FATAL 08P01', async () => {
      const c = await raw();
      await c.startup();
      c.send(Buffer.from('Q'), int32(2), Buffer.from('xx'));
      await expectFatalAndClose(c, '08P01');
      await expectBystanderUnaffected();
    });

    it('refuses a negative message length with FATAL 08P01', async () => {
      const c = await raw();
      await c.startup();
      c.send(Buffer.from('Q'), int32(0xfffffff0));
      await expectFatalAndClose(c, '08P01');
      await expectBystanderUnaffected();
    });

    it('refuses a Bind whose parameter count exceeds its body with FATAL 08P01', async () => {
      const c = await raw();
      await c.startup();
      const bind = typed(
        'B',
        cstr(''), // portal
        cstr(''), // statement
        int16(0), // parameter format codes
        int16(5), // parameter count: five, but only one value follows
        int32(4),
        Buffer.from('abcd'),
        int16(0), // result format codes
      );
      c.send(serialize.parse({ text: 'SELECT $1::text' }), bind, serialize.execute(), serialize.sync());
      await expectFatalAndClose(c, '08P01');
      // Nothing of the batch ran: the proxy refused it before forwarding.
      expect(c.messages.map((m) => m.name)).toEqual(['error']);
      await expectBystanderUnaffected();
    });

    it('refuses a Bind whose parameter length runs past the message with FATAL 08P01', async () => {
      const c = await raw();
      await c.startup();
      const bind = typed('B', cstr(''), cstr(''), int16(0), int16(1), int32(1000), Buffer.from('abcd'), int16(0));
      c.send(serialize.parse({ text: 'SELECT $1::text' }), bind, serialize.sync());
      await expectFatalAndClose(c, '08P01');
      await expectBystanderUnaffected();
    });

    it('refuses a Query whose string is not NUL-terminated with FATAL 08P01', async () => {
      const c = await raw();
      await c.startup();
      c.send(typed('Q', Buffer.from('SELECT 1')));
      await expectFatalAndClose(c, '08P01');
      expect(c.messages.some((m) => m.name === 'commandComplete')).toBe(false);
      await expectBystanderUnaffected();
    });

    it('refuses a Query with trailing bytes after its string with FATAL 08P01', async () => {
      const c = await raw();
      await c.startup();
      c.send(typed('Q', cstr('SELECT 1'), Buffer.from('; DROP TABLE x')));
      await expectFatalAndClose(c, '08P01');
      expect(c.messages.some((m) => m.name === 'commandComplete')).toBe(false);
      await expectBystanderUnaffected();
    });

    it('refuses a second startup packet after startup with FATAL 08P01', async () => {
      const c = await raw();
      await c.startup();
      c.send(serialize.startup({ user: 'postgres', database: 'postgres' }));
      await expectFatalAndClose(c, '08P01');
      await expectBystanderUnaffected();
    });

    it('refuses an authentication message after startup with FATAL 08P01', async () => {
      const c = await raw();
      await c.startup();
      c.send(serialize.password('secret'));
      await expectFatalAndClose(c, '08P01');
      await expectBystanderUnaffected();
    });

    it('answers a valid query on the same raw connection before a later violation', async () => {
      const c = await raw();
      await c.startup();
      c.send(serialize.query('SELECT 41 + 1'));
      await c.waitForMessage('readyForQuery');
      const row = c.messages.find((m) => m.name === 'dataRow') as unknown as { fields: string[] } | undefined;
      expect(row?.fields).toEqual(['42']);
      c.send(Buffer.from([0xff, 0, 0, 0, 4]));
      await c.waitForClose();
      expect(errors(c).map((e) => [e.severity, e.code])).toEqual([['FATAL', '08P01']]);
      await expectBystanderUnaffected();
    });
  });

  describe('with a small maximum message size', () => {
    let small: Proxy;
    let smallBystander: Bystander;

    beforeAll(async () => {
      small = await startTestProxy({ limits: { maxMessageBytes: 4096 } });
      smallBystander = await openBystander(small);
    });

    afterAll(async () => {
      await smallBystander.pg.end();
      await small.shutdown(1000);
    });

    it('refuses a message larger than limits.maxMessageBytes with FATAL 54000 and closes', async () => {
      const c = await raw(small.port);
      await c.startup();
      const sql = `SELECT '${'x'.repeat(6000)}'`;
      c.send(serialize.query(sql));
      const err = await expectFatalAndClose(c, '54000');
      expect(err.message).toMatch(/4096/);
      await expectBystanderUnaffected(small, smallBystander);
    });

    it('refuses an oversized message as soon as its header arrives', async () => {
      const c = await raw(small.port);
      await c.startup();
      // Only the header and a few bytes of a 5000-byte Query: the answer must not wait for the rest.
      c.send(Buffer.from('Q'), int32(5000), Buffer.from('SELECT '));
      await expectFatalAndClose(c, '54000', 2000);
      await expectBystanderUnaffected(small, smallBystander);
    });

    it('still accepts a message just under the limit', async () => {
      const c = await raw(small.port);
      await c.startup();
      const sql = `SELECT length('${'y'.repeat(3000)}')`;
      c.send(serialize.query(sql));
      await c.waitForMessage('readyForQuery');
      const row = c.messages.find((m) => m.name === 'dataRow') as unknown as { fields: string[] } | undefined;
      expect(row?.fields).toEqual(['3000']);
      expect(errors(c)).toEqual([]);
      c.send(typed('X'));
      await c.waitForClose();
    });

    it('ends a pg session whose statement exceeds the limit with 54000, leaving others alone', async () => {
      const c = new pg.Client({ connectionString: small.url('postgres') });
      c.on('error', () => {
        // The session ends with the FATAL error; pg also reports the closed socket here.
      });
      await c.connect();
      try {
        const err = await c.query(`SELECT '${'z'.repeat(5000)}' AS big`).then(
          () => null,
          (e: unknown) => e as { code?: string },
        );
        expect(err?.code).toBe('54000');
      } finally {
        await c.end().catch(() => undefined);
      }
      await expectBystanderUnaffected(small, smallBystander);
    });
  });
});
