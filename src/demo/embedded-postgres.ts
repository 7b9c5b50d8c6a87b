/**
 * An embedded PostgreSQL for `pgwarden demo`: PGlite (PostgreSQL compiled to WebAssembly, in
 * memory) served over the wire protocol by pglite-socket, so pgwarden reaches it like any
 * server. Both packages are imported here, dynamically, and only by the demo: `pgwarden start`
 * never loads them.
 *
 * PGlite is one PostgreSQL session; pglite-socket's multiplexer lets several connections share
 * it (pgwarden's client connections and its masking-catalog side connection), running one query
 * at a time, and holding the others back while a connection is inside a transaction block. It
 * accepts any user name without a password: pgwarden still judges the name the client sends.
 */
export interface EmbeddedPostgres {
  host: string;
  port: number;
  /** postgres:// URL of the server itself (without pgwarden), as user postgres. */
  url: string;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** SQL run once before the server accepts connections. */
  seed: string;
}

/** Concurrent connections the multiplexer accepts (psql sessions, pgwarden's catalog connection). */
const MAX_CONNECTIONS = 100;

export async function startEmbeddedPostgres(opts: EmbeddedOptions): Promise<EmbeddedPostgres> {
  const [{ PGlite }, { PGLiteSocketServer }] = await Promise.all([import('@electric-sql/pglite'), import('@electric-sql/pglite-socket')]);
  const db = await PGlite.create();
  try {
    await db.exec(opts.seed);
    const server = new PGLiteSocketServer({ db, host: opts.host, port: opts.port, maxConnections: MAX_CONNECTIONS });
    // Its 'error' events (a client that vanished mid-message) are no reason to stop the demo.
    server.addEventListener('error', () => {});
    await server.start();
    const conn = server.getServerConn();
    const port = Number(conn.slice(conn.lastIndexOf(':') + 1));
    const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
    let stopped = false;
    return {
      host: opts.host,
      port,
      url: `postgres://postgres@${host}:${port}/postgres`,
      stop: async () => {
        if (stopped) return;
        stopped = true;
        await server.stop();
        await db.close();
      },
    };
  } catch (err) {
    await db.close().catch(() => undefined);
    throw err;
  }
}
