import { beforeAll, describe, expect, it } from 'vitest';
import { classifyUncached, loadParser } from '../../src/classify/classifier.js';
import { classifyStatement } from '../../src/classify/classify-statement.js';
import type { StatementInfo } from '../../src/classify/statement-info.js';
import { one, statements } from '../helpers/classify.js';

/**
 * Classification of schema changes (DDL), privilege changes and server administration.
 * Unknown statement types must come out as DDL, so new syntax fails closed.
 */
beforeAll(async () => {
  await loadParser();
});

describe('classify: schema changes', () => {
  it('classifies CREATE TABLE as ddl on the new table', () => {
    const st = one('CREATE TABLE app.t (id int PRIMARY KEY, name text)');
    expect(st.node).toBe('CreateStmt');
    expect(st.kind).toBe('ddl');
    expect(st.kinds).toEqual(['ddl']);
    expect(st.relations).toEqual([{ schema: 'app', name: 't', access: 'ddl' }]);
  });

  it('classifies ALTER TABLE as ddl on its table', () => {
    const st = one('ALTER TABLE t ADD COLUMN c int');
    expect(st.kind).toBe('ddl');
    expect(st.relations).toEqual([{ name: 't', access: 'ddl' }]);
  });

  it('classifies DROP TABLE with every object named, schema kept', () => {
    const st = one('DROP TABLE a.b, c CASCADE');
    expect(st.node).toBe('DropStmt');
    expect(st.kind).toBe('ddl');
    expect(st.relations).toEqual([
      { schema: 'a', name: 'b', access: 'ddl' },
      { name: 'c', access: 'ddl' },
    ]);
  });

  it('keeps the case of a quoted dropped table', () => {
    expect(one('DROP TABLE "Users"').relations).toEqual([{ name: 'Users', access: 'ddl' }]);
  });

  it('classifies TRUNCATE as ddl (it removes every row at once, without DELETE triggers)', () => {
    const st = one('TRUNCATE a.b, c');
    expect(st.node).toBe('TruncateStmt');
    expect(st.kind).toBe('ddl');
    expect(st.kinds).toEqual(['ddl']);
    expect(st.relations).toEqual([
      { schema: 'a', name: 'b', access: 'ddl' },
      { name: 'c', access: 'ddl' },
    ]);
  });

  it('classifies CREATE INDEX as ddl and finds functions in index expressions', () => {
    const st = one("CREATE INDEX ON t ((pg_read_file('x')))");
    expect(st.kind).toBe('ddl');
    expect(st.relations).toEqual([{ name: 't', access: 'ddl' }]);
    expect(st.functions).toEqual(['pg_read_file']);
  });

  it('finds functions in column defaults of CREATE TABLE', () => {
    expect(one("CREATE TABLE t (a text DEFAULT pg_read_file('x'))").functions).toEqual(['pg_read_file']);
  });

  it('classifies CREATE VIEW as ddl on the view and a read of its source', () => {
    const st = one('CREATE VIEW v AS SELECT * FROM secret');
    expect(st.kind).toBe('ddl');
    expect(st.relations).toEqual([
      { name: 'v', access: 'ddl' },
      { name: 'secret', access: 'read' },
    ]);
  });

  it('classifies CREATE TRIGGER and CREATE RULE as ddl on their table', () => {
    const trig = one('CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()');
    expect(trig.kind).toBe('ddl');
    expect(trig.relations).toContainEqual({ name: 't', access: 'ddl' });
    const rule = one('CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM u');
    expect(rule.kinds).toContain('ddl');
    expect(rule.relations).toContainEqual({ name: 't', access: 'ddl' });
  });

  it('finds the table a COMMENT ON TABLE / VIEW / COLUMN targets, but not other objects', () => {
    expect(one("COMMENT ON TABLE app.payroll IS 'x'").relations).toEqual([{ schema: 'app', name: 'payroll', access: 'ddl' }]);
    expect(one("COMMENT ON VIEW v IS 'x'").relations).toEqual([{ name: 'v', access: 'ddl' }]);
    expect(one("COMMENT ON COLUMN app.payroll.amount IS 'x'").relations).toEqual([{ schema: 'app', name: 'payroll', access: 'ddl' }]);
    expect(one("COMMENT ON COLUMN payroll.amount IS 'x'").relations).toEqual([{ name: 'payroll', access: 'ddl' }]);
    expect(one("COMMENT ON SCHEMA app IS 'x'").relations).toEqual([]);
  });

  it('classifies REFRESH MATERIALIZED VIEW as ddl', () => {
    expect(one('REFRESH MATERIALIZED VIEW v').kind).toBe('ddl');
  });

  it('classifies statement types without an explicit entry as ddl (COMMENT, SECURITY LABEL, CREATE STATISTICS)', () => {
    expect(one("COMMENT ON TABLE t IS 'x'").kind).toBe('ddl');
    expect(one("SECURITY LABEL ON TABLE t IS 'x'").kind).toBe('ddl');
    expect(one('CREATE STATISTICS s ON a, b FROM t').kind).toBe('ddl');
    expect(one('CREATE ACCESS METHOD x TYPE TABLE HANDLER h').kind).toBe('ddl');
  });

  it('classifies an unknown, future statement node as ddl and still finds what it names', () => {
    const st = classifyStatement({
      FutureShinyStmt: { relation: { relname: 'accounts', schemaname: 'app' }, expr: { FuncCall: { funcname: [{ String: { sval: 'pg_read_file' } }] } } },
    });
    expect(st.node).toBe('FutureShinyStmt');
    expect(st.kind).toBe('ddl');
    expect(st.kinds).toEqual(['ddl']);
    expect(st.relations).toEqual([{ schema: 'app', name: 'accounts', access: 'ddl' }]);
    expect(st.functions).toEqual(['pg_read_file']);
  });

  it('classifies each statement of a multi-statement schema change', () => {
    const list = statements('CREATE TABLE a (x int); ALTER TABLE a ADD COLUMN y int; DROP TABLE b');
    expect(list.map((s) => s.node)).toEqual(['CreateStmt', 'AlterTableStmt', 'DropStmt']);
    expect(list.every((s) => s.kind === 'ddl')).toBe(true);
    expect(list[2]?.relations).toEqual([{ name: 'b', access: 'ddl' }]);
  });
});

describe('classify: statements that create tables from queries', () => {
  it('gives SELECT ... INTO t the export and ddl kinds', () => {
    const st = one('SELECT * INTO t FROM x');
    expect(st.node).toBe('SelectStmt');
    expect(st.kinds).toEqual(expect.arrayContaining(['read', 'export', 'ddl']));
  });

  it('reports the table SELECT ... INTO creates with ddl access, and its source as read', () => {
    const st = one('SELECT * INTO t FROM x');
    expect(st.relations).toContainEqual({ name: 't', access: 'ddl' });
    expect(st.relations).toContainEqual({ name: 'x', access: 'read' });
  });

  it('gives CREATE TABLE AS the export kind first, and ddl too', () => {
    const st = one('CREATE TABLE x AS SELECT * FROM s.t');
    expect(st.node).toBe('CreateTableAsStmt');
    expect(st.kind).toBe('export');
    expect(st.kinds).toEqual(expect.arrayContaining(['export', 'ddl']));
    expect(st.relations).toEqual(
      expect.arrayContaining([
        { name: 'x', access: 'ddl' },
        { schema: 's', name: 't', access: 'read' },
      ]),
    );
    expect(st.relations).toHaveLength(2);
  });

  it('treats CREATE MATERIALIZED VIEW like CREATE TABLE AS', () => {
    const st = one('CREATE MATERIALIZED VIEW mv AS SELECT * FROM t');
    expect(st.kinds).toEqual(expect.arrayContaining(['export', 'ddl']));
    expect(st.relations).toContainEqual({ name: 't', access: 'read' });
  });
});

describe('classify: privileges', () => {
  it('classifies GRANT and REVOKE on a table as privilege changes naming the table', () => {
    const grant = one('GRANT SELECT ON t TO bob');
    expect(grant.node).toBe('GrantStmt');
    expect(grant.kind).toBe('privilege');
    expect(grant.relations.map((r) => r.name)).toEqual(['t']);
    const revoke = one('REVOKE ALL ON t FROM bob');
    expect(revoke.kind).toBe('privilege');
    expect(revoke.relations.map((r) => r.name)).toEqual(['t']);
  });

  it('classifies GRANT of a role, CREATE ROLE and ALTER ROLE as privilege changes', () => {
    expect(one('GRANT admin TO bob').kind).toBe('privilege');
    expect(one('CREATE ROLE eve LOGIN SUPERUSER').kind).toBe('privilege');
    expect(one('ALTER ROLE agent SUPERUSER').kind).toBe('privilege');
    expect(one('ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob').kind).toBe('privilege');
  });

  it('classifies row-level security policies as privilege changes', () => {
    expect(one('CREATE POLICY p ON t USING (true)').kind).toBe('privilege');
  });
});

describe('classify: server administration', () => {
  it('classifies ALTER SYSTEM as admin and reports the setting it changes', () => {
    const st = one("ALTER SYSTEM SET work_mem = '1GB'");
    expect(st.node).toBe('AlterSystemStmt');
    expect(st.kind).toBe('admin');
    expect(st.settings).toEqual([{ name: 'work_mem', value: '1GB', local: false, via: 'alter-system' }]);
  });

  it('classifies VACUUM, ANALYZE-less VACUUM FULL and CLUSTER as admin', () => {
    const v = one('VACUUM t');
    expect(v.kind).toBe('admin');
    expect(v.relations.map((r) => r.name)).toEqual(['t']);
    expect(one('VACUUM FULL ANALYZE').kind).toBe('admin');
    expect(one('CLUSTER t USING t_pkey').kind).toBe('admin');
  });

  it('classifies extensions, LOAD, databases and CHECKPOINT as admin', () => {
    expect(one('CREATE EXTENSION dblink').kind).toBe('admin');
    expect(one("LOAD 'plugin'").kind).toBe('admin');
    expect(one('CREATE DATABASE d').kind).toBe('admin');
    expect(one('DROP DATABASE d').kind).toBe('admin');
    expect(one('CHECKPOINT').kind).toBe('admin');
  });

  it('classifies foreign servers and user mappings as admin', () => {
    expect(one("CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'evil')").kind).toBe('admin');
    expect(one("CREATE USER MAPPING FOR agent SERVER s OPTIONS (user 'u')").kind).toBe('admin');
  });
});
