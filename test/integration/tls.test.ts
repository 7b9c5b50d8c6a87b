import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import type { ConfigInput } from '../../src/config/schema.js';
import { generateTestCerts, issueServerCert, type TestCerts } from '../helpers/certs.js';
import { UPSTREAM_URL, startTestProxy } from '../helpers/proxy.js';
import { startScratchCluster, type ScratchCluster } from '../helpers/scratch-cluster.js';
import { libpqEnv, run } from '../helpers/spawn.js';

/**
 * TLS on both hops, seen from the client: the proxy terminates client TLS with its own
 * certificate, and opens its own TLS connection to the upstream as upstream.sslmode says.
 */
type TestProxy = Awaited<ReturnType<typeof startTestProxy>>;

const ROLE = { name: 'pgw_tls', password: 'tls-role-password' };

let certs: TestCerts;
let otherCerts: TestCerts;
/** The proxy's own certificate: same CA as the upstream's, different key and certificate. */
let proxyCert: { cert: string; key: string };
let cluster: ScratchCluster;
/** Terminates client TLS; upstream is the machine's server (trust, plain). */
let tlsProxy: TestProxy;

beforeAll(async () => {
  certs = await generateTestCerts('pgwarden-test');
  otherCerts = await generateTestCerts('unrelated');
  proxyCert = await issueServerCert(certs, 'proxy');
  cluster = await startScratchCluster({
    roles: [{ name: ROLE.name, password: ROLE.password }],
    ssl: { cert: certs.serverCert, key: certs.serverKey },
  });
  tlsProxy = await startTestProxy({ tls: { cert: proxyCert.cert, key: proxyCert.key } });
});

afterAll(async () => {
  await tlsProxy?.shutdown(1000);
  await cluster?.stop();
  await certs?.remove();
  await otherCerts?.remove();
});

async function withProxy<T>(overrides: Partial<ConfigInput>, body: (p: TestProxy) => Promise<T>): Promise<T> {
  const p = await startTestProxy(overrides);
  try {
    return await body(p);
  } finally {
    await p.shutdown(1000);
  }
}

function psqlEnv(port: number, extra: Record<string, string>): Record<string, string> {
  return { PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'postgres', PGDATABASE: 'postgres', PGCONNECT_TIMEOUT: '10', ...extra };
}

/** Whether the upstream hop (proxy → server) of this connection is encrypted, as the server sees it. */
const UPSTREAM_SSL_SQL = 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()';

async function upstreamHopIsTls(port: number, password?: string): Promise<boolean> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port,
    database: 'postgres',
    user: password === undefined ? 'postgres' : ROLE.name,
    password,
  });
  await c.connect();
  try {
    const r = await c.query<{ ssl: boolean }>(UPSTREAM_SSL_SQL);
    const row = r.rows[0];
    if (!row) throw new Error('pg_stat_ssl has no row for this backend');
    return row.ssl;
  } finally {
    await c.end();
  }
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

describe('client-side TLS termination', () => {
  it('gives psql with sslmode=require an SSL connection, as \\conninfo reports', async () => {
    const r = await run('psql', ['-X', '-c', '\\conninfo'], {
      env: psqlEnv(tlsProxy.port, { PGSSLMODE: 'require' }),
      timeoutMs: 20_000,
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`at port "${tlsProxy.port}"`);
    expect(r.stdout).toMatch(/SSL connection \(protocol: TLSv1\.[23],/);
  });

  it('still serves psql in plaintext when it does not ask for TLS (sslmode=disable)', async () => {
    const r = await run('psql', ['-X', '-c', '\\conninfo'], {
      env: psqlEnv(tlsProxy.port, { PGSSLMODE: 'disable' }),
      timeoutMs: 20_000,
    });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`at port "${tlsProxy.port}"`);
    expect(r.stdout).not.toContain('SSL connection');
  });

  it('passes node-postgres certificate verification against the test CA and answers queries', async () => {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: tlsProxy.port,
      user: 'postgres',
      database: 'postgres',
      ssl: { rejectUnauthorized: true, ca: readFileSync(certs.caCert, 'utf8') },
    });
    await c.connect();
    try {
      const r = await c.query<{ n: number }>('SELECT $1::int + 1 AS n', [1]);
      expect(r.rows).toEqual([{ n: 2 }]);
    } finally {
      await c.end();
    }
  });

  it('fails node-postgres certificate verification against an unrelated CA', async () => {
    const e = await connectError(
      new pg.Client({
        host: '127.0.0.1',
        port: tlsProxy.port,
        user: 'postgres',
        database: 'postgres',
        ssl: { rejectUnauthorized: true, ca: readFileSync(otherCerts.caCert, 'utf8') },
      }),
    );
    expect(e.code).toMatch(/^(SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)$/);
  });

  it('passes psql sslmode=verify-full with PGSSLROOTCERT for 127.0.0.1', async () => {
    const r = await run('psql', ['-X', '-A', '-t', '-c', 'SELECT 40 + 2'], {
      env: psqlEnv(tlsProxy.port, { PGSSLMODE: 'verify-full', PGSSLROOTCERT: certs.caCert }),
      timeoutMs: 20_000,
    });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('42\n');
    expect(r.code).toBe(0);
  });

  it('passes psql sslmode=verify-full for the name localhost', async () => {
    const r = await run('psql', ['-X', '-A', '-t', '-c', 'SELECT 1'], {
      env: psqlEnv(tlsProxy.port, { PGHOST: 'localhost', PGHOSTADDR: '127.0.0.1', PGSSLMODE: 'verify-full', PGSSLROOTCERT: certs.caCert }),
      timeoutMs: 20_000,
    });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('1\n');
  });

  it('fails psql sslmode=verify-full against an unrelated CA with a certificate error', async () => {
    const r = await run('psql', ['-X', '-c', 'SELECT 1'], {
      env: psqlEnv(tlsProxy.port, { PGSSLMODE: 'verify-full', PGSSLROOTCERT: otherCerts.caCert }),
      timeoutMs: 20_000,
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('certificate verify failed');
  });

  it('answers psql sslmode=require with "server does not support SSL" when the proxy has no certificate', async () => {
    await withProxy({}, async (plain) => {
      const r = await run('psql', ['-X', '-c', 'SELECT 1'], {
        env: psqlEnv(plain.port, { PGSSLMODE: 'require' }),
        timeoutMs: 20_000,
      });
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('server does not support SSL, but SSL was required');
    });
  });
});

describe('upstream TLS (proxy → server)', () => {
  it('connects with sslmode=verify-full and the right CA, and the server sees an SSL connection', async () => {
    await withProxy(
      { upstream: { url: cluster.url, sslmode: 'verify-full', sslrootcert: certs.caCert } },
      async (p) => {
        expect(await upstreamHopIsTls(p.port, ROLE.password)).toBe(true);
      },
    );
  });

  it('refuses the client with FATAL 08006 when verify-full meets a certificate from another CA', async () => {
    await withProxy(
      { upstream: { url: cluster.url, sslmode: 'verify-full', sslrootcert: otherCerts.caCert } },
      async (p) => {
        const e = await connectError(
          new pg.Client({ host: '127.0.0.1', port: p.port, database: 'postgres', user: ROLE.name, password: ROLE.password }),
        );
        expect(e.code).toBe('08006');
        expect(e.severity).toBe('FATAL');
        expect(e.message).toContain('could not connect to the upstream');
      },
    );
  });

  it('shows psql the 08006 refusal text when upstream verification fails', async () => {
    await withProxy(
      { upstream: { url: cluster.url, sslmode: 'verify-full', sslrootcert: otherCerts.caCert } },
      async (p) => {
        const r = await run('psql', ['-X', '-c', 'SELECT 1'], {
          env: psqlEnv(p.port, { PGUSER: ROLE.name, PGPASSWORD: ROLE.password, PGSSLMODE: 'disable' }),
          timeoutMs: 20_000,
        });
        expect(r.code).toBe(2);
        expect(r.stderr).toContain('FATAL:  pgwarden: could not connect to the upstream');
      },
    );
  });

  it('connects with sslmode=require over TLS', async () => {
    await withProxy({ upstream: { url: cluster.url, sslmode: 'require' } }, async (p) => {
      expect(await upstreamHopIsTls(p.port, ROLE.password)).toBe(true);
    });
  });

  it('uses TLS with sslmode=prefer when the server offers it', async () => {
    await withProxy({ upstream: { url: cluster.url, sslmode: 'prefer' } }, async (p) => {
      expect(await upstreamHopIsTls(p.port, ROLE.password)).toBe(true);
    });
  });

  it('falls back to plaintext with sslmode=prefer when the server has ssl=off', async () => {
    // Precondition: the machine's server runs without TLS (as CI sets it up).
    const direct = await run('psql', ['-X', '-A', '-t', '-c', 'SHOW ssl'], { env: libpqEnv(UPSTREAM_URL, 'postgres') });
    expect(direct.stdout).toBe('off\n');
    await withProxy({ upstream: { url: UPSTREAM_URL, sslmode: 'prefer' } }, async (p) => {
      expect(await upstreamHopIsTls(p.port)).toBe(false);
    });
  });

  it('refuses the client with 08006 when sslmode=require meets a server without TLS', async () => {
    await withProxy({ upstream: { url: UPSTREAM_URL, sslmode: 'require' } }, async (p) => {
      const e = await connectError(new pg.Client({ host: '127.0.0.1', port: p.port, database: 'postgres', user: 'postgres' }));
      expect(e.code).toBe('08006');
      expect(e.message).toContain('does not support TLS');
    });
  });
});

/**
 * SCRAM channel binding (tls-server-end-point) binds the authentication to the hash of the
 * certificate the client saw. Through a TLS-terminating proxy that is the proxy's certificate,
 * so SCRAM-SHA-256-PLUS can only pass end to end when the proxy presents the upstream's own
 * certificate; otherwise it is stripped from the offered mechanisms.
 */
describe('SCRAM through a TLS-terminating proxy with its own certificate to a TLS upstream', () => {
  let p: TestProxy;
  beforeAll(async () => {
    p = await startTestProxy({
      tls: { cert: proxyCert.cert, key: proxyCert.key },
      upstream: { url: cluster.url, sslmode: 'verify-full', sslrootcert: certs.caCert },
    });
  });
  afterAll(async () => {
    await p?.shutdown(1000);
  });

  const env = (channelBinding: string): Record<string, string> =>
    psqlEnv(p.port, {
      PGUSER: ROLE.name,
      PGPASSWORD: ROLE.password,
      PGSSLMODE: 'verify-full',
      PGSSLROOTCERT: certs.caCert,
      PGCHANNELBINDING: channelBinding,
    });

  it('authenticates psql with channel_binding=disable over TLS on both hops', async () => {
    const r = await run('psql', ['-X', '-A', '-t', '-c', `SELECT current_user, (${UPSTREAM_SSL_SQL})`], {
      env: env('disable'),
      timeoutMs: 20_000,
    });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${ROLE.name}|t\n`);
    expect(r.code).toBe(0);
  });

  it('refuses psql with channel_binding=prefer (the libpq default) with a channel-binding error', async () => {
    // Over TLS libpq answers a mechanism list without -PLUS with gs2 flag 'y' ("I could bind, the
    // server cannot"); the upstream, itself on TLS, reads that as a downgrade attack and refuses
    // (RFC 5802 section 6). The flag is covered by the client proof, so no proxy may rewrite it.
    const r = await run('psql', ['-X', '-c', 'SELECT 1'], { env: env('prefer'), timeoutMs: 20_000 });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/channel binding/i);
  });

  it('fails psql with channel_binding=require on the client side, since the proxy cannot offer binding', async () => {
    const r = await run('psql', ['-X', '-c', 'SELECT 1'], { env: env('require'), timeoutMs: 20_000 });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('channel binding is required, but server did not offer an authentication method that supports channel binding');
  });

  it('authenticates psql with channel_binding=prefer when only the client hop is TLS (upstream plain)', async () => {
    await withProxy(
      { tls: { cert: proxyCert.cert, key: proxyCert.key }, upstream: { url: cluster.url, sslmode: 'disable' } },
      async (plainUpstream) => {
        const r = await run('psql', ['-X', '-A', '-t', '-c', `SELECT current_user, (${UPSTREAM_SSL_SQL})`], {
          env: { ...env('prefer'), PGPORT: String(plainUpstream.port) },
          timeoutMs: 20_000,
        });
        expect(r.stderr).toBe('');
        expect(r.stdout).toBe(`${ROLE.name}|f\n`);
        expect(r.code).toBe(0);
      },
    );
  });

  it('authenticates node-postgres (no channel binding) over verified TLS with SCRAM', async () => {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: p.port,
      database: 'postgres',
      user: ROLE.name,
      password: ROLE.password,
      ssl: { rejectUnauthorized: true, ca: readFileSync(certs.caCert, 'utf8') },
    });
    await c.connect();
    try {
      const r = await c.query<{ who: string; ssl: boolean }>(`SELECT current_user AS who, (${UPSTREAM_SSL_SQL}) AS ssl`);
      expect(r.rows).toEqual([{ who: ROLE.name, ssl: true }]);
    } finally {
      await c.end();
    }
  });
});

describe('SCRAM through a TLS-terminating proxy presenting the upstream server\'s own certificate', () => {
  let p: TestProxy;
  beforeAll(async () => {
    p = await startTestProxy({
      tls: { cert: certs.serverCert, key: certs.serverKey },
      upstream: { url: cluster.url, sslmode: 'verify-full', sslrootcert: certs.caCert },
    });
  });
  afterAll(async () => {
    await p?.shutdown(1000);
  });

  const env = (channelBinding: string): Record<string, string> =>
    psqlEnv(p.port, {
      PGUSER: ROLE.name,
      PGPASSWORD: ROLE.password,
      PGSSLMODE: 'verify-full',
      PGSSLROOTCERT: certs.caCert,
      PGCHANNELBINDING: channelBinding,
    });

  for (const channelBinding of ['prefer', 'require']) {
    it(`authenticates psql with channel_binding=${channelBinding}: the binding data matches end to end`, async () => {
      const r = await run('psql', ['-X', '-A', '-t', '-c', `SELECT current_user, (${UPSTREAM_SSL_SQL})`], {
        env: env(channelBinding),
        timeoutMs: 20_000,
      });
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(`${ROLE.name}|t\n`);
      expect(r.code).toBe(0);
    });
  }

  it('authenticates node-postgres with enableChannelBinding', async () => {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: p.port,
      database: 'postgres',
      user: ROLE.name,
      password: ROLE.password,
      enableChannelBinding: true,
      ssl: { rejectUnauthorized: true, ca: readFileSync(certs.caCert, 'utf8') },
    });
    await c.connect();
    try {
      const r = await c.query<{ who: string }>('SELECT current_user AS who');
      expect(r.rows).toEqual([{ who: ROLE.name }]);
    } finally {
      await c.end();
    }
  });
});
