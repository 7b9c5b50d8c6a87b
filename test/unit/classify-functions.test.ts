import { beforeAll, describe, expect, it } from 'vitest';
import { classifyUncached, loadParser } from '../../src/classify/classifier.js';
import type { StatementInfo } from '../../src/classify/statement-info.js';

/**
 * Classification of function calls wherever they hide, set_config, procedural code (DO,
 * CREATE FUNCTION/PROCEDURE, CALL) and functions that run SQL given as a string.
 */
beforeAll(async () => {
  await loadParser();
});

function one(sql: string): StatementInfo {
  const r = classifyUncached(sql);
  if (!r.ok) throw new Error(`expected ${JSON.stringify(sql)} to parse, got: ${r.message}`);
  expect(r.statements, sql).toHaveLength(1);
  return r.statements[0]!;
}

const sorted = (xs: readonly string[]): string[] => [...xs].sort();

describe('classify: function calls wherever they are', () => {
  it('finds functions in the select list, WHERE, GROUP BY, HAVING and ORDER BY', () => {
    const st = one('SELECT upper(a) FROM t WHERE id = abs(1) GROUP BY md5(a) HAVING count(*) > 1 ORDER BY random()');
    expect(sorted(st.functions)).toEqual(['abs', 'count', 'md5', 'random', 'upper']);
  });

  it('finds a function in a nested subquery of the WHERE clause', () => {
    const st = one("SELECT * FROM t WHERE x IN (SELECT y FROM u WHERE z = (SELECT pg_read_file('p')))");
    expect(st.functions).toEqual(['pg_read_file']);
    expect(st.relations.map((r) => r.name)).toEqual(['t', 'u']);
  });

  it('finds a function in a CTE body', () => {
    expect(one("WITH f AS (SELECT pg_read_file('x') AS c) SELECT c FROM f").functions).toEqual(['pg_read_file']);
  });

  it('finds a function in a nested CTE', () => {
    expect(one('WITH a AS (WITH b AS (SELECT upper(c) FROM d) SELECT * FROM b) SELECT * FROM a').functions).toEqual(['upper']);
  });

  it('finds a set-returning function in FROM and in ROWS FROM', () => {
    expect(one("SELECT * FROM pg_ls_dir('.')").functions).toEqual(['pg_ls_dir']);
    expect(one("SELECT * FROM ROWS FROM (pg_read_file('x'))").functions).toEqual(['pg_read_file']);
  });

  it('finds functions in INSERT values and UPDATE assignments', () => {
    expect(one("INSERT INTO t VALUES (pg_read_file('x'))").functions).toEqual(['pg_read_file']);
    expect(sorted(one("UPDATE t SET a = pg_read_file('x') WHERE b = lower(c)").functions)).toEqual(['lower', 'pg_read_file']);
  });

  it('finds a function called with named or VARIADIC arguments', () => {
    expect(one("SELECT pg_read_file(filename => 'x')").functions).toEqual(['pg_read_file']);
    expect(one("SELECT pg_read_file(VARIADIC ARRAY['x'])").functions).toEqual(['pg_read_file']);
  });

  it('finds a function whose result is expanded with (f()).*', () => {
    expect(one("SELECT (pg_read_file('x')).*").functions).toEqual(['pg_read_file']);
  });

  it('finds a function in EXECUTE parameters', () => {
    expect(one("EXECUTE q(pg_read_file('x'))").functions).toEqual(['pg_read_file']);
  });

  it('finds a function in the argument of CALL', () => {
    expect(one("CALL s.p(pg_read_file('x'))").functions).toContain('pg_read_file');
  });

  it('does not report keyword expressions (COALESCE, GREATEST, CURRENT_USER) as functions', () => {
    expect(one('SELECT coalesce(a, b), greatest(1, 2), CURRENT_USER FROM t').functions).toEqual([]);
  });
});

describe('classify: function names', () => {
  it('keeps the schema of a schema-qualified call: pg_catalog.pg_read_file', () => {
    expect(one("SELECT pg_catalog.pg_read_file('x')").functions).toEqual(['pg_catalog.pg_read_file']);
  });

  it('lower-cases unquoted names written in any case', () => {
    expect(one("SeLeCt PG_CATALOG.PG_READ_FILE('x')").functions).toEqual(['pg_catalog.pg_read_file']);
  });

  it('reads a quoted lower-case name as the same function', () => {
    expect(one('select "pg_read_file"(\'x\')').functions).toEqual(['pg_read_file']);
    expect(one('SELECT "pg_catalog"."pg_read_file"(\'x\')').functions).toEqual(['pg_catalog.pg_read_file']);
  });

  it('decodes a unicode-escaped identifier: U&"\\0070g_read_file" is pg_read_file', () => {
    expect(one('SELECT U&"\\0070g_read_file"(\'x\')').functions).toEqual(['pg_read_file']);
  });

  it('ignores comments between a function name and its arguments', () => {
    expect(one("SELECT pg_read_file/**/('x')").functions).toEqual(['pg_read_file']);
  });

  it('drops the database qualifier of db.schema.function, so schema-qualified rules still match', () => {
    expect(one("SELECT app.pg_catalog.pg_read_file('x')").functions).toEqual(['pg_catalog.pg_read_file']);
  });

  it('keeps the case of a quoted function name (the parser already folded unquoted ones)', () => {
    expect(one('SELECT "LOWER"(\'x\')').functions).toEqual(['LOWER']);
  });
});

describe('classify: set_config', () => {
  it("reports set_config('role', ...) as a role setting with the privilege kind", () => {
    const st = one("SELECT set_config('role', 'postgres', false)");
    expect(st.functions).toEqual(['set_config']);
    expect(st.settings).toEqual([{ name: 'role', value: 'postgres', local: false, via: 'set_config' }]);
    expect(st.kinds).toEqual(expect.arrayContaining(['read', 'privilege']));
    expect(st.unanalysable).toEqual([]);
  });

  it('reports pg_catalog.set_config with an upper-case setting name, lower-cased', () => {
    const st = one("SELECT pg_catalog.set_config('ROLE', 'x', true)");
    expect(st.settings).toEqual([{ name: 'role', value: 'x', local: true, via: 'set_config' }]);
    expect(st.kinds).toContain('privilege');
  });

  it('reports set_config reached through a database-qualified name (db.pg_catalog.set_config)', () => {
    // PostgreSQL accepts current_database.schema.function().
    const st = one("SELECT app.pg_catalog.set_config('role', 'postgres', false)");
    expect(st.settings).toEqual([{ name: 'role', value: 'postgres', local: false, via: 'set_config' }]);
    expect(st.kinds).toContain('privilege');
  });

  it('reports set_config called as a table function', () => {
    expect(one("SELECT * FROM set_config('role', 'postgres', false)").settings.map((s) => s.name)).toEqual(['role']);
  });

  it('reports every set_config of one statement', () => {
    const st = one("SELECT set_config('role', 'a', false), set_config('work_mem', '1MB', true)");
    expect(st.settings).toEqual([
      { name: 'role', value: 'a', local: false, via: 'set_config' },
      { name: 'work_mem', value: '1MB', local: true, via: 'set_config' },
    ]);
  });

  it('reads a value cast to text as a constant', () => {
    expect(one("SELECT set_config('standard_conforming_strings', 'off'::text, false)").settings[0]?.value).toBe('off');
  });

  it('marks set_config with a computed setting name unanalysable', () => {
    const st = one("SELECT set_config(lower('ROLE'), 'postgres', false)");
    expect(st.unanalysable).toHaveLength(1);
    expect(st.settings).toEqual([]);
  });

  it('marks set_config with a parameter as setting name unanalysable', () => {
    expect(one("SELECT set_config($1, 'y', false)").unanalysable).toHaveLength(1);
  });

  it('marks set_config with a computed value unanalysable, keeping the setting name', () => {
    const st = one("SELECT set_config('role', current_user, false)");
    expect(st.settings).toEqual([{ name: 'role', local: false, via: 'set_config' }]);
    expect(st.unanalysable).toHaveLength(1);
    // The reason is shown to reviewers and audited: it never quotes a literal of the statement.
    expect(one("SELECT set_config('x.secret_42', current_user, false)").unanalysable).toEqual(['set_config() with a computed value']);
    expect(st.kinds).toContain('privilege');
  });
});

describe('classify: procedural code', () => {
  it('marks a DO block unanalysable', () => {
    const st = one("DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$");
    expect(st.node).toBe('DoStmt');
    expect(st.unanalysable).toHaveLength(1);
    expect(st.relations).toEqual([]);
  });

  it('marks a DO block with an explicit language unanalysable', () => {
    expect(one('DO LANGUAGE plpgsql $$ BEGIN NULL; END $$').unanalysable).toHaveLength(1);
  });

  it('marks CREATE FUNCTION with a body string unanalysable, as ddl', () => {
    const st = one("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'");
    expect(st.node).toBe('CreateFunctionStmt');
    expect(st.kind).toBe('ddl');
    expect(st.unanalysable).toHaveLength(1);
  });

  it('marks CREATE OR REPLACE FUNCTION with a dollar-quoted body unanalysable', () => {
    const st = one("CREATE OR REPLACE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT pg_read_file('x') $$");
    expect(st.kind).toBe('ddl');
    expect(st.unanalysable).toHaveLength(1);
  });

  it('marks CREATE PROCEDURE with a BEGIN ATOMIC body unanalysable and reports what the body names', () => {
    const st = one('CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END');
    expect(st.kind).toBe('ddl');
    expect(st.unanalysable).toHaveLength(1);
    expect(st.relations).toContainEqual({ name: 't', access: 'write' });
  });

  it('marks a SQL-standard RETURN body unanalysable and reports its functions', () => {
    const st = one("CREATE FUNCTION f() RETURNS int LANGUAGE sql RETURN pg_read_file('x')::int");
    expect(st.unanalysable).toHaveLength(1);
    expect(st.functions).toEqual(['pg_read_file']);
  });

  it('marks CALL unanalysable', () => {
    const st = one('CALL p(1)');
    expect(st.node).toBe('CallStmt');
    expect(st.unanalysable).toHaveLength(1);
  });
});

describe('classify: functions that run SQL given as a string', () => {
  it.each([
    ["SELECT query_to_xml('select * from secrets', true, true, '')", 'query_to_xml'],
    ["SELECT pg_catalog.query_to_xmlschema('select 1', true, true, '')", 'pg_catalog.query_to_xmlschema'],
    ["SELECT cursor_to_xml('c', 10, false, false, '')", 'cursor_to_xml'],
    ["SELECT * FROM dblink('host=evil', 'select 1') AS t(x int)", 'dblink'],
    ["SELECT dblink_exec('c', 'DROP TABLE t')", 'dblink_exec'],
    ["SELECT ts_stat('select 1')", 'ts_stat'],
    ["SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, ''b''::tsquery')", 'ts_rewrite'],
    ["SELECT * FROM crosstab('SELECT 1, 2, 3') AS ct(a int, b int)", 'crosstab'],
  ])('marks %s unanalysable', (sql, fn) => {
    const st = one(sql);
    expect(st.functions).toContain(fn);
    expect(st.unanalysable).toHaveLength(1);
  });

  it('marks a database-qualified query_to_xml unanalysable too', () => {
    expect(one("SELECT app.pg_catalog.query_to_xml('select 1', true, true, '')").unanalysable).toHaveLength(1);
  });

  it('does not mark ordinary functions unanalysable', () => {
    expect(one("SELECT lower('X'), now()").unanalysable).toEqual([]);
  });
});
