import { beforeAll, describe, expect, it } from 'vitest';
import { Classifier, loadParser } from '../../src/classify/classifier.js';
import { silentLogger } from '../../src/logger.js';
import { MaskCatalog, type DatabaseMasks } from '../../src/masking/mask-catalog.js';
import { compileMasking, REDACT } from '../../src/masking/mask-rules.js';
import { MaskingJudge } from '../../src/masking/masking-judge.js';
import { redactMessage } from '../../src/masking/redact-messages.js';
import { PolicyJudge } from '../../src/policy/policy-judge.js';
import type { Policy } from '../../src/policy/policy.js';
import { compileRules } from '../../src/policy/rules-loader.js';
import type { TxStatus } from '../../src/protocol/codes.js';
import { decodeFrontendMessage } from '../../src/protocol/frontend.js';
import type { Decision } from '../../src/session/decision.js';
import type { SessionInfo } from '../../src/session/session-info.js';
import { fe, typedFrame } from '../helpers/wire.js';

/**
 * The masking catalog's view lineage (with a stand-in for the catalog queries, so the order in
 * which PostgreSQL lists views is chosen by the test), the redaction of errors and notices, and
 * when the masking judge has the catalog read again after DDL.
 */
const RULES = compileMasking([
  { entry: { table: 'public.partners', columns: { contact_email: 'partial_email' }, exempt: ['dpo'] }, file: 'r.yaml', index: 0 },
  { entry: { table: 'public.staff', columns: { private_email: 'redact' } }, file: 'r.yaml', index: 1 },
]).rules;

const TABLES = [
  { oid: '100', schema: 'public', table: 'partners', attnum: 1, column: 'contact_email' },
  { oid: '200', schema: 'public', table: 'staff', attnum: 1, column: 'private_email' },
];
/** staff_contacts (300) renames staff.private_email to contact_email; staff_contacts_2 (400) reads it. */
const LOWER = { oid: '300', schema: 'public', name: 'staff_contacts', def: 'SELECT staff.private_email AS contact_email FROM staff;', cols: ['contact_email'], nums: [1] };
const UPPER = { oid: '400', schema: 'public', name: 'staff_contacts_2', def: 'SELECT staff_contacts.contact_email AS c FROM staff_contacts;', cols: ['c'], nums: [1] };

async function load(views: object[]): Promise<DatabaseMasks> {
  const catalog = new MaskCatalog('postgres://nobody@127.0.0.1:1/none', silentLogger);
  const pool = { query: async (sql: string) => ({ rows: sql.includes('pg_depend') ? views : TABLES }) };
  (catalog as unknown as { pool: () => typeof pool }).pool = () => pool;
  return catalog.get('db', RULES);
}

describe('masking catalog: view columns named like a masked column of another table', () => {
  // Both orders: a view listed before the view it reads is settled in a later round.
  it.each([
    ['lower view first', [LOWER, UPPER]],
    ['upper view first', [UPPER, LOWER]],
  ])('%s: the name carries the sources of both and is redacted', async (_order, views) => {
    const masks = await load(views);
    const name = masks.names.get('contact_email')!;
    expect(name.strategy).toEqual(REDACT);
    expect([...name.sources].sort()).toEqual(['public.partners', 'public.staff']);
    // The view above keeps staff as a source: an exemption from partners alone does not unmask it.
    const upper = masks.byOid.get(400)!.get(1)!;
    expect(upper.sources).toContain('public.staff');
    expect(masks.byOid.get(300)!.get(1)!.sources).toEqual(['public.staff']);
  });

  it('a view that passes a masked column through keeps its strategy, also under its own name', async () => {
    const same = { oid: '500', schema: 'public', name: 'partner_view', def: 'SELECT partners.contact_email FROM partners;', cols: ['contact_email'], nums: [1] };
    const masks = await load([same]);
    expect(masks.names.get('contact_email')).toMatchObject({ strategy: { kind: 'partial_email' }, sources: ['public.partners'] });
    expect(masks.byOid.get(500)!.get(1)!.strategy).toEqual({ kind: 'partial_email' });
  });
});

/** An ErrorResponse ('E') or NoticeResponse ('N') with the given fields. */
function frame(fields: Record<string, string>, tag = 'E'): Buffer {
  const body = Buffer.concat([...Object.entries(fields).map(([k, v]) => Buffer.from(`${k}${v}\0`, 'utf8')), Buffer.from([0])]);
  const head = Buffer.alloc(5);
  head[0] = tag.charCodeAt(0);
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

function fieldsOf(f: Buffer): Record<string, string> {
  expect(f.readInt32BE(1)).toBe(f.length - 1);
  const out: Record<string, string> = {};
  let pos = 5;
  while (f[pos] !== 0) {
    const end = f.indexOf(0, pos + 1);
    out[String.fromCharCode(f[pos]!)] = f.toString('utf8', pos + 1, end);
    pos = end + 1;
  }
  return out;
}

const V = 'alice@example.com';
const LOCATION = { F: 'pl_exec.c', L: '3907', R: 'exec_stmt_raise' };
const NAMES = { H: V, s: V, t: V, c: V, d: V, n: V, D: V, q: V, p: '3' };

describe('redactMessage', () => {
  it.each([
    ['RAISE USING ERRCODE 22000', { S: 'ERROR', V: 'ERROR', C: '22000', M: V, W: 'PL/pgSQL function f(text) line 1 at RAISE', ...LOCATION }, '22000'],
    ['ASSERT (P0004)', { S: 'ERROR', V: 'ERROR', C: 'P0004', M: V, W: 'PL/pgSQL function f(text) line 1 at ASSERT', ...LOCATION }, 'P0004'],
    ['a translated CONTEXT', { S: 'FEHLER', V: 'ERROR', C: 'XX001', M: V, W: 'PL/pgSQL-Funktion f(text) Zeile 1 bei RAISE', ...LOCATION }, 'XX001'],
    ['a code PostgreSQL does not define', { S: 'ERROR', V: 'ERROR', C: '12345', M: '12345', W: 'PL/pgSQL function f(text) line 1 at RAISE', ...LOCATION }, 'P0001'],
    ['class P0 without a CONTEXT', { S: 'ERROR', V: 'ERROR', C: 'P0001', M: V, ...LOCATION }, 'P0001'],
  ])('a message raised by a function (%s) is replaced whole; hint, detail and names are dropped', (_what, fields, code) => {
    const out = fieldsOf(redactMessage(frame({ ...fields, ...NAMES })));
    expect(out.M).toMatch(/redacted/);
    expect(out.C).toBe(code);
    expect(Object.keys(out).sort()).toEqual(['C', 'F', 'L', 'M', 'R', 'S', 'V']);
    expect(JSON.stringify(out)).not.toContain(V);
  });

  it('a notice raised with the default code is replaced whole (NoticeResponse keeps its tag)', () => {
    const out = redactMessage(frame({ S: 'NOTICE', V: 'NOTICE', C: '00000', M: V, H: V }, 'N'));
    expect(String.fromCharCode(out[0]!)).toBe('N');
    expect(fieldsOf(out)).toEqual({ S: 'NOTICE', V: 'NOTICE', C: '00000', M: 'pgwarden: message redacted (the statement reads masked columns)' });
  });

  it("a server's own message keeps its wording with quoted and parenthesised parts hidden, its code and position", () => {
    const out = fieldsOf(redactMessage(frame({ S: 'ERROR', V: 'ERROR', C: '23505', M: 'duplicate key value violates unique constraint "customers_email_key" (x)', P: '8', ...NAMES, F: 'nbtinsert.c' })));
    expect(out).toEqual({ S: 'ERROR', V: 'ERROR', C: '23505', M: 'duplicate key value violates unique constraint "***" (***)', P: '8', F: 'nbtinsert.c' });
  });
});

describe('MaskingJudge: the catalog is read again after DDL, once the DDL is visible', () => {
  const RULES_YAML = `
masking:
  - table: public.customers
    columns: { email: partial_email }
policy:
  default: allow
  rules:
    - name: held-ddl
      match: { kind: [ddl], relations: [held_*] }
      action: review
`;
  const classifier = new Classifier();
  let policy: Policy;
  const masks: DatabaseMasks = { byOid: new Map(), views: new Set(), names: new Map(), tables: new Map() };
  let invalidated: string[] = [];
  let judge: MaskingJudge;

  beforeAll(async () => {
    await loadParser();
    policy = compileRules([{ file: 'test.yaml', text: RULES_YAML }]);
    const catalog = { get: () => masks, invalidate: (db: string) => invalidated.push(db) } as unknown as MaskCatalog;
    const source = { current: policy };
    judge = new MaskingJudge(new PolicyJudge(source, classifier), { policy: source, catalog, key: Buffer.alloc(32, 1), audit: null, log: silentLogger });
  });

  const session = (): SessionInfo & { txStatus: TxStatus } =>
    ({
      id: 1,
      user: 'agent',
      database: 'app',
      clientAddress: '127.0.0.1',
      tls: false,
      txStatus: 'I' as TxStatus,
      transactionSince: null,
      startupParams: new Map([['user', 'agent']]),
      serverParams: new Map([['client_encoding', 'UTF8']]),
      statementCandidates: () => [],
      portalCandidates: () => [],
      notify: () => {},
    }) as SessionInfo & { txStatus: TxStatus };

  function run(s: SessionInfo, sql: string): Decision {
    const frame = typedFrame(fe.query(sql));
    const d = judge.judge({ kind: 'simple', messages: [{ frame, msg: decodeFrontendMessage(frame) }], end: 'none', bytes: frame.bytes.length }, s, new AbortController().signal);
    if (d instanceof Promise) throw new Error('unexpected asynchronous decision');
    return d;
  }
  const done = { durationMs: 1, rowsReturned: 0, rowsAffected: 0 };

  it('outside a transaction block: after the DDL ran, not when it was judged', () => {
    invalidated = [];
    const s = session();
    const d = run(s, 'ALTER TABLE customers ADD COLUMN note text');
    expect(d.action).toBe('allow');
    expect(invalidated).toEqual([]);
    (d as { onDone: (o: typeof done) => void }).onDone(done);
    expect(invalidated).toEqual(['app']);
  });

  it('inside a transaction block: once the block ends (COMMIT or ROLLBACK), not before', () => {
    invalidated = [];
    const s = session();
    s.txStatus = 'T';
    const ddl = run(s, 'ALTER TABLE customers RENAME COLUMN email TO mail') as { onDone: (o: typeof done) => void };
    ddl.onDone(done);
    const read = run(s, 'SELECT 1') as { onDone: (o: typeof done) => void };
    read.onDone(done);
    expect(invalidated).toEqual([]);
    const commit = run(s, 'COMMIT') as { onDone: (o: typeof done) => void };
    s.txStatus = 'I';
    commit.onDone(done);
    expect(invalidated).toEqual(['app']);
    // Settled: later requests of the session do not read it again.
    expect((run(s, 'SELECT 2') as { onDone?: unknown }).onDone).toBeUndefined();
  });

  it('DDL held for review by masking (a view on a masked table) reloads once approved and run', () => {
    invalidated = [];
    const d = run(session(), 'CREATE VIEW v AS SELECT email FROM customers');
    expect(d.action).toBe('deny');
    const review = (d as { review?: { onDone?: (o: typeof done) => void } }).review;
    review!.onDone!(done);
    expect(invalidated).toEqual(['app']);
  });

  it('DDL held by a rule and by masking keeps the reload too', () => {
    invalidated = [];
    const d = run(session(), 'CREATE VIEW held_v AS SELECT email FROM customers');
    expect(d.action).toBe('deny');
    const review = (d as { review?: { reason: string; onDone?: (o: typeof done) => void } }).review!;
    expect(review.reason).toContain('also:');
    review.onDone!(done);
    expect(invalidated).toEqual(['app']);
  });
});
