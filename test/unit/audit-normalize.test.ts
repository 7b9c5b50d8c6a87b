import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { normalizeSql, SqlNormalizer } from '../../src/audit/normalize-sql.js';
import { loadParser } from '../../src/classify/classifier.js';

beforeAll(async () => {
  await loadParser();
});

/** Asserts that `secret` reaches neither the normalized text nor the fingerprint. */
function expectGone(sql: string, secret: string): void {
  expect(sql).toContain(secret); // the case is meaningful
  const r = normalizeSql(sql);
  expect(r.text).not.toContain(secret);
  expect(r.fingerprint).not.toContain(secret);
}

describe('normalizeSql: no literal survives', () => {
  it.each([
    ["SELECT * FROM t WHERE name = 'sekrit'", 'sekrit', 'SELECT * FROM t WHERE name = $1'],
    ["SELECT * FROM t WHERE name = 'it''s sekrit'", "it''s sekrit", 'SELECT * FROM t WHERE name = $1'],
    ["SELECT * FROM t WHERE name = 'it''s sekrit'", 'sekrit', 'SELECT * FROM t WHERE name = $1'],
    ["SELECT E'back\\\\slash\\'sekrit'", 'sekrit', 'SELECT $1'],
    ["SELECT e'lower sekrit\\n'", 'sekrit', 'SELECT $1'],
    ["SELECT U&'sekr\\0069t'", 'sekr', 'SELECT $1'],
    ["SELECT U&'sekr!0069t' UESCAPE '!'", 'sekr', 'SELECT $1 UESCAPE $2'],
    ["SELECT B'1011001'", '1011001', 'SELECT $1'],
    ["SELECT X'deadbeef'", 'deadbeef', 'SELECT $1'],
    ['SELECT $$dollar sekrit$$', 'sekrit', 'SELECT $1'],
    ["SELECT $pw$it's a $$ sekrit$pw$", 'sekrit', 'SELECT $1'],
    ['SELECT * FROM cards WHERE pan = 4111111111111111', '4111111111111111', 'SELECT * FROM cards WHERE pan = $1'],
    ['SELECT * FROM t WHERE amount > 1234.5678', '1234.5678', 'SELECT * FROM t WHERE amount > $1'],
    ['SELECT * FROM t WHERE x < .98765', '98765', 'SELECT * FROM t WHERE x < $1'],
    ['SELECT 6.02214076e23', '6.02214076', 'SELECT $1'],
    ['SELECT 9876E-5', '9876', 'SELECT $1'],
    ['SELECT * FROM t WHERE balance = -987654', '987654', 'SELECT * FROM t WHERE balance = -$1'],
    ['SELECT 0xBEEF, 0o7654, 0b1011', 'BEEF', 'SELECT $1, $2, $3'],
    ['SELECT 1_234_567', '234', 'SELECT $1'],
    ["SELECT now() - interval '17 days'", '17 days', 'SELECT now() - interval $1'],
    ["SELECT 'sekrit'::text, 31337::int", '31337', 'SELECT $1::text, $2::int'],
  ])('%s', (sql, secret, text) => {
    expectGone(sql, secret);
    expect(normalizeSql(sql).text).toBe(text);
  });

  it("replaces N'..' national strings (the lexer gives the N as its own token)", () => {
    const r = normalizeSql("SELECT N'sekrit'");
    expect(r.text).toBe('SELECT N$1');
    expectGone("SELECT N'sekrit'", 'sekrit');
  });

  it('replaces every constant of a statement that mixes all kinds, in order', () => {
    const sql = "SELECT 'a''b', E'x\\\\y', U&'d\\0061t', B'101', X'ff', $$d$$, $t$q$t$, 42, 3.14, 1e5, -7, .5, interval '1 day'";
    expect(normalizeSql(sql).text).toBe('SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, -$11, $12, interval $13');
  });
});

describe('normalizeSql: DDL and utility statements keep no literal either', () => {
  it.each([
    ["CREATE TABLE t (a text DEFAULT 'xdefault', b text CHECK (b <> 'ycheck'))", ['xdefault', 'ycheck'], 'CREATE TABLE t (a text DEFAULT $1, b text CHECK (b <> $2))'],
    ["ALTER ROLE bob PASSWORD 'hunter2'", ['hunter2'], 'ALTER ROLE bob PASSWORD $1'],
    ["CREATE ROLE carol LOGIN PASSWORD 'Tr0ub4dor&3' VALID UNTIL '2031-01-01'", ['Tr0ub4dor', '2031'], 'CREATE ROLE carol LOGIN PASSWORD $1 VALID UNTIL $2'],
    ["CREATE USER MAPPING FOR bob SERVER remote OPTIONS (user 'remote_bob', password 'pw-s3cret')", ['remote_bob', 'pw-s3cret'], 'CREATE USER MAPPING FOR bob SERVER remote OPTIONS (user $1, password $2)'],
    ["CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'db.internal.example', port '5433')", ['db.internal', '5433'], 'CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host $1, port $2)'],
    ["COMMENT ON TABLE t IS 'the secret plan'", ['secret plan'], 'COMMENT ON TABLE t IS $1'],
    ["COPY t TO '/tmp/secret.csv' WITH (FORMAT csv, DELIMITER ';')", ['/tmp/secret.csv', ';'], 'COPY t TO $1 WITH (FORMAT csv, DELIMITER $2)'],
    ["PREPARE p AS SELECT * FROM t WHERE a = 'preparedsecret'", ['preparedsecret'], 'PREPARE p AS SELECT * FROM t WHERE a = $1'],
    ["EXECUTE p('execsecret', 99887)", ['execsecret', '99887'], 'EXECUTE p($1, $2)'],
    ["DO $$ BEGIN RAISE NOTICE 'dosecret'; END $$", ['dosecret', 'RAISE'], 'DO $1'],
    ["DO $body$ BEGIN PERFORM set_config('app.key', 'k3y', false); END $body$ LANGUAGE plpgsql", ['k3y', 'app.key'], 'DO $1 LANGUAGE plpgsql'],
    ["NOTIFY ch, 'payloadsecret'", ['payloadsecret'], 'NOTIFY ch, $1'],
    ["SET search_path = 'hiddenschema'", ['hiddenschema'], 'SET search_path = $1'],
    ["ALTER SYSTEM SET ssl_passphrase_command = 'echo letmein'", ['letmein'], 'ALTER SYSTEM SET ssl_passphrase_command = $1'],
    ["CREATE FUNCTION f() RETURNS int AS 'SELECT 424242' LANGUAGE sql", ['424242'], 'CREATE FUNCTION f() RETURNS int AS $1 LANGUAGE sql'],
  ])('%s', (sql, secrets, text) => {
    for (const s of secrets) expectGone(sql, s);
    expect(normalizeSql(sql).text).toBe(text);
  });
});

describe('normalizeSql: shape of the text', () => {
  it('drops -- and /* */ comments, which may hold secrets', () => {
    const r = normalizeSql("SELECT a /* password=hunter2 */ FROM t -- token abc123\nWHERE b = 1 /* nested /* deeper */ still */");
    expect(r.text).toBe('SELECT a FROM t WHERE b = $1');
    for (const s of ['hunter2', 'abc123', 'nested', 'still', '--', '/*']) expect(r.text).not.toContain(s);
  });

  it("numbers placeholders after the statement's own $n parameters", () => {
    expect(normalizeSql("SELECT * FROM t WHERE b = $2 AND c = 'k' AND d = $1 AND e = 5").text).toBe(
      'SELECT * FROM t WHERE b = $2 AND c = $3 AND d = $1 AND e = $4',
    );
    expect(normalizeSql("SELECT $7, 'x'").text).toBe('SELECT $7, $8');
  });

  it('collapses whitespace, tabs and newlines to single spaces and trims the ends', () => {
    expect(normalizeSql('  SELECT\ta,\n\n   b\r\n  FROM   t  ;  ').text).toBe('SELECT a, b FROM t ;');
  });

  it('does not add spaces where the input had none', () => {
    expect(normalizeSql('SELECT f(a,b)::int FROM s.t').text).toBe('SELECT f(a,b)::int FROM s.t');
  });

  it('keeps identifiers, including quoted ones with spaces and capitals', () => {
    const r = normalizeSql('SELECT  "Customer Name", c.email   FROM   "Sales"."Big Table" AS c WHERE c.id = 3');
    expect(r.text).toBe('SELECT "Customer Name", c.email FROM "Sales"."Big Table" AS c WHERE c.id = $1');
  });

  it('keeps keywords, booleans and NULL, which are not constants to hide', () => {
    expect(normalizeSql('SELECT true, false, NULL FROM t').text).toBe('SELECT true, false, NULL FROM t');
  });

  it('returns a statement without literals unchanged apart from whitespace', () => {
    expect(normalizeSql('SELECT a FROM t').text).toBe('SELECT a FROM t');
  });
});

describe('normalizeSql: text the lexer rejects', () => {
  it.each([
    ["SELECT * FROM users WHERE password = 'hunter2", 'hunter2'],
    ['SELECT $$never closed hunter2', 'hunter2'],
    ['SELECT 1 /* comment hunter2', 'hunter2'],
    ["SELECT E'hunter2", 'hunter2'],
  ])('stores only the length of %s', (sql, secret) => {
    const r = normalizeSql(sql);
    expect(r).toEqual({ text: `<statement the lexer rejects: ${Buffer.byteLength(sql)} bytes>`, fingerprint: 'unscannable' });
    expect(r.text).not.toContain(secret);
    expect(r.text).not.toContain('SELECT');
  });

  it('counts bytes, not characters', () => {
    expect(normalizeSql("SELECT 'é").text).toBe('<statement the lexer rejects: 10 bytes>');
  });
});

describe('normalizeSql: fingerprints', () => {
  const sha16 = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 16);

  it('is the first 16 hex digits of the sha256 of the normalized text', () => {
    for (const sql of ["SELECT * FROM orders WHERE id = 1 AND note = 'a'", 'DROP TABLE orders', "ALTER ROLE bob PASSWORD 'hunter2'"]) {
      const r = normalizeSql(sql);
      expect(r.fingerprint).toMatch(/^[0-9a-f]{16}$/);
      expect(r.fingerprint).toBe(sha16(r.text));
    }
    expect(normalizeSql('SELECT 1').fingerprint).toBe(sha16('SELECT $1'));
  });

  it('gives the same text and fingerprint for the same statement with other literals, whitespace and comments', () => {
    const a = normalizeSql("SELECT * FROM orders WHERE id = 1 AND note = 'a'");
    const b = normalizeSql("SELECT *\n  FROM orders   WHERE id = 987654 AND note = 'completely different' -- hi");
    expect(b).toEqual(a);
    expect(normalizeSql("SELECT * /* c */ FROM orders WHERE id = 987654 AND note = 'zz'")).toEqual(a);
  });

  it('tells apart texts that differ beyond whitespace, comments and constants (keyword case, spacing around punctuation)', () => {
    const a = normalizeSql("SELECT * FROM orders WHERE id = 1 AND note = 'a'");
    expect(normalizeSql("select * from orders where id = 1 and note = 'a'").fingerprint).not.toBe(a.fingerprint);
    expect(normalizeSql("SELECT * FROM orders WHERE id=1 AND note='a'").fingerprint).not.toBe(a.fingerprint);
  });

  it('gives different fingerprints to different statements', () => {
    const fps = [
      'SELECT * FROM orders WHERE id = 1',
      'SELECT * FROM customers WHERE id = 1',
      'SELECT id FROM orders WHERE id = 1',
      'DELETE FROM orders WHERE id = 1',
      'UPDATE orders SET id = 1',
    ].map((s) => normalizeSql(s).fingerprint);
    expect(new Set(fps).size).toBe(5);
    for (const fp of fps) expect(fp).toMatch(/^[0-9a-f]{16}$/);
  });

  it.each([
    ["CREATE TABLE t (a text DEFAULT 'x', b text CHECK (b <> 'y'))", "CREATE TABLE t (a text DEFAULT 'p', b text CHECK (b <> 'q'))"],
    ["PREPARE p AS SELECT 'x'", "PREPARE p AS SELECT 'y'"],
    ["EXECUTE p('secret')", "EXECUTE p('other')"],
    ["DO $$ BEGIN RAISE NOTICE 'secret'; END $$", "DO $$ BEGIN RAISE NOTICE 'other'; END $$"],
    ["SET search_path = 'x'", "SET search_path = 'y'"],
    ["ALTER SYSTEM SET work_mem = '64MB'", "ALTER SYSTEM SET work_mem = '1GB'"],
    ["SELECT now() - interval '1 day'", "SELECT now() - interval '30 days'"],
  ])('gives one fingerprint whatever the literal: %s', (a, b) => {
    expect(normalizeSql(b)).toEqual(normalizeSql(a));
  });

  // libpg_query's fingerprint kept these values (String nodes, not A_Const), so a guessed
  // password could be confirmed offline against the audit log; the sha256 of the normalized
  // text cannot depend on them.
  it.each([
    ["ALTER ROLE bob PASSWORD 'hunter2'", "ALTER ROLE bob PASSWORD 'other'"],
    ["CREATE ROLE bob PASSWORD 'hunter2'", "CREATE ROLE bob PASSWORD 'other'"],
    ["CREATE USER MAPPING FOR bob SERVER s OPTIONS (password 'pw')", "CREATE USER MAPPING FOR bob SERVER s OPTIONS (password 'zz')"],
    ["CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'secret.example')", "CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'o')"],
    ["COMMENT ON TABLE t IS 'secret'", "COMMENT ON TABLE t IS 'other'"],
    ["COPY t TO '/tmp/secret.csv'", "COPY t TO '/tmp/other.csv'"],
    ["NOTIFY ch, 'payload'", "NOTIFY ch, 'other'"],
  ])('gives one fingerprint whatever the literal (no value leaks through it): %s', (a, b) => {
    expect(normalizeSql(b).text).toBe(normalizeSql(a).text);
    expect(normalizeSql(b).fingerprint).toBe(normalizeSql(a).fingerprint);
    expect(normalizeSql(a).fingerprint).toBe(sha16(normalizeSql(a).text));
  });

  it('fingerprints a statement the parser rejects (but the lexer accepts) like any other', () => {
    const a = normalizeSql("SELECT 'a' 'b' FROM t");
    expect(a.text).toBe('SELECT $1 $2 FROM t');
    expect(a.fingerprint).toBe(sha16('SELECT $1 $2 FROM t'));
    expect(normalizeSql("SELECT 'c' 'd' FROM t").fingerprint).toBe(a.fingerprint);
    expect(normalizeSql("SELECT 'c' 'd' FROM u").fingerprint).not.toBe(a.fingerprint);
  });
});

describe('SqlNormalizer', () => {
  it('gives what normalizeSql gives for texts that share a literal key', () => {
    const n = new SqlNormalizer();
    const texts = [
      'SELECT * FROM t WHERE a = 1',
      'SELECT * FROM t WHERE a = 2',
      'SELECT * FROM t WHERE a = 31337',
      'SELECT * FROM t WHERE a = 2.5',
      "SELECT * FROM t WHERE a = 'x' AND b = 7 -- note 1\n",
      "SELECT * FROM t WHERE a = 'secret value' AND b = 8 -- note 1\n",
      "UPDATE pgbench_accounts SET abalance = abalance + -4000 WHERE aid = 12;",
      "UPDATE pgbench_accounts SET abalance = abalance + 17 WHERE aid = 99999;",
    ];
    for (const sql of texts) {
      const r = n.normalize(sql);
      expect(r).toEqual(normalizeSql(sql));
      expect(r.text).not.toContain('31337');
      expect(r.text).not.toContain('secret value');
    }
  });

  it('reuses the cached result for texts that differ only in simple literals', () => {
    const n = new SqlNormalizer();
    const a = n.normalize('SELECT * FROM t WHERE a = 1');
    const b = n.normalize('SELECT * FROM t WHERE a = 2');
    expect(b).toBe(a);
    expect(b).toEqual({ text: 'SELECT * FROM t WHERE a = $1', fingerprint: normalizeSql('SELECT * FROM t WHERE a = 2').fingerprint });
  });

  it('keeps texts with different structure apart', () => {
    const n = new SqlNormalizer();
    const a = n.normalize('SELECT * FROM t WHERE a = 1');
    const b = n.normalize("SELECT * FROM t WHERE a = '1'");
    const c = n.normalize('SELECT * FROM u WHERE a = 1');
    expect(a.text).toBe('SELECT * FROM t WHERE a = $1');
    expect(b.text).toBe('SELECT * FROM t WHERE a = $1');
    expect(c.text).toBe('SELECT * FROM u WHERE a = $1');
    expect(c.fingerprint).not.toBe(a.fingerprint);
  });

  it('gives the same result for a repeated exact text the literal key does not cover', () => {
    const n = new SqlNormalizer();
    for (const sql of ["SELECT E'x\\ny' FROM t", 'SELECT $$a$$', 'SELECT a FROM t', "SELECT 'unterminated"]) {
      const first = n.normalize(sql);
      expect(first).toEqual(normalizeSql(sql));
      expect(n.normalize(sql)).toBe(first);
    }
  });

  it('never answers a text the lexer rejects with the result of a valid one', () => {
    const n = new SqlNormalizer();
    n.normalize("SELECT * FROM t WHERE a = 'x'");
    expect(n.normalize("SELECT * FROM t WHERE a = 'x")).toEqual({ text: '<statement the lexer rejects: 28 bytes>', fingerprint: 'unscannable' });
  });

  it('still answers correctly once the caches have evicted entries', () => {
    const n = new SqlNormalizer(2);
    const texts = ['SELECT a FROM t1', 'SELECT a FROM t2 WHERE x = 1', 'SELECT a FROM t3', "SELECT a FROM t4 WHERE y = 'q'", 'SELECT a FROM t1', 'SELECT a FROM t2 WHERE x = 5'];
    for (const sql of texts) expect(n.normalize(sql)).toEqual(normalizeSql(sql));
  });
});
