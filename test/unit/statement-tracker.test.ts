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
const query = (sql: string): FrontendMessage => ({ type: 'Query', sql, utf8: true });
const sync: FrontendMessage = { type: 'Sync' };

/** Feeds client messages, then the server's answers (tags). */
function run(messages: readonly FrontendMessage[], server: readonly number[] = []): StatementTracker {
  const t = new StatementTracker();
  for (const m of messages) t.observe(m);
  for (const tag of server) t.onServerMessage(tag);
  return t;
}

const { ParseComplete, BindComplete, CloseComplete, ErrorResponse, ReadyForQuery } = BackendTag;

describe('StatementTracker', () => {
  it('records statements only once the server confirms the Parse', () => {
    const t = run([parse('s1', 'SELECT 1'), parse('', 'SELECT 2'), sync], [ParseComplete, ParseComplete, ReadyForQuery]);
    expect([...t.statements]).toEqual([
      ['s1', 'SELECT 1'],
      ['', 'SELECT 2'],
    ]);
  });

  it('offers a pending Parse as a candidate before it is confirmed', () => {
    const t = run([parse('s1', 'SELECT 1')]);
    expect(t.statements.has('s1')).toBe(false);
    expect(t.statementCandidates('s1')).toEqual(['SELECT 1']);
  });

  it('keeps the SQL the server has when a named statement is parsed again without Close', () => {
    // The server rejects the second Parse (42P05) and keeps the first: a later Bind runs the first.
    const t = run(
      [parse('s1', 'SELECT email FROM customers'), sync, parse('s1', 'SELECT 1'), sync],
      [ParseComplete, ReadyForQuery, ErrorResponse, ReadyForQuery],
    );
    expect(t.statements.get('s1')).toBe('SELECT email FROM customers');
    expect(t.statementCandidates('s1')).toEqual(['SELECT email FROM customers']);
  });

  it('while a re-Parse is unanswered, both texts are candidates', () => {
    const t = run([parse('s1', 'SELECT a'), sync, parse('s1', 'SELECT b')], [ParseComplete, ReadyForQuery]);
    expect(t.statementCandidates('s1')).toEqual(['SELECT a', 'SELECT b']);
  });

  it('replaces the unnamed statement on a confirmed re-Parse', () => {
    const t = run([parse('', 'SELECT 1'), parse('', 'DELETE FROM t'), sync], [ParseComplete, ParseComplete, ReadyForQuery]);
    expect(t.statements.get('')).toBe('DELETE FROM t');
    expect(t.statements.size).toBe(1);
  });

  it('discards the messages after an error up to Sync, as the server does', () => {
    const t = run(
      [parse('a', 'SELECT 1'), parse('b', 'SELECT 2'), bind('p', 'b'), sync],
      [ErrorResponse, ReadyForQuery],
    );
    expect(t.statements.size).toBe(0);
    expect(t.portals.size).toBe(0);
    expect(t.statementCandidates('b')).toEqual([]);
  });

  it('maps each portal to the statement it was bound from once bound', () => {
    const t = run([parse('s1', 'SELECT 1'), bind('p1', 's1'), bind('', 's1'), sync], [ParseComplete, BindComplete, BindComplete, ReadyForQuery]);
    expect(t.portals.get('p1')).toBe('s1');
    expect(t.portalCandidates('')).toEqual(['s1']);
  });

  it('forgets a statement on a confirmed Close S and a portal on Close P', () => {
    const t = run(
      [parse('x', 'SELECT 1'), bind('x', 'x'), close('S', 'x'), sync],
      [ParseComplete, BindComplete, CloseComplete, ReadyForQuery],
    );
    expect(t.statements.has('x')).toBe(false);
    expect(t.portals.get('x')).toBe('x');
    t.observe(close('P', 'x'));
    t.onServerMessage(CloseComplete);
    expect(t.portals.has('x')).toBe(false);
  });

  it('a simple Query destroys the unnamed statement and portal but keeps named ones', () => {
    const t = run(
      [parse('', 'SELECT 1'), parse('named', 'SELECT 2'), bind('', ''), bind('cur', 'named'), sync],
      [ParseComplete, ParseComplete, BindComplete, BindComplete, ReadyForQuery],
    );
    t.observe(query('SELECT 3'));
    expect([...t.statements]).toEqual([['named', 'SELECT 2']]);
    expect([...t.portals]).toEqual([['cur', 'named']]);
  });

  it('forgets all uncertain state when confirmations arrive out of step', () => {
    const t = run([parse('s', 'SELECT 1')], [BindComplete]);
    expect(t.statementCandidates('s')).toEqual([]);
  });
});
