import type pg from 'pg';
import { sidePool } from '../server/side-pool.js';
import { Lru } from '../classify/lru.js';
import type { Logger } from '../logger.js';

/**
 * The planner's row estimate for a read, from `EXPLAIN (FORMAT JSON)` on a side connection
 * (never ANALYZE: nothing is executed). Used to treat large reads of sensitive tables as exports.
 * Runs in a READ ONLY transaction with a short statement_timeout and the session's search_path;
 * results are cached briefly per (database, search_path, SQL text). Any failure answers null and
 * the caller falls back to the run-time row cap.
 */
export class RowEstimator {
  private readonly pools = new Map<string, pg.Pool>();
  private readonly cache = new Lru<string, { rows: number | null; at: number }>(5000);

  constructor(
    private readonly url: string,
    private readonly log: Logger,
    private readonly ttlMs = 60_000,
  ) {}

  private pool(database: string): pg.Pool {
    let p = this.pools.get(database);
    if (!p) {
      p = sidePool(this.url, database, 'pgwarden-estimator');
      this.pools.set(database, p);
    }
    return p;
  }

  async estimate(database: string, searchPath: readonly string[], sql: string): Promise<number | null> {
    const key = `${database}\u0000${searchPath.join(',')}\u0000${sql}`;
    const hit = this.cache.get(key);
    if (hit && Date.now() - hit.at < this.ttlMs) return hit.rows;
    let rows: number | null = null;
    let client: pg.PoolClient | undefined;
    try {
      client = await this.pool(database).connect();
      await client.query('BEGIN READ ONLY');
      await client.query("SET LOCAL statement_timeout = '2s'");
      await client.query('SELECT pg_catalog.set_config($1, $2, true)', ['search_path', searchPath.map((s) => `"${s.replace(/"/g, '""')}"`).join(', ')]);
      const r = await client.query<{ 'QUERY PLAN': { Plan: { 'Plan Rows': number } }[] }>(`EXPLAIN (FORMAT JSON) ${sql}`);
      rows = r.rows[0]?.['QUERY PLAN'][0]?.Plan['Plan Rows'] ?? null;
    } catch (err) {
      this.log.debug({ code: (err as { code?: string }).code }, 'row estimate failed; relying on the row cap');
    } finally {
      if (client) {
        await client.query('ROLLBACK').catch(() => {});
        client.release();
      }
    }
    this.cache.set(key, { rows, at: Date.now() });
    return rows;
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.end()));
    this.pools.clear();
  }
}
