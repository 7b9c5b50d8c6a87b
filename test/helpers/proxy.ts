import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { configSchema, type Config, type ConfigInput } from '../../src/config/schema.js';
import { startProxy, type ProxyOptions, type RunningProxy } from '../../src/server/proxy-server.js';

/** The machine's PostgreSQL (trust auth). Override with PGWARDEN_TEST_UPSTREAM. */
export const UPSTREAM_URL = process.env.PGWARDEN_TEST_UPSTREAM ?? 'postgres://127.0.0.1:5432';

export function testConfig(overrides: Partial<ConfigInput> = {}): Config {
  return configSchema.parse({
    listen: '127.0.0.1:0',
    upstream: { url: UPSTREAM_URL, sslmode: 'disable' },
    workers: 1,
    logLevel: 'silent',
    ...overrides,
  });
}

/** Starts an in-process proxy on an ephemeral port. */
export async function startTestProxy(
  overrides: Partial<ConfigInput> = {},
  options: ProxyOptions = {},
): Promise<RunningProxy & { url: (db: string, user?: string) => string }> {
  const proxy = await startProxy(testConfig(overrides), options);
  return Object.assign(proxy, {
    url: (db: string, user = 'postgres') => `postgres://${user}@127.0.0.1:${proxy.port}/${db}`,
  });
}

/** A direct (not proxied) client to the upstream, for setup and for checking effects. */
export function directClient(database = 'postgres'): pg.Client {
  // Not a connection string: pg would let the URL's (empty) user override `user` when USER is unset.
  const u = new URL(UPSTREAM_URL);
  return new pg.Client({ host: u.hostname, port: Number(u.port || 5432), user: decodeURIComponent(u.username) || 'postgres', database });
}

/** Creates a fresh database for one test file and returns its name and a drop function. */
export async function createTestDatabase(prefix = 'pgw'): Promise<{ name: string; drop: () => Promise<void> }> {
  const name = `${prefix}_${randomBytes(5).toString('hex')}`;
  const admin = directClient('postgres');
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  return {
    name,
    drop: async () => {
      const c = directClient('postgres');
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}
