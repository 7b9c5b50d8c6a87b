import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { startTestProxy } from '../helpers/proxy.js';

describe('proxy smoke', () => {
  let proxy: Awaited<ReturnType<typeof startTestProxy>>;
  beforeAll(async () => {
    proxy = await startTestProxy();
  });
  afterAll(async () => {
    await proxy.shutdown(1000);
  });
  it('answers a query through the proxy as the server would', async () => {
    const c = new pg.Client({ connectionString: proxy.url('postgres') });
    await c.connect();
    const r = await c.query('SELECT $1::int + 1 AS n', [41]);
    expect(r.rows).toEqual([{ n: 42 }]);
    await c.end();
  });
});
