import { appendFile, chmod, chown, copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { run, runOk } from './spawn.js';

/**
 * A throwaway PostgreSQL 15 cluster for tests that need what the machine's server (trust auth,
 * no TLS) cannot give: password authentication (scram-sha-256, md5, password) over TCP and TLS.
 * initdb and postgres refuse to run as root, so under root both run as the `postgres` OS user
 * (runuser); under any other user they run as that user.
 * Start it once per test file: initdb costs a second or two even with fsync off.
 */
const PG_BIN = process.env.PGWARDEN_TEST_PG_BIN ?? '/usr/lib/postgresql/15/bin';
const OS_USER = 'postgres';

export type HbaMethod = 'scram-sha-256' | 'md5' | 'password';

export interface ScratchRole {
  name: string;
  password: string;
  /** How the password is stored (password_encryption when it is set). Default scram-sha-256. */
  passwordEncryption?: 'scram-sha-256' | 'md5';
  /** The pg_hba method for this role over TCP. Default scram-sha-256. */
  auth?: HbaMethod;
}

export interface ScratchClusterOptions {
  roles?: ScratchRole[];
  /** Enables ssl=on with this certificate and key (see certs.ts). */
  ssl?: { cert: string; key: string };
}

export interface ScratchCluster {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** postgres://127.0.0.1:port, the form the proxy's upstream.url takes. */
  readonly url: string;
  /** Directory holding the Unix socket (trust auth for the superuser, used for setup). */
  readonly socketDir: string;
  readonly dataDir: string;
  /** A superuser client over the Unix socket (trust), for setup and checks. Caller ends it. */
  adminClient(database?: string): pg.Client;
  /** Runs SQL as the superuser over the Unix socket. */
  query(sql: string, database?: string): Promise<pg.QueryResult>;
  /** The server log so far, for diagnosing a failed test. */
  log(): Promise<string>;
  stop(): Promise<void>;
}

/** A free TCP port: listen on port 0, read it, close. Racy in theory; start() retries on a clash. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen({ host: '127.0.0.1', port: 0 }, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function osUserIds(user: string): Promise<{ uid: number; gid: number }> {
  const uid = Number((await runOk('id', ['-u', user])).stdout.trim());
  const gid = Number((await runOk('id', ['-g', user])).stdout.trim());
  return { uid, gid };
}

function hbaLines(roles: ScratchRole[]): string {
  const lines = ['# written by test/helpers/scratch-cluster.ts', 'local all all trust'];
  for (const r of roles) {
    const method = r.auth ?? 'scram-sha-256';
    if (method !== 'scram-sha-256') {
      lines.push(`host all ${r.name} 127.0.0.1/32 ${method}`);
    }
  }
  lines.push('host all all 127.0.0.1/32 scram-sha-256', '');
  return lines.join('\n');
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function quoteLiteral(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

export async function startScratchCluster(options: ScratchClusterOptions = {}): Promise<ScratchCluster> {
  const roles = options.roles ?? [];
  const root = await mkdtemp(path.join(os.tmpdir(), 'pgw-pg-'));
  const dataDir = path.join(root, 'data');
  const logFile = path.join(root, 'postgres.log');
  // As root, the server runs as the postgres OS user; as anyone else, as that user.
  const isRoot = process.getuid?.() === 0;
  const asPostgres = { asUser: isRoot ? OS_USER : undefined, cwd: root, timeoutMs: 60_000 };
  let stopped = false;

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    // Also after a failed start: pg_ctl may have given up waiting on a postmaster that still runs.
    // With no postmaster.pid it just exits non-zero, which is fine here.
    await run(path.join(PG_BIN, 'pg_ctl'), ['stop', '-D', dataDir, '-m', 'immediate', '-w', '-t', '30'], asPostgres);
    await rm(root, { recursive: true, force: true });
  };

  try {
    const { uid, gid } = isRoot ? await osUserIds(OS_USER) : { uid: process.getuid?.() ?? -1, gid: process.getgid?.() ?? -1 };
    await chown(root, uid, gid);
    await runOk(
      path.join(PG_BIN, 'initdb'),
      ['-D', dataDir, '-U', 'postgres', '--auth-local=trust', '--auth-host=scram-sha-256', '--no-sync', '--no-instructions', '-E', 'UTF8', '--locale=C'],
      asPostgres,
    );
    const conf = [
      '',
      '# written by test/helpers/scratch-cluster.ts',
      "listen_addresses = '127.0.0.1'",
      `unix_socket_directories = ${quoteLiteral(root)}`,
      'fsync = off',
      'synchronous_commit = off',
      'full_page_writes = off',
      'shared_buffers = 16MB',
      'max_connections = 30',
      'max_wal_senders = 0',
      'wal_level = minimal',
      "password_encryption = 'scram-sha-256'",
      'log_connections = on',
    ];
    if (options.ssl) {
      // PostgreSQL refuses a key readable by others; copies owned by postgres with mode 0600.
      for (const [src, name] of [[options.ssl.cert, 'server.crt'], [options.ssl.key, 'server.key']] as const) {
        const dest = path.join(dataDir, name);
        await copyFile(src, dest);
        await chown(dest, uid, gid);
        await chmod(dest, 0o600);
      }
      conf.push('ssl = on', "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'");
    }
    await appendFile(path.join(dataDir, 'postgresql.conf'), conf.join('\n') + '\n');
    await writeFile(path.join(dataDir, 'pg_hba.conf'), hbaLines(roles));
    await chown(path.join(dataDir, 'pg_hba.conf'), uid, gid);

    let port = 0;
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      const r = await run(
        path.join(PG_BIN, 'pg_ctl'),
        ['start', '-D', dataDir, '-l', logFile, '-w', '-t', '60', '-o', `-p ${port}`],
        asPostgres,
      );
      if (r.code === 0) break;
      if (attempt >= 3) {
        const log = await readFile(logFile, 'utf8').catch(() => '');
        throw new Error(`pg_ctl start failed (${r.code}):\n${r.stdout}\n${r.stderr}\n${log}`);
      }
    }

    const adminClient = (database = 'postgres'): pg.Client =>
      new pg.Client({ host: root, port, user: 'postgres', database });
    const query = async (sql: string, database = 'postgres'): Promise<pg.QueryResult> => {
      const c = adminClient(database);
      await c.connect();
      try {
        return await c.query(sql);
      } finally {
        await c.end();
      }
    };

    for (const r of roles) {
      const enc = r.passwordEncryption ?? 'scram-sha-256';
      await query(
        `SET password_encryption = ${quoteLiteral(enc)}; ` +
          `CREATE ROLE ${quoteIdent(r.name)} LOGIN PASSWORD ${quoteLiteral(r.password)}`,
      );
    }

    return {
      host: '127.0.0.1',
      port,
      url: `postgres://127.0.0.1:${port}`,
      socketDir: root,
      dataDir,
      adminClient,
      query,
      log: () => readFile(logFile, 'utf8').catch(() => ''),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
