import { describe, expect, it } from 'vitest';
import type { RequestOutcome } from '../../src/session/decision.js';
import { Outcomes } from '../../src/session/outcomes.js';

/** Watches one request answered between ReadyForQuery numbers `from` and `to`; returns what it ended with. */
function watch(o: Outcomes, from: number, to: number): RequestOutcome[] {
  const got: RequestOutcome[] = [];
  o.watch((outcome) => got.push(outcome), from, to);
  return got;
}

/** The counts of an outcome, without its timing. */
const counts = ({ durationMs: _d, ...rest }: RequestOutcome) => rest;

describe('Outcomes', () => {
  it('counts the DataRows between the request’s ReadyForQuery numbers and reports them when it is answered', () => {
    const o = new Outcomes();
    const got = watch(o, 0, 1);
    o.onDataRow(0);
    o.onDataRow(0);
    o.onDataRow(0);
    o.onCommandComplete(0, 'SELECT 3');
    expect(got).toEqual([]);
    o.onReady(1);
    expect(got).toHaveLength(1);
    expect(counts(got[0]!)).toEqual({ rowsReturned: 3, rowsAffected: 0 });
    expect(got[0]).not.toHaveProperty('sqlstate');
    expect(got[0]!.durationMs).toBeGreaterThanOrEqual(0);
  });

  it('ignores rows outside the window (an earlier request’s output)', () => {
    const o = new Outcomes();
    const got = watch(o, 2, 3);
    o.onDataRow(1);
    o.onCommandComplete(1, 'DELETE 9');
    o.onError(1, '40001');
    o.onDataRow(2);
    o.onReady(2);
    expect(got).toEqual([]);
    o.onReady(3);
    expect(counts(got[0]!)).toEqual({ rowsReturned: 1, rowsAffected: 0 });
  });

  it.each([
    ['INSERT 0 5', 5],
    ['UPDATE 3', 3],
    ['DELETE 2', 2],
    ['MERGE 1', 1],
    ['UPDATE 0', 0],
  ])('counts "%s" as %i rows affected', (tag, n) => {
    const o = new Outcomes();
    const got = watch(o, 0, 1);
    o.onCommandComplete(0, tag);
    o.onReady(1);
    expect(counts(got[0]!)).toEqual({ rowsReturned: 0, rowsAffected: n });
  });

  it.each([['SELECT 4'], ['FETCH 4'], ['MOVE 4'], ['BEGIN'], ['CREATE TABLE'], ['SET']])('counts nothing for the tag "%s"', (tag) => {
    const o = new Outcomes();
    const got = watch(o, 0, 1);
    o.onCommandComplete(0, tag);
    o.onReady(1);
    expect(counts(got[0]!)).toEqual({ rowsReturned: 0, rowsAffected: 0 });
  });

  it('does not count the rows of "SELECT 4" twice', () => {
    const o = new Outcomes();
    const got = watch(o, 0, 1);
    for (let i = 0; i < 4; i++) o.onDataRow(0);
    o.onCommandComplete(0, 'SELECT 4');
    o.onReady(1);
    expect(counts(got[0]!)).toEqual({ rowsReturned: 4, rowsAffected: 0 });
  });

  it('adds up the statements of a multi-statement request', () => {
    const o = new Outcomes();
    const got = watch(o, 0, 1);
    o.onCommandComplete(0, 'INSERT 0 5');
    o.onDataRow(0);
    o.onDataRow(0);
    o.onCommandComplete(0, 'SELECT 2');
    o.onCommandComplete(0, 'UPDATE 3');
    o.onReady(1);
    expect(counts(got[0]!)).toEqual({ rowsReturned: 2, rowsAffected: 8 });
  });

  it('counts "COPY 10" as returned after CopyOutResponse (COPY TO STDOUT)', () => {
    const o = new Outcomes();
    const got = watch(o, 0, 1);
    o.onCopyOut(0);
    o.onCommandComplete(0, 'COPY 10');
    o.onReady(1);
    expect(counts(got[0]!)).toEqual({ rowsReturned: 10, rowsAffected: 0 });
  });

  it('counts "COPY 10" as affected without CopyOutResponse (COPY FROM STDIN)', () => {
    const o = new Outcomes();
    const got = watch(o, 0, 1);
    o.onCommandComplete(0, 'COPY 10');
    o.onReady(1);
    expect(counts(got[0]!)).toEqual({ rowsReturned: 0, rowsAffected: 10 });
  });

  it('forgets the COPY OUT direction after its CommandComplete', () => {
    const o = new Outcomes();
    const got = watch(o, 0, 1);
    o.onCopyOut(0);
    o.onCommandComplete(0, 'COPY 10');
    o.onCommandComplete(0, 'COPY 4');
    o.onReady(1);
    expect(counts(got[0]!)).toEqual({ rowsReturned: 10, rowsAffected: 4 });
  });

  it('keeps the SQLSTATE of the first error', () => {
    const o = new Outcomes();
    const got = watch(o, 0, 1);
    o.onDataRow(0);
    o.onError(0, '23505');
    o.onError(0, '25P02');
    o.onReady(1);
    expect(counts(got[0]!)).toEqual({ rowsReturned: 1, rowsAffected: 0, sqlstate: '23505' });
  });

  it('finishes several watched requests in order, each with its own counts', () => {
    const o = new Outcomes();
    const order: string[] = [];
    const results: Record<string, RequestOutcome> = {};
    o.watch((r) => (order.push('a'), (results.a = r)), 0, 1);
    o.watch((r) => (order.push('b'), (results.b = r)), 1, 3);
    o.watch((r) => (order.push('c'), (results.c = r)), 3, 4);
    expect(o.idle).toBe(false);
    o.onDataRow(0);
    o.onReady(1);
    expect(order).toEqual(['a']);
    o.onCommandComplete(1, 'UPDATE 2');
    o.onReady(2); // b spans two ReadyForQuery (e.g. a pipelined Sync)
    expect(order).toEqual(['a']);
    o.onCommandComplete(2, 'DELETE 1');
    o.onError(2, '40P01');
    o.onReady(3);
    expect(order).toEqual(['a', 'b']);
    o.onDataRow(3);
    o.onDataRow(3);
    o.onReady(4);
    expect(order).toEqual(['a', 'b', 'c']);
    expect(counts(results.a!)).toEqual({ rowsReturned: 1, rowsAffected: 0 });
    expect(counts(results.b!)).toEqual({ rowsReturned: 0, rowsAffected: 3, sqlstate: '40P01' });
    expect(counts(results.c!)).toEqual({ rowsReturned: 2, rowsAffected: 0 });
    expect(o.idle).toBe(true);
  });

  it('finishes every request already answered when ReadyForQuery jumps ahead', () => {
    const o = new Outcomes();
    const order: number[] = [];
    o.watch(() => order.push(1), 0, 1);
    o.watch(() => order.push(2), 1, 2);
    o.watch(() => order.push(3), 2, 3);
    o.onReady(2);
    expect(order).toEqual([1, 2]);
    expect(o.idle).toBe(false);
  });

  it('abandon() finishes the rest with the given SQLSTATE and keeps an error already seen', () => {
    const o = new Outcomes();
    const first = watch(o, 0, 1);
    const second = watch(o, 1, 2);
    const third = watch(o, 2, 3);
    o.onReady(1);
    o.onDataRow(1);
    o.onError(1, '57014');
    o.abandon('08006');
    expect(counts(first[0]!)).toEqual({ rowsReturned: 0, rowsAffected: 0 });
    expect(counts(second[0]!)).toEqual({ rowsReturned: 1, rowsAffected: 0, sqlstate: '57014' });
    expect(counts(third[0]!)).toEqual({ rowsReturned: 0, rowsAffected: 0, sqlstate: '08006' });
    expect(o.idle).toBe(true);
  });

  it('finishes each request exactly once', () => {
    const o = new Outcomes();
    const got = watch(o, 0, 1);
    o.onReady(1);
    o.onReady(2);
    o.abandon('08006');
    expect(got).toHaveLength(1);
  });

  it('is idle with nothing watched, busy while a request is outstanding, and idle again after', () => {
    const o = new Outcomes();
    expect(o.idle).toBe(true);
    watch(o, 0, 1);
    expect(o.idle).toBe(false);
    o.onReady(0);
    expect(o.idle).toBe(false);
    o.onReady(1);
    expect(o.idle).toBe(true);
  });
});
