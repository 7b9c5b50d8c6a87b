import { beforeAll, describe, expect, it } from 'vitest';
import { classifyUncached, loadParser } from '../../src/classify/classifier.js';
import type { StatementInfo } from '../../src/classify/statement-info.js';
import { one, statements } from '../helpers/classify.js';

/**
 * Classification of session statements: SET/RESET/SHOW, settings changed through every route
 * (SET, SET LOCAL, set_config, ALTER ROLE/DATABASE ... SET, ALTER SYSTEM), privilege switches,
 * LISTEN/NOTIFY, SQL-level prepared statements and cursors.
 */
beforeAll(async () => {
  await loadParser();
});

describe('classify: SET, RESET, SHOW', () => {
  it('classifies SET as a session statement reporting the setting and its value', () => {
    const st = one("SET statement_timeout = '5s'");
    expect(st.node).toBe('VariableSetStmt');
    expect(st.kind).toBe('session');
    expect(st.kinds).toEqual(['session']);
    expect(st.settings).toEqual([{ name: 'statement_timeout', value: '5s', local: false, via: 'set' }]);
  });

  it('reports SET LOCAL as local', () => {
    expect(one('SET LOCAL statement_timeout = 5').settings).toEqual([
      { name: 'statement_timeout', value: '5', local: true, via: 'set' },
    ]);
  });

  it('reports every schema of SET search_path', () => {
    expect(one('SET search_path = a, b').settings).toEqual([{ name: 'search_path', value: 'a, b', local: false, via: 'set' }]);
  });

  it('lower-cases the setting name', () => {
    expect(one('SET Search_Path TO x').settings[0]?.name).toBe('search_path');
  });

  it('reports RESET and SET ... TO DEFAULT as resets without a value', () => {
    expect(one('RESET search_path').settings).toEqual([{ name: 'search_path', local: false, via: 'reset' }]);
    expect(one('SET work_mem TO DEFAULT').settings).toEqual([{ name: 'work_mem', local: false, via: 'reset' }]);
  });

  it('reports SET TIME ZONE and SET NAMES under their real setting names', () => {
    expect(one("SET TIME ZONE 'UTC'").settings).toEqual([{ name: 'timezone', value: 'UTC', local: false, via: 'set' }]);
    expect(one("SET NAMES 'SJIS'").settings).toEqual([{ name: 'client_encoding', value: 'SJIS', local: false, via: 'set' }]);
  });

  it('classifies SHOW and DISCARD as session statements that change no setting', () => {
    const show = one('SHOW work_mem');
    expect(show.kind).toBe('session');
    expect(show.settings).toEqual([]);
    expect(one('DISCARD ALL').kind).toBe('session');
  });
});

describe('classify: privilege switches', () => {
  it('classifies SET ROLE as privilege', () => {
    const st = one('SET ROLE postgres');
    expect(st.kind).toBe('privilege');
    expect(st.kinds).toEqual(['privilege']);
    expect(st.settings).toEqual([{ name: 'role', value: 'postgres', local: false, via: 'set' }]);
  });

  it('classifies SET LOCAL ROLE and SET ROLE NONE as privilege', () => {
    expect(one('SET LOCAL ROLE postgres').kind).toBe('privilege');
    expect(one('SET ROLE NONE').kind).toBe('privilege');
  });

  it('classifies SET SESSION AUTHORIZATION as privilege', () => {
    const st = one('SET SESSION AUTHORIZATION postgres');
    expect(st.kind).toBe('privilege');
    expect(st.settings).toEqual([{ name: 'session_authorization', value: 'postgres', local: false, via: 'set' }]);
  });

  it('classifies RESET ROLE and RESET SESSION AUTHORIZATION as privilege', () => {
    const st = one('RESET ROLE');
    expect(st.kind).toBe('privilege');
    expect(st.settings).toEqual([{ name: 'role', local: false, via: 'reset' }]);
    expect(one('RESET SESSION AUTHORIZATION').kind).toBe('privilege');
  });

  it('classifies RESET ALL as privilege (it resets the role too)', () => {
    const st = one('RESET ALL');
    expect(st.kind).toBe('privilege');
    expect(st.settings).toEqual([{ name: 'all', local: false, via: 'reset' }]);
  });

  it('does not classify an ordinary SET as privilege', () => {
    expect(one('SET work_mem = 1024').kinds).toEqual(['session']);
  });
});

describe('classify: standard_conforming_strings through every route', () => {
  it('reports SET standard_conforming_strings = off', () => {
    expect(one('SET standard_conforming_strings = off').settings).toEqual([
      { name: 'standard_conforming_strings', value: 'off', local: false, via: 'set' },
    ]);
  });

  it("reports SET standard_conforming_strings TO 'off' and = false", () => {
    expect(one("SET standard_conforming_strings TO 'off'").settings[0]?.value).toBe('off');
    expect(one('SET standard_conforming_strings = false').settings[0]?.value).toBe('false');
  });

  it('reports SET LOCAL standard_conforming_strings as local', () => {
    expect(one('SET LOCAL standard_conforming_strings TO off').settings).toEqual([
      { name: 'standard_conforming_strings', value: 'off', local: true, via: 'set' },
    ]);
  });

  it("pins set_config(name, …) FROM pg_settings WHERE name = '…' (pg_dump ≥ 15.8) to that setting, and nothing looser", () => {
    const dump = one("SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'");
    expect(dump.settings).toEqual([{ name: 'restrict_nonsystem_relation_kind', value: 'view, foreign-table', local: false, via: 'set_config' }]);
    expect(dump.unanalysable).toEqual([]);
    // A privilege setting pinned so is reported as such (and then denied by the rules).
    expect(one("SELECT set_config(name, 'admin', false) FROM pg_catalog.pg_settings WHERE 'role' = name").settings[0]?.name).toBe('role');
    for (const sql of [
      "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name LIKE 'rest%'",
      "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name = 'a' OR true",
      "SELECT set_config(name, 'x', false) FROM other.pg_settings WHERE name = 'a'",
      "SELECT set_config(name, 'x', false) FROM pg_settings, t WHERE name = 'a'",
      "SELECT set_config(name, 'x', false) FROM t WHERE name = 'a'",
      "SELECT (SELECT set_config(name, 'x', false) FROM t) FROM pg_settings WHERE name = 'a'",
    ]) {
      expect(one(sql).unanalysable, sql).toContain('set_config() with a computed setting name');
    }
  });

  it('reports set_config of standard_conforming_strings, local flag included', () => {
    expect(one("SELECT set_config('standard_conforming_strings', 'off', true)").settings).toEqual([
      { name: 'standard_conforming_strings', value: 'off', local: true, via: 'set_config' },
    ]);
    expect(one("SELECT set_config('standard_conforming_strings', 'off', false)").settings[0]?.local).toBe(false);
  });

  it('reports ALTER ROLE ... SET standard_conforming_strings', () => {
    const st = one('ALTER ROLE agent SET standard_conforming_strings = off');
    expect(st.kind).toBe('privilege');
    expect(st.settings).toEqual([{ name: 'standard_conforming_strings', value: 'off', local: false, via: 'alter-role' }]);
  });

  it('reports ALTER ROLE ... IN DATABASE ... SET client_encoding', () => {
    expect(one("ALTER ROLE agent IN DATABASE app SET client_encoding = 'SJIS'").settings).toEqual([
      { name: 'client_encoding', value: 'SJIS', local: false, via: 'alter-role' },
    ]);
  });

  it('reports ALTER DATABASE ... SET standard_conforming_strings', () => {
    const st = one('ALTER DATABASE app SET standard_conforming_strings TO off');
    expect(st.kind).toBe('admin');
    expect(st.settings).toEqual([{ name: 'standard_conforming_strings', value: 'off', local: false, via: 'alter-database' }]);
  });

  it('reports ALTER SYSTEM SET standard_conforming_strings', () => {
    expect(one('ALTER SYSTEM SET standard_conforming_strings = off').settings).toEqual([
      { name: 'standard_conforming_strings', value: 'off', local: false, via: 'alter-system' },
    ]);
  });

  it('gives ALTER DATABASE ... SET role the privilege kind', () => {
    const st = one("ALTER DATABASE app SET role = 'postgres'");
    expect(st.kinds).toContain('privilege');
  });
});

describe('classify: LISTEN and NOTIFY', () => {
  it('classifies LISTEN, UNLISTEN and NOTIFY as utility', () => {
    expect(one('LISTEN ch').kind).toBe('utility');
    expect(one('UNLISTEN *').kind).toBe('utility');
    const notify = one("NOTIFY ch, 'payload'");
    expect(notify.kind).toBe('utility');
    expect(notify.relations).toEqual([]);
  });

  it('finds functions in pg_notify called from a SELECT', () => {
    const st = one("SELECT pg_notify('ch', 'x')");
    expect(st.kind).toBe('read');
    expect(st.functions).toEqual(['pg_notify']);
  });
});

describe('classify: SQL-level prepared statements', () => {
  it('classifies PREPARE as what it prepares, and defines the name', () => {
    const st = one('PREPARE q AS DELETE FROM t WHERE id = $1');
    expect(st.node).toBe('PrepareStmt');
    expect(st.kind).toBe('write');
    expect(st.kinds).toEqual(['write']);
    expect(st.relations).toEqual([{ name: 't', access: 'write' }]);
    expect(st.defines).toEqual({ type: 'prepared', name: 'q' });
  });

  it('classifies PREPARE with parameter types of a SELECT as a read', () => {
    const st = one('PREPARE q(int) AS SELECT * FROM t WHERE id = $1');
    expect(st.kind).toBe('read');
    expect(st.defines).toEqual({ type: 'prepared', name: 'q' });
  });

  it('keeps the functions of the prepared statement', () => {
    expect(one("PREPARE q AS SELECT pg_read_file('x')").functions).toEqual(['pg_read_file']);
  });

  it('classifies EXECUTE as using the prepared statement by name', () => {
    const st = one('EXECUTE q(1)');
    expect(st.node).toBe('ExecuteStmt');
    expect(st.uses).toEqual({ type: 'prepared', name: 'q' });
    expect(st.defines).toBeUndefined();
  });

  it('finds functions in EXECUTE parameters', () => {
    expect(one("EXECUTE q(pg_read_file('/etc/passwd'))").functions).toEqual(['pg_read_file']);
  });

  it('classifies DEALLOCATE as a session statement', () => {
    expect(one('DEALLOCATE q').kind).toBe('session');
    expect(one('DEALLOCATE ALL').kind).toBe('session');
  });

  it('keeps a PREPARE and an EXECUTE in one string as two statements', () => {
    const list = statements('PREPARE q AS SELECT 1; EXECUTE q');
    expect(list.map((s) => s.defines?.name ?? s.uses?.name)).toEqual(['q', 'q']);
  });
});

describe('classify: cursors', () => {
  it('classifies DECLARE CURSOR as what it reads, and defines the cursor', () => {
    const st = one('DECLARE c CURSOR FOR SELECT * FROM t');
    expect(st.node).toBe('DeclareCursorStmt');
    expect(st.kind).toBe('read');
    expect(st.relations).toEqual([{ name: 't', access: 'read' }]);
    expect(st.defines).toEqual({ type: 'cursor', name: 'c' });
  });

  it('keeps the functions of the cursor query', () => {
    const st = one("DECLARE c CURSOR WITH HOLD FOR SELECT pg_read_file('x')");
    expect(st.functions).toEqual(['pg_read_file']);
    expect(st.defines).toEqual({ type: 'cursor', name: 'c' });
  });

  it('classifies FETCH and MOVE as using the cursor by name', () => {
    expect(one('FETCH 10 FROM c').uses).toEqual({ type: 'cursor', name: 'c' });
    expect(one('FETCH ALL IN c').uses).toEqual({ type: 'cursor', name: 'c' });
    expect(one('MOVE NEXT IN c').uses).toEqual({ type: 'cursor', name: 'c' });
  });

  it('classifies CLOSE as a session statement', () => {
    expect(one('CLOSE c').kind).toBe('session');
  });
});
