import { cpSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditCommand } from '../../src/audit/audit-cli.js';
import { withAudit, type AuditSetup } from '../../src/audit/build-audit.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { silentLogger } from '../../src/logger.js';
import { BUNDLED_RULES_DIR, buildPolicyJudge } from '../../src/policy/build-judge.js';
import type { RulesStore } from '../../src/policy/rules-store.js';
import { createTestDatabase, directClient, startTestProxy, testConfig } from '../helpers/proxy.js';
import { startTestRedis, type TestRedis } from '../helpers/redis-server.js';

/**
 * The audit log against a real PostgreSQL and a redis-server of the test's own: every decision
 * recorded with who/what/which rule and no literal, verify passing and catching tampering, a
 * Redis outage losing nothing, and fail-closed when nothing can record.
 */
const KEY = 'an-audit-key-for-tests-only-0123456789';
const SECRET = 'sekrit';

interface Instance {
  audit: AuditSetup;
  rules: RulesStore;
  proxy: Awaited<ReturnType<typeof startTestProxy>>;
  journalDir: string;
}

async function startInstance(overrides: Partial<ConfigInput>): Promise<Instance> {
  const config = testConfig(overrides);
  const { judge, rules } = await buildPolicyJudge(config, silentLogger);
  const audit = await withAudit(config, judge, rules, silentLogger);
  const proxy = await startTestProxy(overrides, { judge: audit.judge });
  return { audit, rules, proxy, journalDir: config.audit.journalDir };
}

async function stopInstance(i: Instance): Promise<void> {
  await i.proxy.shutdown(100);
  await i.audit.close();
  i.rules.close();
}

type Entry = Record<string, any>;

async function readStream(url: string, stream: string): Promise<{ raw: string[]; entries: Entry[] }> {
  const r = new Redis(url);
  try {
    const rows = await r.xrange(stream, '-', '+');
    const raw = rows.map(([, fields]) => fields.join('\u0000'));
    return { raw, entries: rows.map(([, f]) => JSON.parse(f[f.indexOf('entry') + 1]!) as Entry) };
  } finally {
    r.disconnect();
  }
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function captureIo() {
  let out = '';
  let err = '';
  return { io: { out: (s: string) => (out += s), err: (s: string) => (err += s) }, text: () => out, errors: () => err };
}

function configFile(dir: string, content: string): string {
  const file = path.join(dir, `config-${randomBytes(3).toString('hex')}.yaml`);
  writeFileSync(file, content);
  return file;
}

let redis: TestRedis;
let db: { name: string; drop: () => Promise<void> };
let work: string;

beforeAll(async () => {
  redis = await startTestRedis();
  db = await createTestDatabase('audit');
  const c = directClient(db.name);
  await c.connect();
  await c.query('CREATE TABLE items (id int PRIMARY KEY, name text)');
  await c.end();
  work = mkdtempSync(path.join(tmpdir(), 'pgw-audit-'));
});

afterAll(async () => {
  await db?.drop();
  await redis?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('audit log in a Redis stream', () => {
  const stream = `pgw-test:audit:${randomBytes(4).toString('hex')}`;
  let a: Instance;
  let b: Instance;
  let rulesDir: string;

  beforeAll(async () => {
    rulesDir = mkdtempSync(path.join(work, 'rules-'));
    cpSync(BUNDLED_RULES_DIR, rulesDir, { recursive: true });
    const base = { redisUrl: redis.url, rulesDir };
    a = await startInstance({ ...base, audit: { stream, journalDir: path.join(work, 'ja'), hmacKey: KEY, instanceId: 'proxy-a' } });
    b = await startInstance({ ...base, audit: { stream, journalDir: path.join(work, 'jb'), hmacKey: KEY, instanceId: 'proxy-b' } });

    const client = new pg.Client({ connectionString: a.proxy.url(db.name), application_name: 'audit-test' });
    await client.connect();
    await client.query(`SELECT '${SECRET}-literal-1' AS x, 42424242 AS y`);
    await client.query('INSERT INTO items VALUES ($1, $2)', [1, `${SECRET}-param-2`]);
    await client.query(`UPDATE items SET name = '${SECRET}-literal-3' WHERE id = 1`);
    await client.query('SELECT * FROM items');
    await expect(client.query('DROP TABLE items')).rejects.toMatchObject({ code: '42501' });
    await expect(client.query(`SELEC '${SECRET}-literal-4'`)).rejects.toMatchObject({ code: '42601' });
    await expect(client.query('SELECT 1/0')).rejects.toMatchObject({ code: '22012' });
    await client.end();

    // A connection the server refuses (no such database).
    const refused = new pg.Client({ connectionString: a.proxy.url(`${db.name}_missing`) });
    await expect(refused.connect()).rejects.toMatchObject({ code: '3D000' });

    // The second instance writes its own chain into the same stream.
    const other = new pg.Client({ connectionString: b.proxy.url(db.name) });
    await other.connect();
    await other.query('SELECT count(*) FROM items');
    await other.end();

    // A DBA edits the rules: the reload is recorded (and an invalid edit, rejected, is too).
    writeFileSync(path.join(rulesDir, 'extra.yaml'), 'policy:\n  rules:\n    - name: no-truncate\n      match: { kind: [ddl], relations: [items] }\n      action: deny\n');
    await until('the rules reload', async () => (await readStream(redis.url, stream)).entries.some((e) => e.type === 'rules.reloaded' && e.trigger === 'file-change'));
    writeFileSync(path.join(rulesDir, 'broken.yaml'), 'policy:\n  rules:\n    - name: x\n      match: { kind: [nonsense] }\n      action: allow\n');
    await until('the rejected rules', async () => (await readStream(redis.url, stream)).entries.some((e) => e.type === 'rules.rejected'));
    rmSync(path.join(rulesDir, 'broken.yaml'));
    await until('every connection closed', async () => (await readStream(redis.url, stream)).entries.filter((e) => e.type === 'connection.closed').length >= 2);
  });

  afterAll(async () => {
    await stopInstance(a);
    await stopInstance(b);
  });

  it('records each decision with who, what and which rule, before and after it ran', async () => {
    const { entries } = await readStream(redis.url, stream);
    const mine = entries.filter((e) => e.chain.startsWith('proxy-a/'));
    const who = { user: 'postgres', database: db.name, application: 'audit-test' };

    const opened = mine.find((e) => e.type === 'connection.opened' && e.session.application === 'audit-test');
    expect(opened).toMatchObject({ v: 1, session: who, tls: false });
    expect(opened!.session.client).toMatch(/^127\.0\.0\.1:\d+$/);

    const allowed = mine.filter((e) => e.type === 'statement.allowed');
    expect(allowed.map((e) => e.statements.map((s: Entry) => s.text).join(';'))).toEqual([
      'SELECT $1 AS x, $2 AS y',
      'INSERT INTO items VALUES ($1, $2)',
      'UPDATE items SET name = $1 WHERE id = $2',
      'SELECT * FROM items',
      'SELECT $1/$2',
    ]);
    expect(allowed[1]).toMatchObject({ session: who, request: 'extended', kinds: ['write'], tables: ['items'], rule: 'default' });
    expect(allowed[1]!.statements[0].fingerprint).toMatch(/^[0-9a-f]{16}$/);
    // One fingerprint per statement shape, whatever the values.
    expect(allowed[0]!.statements[0].fingerprint).not.toBe(allowed[1]!.statements[0].fingerprint);
    expect(allowed[1]!.rulesVersion).toMatch(/^[0-9a-f]+$/);

    // Each outcome is in the decision's own entry (it finished within the window) or in a
    // statement.executed entry that follows it.
    const executed = mine.filter((e) => e.type === 'statement.executed');
    const bySeq = new Map(executed.map((e) => [e.decisionSeq, e]));
    const outcome = (e: Entry) => e.outcome ?? bySeq.get(e.seq);
    expect(outcome(allowed[0]!)).toMatchObject({ rowsReturned: 1, rowsAffected: 0 });
    expect(outcome(allowed[1]!)).toMatchObject({ rowsReturned: 0, rowsAffected: 1 });
    expect(outcome(allowed[2]!)).toMatchObject({ rowsAffected: 1 });
    expect(outcome(allowed[3]!)).toMatchObject({ rowsReturned: 1 });
    expect(outcome(allowed[4]!)).toMatchObject({ sqlstate: '22012' });
    for (const a of allowed) expect(outcome(a).durationMs).toBeGreaterThanOrEqual(0);
    for (const e of executed) expect(e.seq).toBeGreaterThan(e.decisionSeq);

    const denied = mine.filter((e) => e.type === 'statement.denied');
    expect(denied).toHaveLength(2);
    expect(denied[0]).toMatchObject({ rule: 'schema-changes', sqlstate: '42501', kinds: ['ddl'], tables: ['items'], statements: [{ text: 'DROP TABLE items' }] });
    expect(denied[1]).toMatchObject({ rule: 'parse-error', sqlstate: '42601', statements: [{ text: 'SELEC $1' }] });

    expect(mine.find((e) => e.type === 'connection.refused')).toMatchObject({ session: { user: 'postgres', database: `${db.name}_missing` }, reason: '3D000' });
    expect(mine.find((e) => e.type === 'connection.closed' && e.session.application === 'audit-test')).toMatchObject({ statements: 7 });
    expect(mine.find((e) => e.type === 'rules.reloaded' && e.trigger === 'startup')).toMatchObject({ files: ['functions.yaml', 'policy.yaml'] });
    const reload = mine.find((e) => e.type === 'rules.reloaded' && e.trigger === 'file-change');
    expect(reload).toMatchObject({ files: ['extra.yaml', 'functions.yaml', 'policy.yaml'] });
    expect(reload!.previous).not.toBe(reload!.version);
    expect(mine.find((e) => e.type === 'rules.rejected')).toMatchObject({ trigger: 'file-change', inForce: reload!.version });
  });

  it('never stores a literal, a parameter value or a row value', async () => {
    const { raw } = await readStream(redis.url, stream);
    const all = raw.join('\n');
    expect(all).not.toContain(SECRET);
    expect(all).not.toContain('42424242');
  });

  it('keeps one unbroken chain per instance and verify checks them all', async () => {
    const { entries } = await readStream(redis.url, stream);
    const chains = new Map<string, number[]>();
    for (const e of entries) chains.set(e.chain, [...(chains.get(e.chain) ?? []), e.seq]);
    expect([...chains.keys()].map((c) => c.split('/')[0]).sort()).toEqual(['proxy-a', 'proxy-b']);
    for (const seqs of chains.values()) expect(seqs).toEqual(seqs.map((_, i) => i + 1));

    const cfg = configFile(work, `redisUrl: ${redis.url}\naudit:\n  stream: "${stream}"\n  hmacKey: ${KEY}\n`);
    const cap = captureIo();
    expect(await auditCommand(['verify', '--config', cfg], cap.io)).toBe(0);
    expect(cap.text()).toContain(`${entries.length} entries in 2 chain(s)`);
    expect(cap.text()).toContain('OK: every chain is intact');

    const wrongKey = configFile(work, `redisUrl: ${redis.url}\naudit:\n  stream: "${stream}"\n  hmacKey: ${'x'.repeat(40)}\n`);
    const bad = captureIo();
    expect(await auditCommand(['verify', '--config', wrongKey], bad.io)).toBe(1);
    expect(bad.text()).toContain('HMAC does not verify');
  });

  describe('tampering with the stream is detected by audit verify', () => {
    /** Copies the stream (and its heads) to a new key, letting `edit` change the entries on the way. */
    async function tamperedCopy(edit: (rows: [string, string[]][]) => [string, string[]][]): Promise<string> {
      const r = new Redis(redis.url);
      const copy = `pgw-test:tampered:${randomBytes(4).toString('hex')}`;
      try {
        const rows = edit(await r.xrange(stream, '-', '+'));
        for (const [, fields] of rows) await r.xadd(copy, '*', ...fields);
        const heads = await r.hgetall(`${stream}:heads`);
        await r.hset(`${copy}:heads`, heads);
      } finally {
        r.disconnect();
      }
      return copy;
    }

    async function verifyKey(key: string): Promise<{ code: number; out: string }> {
      const cfg = configFile(work, `redisUrl: ${redis.url}\naudit:\n  stream: "${key}"\n  hmacKey: ${KEY}\n`);
      const cap = captureIo();
      const code = await auditCommand(['verify', '--config', cfg], cap.io);
      return { code, out: cap.text() };
    }

    const entryOf = (fields: string[]) => fields[fields.indexOf('entry') + 1]!;
    const withEntry = (fields: string[], entry: string) => fields.map((f, i) => (i === fields.indexOf('entry') + 1 ? entry : f));

    it('an unmodified copy verifies (the test harness itself is sound)', async () => {
      expect((await verifyKey(await tamperedCopy((rows) => rows))).code).toBe(0);
    });

    it('a deleted entry', async () => {
      const r = await verifyKey(await tamperedCopy((rows) => rows.filter((_, i) => i !== 5)));
      expect(r.code).toBe(1);
      expect(r.out).toMatch(/BROKEN: first broken link at stream id \S+, chain \S+ seq \d+: entry \d+ is missing \(deleted\)/);
    });

    it('an altered entry', async () => {
      const r = await verifyKey(
        await tamperedCopy((rows) => rows.map(([id, f]) => [id, entryOf(f).includes('"schema-changes"') ? withEntry(f, entryOf(f).replace('"schema-changes"', '"default"')) : f])),
      );
      expect(r.code).toBe(1);
      expect(r.out).toContain('entry altered or forged: its HMAC does not verify with the audit key');
    });

    it('an entry re-signed with a key that is not the audit key', async () => {
      const { createHmac } = await import('node:crypto');
      const r = await verifyKey(
        await tamperedCopy((rows) =>
          rows.map(([id, f]) => {
            const raw = entryOf(f);
            if (!raw.includes('"statement.denied"')) return [id, f];
            const body = `${raw.slice(0, raw.lastIndexOf(',"hmac":'))}}`.replace('"schema-changes"', '"default"');
            const hmac = createHmac('sha256', 'guessed-key').update(body).digest('hex');
            return [id, withEntry(f, `${body.slice(0, -1)},"hmac":"${hmac}"}`)];
          }),
        ),
      );
      expect(r.code).toBe(1);
      expect(r.out).toContain('HMAC does not verify with the audit key');
    });

    it('reordered entries', async () => {
      const r = await verifyKey(
        await tamperedCopy((rows) => {
          const out = [...rows];
          [out[3], out[4]] = [out[4]!, out[3]!];
          return out;
        }),
      );
      expect(r.code).toBe(1);
      expect(r.out).toMatch(/stored after seq \d+: entries reordered or duplicated/);
      expect(r.out).not.toContain('missing');
    });

    it('an inserted entry', async () => {
      const r = await verifyKey(
        await tamperedCopy((rows) => {
          const out = [...rows];
          const forged = JSON.parse(entryOf(out[2]![1])) as Entry;
          forged.type = 'statement.allowed';
          out.splice(3, 0, [out[2]![0], withEntry(out[2]![1], JSON.stringify(forged))]);
          return out;
        }),
      );
      expect(r.code).toBe(1);
      expect(r.out).toContain('BROKEN');
    });

    it('deleted newest entries (found against the heads record)', async () => {
      const r = await verifyKey(
        await tamperedCopy((rows) => {
          const lastOfA = rows.map((x) => JSON.parse(entryOf(x[1])) as Entry).map((e) => e.chain).lastIndexOf(JSON.parse(entryOf(rows[0]![1])).chain);
          return rows.filter((_, i) => i !== lastOfA);
        }),
      );
      expect(r.code).toBe(1);
      expect(r.out).toMatch(/missing at the end \(tail deleted\)/);
    });
  });

  it('export gives auditors jsonl and csv for a time range; tail shows new entries as they come', async () => {
    const cfg = configFile(work, `redisUrl: ${redis.url}\naudit:\n  stream: "${stream}"\n  hmacKey: ${KEY}\n`);
    const jsonl = captureIo();
    expect(await auditCommand(['export', '--config', cfg, '--since', '1h', '--format', 'jsonl'], jsonl.io)).toBe(0);
    const lines = jsonl.text().trim().split('\n');
    expect(lines.length).toBe((await readStream(redis.url, stream)).entries.length);
    expect(JSON.parse(lines[0]!)).toMatchObject({ v: 1, seq: expect.any(Number) });
    const csv = captureIo();
    expect(await auditCommand(['export', '--config', cfg, '--format', 'csv'], csv.io)).toBe(0);
    expect(csv.text().split('\n')[0]).toMatch(/^ts,type,chain,seq,user,database/);
    expect(csv.text()).toContain(',statement.denied,');
    const none = captureIo();
    expect(await auditCommand(['export', '--config', cfg, '--until', '2000-01-01T00:00:00Z'], none.io)).toBe(0);
    expect(none.text()).toBe('');

    const tail = captureIo();
    const abort = new AbortController();
    const running = auditCommand(['tail', '--config', cfg, '-n', '2'], tail.io, abort.signal);
    await until('the last entries', async () => tail.text().split('\n').length > 2);
    const c = new pg.Client({ connectionString: a.proxy.url(db.name), application_name: 'tail-test' });
    await c.connect();
    await c.query('SELECT 1');
    await c.end();
    await until('the followed entry', async () => /statement\.allowed +postgres@\S+ \(tail-test\)/.test(tail.text()));
    abort.abort();
    expect(await running).toBe(0);
  });
});

describe('a Redis outage', () => {
  it('loses no event and keeps the order: entries wait in the journal and are replayed', async () => {
    const stream = `pgw-test:outage:${randomBytes(4).toString('hex')}`;
    const journalDir = path.join(work, 'outage');
    const inst = await startInstance({ redisUrl: redis.url, audit: { stream, journalDir, hmacKey: KEY, instanceId: 'outage' } });
    try {
      const client = new pg.Client({ connectionString: inst.proxy.url(db.name) });
      await client.connect();
      const run = async (from: number, to: number) => {
        for (let i = from; i < to; i++) expect((await client.query(`SELECT ${i} AS c${i}`)).rows).toEqual([{ [`c${i}`]: i }]);
      };
      await run(0, 10);
      await redis.kill();
      await run(10, 20); // Redis is down: statements still run, recorded in the journal
      expect(inst.audit.sink!.isSpooling).toBe(true);
      expect(readdirSync(path.join(journalDir, 'spool'))).toHaveLength(1);
      await redis.restart();
      await run(20, 30);
      await client.end();
      await until('the spool to drain', async () => !inst.audit.sink!.isSpooling);
      await inst.audit.sink!.flushed();

      const { entries } = await readStream(redis.url, stream);
      const chain = entries.filter((e) => e.chain.startsWith('outage/'));
      expect(chain.map((e) => e.seq)).toEqual(chain.map((_, i) => i + 1));
      const statements = chain.filter((e) => e.type === 'statement.allowed').map((e) => e.statements[0].text);
      expect(statements).toEqual(Array.from({ length: 30 }, (_, i) => `SELECT $1 AS c${i}`));
      const outcomes = chain.filter((e) => e.type === 'statement.executed' || (e.type === 'statement.allowed' && e.outcome));
      expect(outcomes).toHaveLength(30);

      const cfg = configFile(work, `redisUrl: ${redis.url}\naudit:\n  stream: "${stream}"\n  hmacKey: ${KEY}\n`);
      const cap = captureIo();
      expect(await auditCommand(['verify', '--config', cfg], cap.io)).toBe(0);
    } finally {
      await stopInstance(inst);
    }
  });

  it('refuses statements when neither Redis nor the journal can record them (fail closed)', async () => {
    const blocker = path.join(work, 'not-a-directory');
    writeFileSync(blocker, 'x');
    const inst = await startInstance({
      redisUrl: 'redis://127.0.0.1:1',
      audit: { stream: 'pgw-test:nowhere', journalDir: path.join(blocker, 'journal'), hmacKey: KEY },
    });
    try {
      const client = new pg.Client({ connectionString: inst.proxy.url(db.name) });
      await client.connect();
      await expect(client.query('SELECT 1')).rejects.toMatchObject({
        code: '58030',
        message: 'pgwarden: the audit log cannot record this statement, so it was not run',
      });
      // A statement the rules refuse is still refused with its own error.
      await expect(client.query('DROP TABLE items')).rejects.toMatchObject({ code: '42501' });
      // The connection stays usable (and keeps refusing).
      await expect(client.query('SELECT 2')).rejects.toMatchObject({ code: '58030' });
      await client.end();
      const check = directClient(db.name);
      await check.connect();
      expect((await check.query("SELECT to_regclass('items') IS NOT NULL AS present")).rows).toEqual([{ present: true }]);
      await check.end();
    } finally {
      await stopInstance(inst);
    }
  });
});

describe('the embedded mode (no Redis): the journal is the audit log', () => {
  it('records to the journal, and verify/export read it; an edited line is detected', async () => {
    const journalDir = path.join(work, 'embedded');
    const inst = await startInstance({ audit: { journalDir } });
    try {
      const client = new pg.Client({ connectionString: inst.proxy.url(db.name) });
      await client.connect();
      await client.query(`SELECT '${SECRET}' AS s`);
      await client.end();
      await until('connection.closed', async () => {
        await inst.audit.sink!.flushed();
        const cap = captureIo();
        await auditCommand(['export', '--audit-journal', journalDir], cap.io);
        return cap.text().includes('"connection.closed"');
      });
    } finally {
      await stopInstance(inst);
    }
    const files = readdirSync(journalDir);
    expect(files).toContain('audit.key'); // generated on first start, no configuration needed
    const cap = captureIo();
    expect(await auditCommand(['verify', '--audit-journal', journalDir], cap.io)).toBe(0);
    expect(cap.text()).toContain('OK: every chain is intact');

    const exported = captureIo();
    await auditCommand(['export', '--audit-journal', journalDir, '--format', 'csv'], exported.io);
    expect(exported.text()).toContain('SELECT $1 AS s');
    expect(exported.text()).not.toContain(SECRET);

    const file = path.join(journalDir, files.find((f) => f.endsWith('.jsonl'))!);
    const { readFileSync } = await import('node:fs');
    writeFileSync(file, readFileSync(file, 'utf8').replace('"statement.allowed"', '"statement.denied"'));
    const broken = captureIo();
    expect(await auditCommand(['verify', '--audit-journal', journalDir], broken.io)).toBe(1);
    expect(broken.text()).toMatch(/BROKEN: first broken link at \S+\.jsonl:\d+/);
  });
});
