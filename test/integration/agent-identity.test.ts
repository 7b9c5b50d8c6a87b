import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { CryptoKey } from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatScramVerifier, makeScramVerifier } from '../../src/identity/scram-verifier.js';
import { silentLogger } from '../../src/logger.js';
import { startInstance, type RunningInstance } from '../../src/server/run.js';
import { AUDIT_KEY, callApi, readAudit, REVIEWERS, reviewerConfig, until } from '../helpers/approvals.js';
import { startOidcProvider, type TestOidcProvider } from '../helpers/oidc-provider.js';
import { testConfig } from '../helpers/proxy.js';
import { libpqEnv, runOk } from '../helpers/spawn.js';
import { startScratchCluster, type ScratchCluster } from '../helpers/scratch-cluster.js';

/**
 * identity.mode agents, end to end: agents authenticate to pgwarden (SCRAM secret or OIDC token)
 * and pgwarden logs in to a PostgreSQL that requires scram-sha-256 as the agent's mapped role,
 * whose password the agent never sends. Rules match on the agent and its groups, the audit log
 * carries the verified identity, and removing an agent or an expiring token ends its sessions.
 */
const ROLE = 'app_ro';
const ROLE_PASSWORD = 'role-password-the-agent-never-sees';
const BOT_SECRET = 'billing-bot-secret-0123456789';
const ISSUER = 'https://idp.example.test';
const AUDIENCE = 'pgwarden-agents';
const PREFIX = randomBytes(4).toString('hex');

let cluster: ScratchCluster;
let inst: RunningInstance;
let dir: string;
let idp: TestOidcProvider;
let otherKey: CryptoKey;
const token: TestOidcProvider['token'] = (claims, o) => idp.token(claims, o);
let rulesText: string;

function rules(agents: string): string {
  return `
agents:
${agents}
policy:
  default: allow
  rules:
    - name: no-payroll-for-billing
      description: billing agents do not read payroll
      match: { groups: [billing], relations: [payroll] }
      action: deny
    - name: ci-only-reads
      match: { agents: [ci-agent], kind: [write] }
      action: deny
    - name: ledger-writes-elevated
      description: ledger writes run as app_writer once a reviewer approves
      match: { relations: [ledger], kind: [write] }
      action: review
      review: { elevate: app_writer, grants: false }
`;
}

const AGENTS = (verifier: string) => `
  - name: billing-bot
    scram: "${verifier}"
    role: ${ROLE}
    groups: [billing]
    elevate: [app_writer]
  - name: ci-agent
    oidc: { subject: ci-client }
    role: ${ROLE}
    database: agentdb
  - name: report-bot
    scram: "${verifier}"
    role: ${ROLE}
`;

beforeAll(async () => {
  cluster = await startScratchCluster({ roles: [{ name: ROLE, password: ROLE_PASSWORD }] });
  await cluster.query('CREATE DATABASE agentdb');
  // The role an approved ledger write is elevated to: app_ro may SET ROLE to it, never log in as it.
  await cluster.query(`CREATE ROLE app_writer NOLOGIN; GRANT app_writer TO ${ROLE}`);
  await cluster.query('GRANT INSERT ON ledger TO app_writer', 'agentdb').catch(() => undefined);
  await cluster.query(
    `CREATE TABLE payroll (id int, amount int); INSERT INTO payroll VALUES (1, 100);
     CREATE TABLE notes (id int, body text); INSERT INTO notes VALUES (1, 'hello');
     GRANT SELECT, INSERT ON payroll, notes TO ${ROLE};
     CREATE TABLE ledger (id int, amount int);
     GRANT SELECT ON ledger TO ${ROLE};
     GRANT INSERT, SELECT ON ledger TO app_writer;`,
    'agentdb',
  );
  idp = await startOidcProvider(ISSUER, AUDIENCE);
  otherKey = idp.otherKey;
  dir = mkdtempSync(path.join(tmpdir(), 'pgw-agents-'));
  mkdirSync(path.join(dir, 'rules'));
  rulesText = rules(AGENTS(formatScramVerifier(makeScramVerifier(BOT_SECRET))));
  writeFileSync(path.join(dir, 'rules', 'agents.yaml'), rulesText);
  inst = await startInstance(
    testConfig({
      upstream: { url: cluster.url, sslmode: 'disable' },
      rulesDir: path.join(dir, 'rules'),
      audit: { enabled: true, journalDir: path.join(dir, 'journal'), stream: `pgw-test:${PREFIX}:audit`, hmacKey: AUDIT_KEY },
      redisUrl: 'redis://127.0.0.1:6379',
      approval: { listen: '127.0.0.1:0', redisPrefix: `pgw-test:${PREFIX}:approvals`, timeoutSeconds: 30, reviewers: reviewerConfig() },
      masking: { hashKey: 'a-masking-key-for-agent-tests-0123456789' },
      identity: {
        mode: 'agents',
        roles: { [ROLE]: { password: ROLE_PASSWORD } },
        oidc: {
          issuer: ISSUER,
          audience: AUDIENCE,
          jwksUrl: idp.jwksUrl,
          allowPlaintext: true,
        },
      },
    }),
    silentLogger,
  );
}, 60_000);

afterAll(async () => {
  await inst?.stop();
  await idp?.close();
  await cluster?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function client(user: string, password: string, database = 'agentdb'): pg.Client {
  return new pg.Client({ host: '127.0.0.1', port: inst.proxy.port, user, password, database });
}

async function connectError(user: string, password: string, database = 'agentdb'): Promise<pg.DatabaseError> {
  const c = client(user, password, database);
  c.on('error', () => {});
  const err = (await c.connect().then(
    () => null,
    (e: unknown) => e,
  )) as pg.DatabaseError | null;
  await c.end().catch(() => {});
  if (!err) throw new Error(`${user} connected but should not have`);
  return err;
}

/** Waits for the client's 'error' event (the server ended the session). */
function nextError(c: pg.Client, ms: number): Promise<pg.DatabaseError | null> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), ms);
    // pg also reports the socket closing afterwards ("Connection terminated unexpectedly").
    c.on('error', () => {});
    c.once('error', (e) => {
      clearTimeout(timer);
      resolve(e as pg.DatabaseError);
    });
  });
}

describe('SCRAM agents', () => {
  it('logs in with its secret; upstream it is the mapped role, whose password it never sent', async () => {
    const c = client('billing-bot', BOT_SECRET);
    await c.connect();
    try {
      const r = await c.query('SELECT current_user AS cu, session_user AS su, current_database() AS db');
      expect(r.rows).toEqual([{ cu: ROLE, su: ROLE, db: 'agentdb' }]);
    } finally {
      await c.end();
    }
    // The role really has a password upstream: connecting directly without it fails.
    const direct = new pg.Client({ host: '127.0.0.1', port: cluster.port, user: ROLE, password: BOT_SECRET, database: 'agentdb' });
    direct.on('error', () => {});
    await expect(direct.connect()).rejects.toMatchObject({ code: '28P01' });
  });

  it('psql (libpq, strict about message order) logs in as the agent and runs as the role', async () => {
    const r = await runOk('psql', ['-X', '-At', '-c', 'SELECT current_user'], {
      env: { ...libpqEnv(`postgres://billing-bot@127.0.0.1:${inst.proxy.port}/agentdb`), PGPASSWORD: BOT_SECRET },
    });
    expect(r.stdout.trim()).toBe(ROLE);
  });

  it('a wrong secret and an unknown agent fail alike (28P01), without revealing which', async () => {
    const wrong = await connectError('billing-bot', 'not-the-secret');
    const unknown = await connectError('nobody', BOT_SECRET);
    expect([wrong.code, wrong.message]).toEqual(['28P01', 'pgwarden: authentication failed for agent "billing-bot"']);
    expect([unknown.code, unknown.message]).toEqual(['28P01', 'pgwarden: authentication failed for agent "nobody"']);
    // The role's own password is no agent secret.
    expect((await connectError(ROLE, ROLE_PASSWORD)).code).toBe('28P01');
  });

  it('rules match the agent and its groups', async () => {
    const c = client('billing-bot', BOT_SECRET);
    await c.connect();
    try {
      expect((await c.query('SELECT body FROM notes')).rows).toEqual([{ body: 'hello' }]);
      const e = (await c.query('SELECT amount FROM payroll').catch((x: unknown) => x)) as pg.DatabaseError;
      expect([e.code, e.message]).toEqual(['42501', 'pgwarden: statement denied by rule "no-payroll-for-billing"']);
    } finally {
      await c.end();
    }
  });

  it('the audit log names the verified agent, how it authenticated and its upstream role', async () => {
    const c = client('billing-bot', BOT_SECRET);
    await c.connect();
    await c.query('SELECT id FROM notes');
    await c.end();
    const lines = await until('the audit entry', async () => {
      const all = await readAudit('redis://127.0.0.1:6379', `pgw-test:${PREFIX}:audit`);
      const hits = all.filter((e) => JSON.stringify(e).includes('SELECT id FROM notes'));
      return hits.length > 0 ? hits : null;
    });
    const ev = (lines[0]!.event ?? lines[0]) as { session: Record<string, unknown> };
    expect(ev.session).toMatchObject({ user: 'billing-bot', identity: { agent: 'billing-bot', via: 'scram', role: ROLE, groups: ['billing'] } });
    expect(JSON.stringify(lines)).not.toContain(BOT_SECRET);
  });
});

describe('OIDC agents', () => {
  it('logs in with a valid token naming it; its database mapping is enforced', async () => {
    const t = await token({ sub: 'ci-client', groups: ['ci'] });
    const c = client('ci-agent', t);
    await c.connect();
    try {
      expect((await c.query('SELECT current_user AS cu')).rows).toEqual([{ cu: ROLE }]);
      const e = (await c.query("INSERT INTO notes VALUES (2, 'x')").catch((x: unknown) => x)) as pg.DatabaseError;
      expect(e.code).toBe('42501');
    } finally {
      await c.end();
    }
    const other = await connectError('ci-agent', t, 'postgres');
    expect([other.code, other.message]).toEqual(['28000', 'pgwarden: agent "ci-agent" may only connect to database "agentdb"']);
  });

  it('expired, wrong-audience, wrong-issuer, tampered, foreign-key and other-subject tokens are refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    const good = await token({ sub: 'ci-client' });
    const [h, p, s] = good.split('.');
    const tampered = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), sub: 'ci-client', groups: ['admin'] })).toString('base64url')}.${s}`;
    const bad = {
      expired: await token({ sub: 'ci-client' }, { exp: now - 120 }),
      audience: await token({ sub: 'ci-client' }, { aud: 'someone-else' }),
      issuer: await token({ sub: 'ci-client' }, { iss: 'https://evil.example' }),
      tampered,
      key: await token({ sub: 'ci-client' }, { key: otherKey }),
      subject: await token({ sub: 'another-client' }),
      junk: 'not-a-token',
    };
    for (const [why, t] of Object.entries(bad)) {
      const e = await connectError('ci-agent', t);
      expect([why, e.code, e.message]).toEqual([why, '28P01', 'pgwarden: authentication failed for agent "ci-agent"']);
    }
  });

  it('a session ends when its token expires', async () => {
    const t = await token({ sub: 'ci-client' }, { exp: Math.floor(Date.now() / 1000) + 2 });
    const c = client('ci-agent', t);
    await c.connect();
    const ended = nextError(c, 8000);
    expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    const e = await ended;
    await c.end().catch(() => {});
    expect(e).not.toBeNull();
    expect([e!.code, e!.message]).toEqual(['57P01', "pgwarden: terminating connection because the agent's access token expired"]);
  });
});

describe('revocation', () => {
  it('removing an agent from the rules ends its open sessions within seconds', async () => {
    const c = client('billing-bot', BOT_SECRET);
    await c.connect();
    const ended = nextError(c, 10_000);
    expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    try {
      const withoutBot = AGENTS(formatScramVerifier(makeScramVerifier(BOT_SECRET))).replace(/  - name: billing-bot\n(    .*\n)+/, '');
      expect(withoutBot).not.toContain('billing-bot');
      writeFileSync(path.join(dir, 'rules', 'agents.yaml'), rules(withoutBot));
      const e = await ended;
      expect(e).not.toBeNull();
      expect([e!.code, e!.message]).toEqual(['57P01', 'pgwarden: terminating connection because agent "billing-bot" was revoked or changed']);
      expect((await connectError('billing-bot', BOT_SECRET)).code).toBe('28P01');
    } finally {
      await c.end().catch(() => {});
      writeFileSync(path.join(dir, 'rules', 'agents.yaml'), rulesText);
      // The reload is asynchronous: wait until the agent is back before the next test.
      await until('billing-bot restored', async () => {
        const again = client('billing-bot', BOT_SECRET);
        again.on('error', () => {});
        const ok = await again.connect().then(() => true, () => false);
        await again.end().catch(() => {});
        return ok;
      });
    }
  });
});

describe('just-in-time elevation', () => {
  it('an approved write runs under the elevated role, then the session is back to its own role', async () => {
    const c = client('billing-bot', BOT_SECRET);
    const notices: string[] = [];
    c.on('notice', (n) => notices.push(n.message ?? ''));
    await c.connect();
    try {
      const insert = c.query('INSERT INTO ledger VALUES (1, 50) RETURNING current_user AS who');
      const api = inst.review!.url.replace(/\/$/, '');
      const pending = await until('the held ledger write', async () => {
        const r = await callApi(api, REVIEWERS.bob.token, 'GET', '/api/requests?status=pending');
        return (r.json.requests as { id: string; session: { user: string; identity?: { agent: string } }; elevate?: string }[]).find((x) => x.session.user === 'billing-bot');
      }, 10_000);
      expect(pending.elevate).toBe('app_writer');
      expect(pending.session.identity).toMatchObject({ agent: 'billing-bot', via: 'scram', role: ROLE });
      expect((await callApi(api, REVIEWERS.bob.token, 'POST', `/api/requests/${pending.id}/approve`, { reason: 'month-end' })).status).toBe(200);
      expect((await insert).rows).toEqual([{ who: 'app_writer' }]);
      expect((await c.query('SELECT current_user AS cu')).rows).toEqual([{ cu: ROLE }]);
      expect((await cluster.query('SELECT id, amount FROM ledger', 'agentdb')).rows).toEqual([{ id: 1, amount: 50 }]);
      // The agent's own attempt to switch roles is refused outright.
      const own = (await c.query('SET ROLE app_writer').catch((e: unknown) => e)) as pg.DatabaseError;
      expect([own.code, own.message]).toEqual(['42501', 'pgwarden: agents cannot switch roles themselves']);
    } finally {
      await c.end();
    }
  });

  it('an agent whose entry does not list the role is refused at once, not held', async () => {
    const c = client('report-bot', BOT_SECRET);
    await c.connect();
    try {
      const e = (await c.query('INSERT INTO ledger VALUES (2, 1)').catch((x: unknown) => x)) as pg.DatabaseError;
      expect([e.code, e.message]).toEqual(['42501', 'pgwarden: agent "report-bot" may not be elevated to role "app_writer"']);
      const r = await callApi(inst.review!.url.replace(/\/$/, ''), REVIEWERS.bob.token, 'GET', '/api/requests?status=pending');
      expect((r.json.requests as { session: { user: string } }[]).filter((x) => x.session.user === 'report-bot')).toEqual([]);
    } finally {
      await c.end();
    }
  });
});
