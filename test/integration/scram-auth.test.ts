import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { startTestProxy } from '../helpers/proxy.js';
import { startScratchCluster, type ScratchCluster } from '../helpers/scratch-cluster.js';
import { run } from '../helpers/spawn.js';

/**
 * Password authentication is relayed end to end: the proxy never sees a password, the upstream
 * (a scratch cluster requiring scram-sha-256 over TCP) decides, and the client sees its verdict.
 */
const SCRAM = { name: 'pgw_scram', password: 'correct horse battery staple' };
const MD5 = { name: 'pgw_md5', password: 'md5-secret-42' };
const CLEARTEXT = { name: 'pgw_cleartext', password: 'plain secret' };

let cluster: ScratchCluster;
let proxy: Awaited<ReturnType<typeof startTestProxy>>;

beforeAll(async () => {
  cluster = await startScratchCluster({
    roles: [
      { name: SCRAM.name, password: SCRAM.password },
      { name: MD5.name, password: MD5.password, passwordEncryption: 'md5', auth: 'md5' },
      { name: CLEARTEXT.name, password: CLEARTEXT.password, auth: 'password' },
    ],
  });
  proxy = await startTestProxy({ upstream: { url: cluster.url, sslmode: 'disable' } });
});

afterAll(async () => {
  await proxy?.shutdown(1000);
  await cluster?.stop();
});

function proxiedClient(user: string, password: string): pg.Client {
  return new pg.Client({ host: '127.0.0.1', port: proxy.port, database: 'postgres', user, password });
}

/** Lines the server logged for successful authentications of this user (log_connections). */
async function authenticationMethodsLogged(user: string): Promise<string[]> {
  const log = await cluster.log();
  const re = new RegExp(`connection authenticated: identity="${user}" method=([a-z0-9-]+)`, 'g');
  return [...log.matchAll(re)].map((m) => m[1] ?? '');
}

function psqlEnv(user: string, password: string | undefined): Record<string, string | undefined> {
  return {
    PGHOST: '127.0.0.1',
    PGPORT: String(proxy.port),
    PGUSER: user,
    PGDATABASE: 'postgres',
    PGPASSWORD: password,
    // libpq's default: asks for TLS first, the proxy (no certificate) answers 'N', then plain.
    PGSSLMODE: 'prefer',
    PGCONNECT_TIMEOUT: '10',
  };
}

async function connectError(client: pg.Client): Promise<{ code?: string; message: string; severity?: string }> {
  try {
    await client.connect();
  } catch (err) {
    const e = err as { code?: string; message: string; severity?: string };
    return { code: e.code, message: e.message, severity: e.severity };
  } finally {
    await client.end().catch(() => undefined);
  }
  throw new Error('connection unexpectedly succeeded');
}

describe('SCRAM-SHA-256 through the proxy', () => {
  it('lets node-postgres with the right password authenticate and query', async () => {
    const c = proxiedClient(SCRAM.name, SCRAM.password);
    await c.connect();
    try {
      const r = await c.query<{ who: string; n: number }>('SELECT current_user AS who, $1::int * 2 AS n', [21]);
      expect(r.rows).toEqual([{ who: SCRAM.name, n: 42 }]);
    } finally {
      await c.end();
    }
    expect(await authenticationMethodsLogged(SCRAM.name)).toContain('scram-sha-256');
  });

  it('lets psql with PGPASSWORD authenticate and query', async () => {
    const r = await run('psql', ['-X', '-A', '-t', '-c', 'SELECT current_user, 6 * 7'], {
      env: psqlEnv(SCRAM.name, SCRAM.password),
      timeoutMs: 20_000,
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${SCRAM.name}|42\n`);
  });

  it('shows node-postgres the upstream error 28P01 for a wrong password', async () => {
    const e = await connectError(proxiedClient(SCRAM.name, 'wrong password'));
    expect(e.code).toBe('28P01');
    expect(e.severity).toBe('FATAL');
    expect(e.message).toBe(`password authentication failed for user "${SCRAM.name}"`);
  });

  it('shows psql the upstream error for a wrong password and exits 2', async () => {
    const r = await run('psql', ['-X', '-c', 'SELECT 1'], {
      env: psqlEnv(SCRAM.name, 'wrong password'),
      timeoutMs: 20_000,
    });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`FATAL:  password authentication failed for user "${SCRAM.name}"`);
  });

  it('asks psql for a password the client does not have (the proxy does not bypass auth)', async () => {
    const r = await run('psql', ['-X', '-w', '-c', 'SELECT 1'], {
      env: psqlEnv(SCRAM.name, undefined),
      timeoutMs: 20_000,
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('fe_sendauth: no password supplied');
  });

  it('keeps authenticating correctly for several clients at once', async () => {
    const clients = Array.from({ length: 4 }, (_, i) =>
      proxiedClient(SCRAM.name, i % 2 === 0 ? SCRAM.password : 'nope'),
    );
    const outcomes = await Promise.all(
      clients.map(async (c) => {
        try {
          await c.connect();
          const r = await c.query<{ ok: number }>('SELECT 1 AS ok');
          return r.rows[0]?.ok === 1 ? 'ok' : 'bad-result';
        } catch (err) {
          return (err as { code?: string }).code ?? 'no-code';
        } finally {
          await c.end().catch(() => undefined);
        }
      }),
    );
    expect(outcomes).toEqual(['ok', '28P01', 'ok', '28P01']);
  });
});

describe('md5 and cleartext password methods through the proxy', () => {
  it('stores the md5 role password as an md5 hash (test precondition)', async () => {
    const r = await cluster.query(`SELECT rolpassword FROM pg_authid WHERE rolname = '${MD5.name}'`);
    expect(String(r.rows[0]?.rolpassword)).toMatch(/^md5[0-9a-f]{32}$/);
  });

  it('authenticates node-postgres with md5', async () => {
    const c = proxiedClient(MD5.name, MD5.password);
    await c.connect();
    try {
      const r = await c.query<{ who: string }>('SELECT current_user AS who');
      expect(r.rows).toEqual([{ who: MD5.name }]);
    } finally {
      await c.end();
    }
    expect(await authenticationMethodsLogged(MD5.name)).toContain('md5');
  });

  it('authenticates psql with md5', async () => {
    const r = await run('psql', ['-X', '-A', '-t', '-c', 'SELECT current_user'], {
      env: psqlEnv(MD5.name, MD5.password),
      timeoutMs: 20_000,
    });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${MD5.name}\n`);
    expect(r.code).toBe(0);
  });

  it('refuses a wrong md5 password with 28P01', async () => {
    const e = await connectError(proxiedClient(MD5.name, 'not-it'));
    expect(e.code).toBe('28P01');
    expect(e.message).toBe(`password authentication failed for user "${MD5.name}"`);
  });

  it('authenticates node-postgres with the cleartext password method', async () => {
    const c = proxiedClient(CLEARTEXT.name, CLEARTEXT.password);
    await c.connect();
    try {
      const r = await c.query<{ who: string }>('SELECT current_user AS who');
      expect(r.rows).toEqual([{ who: CLEARTEXT.name }]);
    } finally {
      await c.end();
    }
    expect(await authenticationMethodsLogged(CLEARTEXT.name)).toContain('password');
  });

  it('authenticates psql with the cleartext password method', async () => {
    const r = await run('psql', ['-X', '-A', '-t', '-c', 'SELECT current_user'], {
      env: psqlEnv(CLEARTEXT.name, CLEARTEXT.password),
      timeoutMs: 20_000,
    });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${CLEARTEXT.name}\n`);
    expect(r.code).toBe(0);
  });

  it('refuses a wrong cleartext password with 28P01', async () => {
    const e = await connectError(proxiedClient(CLEARTEXT.name, 'not-it'));
    expect(e.code).toBe('28P01');
    expect(e.message).toBe(`password authentication failed for user "${CLEARTEXT.name}"`);
  });
});
