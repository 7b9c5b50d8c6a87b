import { describe, expect, it } from 'vitest';
import { BackendTag } from '../../src/protocol/codes.js';
import type { FrontendMessage } from '../../src/protocol/frontend.js';
import { StatementTracker } from '../../src/session/statement-tracker.js';

const parse = (statement: string, sql: string): FrontendMessage => ({ type: 'Parse', statement, sql, utf8: true, paramTypes: [] });
const bind = (portal: string, statement: string): FrontendMessage => ({
  type: 'Bind',
  portal,
  statement,
  paramFormats: [],
  params: [],
  resultFormats: [],
});
const close = (target: 'S' | 'P', name: string): FrontendMessage => ({ type: 'Close', target, name });
const execute: FrontendMessage = { type: 'Execute', portal: '', maxRows: 0 };
const query = (sql: string): FrontendMessage => ({ type: 'Query', sql, utf8: true });
const sync: FrontendMessage = { type: 'Sync' };
const flush: FrontendMessage = { type: 'Flush' };

const { ParseComplete, BindComplete, CloseComplete, CommandComplete, CopyInResponse, ErrorResponse, ReadyForQuery } = BackendTag;

/**
 * The tracker as the session drives it: every forwarded message is tagged with the number of the
 * ReadyForQuery that ends its batch (a Query's own, or the next Sync's), and every server message
 * with the number of the ReadyForQuery being awaited. The numbering below is the session's.
 */
class Wire {
  readonly t = new StatementTracker();
  private expected = 0;
  private seen = 0;

  /** The client's messages, forwarded in order. */
  send(...messages: FrontendMessage[]): this {
    for (const m of messages) {
      this.t.observe(m, this.expected + 1);
      if (m.type === 'Query' || m.type === 'Sync') this.expected++;
    }
    return this;
  }

  /** pgwarden's own statement (the injected failing Query that aborts a transaction). */
  inject(): this {
    this.expected++;
    return this;
  }

  /** The server's answers, in order. */
  answer(...tags: number[]): this {
    for (const tag of tags) {
      if (tag === ReadyForQuery) this.t.onServerMessage(tag, ++this.seen);
      else this.t.onServerMessage(tag, this.seen + 1);
      // A COPY started by an extended batch swallows the Sync sent with it ("COPY Operations").
      if (tag === CopyInResponse) {
        this.expected--;
        this.t.syncIgnored(this.seen + 1);
      }
    }
    return this;
  }

  get statements(): [string, string][] {
    return [...this.t.statements];
  }
}

describe('StatementTracker', () => {
  it('records statements only once the server confirms the Parse', () => {
    const w = new Wire().send(parse('s1', 'SELECT 1'), parse('', 'SELECT 2'), sync).answer(ParseComplete, ParseComplete, ReadyForQuery);
    expect(w.statements).toEqual([
      ['s1', 'SELECT 1'],
      ['', 'SELECT 2'],
    ]);
  });

  it('offers a pending Parse as a candidate before it is confirmed', () => {
    const w = new Wire().send(parse('s1', 'SELECT 1'));
    expect(w.t.statements.has('s1')).toBe(false);
    expect(w.t.statementCandidates('s1')).toEqual(['SELECT 1']);
  });

  it('keeps the SQL the server has when a named statement is parsed again without Close', () => {
    // The server rejects the second Parse (42P05) and keeps the first: a later Bind runs the first.
    const w = new Wire()
      .send(parse('s1', 'SELECT email FROM customers'), sync, parse('s1', 'SELECT 1'), sync)
      .answer(ParseComplete, ReadyForQuery, ErrorResponse, ReadyForQuery);
    expect(w.t.statements.get('s1')).toBe('SELECT email FROM customers');
    expect(w.t.statementCandidates('s1')).toEqual(['SELECT email FROM customers']);
  });

  it('while a re-Parse is unanswered, both texts are candidates', () => {
    const w = new Wire().send(parse('s1', 'SELECT a'), sync, parse('s1', 'SELECT b')).answer(ParseComplete, ReadyForQuery);
    expect(w.t.statementCandidates('s1')).toEqual(['SELECT a', 'SELECT b']);
  });

  it('replaces the unnamed statement on a confirmed re-Parse', () => {
    const w = new Wire().send(parse('', 'SELECT 1'), parse('', 'DELETE FROM t'), sync).answer(ParseComplete, ParseComplete, ReadyForQuery);
    expect(w.t.statements.get('')).toBe('DELETE FROM t');
    expect(w.t.statements.size).toBe(1);
  });

  it('discards the failing message and the rest of its batch, as the server does', () => {
    const w = new Wire().send(parse('a', 'SELECT 1'), parse('b', 'SELECT 2'), bind('p', 'b'), sync).answer(ErrorResponse, ReadyForQuery);
    expect(w.t.statements.size).toBe(0);
    expect(w.t.portals.size).toBe(0);
    expect(w.t.statementCandidates('b')).toEqual([]);
  });

  it('keeps what an erroring batch confirmed before the failing message', () => {
    // "Extended Query": messages before the error were processed; the rest up to Sync is skipped.
    const w = new Wire()
      .send(parse('a', 'SELECT 1'), parse('b', 'SELECT nope'), bind('p', 'b'), sync)
      .answer(ParseComplete, ErrorResponse, ReadyForQuery);
    expect(w.statements).toEqual([['a', 'SELECT 1']]);
    expect(w.t.portalCandidates('p')).toEqual([]);
  });

  it('an error ends only its own batch, not the pipelined one after it', () => {
    const w = new Wire()
      .send(parse('bad', 'SELECT * FROM missing'), sync, parse('good', 'SELECT 2'), sync)
      .answer(ErrorResponse, ReadyForQuery, ParseComplete, ReadyForQuery);
    expect(w.statements).toEqual([['good', 'SELECT 2']]);
  });

  it('a ReadyForQuery ends only its own batch: later pending Parses stay candidates', () => {
    const w = new Wire().send(parse('a', 'SELECT 1'), sync, parse('b', 'SELECT 2'), sync).answer(ParseComplete, ReadyForQuery);
    expect(w.t.statementCandidates('b')).toEqual(['SELECT 2']);
    w.answer(ParseComplete, ReadyForQuery);
    expect(w.statements).toEqual([
      ['a', 'SELECT 1'],
      ['b', 'SELECT 2'],
    ]);
  });

  it('a batch cut before its Sync (Flush, size limit) ends at the Sync that follows', () => {
    const w = new Wire().send(parse('a', 'SELECT 1'), flush).answer(ParseComplete);
    expect(w.statements).toEqual([['a', 'SELECT 1']]);
    w.send(parse('a', 'SELECT 2'), sync).answer(ErrorResponse, ReadyForQuery);
    expect(w.t.statementCandidates('a')).toEqual(['SELECT 1']);
  });

  it('maps each portal to the statement it was bound from once bound', () => {
    const w = new Wire().send(parse('s1', 'SELECT 1'), bind('p1', 's1'), bind('', 's1'), sync).answer(ParseComplete, BindComplete, BindComplete, ReadyForQuery);
    expect(w.t.portals.get('p1')).toBe('s1');
    expect(w.t.portalCandidates('')).toEqual(['s1']);
  });

  it('forgets a statement on a confirmed Close S and a portal on Close P', () => {
    const w = new Wire().send(parse('x', 'SELECT 1'), bind('x', 'x'), close('S', 'x'), sync).answer(ParseComplete, BindComplete, CloseComplete, ReadyForQuery);
    expect(w.t.statements.has('x')).toBe(false);
    expect(w.t.portals.get('x')).toBe('x');
    w.send(close('P', 'x'), sync).answer(CloseComplete, ReadyForQuery);
    expect(w.t.portals.has('x')).toBe(false);
  });

  it('forgets all uncertain state when confirmations arrive out of step', () => {
    const w = new Wire().send(parse('s', 'SELECT 1')).answer(BindComplete);
    expect(w.t.statementCandidates('s')).toEqual([]);
  });

  describe('simple Query', () => {
    it('destroys the unnamed statement and portal but keeps named ones', () => {
      const w = new Wire()
        .send(parse('', 'SELECT 1'), parse('named', 'SELECT 2'), bind('', ''), bind('cur', 'named'), sync)
        .answer(ParseComplete, ParseComplete, BindComplete, BindComplete, ReadyForQuery)
        .send(query('SELECT 3'))
        .answer(CommandComplete, ReadyForQuery);
      expect(w.statements).toEqual([['named', 'SELECT 2']]);
      expect([...w.t.portals]).toEqual([['cur', 'named']]);
    });

    it('destroys them when the server reaches the Query, not before', () => {
      // An unnamed statement parsed before the Query is gone after it; one parsed after it stays.
      const w = new Wire().send(parse('', 'SELECT 1'), sync, query('SELECT 2'), parse('', 'SELECT 3'), sync);
      w.answer(ParseComplete, ReadyForQuery);
      expect(w.t.statements.get('')).toBe('SELECT 1');
      w.answer(CommandComplete, ReadyForQuery);
      expect(w.t.statements.has('')).toBe(false);
      w.answer(ParseComplete, ReadyForQuery);
      expect(w.t.statements.get('')).toBe('SELECT 3');
    });

    it('destroys them even when the Query fails', () => {
      const w = new Wire().send(parse('', 'SELECT 1'), sync).answer(ParseComplete, ReadyForQuery).send(query('SELECT 1/0')).answer(ErrorResponse, ReadyForQuery);
      expect(w.t.statements.has('')).toBe(false);
    });

    it('(a) a Query pipelined before an extended batch does not end that batch', () => {
      const w = new Wire().send(query('SELECT 1'), parse('s', 'SELECT 42'), sync).answer(CommandComplete, ReadyForQuery, ParseComplete, ReadyForQuery);
      expect(w.statements).toEqual([['s', 'SELECT 42']]);
    });

    it("(b) a failing Query's error does not discard the extended batch pipelined after it", () => {
      const w = new Wire().send(query('SELECT 1/0'), parse('s', 'SELECT 43'), sync).answer(ErrorResponse, ReadyForQuery, ParseComplete, ReadyForQuery);
      expect(w.statements).toEqual([['s', 'SELECT 43']]);
    });

    it("(b) the error of pgwarden's own injected statement does not discard the next batch", () => {
      const w = new Wire().send(query('BEGIN')).answer(CommandComplete, ReadyForQuery);
      // A refused statement inside the transaction block: pgwarden sends its own failing Query.
      w.inject().send(parse('end', 'ROLLBACK'), sync).answer(ErrorResponse, ReadyForQuery, ParseComplete, ReadyForQuery);
      expect(w.statements).toEqual([['end', 'ROLLBACK']]);
    });
  });

  describe('COPY FROM STDIN started by an extended batch (its Sync is ignored by the server)', () => {
    const copyBatch = [parse('', 'COPY t FROM STDIN'), bind('', ''), execute, sync];
    const copyData: FrontendMessage[] = [{ type: 'CopyData', data: Buffer.from('1\n') }, { type: 'CopyDone' }];

    it('(c) a rejected re-Parse after the COPY is not confirmed by the next batch\'s ParseComplete', () => {
      const w = new Wire()
        .send(parse('s1', 'SELECT secret FROM secrets'), sync)
        .answer(ParseComplete, ReadyForQuery)
        .send(...copyBatch)
        .answer(ParseComplete, BindComplete, CopyInResponse)
        .send(...copyData, sync)
        .answer(CommandComplete, ReadyForQuery)
        .send(parse('s1', 'SELECT 1'), sync, parse('s2', 'SELECT 2'), sync)
        .answer(ErrorResponse, ReadyForQuery, ParseComplete, ReadyForQuery);
      expect(w.statements).toEqual([
        ['s1', 'SELECT secret FROM secrets'],
        ['', 'COPY t FROM STDIN'],
        ['s2', 'SELECT 2'],
      ]);
      expect(w.t.statementCandidates('s1')).toEqual(['SELECT secret FROM secrets']);
    });

    it('the COPY batch ends at the first Sync after CopyDone, even one sent with the next batch', () => {
      const w = new Wire()
        .send(...copyBatch)
        .answer(ParseComplete, BindComplete, CopyInResponse)
        .send(...copyData, parse('bad', 'SELECT * FROM missing'), sync, parse('good', 'SELECT 2'), sync)
        .answer(CommandComplete, ErrorResponse, ReadyForQuery, ParseComplete, ReadyForQuery);
      expect(w.t.statementCandidates('bad')).toEqual([]);
      expect(w.t.statements.get('good')).toBe('SELECT 2');
    });

    it('a batch pipelined into the COPY (which aborts it) is numbered one ReadyForQuery earlier', () => {
      // The Parse arrives during copy-in mode: the COPY fails and the server skips to the next
      // Sync, which is that batch's: one ReadyForQuery for both batches.
      const w = new Wire()
        .send(...copyBatch, parse('x', 'SELECT 1'), sync)
        .answer(ParseComplete, BindComplete, CopyInResponse, ErrorResponse, ReadyForQuery);
      expect(w.t.statementCandidates('x')).toEqual([]);
      w.send(parse('y', 'SELECT 2'), sync).answer(ParseComplete, ReadyForQuery);
      expect(w.t.statements.get('y')).toBe('SELECT 2');
      expect(w.t.statements.has('x')).toBe(false);
    });
  });
});
