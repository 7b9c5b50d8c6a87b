import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { BackendMessage, DatabaseError, DataRowMessage, ReadyForQueryMessage } from 'pg-protocol/dist/messages.js';
import { Parser } from 'pg-protocol/dist/parser.js';
import { serialize } from 'pg-protocol';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Classifier, loadParser } from '../../src/classify/classifier.js';
import { silentLogger } from '../../src/logger.js';
import { PolicyJudge } from '../../src/policy/policy-judge.js';
import { RulesStore } from '../../src/policy/rules-store.js';
import { createTestDatabase, directClient, startTestProxy } from '../helpers/proxy.js';
import { fe } from '../helpers/wire.js';

/**
 * Protocol-level prepared statements through pgwarden on raw sockets: a Bind is judged by the
 * text the server has for that name, whatever was pipelined around the Parse (simple Queries,
 * their errors, pgwarden's own injected statements, COPY FROM STDIN started by an extended
 * batch). Each test first prepares statements, then binds them in a later request, where the
 * judge can only rely on what the session recorded.
 *
 * The rules make both ways of getting it wrong visible: an unknown statement is unanalysable
 * (denied), and reading `secrets` is allowed outside a transaction block but denied inside one,
 * so a statement prepared outside and bound inside is denied only if pgwarden knows its text.
 */
const RULES = `
policy:
  default: allow
  unanalysable: deny
  rules:
    - name: secrets-in-transaction
      match: { relations: [secrets], in_transaction: true }
      action: deny
`;
const SECRET = 'the-launch-code-8d1f';
const UNKNOWN_BIND = 'Bind of unknown prepared statement';

type Proxy = Awaited<ReturnType<typeof startTestProxy>>;

/** A client on a raw socket that records every backend message. */
class RawClient {
  readonly messages: BackendMessage[] = [];
  private readonly parser = new Parser();
  private waiters: (() => void)[] = [];
  private closed = false;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.parser.parse(chunk, (m) => this.messages.push(m));
      this.notify();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.notify();
    });
  }

  static async connect(port: number, database: string): Promise<RawClient> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const c = new RawClient(socket);
    c.send(serialize.startup({ user: 'postgres', database }));
    await c.readyCount(1);
    c.messages.length = 0;
    return c;
  }

  /** Writes all parts in one go: the proxy receives them before any answer (pipelining). */
  send(...parts: Buffer[]): void {
    this.socket.write(Buffer.concat(parts));
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  async until(done: () => boolean, what: string, ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!done()) {
      const left = deadline - Date.now();
      if (left <= 0 || this.closed) throw new Error(`${this.closed ? 'connection closed' : `timed out after ${ms} ms`} waiting for ${what}; got ${this.names().join(', ')}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Waits until `n` ReadyForQuery messages arrived since the last take(). */
  readyCount(n: number): Promise<void> {
    return this.until(() => this.messages.filter((m) => m.name === 'readyForQuery').length >= n, `${n} ReadyForQuery`);
  }

  waitFor(name: BackendMessage['name']): Promise<void> {
    return this.until(() => this.messages.some((m) => m.name === name), `a ${name} message`);
  }

  /** Sends, waits for `ready` ReadyForQuery messages and returns everything received meanwhile. */
  async exchange(parts: Buffer[], ready = 1): Promise<BackendMessage[]> {
    this.send(...parts);
    await this.readyCount(ready);
    return this.take();
  }

  take(): BackendMessage[] {
    return this.messages.splice(0);
  }

  names(): string[] {
    return this.messages.map((m) => m.name);
  }

  close(): void {
    this.socket.end(fe.end());
  }
}

const errorsOf = (ms: BackendMessage[]): DatabaseError[] => ms.filter((m): m is DatabaseError => m.name === 'error');
const rowsOf = (ms: BackendMessage[]): (string | null)[][] => ms.filter((m): m is DataRowMessage => m.name === 'dataRow').map((m) => m.fields);
const statusOf = (ms: BackendMessage[]): string | undefined => ms.filter((m): m is ReadyForQueryMessage => m.name === 'readyForQuery').at(-1)?.status;
const names = (ms: BackendMessage[]): string[] => ms.map((m) => m.name);

/** Bind + Execute + Sync of a named statement into the unnamed portal. */
const runNamed = (statement: string): Buffer[] => [fe.bind({ statement }), fe.execute(), fe.sync()];

let db: Awaited<ReturnType<typeof createTestDatabase>>;
let rulesDir: string;
let proxy: Proxy;
const clients: RawClient[] = [];

async function connect(): Promise<RawClient> {
  const c = await RawClient.connect(proxy.port, db.name);
  clients.push(c);
  return c;
}

beforeAll(async () => {
  db = await createTestDatabase('pgw_stmt');
  const direct = directClient(db.name);
  await direct.connect();
  await direct.query(`CREATE TABLE secrets (id int, secret text); INSERT INTO secrets VALUES (1, '${SECRET}'); CREATE TABLE copy_target (v text);`);
  await direct.end();
  rulesDir = mkdtempSync(path.join(tmpdir(), 'pgw-stmt-rules-'));
  writeFileSync(path.join(rulesDir, 'policy.yaml'), RULES);
  await loadParser();
  proxy = await startTestProxy({}, { judge: new PolicyJudge(new RulesStore(rulesDir, silentLogger), new Classifier()) });
});

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

afterAll(async () => {
  await proxy?.shutdown(500);
  await db?.drop();
  if (rulesDir) rmSync(rulesDir, { recursive: true, force: true });
});

describe('the rules used here', () => {
  it('deny a Bind of a statement the server never prepared, and reading secrets inside a transaction block', async () => {
    const c = await connect();
    const unknown = await c.exchange(runNamed('never_prepared'));
    expect(errorsOf(unknown).map((e) => e.detail)).toEqual([expect.stringContaining(UNKNOWN_BIND)]);
    await c.exchange([fe.query('BEGIN')]);
    const inTx = await c.exchange([fe.query('SELECT secret FROM secrets')]);
    expect(errorsOf(inTx).map((e) => e.message)).toEqual([expect.stringContaining('secrets-in-transaction')]);
    expect(rowsOf(inTx)).toEqual([]);
    await c.exchange([fe.query('ROLLBACK')]);
    expect(rowsOf(await c.exchange([fe.query('SELECT secret FROM secrets')]))).toEqual([[SECRET]]);
  });
});

describe('statements parsed in a batch pipelined behind other requests', () => {
  it('(a) records a statement parsed in a batch sent before a simple Query was answered', async () => {
    const c = await connect();
    // "Simple Query" then "Extended Query" in one write: the Query's ReadyForQuery arrives first.
    const first = await c.exchange([fe.query('SELECT 1'), fe.parse('SELECT 42 AS answer', 'after_query'), fe.sync()], 2);
    expect(names(first)).toEqual(['rowDescription', 'dataRow', 'commandComplete', 'readyForQuery', 'parseComplete', 'readyForQuery']);
    const bound = await c.exchange(runNamed('after_query'));
    expect(errorsOf(bound)).toEqual([]);
    expect(rowsOf(bound)).toEqual([['42']]);
  });

  it('(b) records a statement parsed in a batch sent before a failing simple Query was answered', async () => {
    const c = await connect();
    const first = await c.exchange([fe.query('SELECT 1/0'), fe.parse('SELECT 43 AS answer', 'after_error'), fe.sync()], 2);
    expect(errorsOf(first).map((e) => e.code)).toEqual(['22012']);
    expect(names(first).slice(-2)).toEqual(['parseComplete', 'readyForQuery']);
    const bound = await c.exchange(runNamed('after_error'));
    expect(errorsOf(bound)).toEqual([]);
    expect(rowsOf(bound)).toEqual([['43']]);
  });

  it("(b) records a statement parsed in a batch sent behind a refused statement (pgwarden's injected abort fails)", async () => {
    const c = await connect();
    await c.exchange([fe.query('BEGIN')]);
    // Refused inside a transaction block: pgwarden sends a failing statement of its own so the
    // server's transaction fails too; its ErrorResponse must not discard the next batch.
    // ROLLBACK can be parsed in a failed transaction ("current transaction is aborted" spares
    // transaction-ending statements).
    const first = await c.exchange([fe.query('SELECT secret FROM secrets'), fe.parse('ROLLBACK', 'end_tx'), fe.sync()], 2);
    expect(errorsOf(first).map((e) => e.message)).toEqual([expect.stringContaining('secrets-in-transaction')]);
    expect(names(first).slice(-2)).toEqual(['parseComplete', 'readyForQuery']);
    expect(statusOf(first)).toBe('E');
    const bound = await c.exchange(runNamed('end_tx'));
    expect(errorsOf(bound)).toEqual([]);
    expect(names(bound)).toEqual(['bindComplete', 'commandComplete', 'readyForQuery']);
    expect(statusOf(bound)).toBe('I');
  });
});

describe('COPY FROM STDIN started by an extended batch', () => {
  /**
   * Runs COPY copy_target FROM STDIN as Parse/Bind/Execute/Sync, then sends its data, CopyDone
   * and a Sync (as libpq does for a COPY sent in extended mode) followed by `then`, all in one
   * write; returns what arrived until `ready` ReadyForQuery messages.
   */
  async function extendedCopy(c: RawClient, then: Buffer[], ready: number): Promise<BackendMessage[]> {
    c.send(fe.parse('COPY copy_target FROM STDIN'), fe.bind(), fe.execute(), fe.sync());
    await c.waitFor('copyInResponse');
    // "COPY Operations": the backend ignores Sync (and Flush) received during copy-in mode, so
    // the batch's own Sync gets no ReadyForQuery; the one after CopyDone ends the batch.
    const all = await c.exchange([fe.copyData(Buffer.from('x\n')), fe.copyDone(), fe.sync(), ...then], ready);
    expect(names(all).slice(0, 5)).toEqual(['parseComplete', 'bindComplete', 'copyInResponse', 'commandComplete', 'readyForQuery']);
    return all.slice(5);
  }

  it('(c) judges a Bind by the text the server kept when a re-Parse of the name was rejected', async () => {
    const c = await connect();
    // Prepared outside a transaction block, where reading secrets is allowed.
    const prepared = await c.exchange([fe.parse('SELECT secret FROM secrets', 'stmt_c'), fe.sync()]);
    expect(names(prepared)).toEqual(['parseComplete', 'readyForQuery']);
    expect(await extendedCopy(c, [], 1)).toEqual([]);
    // The server rejects the re-Parse (42P05) and keeps the first text; the next batch parses
    // another statement, whose ParseComplete must not confirm the rejected text.
    const after = await c.exchange([fe.parse('SELECT 1 AS harmless', 'stmt_c'), fe.sync(), fe.parse('SELECT 44 AS other', 'other_c'), fe.sync()], 2);
    expect(errorsOf(after).map((e) => e.code)).toEqual(['42P05']);
    expect(names(after).slice(-2)).toEqual(['parseComplete', 'readyForQuery']);

    await c.exchange([fe.query('BEGIN')]);
    const bound = await c.exchange(runNamed('stmt_c'));
    expect(JSON.stringify(bound)).not.toContain(SECRET);
    expect(errorsOf(bound).map((e) => e.message)).toEqual([expect.stringContaining('secrets-in-transaction')]);
    await c.exchange([fe.query('ROLLBACK')]);

    // The statement parsed after the rejected one is known too.
    const other = await c.exchange(runNamed('other_c'));
    expect(errorsOf(other)).toEqual([]);
    expect(rowsOf(other)).toEqual([['44']]);
  });

  it('(c) numbers the batches after the COPY: each ReadyForQuery ends its own batch', async () => {
    const c = await connect();
    // Three batches in the same write as the COPY's data; the first fails (unknown table), the
    // other two prepare statements. Only the first batch's messages are skipped by the server.
    const after = await extendedCopy(
      c,
      [fe.parse('SELECT * FROM no_such_table', 'bad_c'), fe.sync(), fe.parse('SELECT 45', 'ok1_c'), fe.sync(), fe.parse('SELECT 46', 'ok2_c'), fe.sync()],
      4,
    );
    expect(errorsOf(after).map((e) => e.code)).toEqual(['42P01']);
    expect(names(after).filter((n) => n === 'parseComplete')).toHaveLength(2);
    expect(rowsOf(await c.exchange(runNamed('ok1_c')))).toEqual([['45']]);
    expect(rowsOf(await c.exchange(runNamed('ok2_c')))).toEqual([['46']]);
    const bad = await c.exchange(runNamed('bad_c'));
    expect(errorsOf(bad).map((e) => e.detail)).toEqual([expect.stringContaining(UNKNOWN_BIND)]);
  });

  it('ends the COPY batch at the next batch\'s Sync when no Sync follows CopyDone, and answers a refusal after it', async () => {
    const c = await connect();
    c.send(fe.parse('COPY copy_target FROM STDIN'), fe.bind(), fe.execute(), fe.sync());
    await c.waitFor('copyInResponse');
    // Flush, not Sync: the server sends the COPY's CommandComplete and owes no ReadyForQuery.
    c.send(fe.copyData(Buffer.from('y\n')), fe.copyDone(), fe.flush());
    await c.waitFor('commandComplete');
    c.take();
    // A request pgwarden refuses itself is answered at once (the server owes nothing)...
    const refused = await c.exchange(runNamed('never_prepared_c'));
    expect(errorsOf(refused).map((e) => e.detail)).toEqual([expect.stringContaining(UNKNOWN_BIND)]);
    expect(names(refused)).toEqual(['error', 'readyForQuery']);
    // ...and the next forwarded Sync ends the COPY's batch and this one.
    const next = await c.exchange([fe.parse('SELECT 47', 'after_flush_c'), fe.sync()]);
    expect(names(next)).toEqual(['parseComplete', 'readyForQuery']);
    expect(rowsOf(await c.exchange(runNamed('after_flush_c')))).toEqual([['47']]);
  });
});
