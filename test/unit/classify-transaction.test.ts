import { beforeAll, describe, expect, it } from 'vitest';
import { classifyUncached, loadParser } from '../../src/classify/classifier.js';
import type { StatementInfo } from '../../src/classify/statement-info.js';
import { one, statements } from '../helpers/classify.js';

/** Classification of transaction control: BEGIN/COMMIT/ROLLBACK, savepoints, two-phase commit. */
beforeAll(async () => {
  await loadParser();
});

describe('classify: transaction control', () => {
  it.each([
    'BEGIN',
    'BEGIN ISOLATION LEVEL REPEATABLE READ',
    'START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY',
    'COMMIT',
    'END',
    'ROLLBACK',
    'ABORT',
    'COMMIT AND CHAIN',
  ])('classifies %s as transaction, touching nothing', (sql) => {
    const st = one(sql);
    expect(st.node).toBe('TransactionStmt');
    expect(st.kind).toBe('transaction');
    expect(st.kinds).toEqual(['transaction']);
    expect(st.relations).toEqual([]);
    expect(st.settings).toEqual([]);
    expect(st.unanalysable).toEqual([]);
  });

  it.each(['SAVEPOINT s1', 'RELEASE SAVEPOINT s1', 'RELEASE s1', 'ROLLBACK TO SAVEPOINT s1', 'ROLLBACK TO s1'])(
    'classifies savepoint statement %s as transaction',
    (sql) => {
      expect(one(sql).kinds).toEqual(['transaction']);
    },
  );

  it.each(["PREPARE TRANSACTION 'tx1'", "COMMIT PREPARED 'tx1'", "ROLLBACK PREPARED 'tx1'"])(
    'classifies two-phase commit statement %s as transaction, not as a prepared statement',
    (sql) => {
      const st = one(sql);
      expect(st.kind).toBe('transaction');
      expect(st.defines).toBeUndefined();
      expect(st.uses).toBeUndefined();
    },
  );

  it('classifies SET CONSTRAINTS as transaction', () => {
    const st = one('SET CONSTRAINTS ALL DEFERRED');
    expect(st.node).toBe('ConstraintsSetStmt');
    expect(st.kind).toBe('transaction');
  });

  it('classifies SET TRANSACTION as a session statement, not a privilege change', () => {
    const st = one('SET TRANSACTION ISOLATION LEVEL SERIALIZABLE');
    expect(st.kind).toBe('session');
    expect(st.kinds).not.toContain('privilege');
  });
});

describe('classify: transactions in multi-statement strings', () => {
  it('classifies each statement between BEGIN and COMMIT', () => {
    const list = statements('BEGIN; DELETE FROM t; UPDATE u SET a = 1; COMMIT');
    expect(list.map((s) => s.kind)).toEqual(['transaction', 'write', 'write', 'transaction']);
    expect(list[1]?.relations).toEqual([{ name: 't', access: 'write' }]);
    expect(list[2]?.relations).toEqual([{ name: 'u', access: 'write' }]);
  });

  it('reports a SET LOCAL inside an explicit transaction as a local setting', () => {
    const list = statements('BEGIN; SET LOCAL search_path = x; SELECT 1; COMMIT');
    expect(list.map((s) => s.kind)).toEqual(['transaction', 'session', 'read', 'transaction']);
    expect(list[1]?.settings).toEqual([{ name: 'search_path', value: 'x', local: true, via: 'set' }]);
  });

  it('does not let a DROP hide after COMMIT in the same string', () => {
    const list = statements('BEGIN; SELECT 1; COMMIT; DROP TABLE t');
    expect(list.map((s) => s.node)).toEqual(['TransactionStmt', 'SelectStmt', 'TransactionStmt', 'DropStmt']);
    expect(list[3]?.kind).toBe('ddl');
  });
});
