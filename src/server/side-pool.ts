import pg from 'pg';

/**
 * A small pool of pgwarden's own connections to one database (planner estimates, the masking
 * catalog), from a postgres:// URL whose user and password are pgwarden's, not an agent's.
 */
export const SIDE_LOCK_TIMEOUT_MS = 5000;

export function sidePool(url: string, database: string, applicationName: string): pg.Pool {
  const u = new URL(url);
  const pool = new pg.Pool({
    host: decodeURIComponent(u.hostname),
    port: Number(u.port || 5432),
    user: decodeURIComponent(u.username) || 'postgres',
    password: u.password ? decodeURIComponent(u.password) : undefined,
    database,
    max: 2,
    idleTimeoutMillis: 30_000,
    application_name: applicationName,
    // A lock held by someone else's open transaction (an uncommitted ALTER VIEW, say) must not
    // stall every request that waits for these answers: the query fails, and its callers fail
    // closed (no estimate: row cap only; no masking catalog: 58000).
    lock_timeout: SIDE_LOCK_TIMEOUT_MS,
  });
  // Errors surface on the queries; an idle client's error must not crash the process.
  pool.on('error', () => {});
  return pool;
}
