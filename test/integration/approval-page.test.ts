import { existsSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import pg from 'pg';
import { chromium, type Browser, type BrowserContext, type Locator, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MAX_REASON } from '../../src/approval/review-desk.js';
import { agent, callApi, heldId, MASKED_APPROVAL_RULES, PII_PEOPLE_DDL, REVIEWERS, startApprovalInstance, type ApprovalInstance } from '../helpers/approvals.js';
import { createTestDatabase, directClient } from '../helpers/proxy.js';
import { startTestRedis, type TestRedis } from '../helpers/redis-server.js';

/**
 * The approval page in a real browser (Chromium through playwright-core): what a reviewer sees
 * and does, against a whole instance (real PostgreSQL, a redis-server of the test's own,
 * node-postgres as the agent). The browser is the machine's /usr/bin/chromium; it is never
 * downloaded. Without it these tests fail (CI installs chromium), they do not skip.
 */
const CHROMIUM = process.env.PGWARDEN_TEST_CHROMIUM ?? '/usr/bin/chromium';
/** Bound on every wait for something to show up on the page. */
// Generous: the whole suite runs beside it on two cores (JDBC, Python and browser tests at once).
const UI_TIMEOUT = 20_000;

let redis: TestRedis;
let inst: ApprovalInstance;
let db: { name: string; drop: () => Promise<void> };
let browser: Browser;

/** WebSocket sockets of the review server, so a test can drop them (the hub is not exposed). */
const wsSockets = new Set<Duplex>();
/** While set, every WebSocket upgrade is dropped right after the server accepted it. */
let refuseWebSockets = false;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: the approval page tests need a system Chromium (apt-get install chromium); they never download a browser`);
  }
  redis = await startTestRedis();
  db = await createTestDatabase('pgw_page');
  const c = directClient(db.name);
  await c.connect();
  await c.query('CREATE TABLE some_table (id int)');
  await c.query(PII_PEOPLE_DDL);
  await c.end();
  inst = await startApprovalInstance(redis.url, { rules: MASKED_APPROVAL_RULES });
  // Registered after the server's own listener: the hub has accepted the socket when this runs.
  inst.review!.http.server.on('upgrade', (_req, socket: Duplex) => {
    if (refuseWebSockets) {
      socket.destroy();
      return;
    }
    wsSockets.add(socket);
    socket.once('close', () => wsSockets.delete(socket));
  });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});

afterAll(async () => {
  await browser?.close();
  await inst?.close();
  await db?.drop();
  await redis?.stop();
});

const { alice, bob, carol } = REVIEWERS;

interface Opened {
  context: BrowserContext;
  page: Page;
  /** CSP violations reported to the page (securitypolicyviolation events) and the console. */
  cspViolations: string[];
  pageErrors: string[];
  /** URLs of every WebSocket the page opened. */
  wsUrls: string[];
  /** Every WebSocket frame the page received. */
  wsFrames: string[];
  /** Every HTTP request the page made (method and URL). */
  requests: { method: string; url: string }[];
  navigations: number;
}

const opened: Opened[] = [];
const agents: pg.Client[] = [];

/** An agent (node-postgres on the proxy) that afterEach disconnects. */
async function newAgent(): Promise<Awaited<ReturnType<typeof agent>>> {
  const a = await agent(inst.url(db.name));
  agents.push(a);
  return a;
}

afterEach(async () => {
  const all = opened.splice(0);
  await Promise.all(all.map((o) => o.context.close()));
  // A failed test must not leave requests behind for the next one (nor agents waiting on them).
  refuseWebSockets = false;
  const left = await callApi(inst.api, alice.token, 'GET', '/api/requests?status=pending');
  for (const r of left.json.requests as { id: string }[]) {
    await callApi(inst.api, alice.token, 'POST', `/api/requests/${r.id}/deny`, { reason: 'test cleanup' });
  }
  await Promise.all(
    agents
      .splice(0)
      .filter((a) => !(a as unknown as { connection: { stream: { destroyed: boolean } } }).connection.stream.destroyed)
      .map((a) => Promise.race([a.end().catch(() => undefined), new Promise((r) => setTimeout(r, 2000).unref())])),
  );
  // Whatever a test did, the page never broke its own CSP and never threw.
  for (const o of all) {
    expect(o.cspViolations).toEqual([]);
    expect(o.pageErrors).toEqual([]);
  }
});

/** A fresh browser tab (own sessionStorage) on the approval page, watched from the outside. */
async function openPage(): Promise<Opened & { response: Awaited<ReturnType<Page['goto']>> }> {
  const context = await browser.newContext();
  context.setDefaultTimeout(UI_TIMEOUT);
  const page = await context.newPage();
  const o: Opened = { context, page, cspViolations: [], pageErrors: [], wsUrls: [], wsFrames: [], requests: [], navigations: 0 };
  opened.push(o);
  await page.exposeFunction('__pgwCspViolation', (text: string) => o.cspViolations.push(text));
  // Injected through the DevTools protocol, so the page's CSP does not apply to it.
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      (window as unknown as { __pgwCspViolation(t: string): void }).__pgwCspViolation(`${e.violatedDirective} blocked ${e.blockedURI}`);
    });
  });
  page.on('console', (m) => {
    if (/content security policy|refused to (execute|apply|load|connect)/i.test(m.text())) o.cspViolations.push(m.text());
  });
  page.on('pageerror', (e) => o.pageErrors.push(e.message));
  page.on('websocket', (ws) => {
    o.wsUrls.push(ws.url());
    ws.on('framereceived', (f) => o.wsFrames.push(String(f.payload)));
  });
  page.on('request', (r) => o.requests.push({ method: r.method(), url: r.url() }));
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame()) o.navigations++;
  });
  const response = await page.goto(inst.api + '/');
  await page.locator('#token').waitFor();
  return Object.assign(o, { response });
}

async function signIn(page: Page, token: string): Promise<void> {
  await page.locator('#token').fill(token);
  await page.locator('#sign-in').click();
  await page.locator('#status[data-state="live"]').waitFor();
}

async function signedIn(token: string): Promise<Opened> {
  const o = await openPage();
  await signIn(o.page, token);
  return o;
}

const cardSel = (id: string) => `#pending article[data-request-id="${id}"]`;
const recentSel = (id: string) => `#recent li[data-request-id="${id}"]`;
const card = (page: Page, id: string): Locator => page.locator(cardSel(id));
const recentItem = (page: Page, id: string): Locator => page.locator(recentSel(id));

/**
 * Waits until the text of the element `selector` matches (playwright polls on animation frames,
 * bounded). By selector, not element: the page replaces list items when a request changes.
 */
async function waitText(page: Page, selector: string, re: RegExp): Promise<void> {
  await page.waitForFunction(
    ({ sel, src, flags }) => {
      const el = document.querySelector(sel);
      return el !== null && new RegExp(src, flags).test(el.textContent ?? '');
    },
    { sel: selector, src: re.source, flags: re.flags },
    { timeout: UI_TIMEOUT },
  );
}

/** A promise's settlement, observable without awaiting it. */
function watch<T>(p: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  const promise = p.finally(() => {
    done = true;
  });
  promise.catch(() => undefined);
  return { promise, settled: () => done };
}

async function tableExists(name: string): Promise<boolean> {
  const c = directClient(db.name);
  await c.connect();
  try {
    return (await c.query('SELECT to_regclass($1) IS NOT NULL AS ok', [name])).rows[0].ok as boolean;
  } finally {
    await c.end();
  }
}

async function stateOf(id: string): Promise<string> {
  return (await callApi(inst.api, alice.token, 'GET', `/api/requests/${id}`)).json.state as string;
}

describe('the approval page in a browser', () => {
  it('shows a held statement live, without its literal, and approving it runs it', async () => {
    const tab = await signedIn(alice.token);
    const { page, wsFrames } = tab;
    await expect(page.locator('#status').textContent()).resolves.toBe('live');
    await expect(page.locator('#reviewer').textContent()).resolves.toBe('alice');
    expect(await page.locator('#sign-in-view').isHidden()).toBe(true);
    // Watch every DOM change from now on: the literal must never be on the page, not even briefly.
    await page.evaluate((secret) => {
      const w = window as unknown as { __pgwLeak: boolean };
      w.__pgwLeak = false;
      new MutationObserver(() => {
        if (document.documentElement.outerHTML.includes(secret)) w.__pgwLeak = true;
      }).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
    }, 'pagesecret');

    const a = await newAgent();
    const running = watch(a.query("CREATE TABLE page_t1 AS SELECT 'pagesecret'::text AS x"));
    const id = await heldId(a);

    // Pushed over the WebSocket: no reload, no polling.
    const item = card(page, id);
    await item.waitFor();
    expect(tab.navigations).toBe(1);
    await expect(item.locator('h3').textContent()).resolves.toBe(`postgres on ${db.name}`);
    await expect(item.locator('dt:text-is("Database") + dd').textContent()).resolves.toContain(db.name);
    await expect(item.locator('dt:text-is("Rule") + dd').textContent()).resolves.toContain('schema-changes');
    await expect(item.locator('[data-field="state"]').textContent()).resolves.toBe('Pending');
    const sql = await item.locator('.statements pre').allTextContents();
    expect(sql).toHaveLength(1);
    expect(sql[0]).toContain('CREATE TABLE page_t1 AS SELECT $1');
    expect(await page.evaluate(() => document.documentElement.outerHTML)).not.toContain('pagesecret');
    expect(await tableExists('page_t1')).toBe(false);
    expect(running.settled()).toBe(false);

    await item.locator('[data-field="reason"]').fill('planned migration');
    await item.locator('[data-action="approve"]').click();
    const r = await running.promise;
    expect(r.command).toBe('SELECT');
    expect(await tableExists('page_t1')).toBe(true);

    const rec = recentItem(page, id);
    await rec.waitFor();
    await item.waitFor({ state: 'detached' });
    await waitText(page, `${recentSel(id)} [data-field="state"]`, /^Done$/);
    await expect(rec.locator('[data-field="by"]').textContent()).resolves.toBe('by alice');
    await expect(rec.locator('[data-field="reason"]').textContent()).resolves.toBe('Reason: planned migration');

    expect(await page.evaluate(() => (window as unknown as { __pgwLeak: boolean }).__pgwLeak)).toBe(false);
    expect(await page.evaluate(() => document.documentElement.outerHTML)).not.toContain('pagesecret');
    expect(wsFrames.length).toBeGreaterThan(0);
    expect(wsFrames.join('\n')).not.toContain('pagesecret');
  });

  it('deny needs a reason (nothing is sent without one); with one, the agent gets 42501 naming the reviewer', async () => {
    const { page, requests } = await signedIn(bob.token);
    const a = await newAgent();
    const running = watch(a.query('DROP TABLE some_table'));
    const id = await heldId(a);
    const item = card(page, id);
    await item.waitFor();

    // No reason: the page says so, marks the field, and sends nothing.
    await item.locator('[data-action="deny"]').click();
    const error = item.locator('[data-field="error"]');
    await waitText(page, `${cardSel(id)} [data-field="error"]`, /reason/i);
    expect(await error.isVisible()).toBe(true);
    const reason = item.locator('[data-field="reason"]');
    await expect(reason.getAttribute('aria-invalid')).resolves.toBe('true');
    expect(await reason.evaluate((el) => el === document.activeElement)).toBe(true);
    expect(await stateOf(id)).toBe('pending');
    expect(running.settled()).toBe(false);
    expect(await item.isVisible()).toBe(true);

    // Typing clears the complaint; denying with a reason goes through.
    await reason.fill('not now');
    await waitText(page, `${cardSel(id)} [data-field="error"]`, /^$/);
    await item.locator('[data-action="deny"]').click();
    const err = (await running.promise.then(
      () => expect.fail('the denied statement ran'),
      (e: unknown) => e,
    )) as pg.DatabaseError;
    expect(err.code).toBe('42501');
    expect(err.message).toContain('bob');
    expect(err.message).toContain('not now');
    expect(await tableExists('some_table')).toBe(true);

    const rec = recentItem(page, id);
    await rec.waitFor();
    await item.waitFor({ state: 'detached' });
    await expect(rec.locator('[data-field="state"]').textContent()).resolves.toBe('Denied');
    await expect(rec.locator('[data-field="by"]').textContent()).resolves.toBe('by bob');
    await expect(rec.locator('[data-field="reason"]').textContent()).resolves.toBe('Reason: not now');
    // Exactly one decision went to the server: the one with a reason.
    const decisions = requests.filter((r) => r.method === 'POST');
    expect(decisions).toEqual([{ method: 'POST', url: `${inst.api}/api/requests/${id}/deny` }]);
  });

  it('no self-approval: the server\'s 403 text is shown on the request, which stays pending', async () => {
    const { page } = await signedIn(carol.token); // carol acts as database user postgres
    const a = await newAgent();
    const running = watch(a.query('CREATE TABLE page_self (id int)'));
    const id = await heldId(a);
    const item = card(page, id);
    await item.waitFor();

    const [response] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${inst.api}/api/requests/${id}/approve`),
      item.locator('[data-action="approve"]').click(),
    ]);
    expect(response.status()).toBe(403);
    const serverText = ((await response.json()) as { error: string }).error;
    expect(serverText).toMatch(/act as/);
    const error = item.locator('[data-field="error"]');
    await waitText(page, `${cardSel(id)} [data-field="error"]`, /act as/);
    await expect(error.textContent()).resolves.toBe(serverText);
    expect(await error.isVisible()).toBe(true);

    // Still pending, on the page and in fact; the buttons are usable again.
    await expect(item.locator('[data-field="state"]').textContent()).resolves.toBe('Pending');
    expect(await item.locator('[data-action="approve"]').isEnabled()).toBe(true);
    expect(await recentItem(page, id).count()).toBe(0);
    expect(await stateOf(id)).toBe('pending');
    expect(running.settled()).toBe(false);
    expect(await tableExists('page_self')).toBe(false);

    await callApi(inst.api, alice.token, 'POST', `/api/requests/${id}/deny`, { reason: 'cleanup' });
    await running.promise.catch(() => undefined);
    await item.waitFor({ state: 'detached' });
  });

  it('names the PII columns a held statement reads (the masked columns, never a value)', async () => {
    const { page } = await signedIn(alice.token);
    const a = await newAgent();
    const running = watch(a.query("SELECT name FROM pii_people WHERE ssn = 'page-pii-secret'"));
    const id = await heldId(a);
    const item = card(page, id);
    await item.waitFor();
    const pii = item.locator('dt:text-is("PII columns") + dd');
    await expect(pii.locator('code').allTextContents()).resolves.toEqual(['public.pii_people.email', 'public.pii_people.ssn']);
    await expect(pii.textContent()).resolves.toMatch(/^Personal data: /);
    expect(await page.evaluate(() => document.documentElement.outerHTML)).not.toContain('page-pii-secret');

    await callApi(inst.api, alice.token, 'POST', `/api/requests/${id}/deny`, { reason: 'cleanup' });
    await running.promise.catch(() => undefined);
    await item.waitFor({ state: 'detached' });
  });

  it('the reason field takes as many characters as the server accepts, and no more', async () => {
    const { page } = await signedIn(bob.token);
    const a = await newAgent();
    const running = watch(a.query('DROP TABLE some_table'));
    const id = await heldId(a);
    const item = card(page, id);
    await item.waitFor();
    const reason = item.locator('[data-field="reason"]');
    expect(await reason.evaluate((el) => (el as HTMLInputElement).maxLength)).toBe(MAX_REASON);

    // The longest reason the page lets a reviewer type goes through.
    const longest = 'r'.repeat(MAX_REASON);
    await reason.fill(longest);
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${inst.api}/api/requests/${id}/deny`),
      item.locator('[data-action="deny"]').click(),
    ]);
    expect(response.status()).toBe(200);
    const err = (await running.promise.then(
      () => expect.fail('the denied statement ran'),
      (e: unknown) => e,
    )) as pg.DatabaseError;
    expect(err.message).toContain(longest);
    await item.waitFor({ state: 'detached' });
  });

  it('withdrawal: the agent disconnects and the request leaves the pending list', async () => {
    const { page } = await signedIn(alice.token);
    const a = await newAgent();
    void a.query('CREATE TABLE page_withdrawn (id int)').catch(() => undefined);
    const id = await heldId(a);
    const item = card(page, id);
    await item.waitFor();

    (a as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    await item.waitFor({ state: 'detached' });
    const rec = recentItem(page, id);
    await rec.waitFor();
    await expect(rec.locator('[data-field="state"]').textContent()).resolves.toBe('Withdrawn');
    await expect(rec.locator('[data-field="by"]').textContent()).resolves.toMatch(/disconnected/);
    expect(await stateOf(id)).toBe('withdrawn');
    expect(await tableExists('page_withdrawn')).toBe(false);
  });

  it('a dropped WebSocket: the page says it is reconnecting, comes back live with a fresh list, and keeps receiving', async () => {
    const tab = await signedIn(alice.token);
    const { page, wsUrls } = tab;
    expect(wsSockets.size).toBeGreaterThan(0);
    // Every state the status label goes through, as the reviewer would see it.
    await page.evaluate(() => {
      const w = window as unknown as { __pgwStates: string[] };
      const status = document.getElementById('status')!;
      w.__pgwStates = [status.dataset.state ?? ''];
      new MutationObserver(() => w.__pgwStates.push(status.dataset.state ?? '')).observe(status, { attributes: true, attributeFilter: ['data-state'] });
    });

    // A request the reviewer has started on: the reason they are typing must survive.
    const a0 = await newAgent();
    const before = watch(a0.query('CREATE TABLE page_before_outage (id int)'));
    const id0 = await heldId(a0);
    await card(page, id0).locator('[data-field="reason"]').fill('half-typed reason');

    // The network drops the socket, and reconnects fail for a while.
    refuseWebSockets = true;
    for (const s of wsSockets) s.destroy();
    await page.locator('#status[data-state="reconnecting"]').waitFor();
    await waitText(page, '#status', /reconnecting/);

    // Held while the page is cut off: it cannot know yet.
    const a1 = await newAgent();
    const during = watch(a1.query('CREATE TABLE page_during_outage (id int)'));
    const id1 = await heldId(a1);
    expect(await card(page, id1).count()).toBe(0);
    await expect(page.locator('#status').getAttribute('data-state')).resolves.toBe('reconnecting');

    // The network is back: live again (the backoff is at most a few seconds here), and the
    // snapshot brings what was held meanwhile.
    refuseWebSockets = false;
    await page.locator('#status[data-state="live"]').waitFor({ timeout: 15_000 });
    await expect(page.locator('#status').textContent()).resolves.toBe('live');
    await card(page, id1).waitFor();
    await expect(card(page, id0).locator('[data-field="reason"]').inputValue()).resolves.toBe('half-typed reason');
    expect(await page.locator('#sign-in-view').isHidden()).toBe(true);
    expect(tab.navigations).toBe(1);
    expect(wsUrls.length).toBeGreaterThanOrEqual(2);
    const states = await page.evaluate(() => (window as unknown as { __pgwStates: string[] }).__pgwStates);
    expect(states[0]).toBe('live');
    expect(states.indexOf('reconnecting')).toBeGreaterThan(0);
    expect(states.at(-1)).toBe('live');

    // And the new socket gets pushes: a request held now appears by itself.
    const a2 = await newAgent();
    const after = watch(a2.query('CREATE TABLE page_after_reconnect (id int)'));
    const id2 = await heldId(a2);
    await card(page, id2).waitFor();

    for (const id of [id0, id1, id2]) await callApi(inst.api, alice.token, 'POST', `/api/requests/${id}/deny`, { reason: 'cleanup' });
    await Promise.all([before, during, after].map((w) => w.promise.catch(() => undefined)));
    for (const id of [id0, id1, id2]) await card(page, id).waitFor({ state: 'detached' });
  });

  it('works by keyboard alone: sign in, reach a request\'s reason field and approve button with Tab', async () => {
    const { page } = await openPage();
    // The page puts the focus in the token field; type and press Enter.
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('token');
    await page.keyboard.type(alice.token);
    await page.keyboard.press('Enter');
    await page.locator('#status[data-state="live"]').waitFor();

    const a = await newAgent();
    const running = watch(a.query('CREATE TABLE page_keyboard (id int)'));
    const id = await heldId(a);
    await card(page, id).waitFor();

    /** Presses Tab until the focus is on `selector` inside this request's card. */
    const tabTo = async (selector: string, maxPresses: number): Promise<number> => {
      for (let presses = 1; presses <= maxPresses; presses++) {
        await page.keyboard.press('Tab');
        const there = await page.evaluate(
          ({ sel, rid }) => {
            const el = document.activeElement;
            return !!el && el.matches(sel) && el.closest('article')?.getAttribute('data-request-id') === rid;
          },
          { sel: selector, rid: id },
        );
        if (there) return presses;
      }
      throw new Error(`${selector} of request ${id} not reached within ${maxPresses} Tab presses`);
    };
    await tabTo('[data-field="reason"]', 10);
    await page.keyboard.type('keyboard approval');
    // From the reason field, past the optional grant field, to Approve.
    expect(await tabTo('[data-action="approve"]', 3)).toBeLessThanOrEqual(2);
    expect(running.settled()).toBe(false);
    await page.keyboard.press('Enter');

    await running.promise;
    expect(await tableExists('page_keyboard')).toBe(true);
    const rec = recentItem(page, id);
    await rec.waitFor();
    await expect(rec.locator('[data-field="reason"]').textContent()).resolves.toBe('Reason: keyboard approval');
    await expect(rec.locator('[data-field="by"]').textContent()).resolves.toBe('by alice');
  });

  it('keeps the token out of URLs and localStorage, and runs under its Content-Security-Policy', async () => {
    const { page, response, wsUrls, cspViolations, requests } = await openPage();
    const csp = response?.headers()['content-security-policy'];
    expect(csp).toBeDefined();
    expect(csp).toContain("default-src 'none'");
    expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/=]+'/);
    expect(csp).not.toContain('unsafe-inline');

    await signIn(page, alice.token);
    // The page's own script ran (it signed in and went live), so the CSP hash matches it.
    expect(cspViolations).toEqual([]);
    expect(page.url()).toBe(inst.api + '/');
    expect(page.url()).not.toContain(alice.token);
    expect(await page.evaluate(() => localStorage.length)).toBe(0);
    expect(await page.evaluate(() => document.cookie)).toBe('');
    expect(await page.evaluate(() => sessionStorage.getItem('pgwarden.reviewerToken'))).toBe(alice.token);
    expect(wsUrls.length).toBeGreaterThan(0);
    for (const u of [...wsUrls, ...requests.map((r) => r.url)]) expect(u).not.toContain(alice.token);
    for (const u of wsUrls) expect(u).toBe(inst.api.replace(/^http/, 'ws') + '/ws');

    // Signing out forgets it in this tab too.
    await page.locator('#sign-out').click();
    await page.locator('#sign-in-view').waitFor();
    expect(await page.evaluate(() => sessionStorage.getItem('pgwarden.reviewerToken'))).toBeNull();
    expect(await page.evaluate(() => localStorage.length)).toBe(0);
    expect(await page.locator('#token').inputValue()).toBe('');
  });
});
