import { describe, expect, it } from 'vitest';
import { seal, type Sealed, type StoredRecord } from '../../src/audit/chain.js';
import type { AuditEvent } from '../../src/audit/events.js';
import { CSV_COLUMNS, csvHeader, csvRow, formatEntry } from '../../src/audit/format-entry.js';

const KEY = Buffer.from('format-test-key');
const TS = '2024-05-01T12:00:03.000Z';
const session = { id: 7, user: 'alice', database: 'shop', application: 'psql', client: '10.0.0.1:5000' };

/** Seals `event` as entry `seq` of chain pgw-a@1. */
const sealAt = (event: AuditEvent, seq = 3): Sealed => seal(event, 'pgw-a@1', seq > 1 ? { seq: seq - 1, hash: 'a'.repeat(64) } : null, KEY);

/** Seals `event` as entry `seq` of chain pgw-a@1 and stores it as a journal line (the sealed text as is). */
function rec(event: AuditEvent, seq = 3, where = 'audit.jsonl:3'): StoredRecord {
  return { where, raw: sealAt(event, seq).json };
}

const deniedEvent: AuditEvent = {
  v: 1,
  ts: TS,
  type: 'statement.denied',
  session,
  request: 'simple',
  statements: [
    { text: 'DELETE FROM orders WHERE id = $1', fingerprint: 'aaaa000011112222' },
    { text: 'DROP TABLE orders', fingerprint: 'bbbb000011112222' },
  ],
  kinds: ['delete', 'drop'],
  tables: ['public.orders'],
  rule: 'no-delete',
  sqlstate: '42501',
};

/** Splits one CSV record into cells (RFC 4180), so tests can check single columns. */
function parseCsv(line: string): string[] {
  const cells: string[] = [];
  let i = 0;
  for (;;) {
    let cell = '';
    if (line[i] === '"') {
      i++;
      for (;;) {
        if (line[i] === '"' && line[i + 1] === '"') {
          cell += '"';
          i += 2;
        } else if (line[i] === '"') {
          i++;
          break;
        } else cell += line[i++];
      }
    } else {
      while (i < line.length && line[i] !== ',') cell += line[i++];
    }
    cells.push(cell);
    if (i >= line.length) return cells;
    expect(line[i]).toBe(',');
    i++;
  }
}

function column(row: string, name: (typeof CSV_COLUMNS)[number]): string {
  return parseCsv(row)[CSV_COLUMNS.indexOf(name)]!;
}

describe('formatEntry', () => {
  it('shows a decision as one line: time, type, who, rule, sqlstate, tables, normalized SQL and chain position', () => {
    const line = formatEntry(rec(deniedEvent));
    expect(line).toBe(
      '2024-05-01T12:00:03.000Z  statement.denied     alice@shop (psql) from 10.0.0.1:5000 #7  ' +
        'rule=no-delete sqlstate=42501 tables=public.orders  ' +
        'DELETE FROM orders WHERE id = $1 ; DROP TABLE orders  [pgw-a@1#3]',
    );
    expect(line).not.toContain('\n');
  });

  it('never lets client-chosen text drive the terminal: control characters in names and SQL become spaces', () => {
    const hostile = {
      ...deniedEvent,
      session: { ...deniedEvent.session, application: 'x\n2024-05-01T12:00:04.000Z  statement.allowed  fake', user: 'al\u001b]0;owned\u0007ice' },
      statements: [{ text: 'SELECT "\u001b[2J" FROM t', fingerprint: 'f' }],
    };
    const line = formatEntry(rec(hostile));
    expect(line).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
    expect(line).toContain('al ]0;owned ice@shop (x 2024-05-01T12:00:04.000Z  statement.allowed  fake)');
    expect(line).toContain('SELECT " [2J" FROM t');
  });

  it('shows connection.closed with its request count and no SQL', () => {
    const closed: AuditEvent = { v: 1, ts: TS, type: 'connection.closed', session: { ...session, application: '' }, durationMs: 1234.5, statements: 12 };
    expect(formatEntry(rec(closed, 9))).toBe(
      '2024-05-01T12:00:03.000Z  connection.closed    alice@shop from 10.0.0.1:5000 #7  ms=1234.5 requests=12  [pgw-a@1#9]',
    );
  });

  it('shows an execution with its rows, affected rows, duration, decision and error', () => {
    const executed: AuditEvent = {
      v: 1,
      ts: TS,
      type: 'statement.executed',
      session,
      decisionSeq: 4,
      durationMs: 2.5,
      rowsReturned: 0,
      rowsAffected: 17,
      sqlstate: '23505',
    };
    expect(formatEntry(rec(executed, 5))).toBe(
      '2024-05-01T12:00:03.000Z  statement.executed   alice@shop (psql) from 10.0.0.1:5000 #7  sqlstate=23505 rows=0 affected=17 ms=2.5 of=4  [pgw-a@1#5]',
    );
  });

  it('shows an approval with reviewer, reason and wait', () => {
    const approved: AuditEvent = {
      v: 1,
      ts: TS,
      type: 'approval.denied',
      session,
      approvalId: 'ap-42',
      rule: 'needs-review',
      statements: [{ text: 'UPDATE t SET a = $1', fingerprint: 'f' }],
      reviewer: 'bob',
      reason: 'not now',
      waitMs: 3000,
    };
    expect(formatEntry(rec(approved, 1, 'x:1'))).toBe(
      '2024-05-01T12:00:03.000Z  approval.denied      alice@shop (psql) from 10.0.0.1:5000 #7  rule=needs-review approval=ap-42 reviewer=bob reason=not now wait_ms=3000  UPDATE t SET a = $1  [pgw-a@1#1]',
    );
  });

  it('shows an event without a session', () => {
    const reloaded: AuditEvent = { v: 1, ts: TS, type: 'rules.reloaded', version: 'r2', previous: 'r1', trigger: 'SIGHUP', files: ['rules.yaml'], rules: 4 };
    expect(formatEntry(rec(reloaded, 2))).toBe('2024-05-01T12:00:03.000Z  rules.reloaded       version=r2 trigger=SIGHUP  [pgw-a@1#2]');
  });

  it('says where an unreadable entry is instead of failing', () => {
    expect(formatEntry({ where: 'audit.jsonl:17', raw: '{"type":"statement.al' })).toBe('?? unreadable entry at audit.jsonl:17');
    expect(formatEntry({ where: '1700000000000-3', raw: '42' })).toBe('?? unreadable entry at 1700000000000-3');
    expect(formatEntry({ where: 'x:1', raw: 'null' })).toBe('?? unreadable entry at x:1');
  });

  it('marks missing type and chain position with ?', () => {
    expect(formatEntry({ where: 'x:1', raw: '{"ts":"T"}' })).toBe(`T  ${'?'.padEnd(19)}  [?#?]`);
  });
});

describe('csvHeader / csvRow', () => {
  it('has one header column per CSV column', () => {
    expect(csvHeader()).toBe(
      'ts,type,chain,seq,user,database,application,client,session,rule,sqlstate,tables,statements,fingerprints,reviewer,reason,approval_id,wait_ms,rows_returned,rows_affected,duration_ms,rules_version,hash',
    );
  });

  it('writes a decision as one row, lists joined with ;', () => {
    const r = rec({ ...deniedEvent, rulesVersion: 'r7', tables: ['public.orders', 'public.items'] });
    const row = csvRow(r);
    expect(row.startsWith(
      `${TS},statement.denied,pgw-a@1,3,alice,shop,psql,10.0.0.1:5000,7,no-delete,42501,public.orders;public.items,` +
        'DELETE FROM orders WHERE id = $1;DROP TABLE orders,aaaa000011112222;bbbb000011112222,,,,,,,,r7,',
    )).toBe(true);
    expect(parseCsv(row)).toHaveLength(CSV_COLUMNS.length);
  });

  // DEFECT (reported): entries no longer carry a `hash` field, their chain value is the trailing
  // `hmac`, but csvRow still reads e.hash, so the export's hash column is always empty.
  it('fills the hash column with the entry\'s chain value (its hmac)', () => {
    const sealed = sealAt(deniedEvent);
    const r: StoredRecord = { where: 'audit.jsonl:3', raw: sealed.json };
    expect(sealed.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(column(csvRow(r), 'hash')).toBe(sealed.hash);
  });

  it('reads the sealed text: chain and seq come from the chain fields seal added', () => {
    const sealed = sealAt(deniedEvent, 12);
    const row = csvRow({ where: 'x', raw: sealed.json });
    expect(column(row, 'chain')).toBe('pgw-a@1');
    expect(column(row, 'seq')).toBe('12');
    expect(formatEntry({ where: 'x', raw: sealed.json }).endsWith('[pgw-a@1#12]')).toBe(true);
  });

  it('writes connection.closed with its request count in the statements column', () => {
    const r = rec({ v: 1, ts: TS, type: 'connection.closed', session, durationMs: 10, statements: 12 });
    expect(column(csvRow(r), 'statements')).toBe('12');
    expect(column(csvRow(r), 'fingerprints')).toBe('');
    expect(column(csvRow(r), 'duration_ms')).toBe('10');
  });

  it('takes user, database and fingerprint of grants from the event itself', () => {
    const r = rec({ v: 1, ts: TS, type: 'grant.created', grantId: 'g1', reviewer: 'bob', user: 'carol', database: 'hr', fingerprint: 'abcd', expiresAt: TS });
    const cells = parseCsv(csvRow(r));
    expect(cells[CSV_COLUMNS.indexOf('user')]).toBe('carol');
    expect(cells[CSV_COLUMNS.indexOf('database')]).toBe('hr');
    expect(cells[CSV_COLUMNS.indexOf('fingerprints')]).toBe('abcd');
    expect(cells[CSV_COLUMNS.indexOf('reviewer')]).toBe('bob');
  });

  it('quotes cells with commas, quotes and newlines (RFC 4180)', () => {
    const r = rec({
      v: 1,
      ts: TS,
      type: 'approval.denied',
      session: { ...session, application: 'my app, v2' },
      approvalId: 'ap-1',
      rule: 'say "no"',
      statements: [],
      reviewer: 'bob',
      reason: 'line one\nline two\r\nend',
      waitMs: 5,
    });
    const row = csvRow(r);
    expect(row).toContain(',"my app, v2",');
    expect(row).toContain(',"say ""no""",');
    expect(row).toContain(',"line one\nline two\r\nend",');
    const cells = parseCsv(row);
    expect(cells).toHaveLength(CSV_COLUMNS.length);
    expect(cells[CSV_COLUMNS.indexOf('application')]).toBe('my app, v2');
    expect(cells[CSV_COLUMNS.indexOf('rule')]).toBe('say "no"');
    expect(cells[CSV_COLUMNS.indexOf('reason')]).toBe('line one\nline two\r\nend');
    expect(cells[CSV_COLUMNS.indexOf('approval_id')]).toBe('ap-1');
  });

  it.each([
    ['=', '=1+2', "'=1+2"],
    ['+', '+41 555 0100', "'+41 555 0100"],
    ['-', '-2+3', "'-2+3"],
    ['@', '@SUM(A1:A9)', "'@SUM(A1:A9)"],
    ['tab', '\t=1', "'\t=1"],
  ])('neutralises a cell starting with %s so a spreadsheet does not evaluate it', (_, reason, cell) => {
    const r = rec({ v: 1, ts: TS, type: 'approval.approved', session, approvalId: 'a', rule: 'r', statements: [], reviewer: 'bob', reason, waitMs: 1 });
    expect(column(csvRow(r), 'reason')).toBe(cell);
  });

  it('neutralises and quotes a formula that also holds quotes and commas', () => {
    const r = rec({ ...deniedEvent, rule: '=HYPERLINK("http://evil.example/?x=1","click")' });
    expect(csvRow(r)).toContain(`,"'=HYPERLINK(""http://evil.example/?x=1"",""click"")",`);
    expect(column(csvRow(r), 'rule')).toBe(`'=HYPERLINK("http://evil.example/?x=1","click")`);
  });

  it('neutralises a list whose first item starts with a formula character', () => {
    const r = rec({ ...deniedEvent, tables: ['=cmd|calc', 'public.t'] });
    expect(column(csvRow(r), 'tables')).toBe("'=cmd|calc;public.t");
  });

  it('leaves cells with formula characters elsewhere alone', () => {
    const r = rec({ ...deniedEvent, rule: 'a=b+c-d@e' });
    expect(column(csvRow(r), 'rule')).toBe('a=b+c-d@e');
  });

  it('writes an unreadable entry as a row of empty cells', () => {
    expect(csvRow({ where: 'x:1', raw: 'not json' })).toBe(','.repeat(CSV_COLUMNS.length - 1));
  });
});
