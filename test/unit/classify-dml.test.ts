import { beforeAll, describe, expect, it } from 'vitest';
import { Classifier, classifyUncached, loadParser } from '../../src/classify/classifier.js';
import type { StatementInfo } from '../../src/classify/statement-info.js';
import { one, statements } from '../helpers/classify.js';

/**
 * Classification of reads and writes (SELECT, INSERT, UPDATE, DELETE, MERGE, EXPLAIN) and of
 * how a query string splits into statements: comments, dollar quotes, CTE scopes, quoting.
 */
beforeAll(async () => {
  await loadParser();
});

const relationNames = (st: StatementInfo): string[] => st.relations.map((r) => (r.schema ? `${r.schema}.${r.name}` : r.name)).sort();

describe('classify: reads', () => {
  it('classifies a SELECT as a read of each table it names, with schema when written', () => {
    const st = one('SELECT * FROM app.users u JOIN orders o ON o.user_id = u.id');
    expect(st.node).toBe('SelectStmt');
    expect(st.kind).toBe('read');
    expect(st.kinds).toEqual(['read']);
    expect(st.relations).toEqual([
      { schema: 'app', name: 'users', access: 'read' },
      { name: 'orders', access: 'read' },
    ]);
    expect(st.unanalysable).toEqual([]);
  });

  it('reports TABLE t as a read of t', () => {
    expect(one('TABLE secrets').relations).toEqual([{ name: 'secrets', access: 'read' }]);
  });

  it('finds tables read in scalar subqueries, IN subqueries and LATERAL joins', () => {
    const st = one('SELECT (SELECT max(x) FROM a) FROM b CROSS JOIN LATERAL (SELECT * FROM d) l WHERE y IN (SELECT y FROM c)');
    expect(relationNames(st)).toEqual(['a', 'b', 'c', 'd']);
    expect(st.relations.every((r) => r.access === 'read')).toBe(true);
  });

  it('keeps the case of quoted identifiers and folds unquoted ones', () => {
    const st = one('SELECT * FROM "Users" JOIN "Sales"."Orders" ON true JOIN Public.Items ON true');
    expect(st.relations).toEqual([
      { name: 'Users', access: 'read' },
      { schema: 'Sales', name: 'Orders', access: 'read' },
      { schema: 'public', name: 'items', access: 'read' },
    ]);
  });

  it('lists column references as written', () => {
    const st = one('SELECT c.email, name, t.* FROM customers c, t');
    expect(st.columns).toEqual(['c.email', 'name', 't.*']);
  });

  it('reports a table read through two schemas as two relations', () => {
    const st = one('SELECT * FROM "Public"."Users" u JOIN public.users v ON true');
    expect(st.relations).toEqual([
      { schema: 'Public', name: 'Users', access: 'read' },
      { schema: 'public', name: 'users', access: 'read' },
    ]);
  });
});

describe('classify: writes', () => {
  it('classifies INSERT as a write to its target and a read of its source', () => {
    const st = one('INSERT INTO t (a) SELECT b FROM u ON CONFLICT DO NOTHING');
    expect(st.kind).toBe('write');
    expect(st.kinds).toEqual(['write']);
    expect(st.relations).toEqual([
      { name: 't', access: 'write' },
      { name: 'u', access: 'read' },
    ]);
  });

  it('classifies UPDATE ... FROM as a write to the target and a read of the other table', () => {
    const st = one('UPDATE s.t SET a = 1 FROM u WHERE u.id = t.id');
    expect(st.kind).toBe('write');
    expect(st.relations).toEqual([
      { schema: 's', name: 't', access: 'write' },
      { name: 'u', access: 'read' },
    ]);
  });

  it('classifies DELETE ... USING as a write to the target', () => {
    const st = one('DELETE FROM t USING u WHERE t.id = u.id');
    expect(st.kind).toBe('write');
    expect(st.relations).toContainEqual({ name: 't', access: 'write' });
    expect(st.relations).toContainEqual({ name: 'u', access: 'read' });
  });

  it('classifies MERGE as a write to its target and a read of its source', () => {
    const st = one('MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT VALUES (s.id)');
    expect(st.node).toBe('MergeStmt');
    expect(st.kind).toBe('write');
    expect(st.kinds).toEqual(['write']);
    expect(st.relations).toEqual([
      { name: 't', access: 'write' },
      { name: 's', access: 'read' },
    ]);
  });

  it('reports a table both read and written once, as written', () => {
    const st = one('INSERT INTO t SELECT * FROM t');
    expect(st.relations).toEqual([{ name: 't', access: 'write' }]);
  });
});

describe('classify: data-modifying CTEs', () => {
  it('gives a SELECT with a DELETE in a CTE the write kind and a write access to the table', () => {
    const st = one('WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d');
    expect(st.kind).toBe('read');
    expect(st.kinds).toContain('read');
    expect(st.kinds).toContain('write');
    expect(st.relations).toEqual([{ name: 't', access: 'write' }]);
  });

  it('finds an UPDATE in a CTE nested inside a subquery', () => {
    const st = one('SELECT * FROM (WITH u AS (UPDATE accounts SET balance = 0 RETURNING id) SELECT id FROM u) s');
    expect(st.kinds).toContain('write');
    expect(st.relations).toEqual([{ name: 'accounts', access: 'write' }]);
  });

  it('finds an INSERT in a CTE of an UPDATE', () => {
    const st = one('WITH i AS (INSERT INTO log VALUES (1) RETURNING 1) UPDATE t SET a = 1');
    expect(st.kind).toBe('write');
    expect(st.relations).toContainEqual({ name: 'log', access: 'write' });
    expect(st.relations).toContainEqual({ name: 't', access: 'write' });
  });
});

describe('classify: CTE names and tables of the same name', () => {
  it('does not report a CTE referenced inside its scope as a relation', () => {
    const st = one('WITH users AS (SELECT 1 AS id) SELECT * FROM users');
    expect(st.relations).toEqual([]);
  });

  it('reports a same-named table referenced outside the CTE scope (a later statement)', () => {
    const [first, second] = statements('WITH users AS (SELECT 1) SELECT * FROM users; SELECT * FROM users');
    expect(first?.relations).toEqual([]);
    expect(second?.relations).toEqual([{ name: 'users', access: 'read' }]);
  });

  it('reports a same-named table referenced outside the CTE scope (the enclosing query)', () => {
    const st = one('SELECT * FROM (WITH users AS (SELECT 1) SELECT * FROM users) s JOIN users ON true');
    expect(st.relations).toEqual([{ name: 'users', access: 'read' }]);
  });

  it('reports a schema-qualified table even when a CTE has its name', () => {
    const st = one('WITH users AS (SELECT 1) SELECT * FROM public.users');
    expect(st.relations).toEqual([{ schema: 'public', name: 'users', access: 'read' }]);
  });

  it('does not report a recursive CTE referencing itself', () => {
    const st = one('WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r');
    expect(st.relations).toEqual([]);
  });

  it('reports the table read inside a non-recursive CTE body that has the same name as the CTE', () => {
    // Without RECURSIVE a CTE is not visible in its own body: `secrets` there is the table.
    const st = one('WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets');
    expect(st.relations).toEqual([{ name: 'secrets', access: 'read' }]);
  });

  it('reports a table that a CTE body names before a later CTE of that name is defined', () => {
    // A non-recursive CTE sees only the CTEs listed before it: `b` in a's body is the table b.
    const st = one('WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a');
    expect(st.relations).toEqual([{ name: 'b', access: 'read' }]);
  });

  it('reports the target of a DELETE even when a CTE has its name (a DML target is always a table)', () => {
    const st = one('WITH t AS (SELECT 1) DELETE FROM t');
    expect(st.relations).toEqual([{ name: 't', access: 'write' }]);
  });

  it('reports the target of an INSERT even when a CTE has its name', () => {
    const st = one('WITH t AS (SELECT 1 AS a) INSERT INTO t SELECT a FROM t');
    expect(st.relations).toContainEqual({ name: 't', access: 'write' });
  });
});

describe('classify: EXPLAIN', () => {
  it('classifies EXPLAIN ANALYZE of a DELETE as the DELETE: it runs', () => {
    const st = one('EXPLAIN ANALYZE DELETE FROM t');
    expect(st.node).toBe('ExplainStmt');
    expect(st.kind).toBe('write');
    expect(st.kinds).toEqual(['write']);
    expect(st.relations).toEqual([{ name: 't', access: 'write' }]);
  });

  it('classifies EXPLAIN (ANALYZE) and (ANALYZE true, BUFFERS) of an UPDATE as writes', () => {
    expect(one('EXPLAIN (ANALYZE) UPDATE t SET a = 1').kinds).toEqual(['write']);
    expect(one('EXPLAIN (ANALYZE true, BUFFERS) UPDATE t SET a = 1').kinds).toEqual(['write']);
    expect(one('EXPLAIN (ANALYZE on) UPDATE t SET a = 1').kinds).toEqual(['write']);
  });

  it('classifies EXPLAIN ANALYZE of a SELECT with a data-modifying CTE as read and write', () => {
    const st = one('EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d');
    expect(st.kinds).toContain('write');
    expect(st.relations).toEqual([{ name: 't', access: 'write' }]);
  });

  it('classifies plain EXPLAIN of a DELETE as utility, the table only read', () => {
    const st = one('EXPLAIN DELETE FROM t');
    expect(st.node).toBe('ExplainStmt');
    expect(st.kind).toBe('utility');
    expect(st.kinds).toEqual(['utility']);
    expect(st.relations).toEqual([{ name: 't', access: 'read' }]);
  });

  it('classifies EXPLAIN (VERBOSE) of an UPDATE as utility', () => {
    expect(one('EXPLAIN (VERBOSE) UPDATE t SET a = 1').kinds).toEqual(['utility']);
  });

  it('classifies EXPLAIN (ANALYZE false) of a DELETE as utility: it does not run', () => {
    expect(one('EXPLAIN (ANALYZE false) DELETE FROM t').kinds).toEqual(['utility']);
  });

  it('classifies EXPLAIN (ANALYZE off) and (ANALYZE 0) of a DELETE as utility', () => {
    expect(one('EXPLAIN (ANALYZE off) DELETE FROM t').kinds).toEqual(['utility']);
    expect(one('EXPLAIN (ANALYZE 0) DELETE FROM t').kinds).toEqual(['utility']);
  });

  it('keeps the functions of an explained statement, run or not', () => {
    expect(one('EXPLAIN SELECT pg_read_file(\'x\')').functions).toEqual(['pg_read_file']);
    expect(one('EXPLAIN ANALYZE SELECT pg_read_file(\'x\')').functions).toEqual(['pg_read_file']);
  });

  it('refuses EXPLAIN ANALYZE of a statement PostgreSQL cannot explain (a parse error)', () => {
    const r = classifyUncached('EXPLAIN ANALYZE DROP TABLE t');
    expect(r.ok).toBe(false);
  });
});

describe('classify: one string, several statements', () => {
  it('classifies every statement of a multi-statement string, in order', () => {
    const list = statements('SELECT 1; INSERT INTO t VALUES (1); DELETE FROM u; SELECT * FROM v');
    expect(list.map((s) => s.node)).toEqual(['SelectStmt', 'InsertStmt', 'DeleteStmt', 'SelectStmt']);
    expect(list.map((s) => s.kind)).toEqual(['read', 'write', 'write', 'read']);
    expect(list[3]?.relations).toEqual([{ name: 'v', access: 'read' }]);
  });

  it('splits statements written without spaces', () => {
    expect(statements('select 1;drop table t').map((s) => s.kind)).toEqual(['read', 'ddl']);
  });

  it('treats a DROP behind a backslash-quote as a statement of its own (standard_conforming_strings on)', () => {
    // With standard_conforming_strings on, backslash is an ordinary character in '...': the
    // literal is 'a\' and DROP TABLE t runs; `--'` is a comment.
    const list = statements("SELECT 'a\\'; DROP TABLE t; --'");
    expect(list.map((s) => s.node)).toEqual(['SelectStmt', 'DropStmt']);
    expect(list[1]?.relations).toEqual([{ name: 't', access: 'ddl' }]);
  });

  it('keeps an E-string with an escaped quote as one statement', () => {
    expect(statements("SELECT E'a\\'; DROP TABLE t; --'").map((s) => s.node)).toEqual(['SelectStmt']);
  });

  it("keeps a doubled quote '' inside a literal as one statement", () => {
    expect(statements("SELECT 'a'';DROP TABLE t;--'").map((s) => s.node)).toEqual(['SelectStmt']);
  });

  it('keeps a U& string whose escape is a quote as one statement', () => {
    expect(statements("SELECT U&'\\0027; DROP TABLE t; --'").map((s) => s.node)).toEqual(['SelectStmt']);
  });

  it('returns no statements for empty statements between semicolons', () => {
    expect(statements(';;')).toEqual([]);
    expect(statements(' ; ; ')).toEqual([]);
  });

  it('returns no statements for an empty string (PostgreSQL answers EmptyQueryResponse)', () => {
    const r = classifyUncached('');
    expect(r).toEqual({ ok: true, statements: [] });
  });

  it('returns no statements for whitespace or comments only', () => {
    expect(statements('   ')).toEqual([]);
    expect(statements('-- just a comment')).toEqual([]);
    expect(statements('/* c */')).toEqual([]);
  });
});

describe('classify: comments', () => {
  it('ignores a keyword inside a block comment', () => {
    expect(statements('/* DROP */ SELECT 1').map((s) => s.kind)).toEqual(['read']);
  });

  it('ignores a line comment up to the end of the line only', () => {
    const list = statements('SELECT 1 -- DROP TABLE a;\n; DROP TABLE t');
    expect(list.map((s) => s.node)).toEqual(['SelectStmt', 'DropStmt']);
    expect(list[1]?.relations).toEqual([{ name: 't', access: 'ddl' }]);
  });

  it('nests block comments: /* /* */ DROP */ is all comment', () => {
    expect(statements('/* /* */ DROP TABLE t; */ SELECT 1').map((s) => s.node)).toEqual(['SelectStmt']);
  });

  it('nests block comments: a statement after an inner */ is still inside the comment', () => {
    expect(statements('/* /* */ SELECT 1; DROP TABLE t; -- */')).toEqual([]);
  });

  it('finds statements after a nested comment closes completely', () => {
    expect(statements('/* a /* b */ c */ DELETE FROM t').map((s) => s.kind)).toEqual(['write']);
  });

  it('treats comments between tokens as whitespace', () => {
    const st = one('DELETE/**/FROM/* x */t--\n');
    expect(st.kind).toBe('write');
    expect(st.relations).toEqual([{ name: 't', access: 'write' }]);
  });

  it('refuses an unterminated block comment', () => {
    expect(classifyUncached('SELECT 1 /* unterminated').ok).toBe(false);
  });
});

describe('classify: dollar quotes', () => {
  it('reads SELECT $$; DROP TABLE t; $$ as ONE read statement', () => {
    const st = one('SELECT $$; DROP TABLE t; $$');
    expect(st.kinds).toEqual(['read']);
    expect(st.relations).toEqual([]);
  });

  it('reads SELECT $a$ x $a$; DROP TABLE t as two statements', () => {
    const list = statements('SELECT $a$ x $a$; DROP TABLE t');
    expect(list.map((s) => s.node)).toEqual(['SelectStmt', 'DropStmt']);
  });

  it('does not end a tagged dollar quote at $$', () => {
    expect(statements('SELECT $tag$ $$ ; DROP TABLE t; $$ $tag$').map((s) => s.node)).toEqual(['SelectStmt']);
  });

  it('ends a dollar quote only at the same tag', () => {
    expect(statements('SELECT $a$ $b$ ; DROP TABLE x; $b$ $a$; DELETE FROM t').map((s) => s.kind)).toEqual(['read', 'write']);
  });

  it('ignores comment markers inside dollar quotes', () => {
    expect(statements('SELECT $$ /* $$; DELETE FROM t; -- */').map((s) => s.kind)).toEqual(['read', 'write']);
  });
});

describe('classify: caching', () => {
  it('caches by exact text, so tables in different schemas are never confused', () => {
    const c = new Classifier(16);
    const a = c.classify('SELECT * FROM public.users');
    const b = c.classify('SELECT * FROM other.users');
    expect(a.ok && a.statements[0]?.relations).toEqual([{ schema: 'public', name: 'users', access: 'read' }]);
    expect(b.ok && b.statements[0]?.relations).toEqual([{ schema: 'other', name: 'users', access: 'read' }]);
  });

  it('returns the same classification for the same text from the cache', () => {
    const c = new Classifier(16);
    const first = c.classify('DELETE FROM t WHERE id = 1');
    expect(c.classify('DELETE FROM t WHERE id = 1')).toBe(first);
    const other = c.classify('DELETE FROM u WHERE id = 1');
    expect(other.ok && other.statements[0]?.relations).toEqual([{ name: 'u', access: 'write' }]);
  });
});
