import type { Logger } from '../logger.js';
import type { ApprovalRequest } from './approval-store.js';

/**
 * The outgoing approval webhook (docs/approvals-api.md "Webhook"): each new request and each
 * verdict is POSTed as Slack-compatible JSON (incoming-webhook format: `text` fallback plus
 * `blocks`), with a link to the approval page.
 *
 * A message carries only what a reviewer needs to decide: what happened, the agent (user,
 * database, application, client), the normalized statements (already literal-free), kinds,
 * tables, rule and reason, and the timing. Every string that came from the agent or a reviewer
 * is escaped for Slack mrkdwn so nobody can post `<!channel>` or a disguised link.
 *
 * Delivery never holds up the proxy: notify() only queues; one delivery is in flight at a time
 * (order kept), network errors, 5xx and 429 are retried with a short backoff, the queue is
 * bounded (oldest dropped first). Webhook URLs carry secrets, so logs name only the origin.
 */
export type WebhookEvent = 'held' | 'approved' | 'denied' | 'expired' | 'withdrawn';

/** Longest statement text shown (characters), and how many statements are shown. */
const MAX_SQL_CHARS = 500;
const MAX_STATEMENTS = 5;
/** Longest single-line field (user, application, reason, table name ...). */
const MAX_FIELD_CHARS = 300;
/** At most this many kinds / tables are listed. */
const MAX_LIST = 20;
/** Wait before retry n (the last value repeats when more retries are configured). */
const BACKOFF_MS = [200, 800];

/** Escapes the three characters Slack mrkdwn gives meaning to (`<!channel>`, `<url|text>`). */
export function escapeMrkdwn(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Cuts to `max` code points (never in the middle of a surrogate pair), marking the cut. */
function truncate(s: string, max: number): string {
  const chars = Array.from(s);
  return chars.length <= max ? s : `${chars.slice(0, max).join('')}…`;
}

/** A single-line field as shown: control characters (line breaks) flattened, cut, escaped. */
function field(value: unknown, max = MAX_FIELD_CHARS): string {
  // eslint-disable-next-line no-control-regex
  const s = String(value ?? '').replace(/[\u0000-\u001f\u007f\u2028\u2029]+/g, ' ');
  return escapeMrkdwn(truncate(s, max));
}

/** A list of short fields: at most MAX_LIST shown, the rest counted. */
function list(values: readonly unknown[] | undefined): string {
  const all = Array.isArray(values) ? values : [];
  if (all.length === 0) return '(none)';
  const shown = all.slice(0, MAX_LIST).map((v) => field(v, 200));
  return all.length > MAX_LIST ? `${shown.join(', ')} and ${all.length - MAX_LIST} more` : shown.join(', ');
}

/**
 * Statement text for a code block: cut, escaped, and no backtick left next to another (a zero
 * width space follows each one), so the text can neither close the block nor open a new one.
 */
function codeBlock(sql: unknown): string {
  const text = escapeMrkdwn(truncate(String(sql ?? ''), MAX_SQL_CHARS)).replace(/`/g, '`\u200b');
  return '```\n' + text + '\n```';
}

function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 === 0 ? `${m} min` : `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  return m % 60 === 0 ? `${h} h` : `${h} h ${m % 60} min`;
}

function utc(ms: number): string {
  const d = new Date(ms);
  return Number.isFinite(d.getTime()) ? `${d.toISOString().slice(0, 19).replace('T', ' ')} UTC` : 'unknown';
}

/** What happened, as a short phrase (escaped). */
function headline(event: WebhookEvent, r: ApprovalRequest): string {
  const v = r.verdict;
  switch (event) {
    case 'held':
      return 'Statement held for review';
    case 'approved': {
      const approvers = Array.isArray(r.approvals) && r.approvals.length > 1 ? r.approvals.map((a) => a.reviewer) : [v?.by ?? 'unknown'];
      let s = `Approved by ${approvers.map((a) => field(a)).join(', ')}`;
      if (v?.reason) s += `: ${field(v.reason)}`;
      if (v?.grantMinutes) s += ` (grant for ${field(v.grantMinutes)} min)`;
      return s;
    }
    case 'denied':
      return `Denied by ${field(v?.by ?? 'unknown')}${v?.reason ? `: ${field(v.reason)}` : ''}`;
    case 'expired':
      return 'Expired without a verdict';
    case 'withdrawn':
      return 'Withdrawn (the agent cancelled or disconnected)';
  }
}

function timing(event: WebhookEvent, r: ApprovalRequest): string {
  switch (event) {
    case 'held':
      return `Waits up to ${duration(r.expiresAt - r.createdAt)} · expires ${utc(r.expiresAt)}`;
    case 'approved':
    case 'denied':
      return `Decided after ${duration((r.verdict?.at ?? Date.now()) - r.createdAt)}`;
    case 'expired':
      return `Expired after ${duration(r.expiresAt - r.createdAt)}`;
    case 'withdrawn':
      return `Withdrawn after ${duration(Date.now() - r.createdAt)}`;
  }
}

/**
 * The Slack-compatible message for one event. Built field by field from the record: nothing
 * else of it (instance, fingerprints, estimates, other properties) is ever included.
 */
export function slackMessage(event: WebhookEvent, request: ApprovalRequest, pageUrl: string): { text: string; blocks: unknown[] } {
  const r = request;
  const s = r.session;
  const agent = `${field(s?.user)}@${field(s?.database)}`;
  const app = s?.application ? field(s.application) : '(none)';
  const what = headline(event, r);
  const link = `<${escapeMrkdwn(pageUrl).replace(/\|/g, '%7C')}#${encodeURIComponent(String(r.id))}|Open in pgwarden>`;
  const statements = Array.isArray(r.statements) ? r.statements : [];

  const blocks: unknown[] = [
    { type: 'section', text: { type: 'mrkdwn', text: `*${what}*\n*Rule:* ${field(r.rule)} — ${field(r.reason)}` } },
    {
      type: 'section',
      text: { type: 'mrkdwn', text: `*Agent:* ${agent}\n*Application:* ${app}\n*Client:* ${field(s?.client)}` },
    },
    { type: 'section', text: { type: 'mrkdwn', text: `*Kinds:* ${list(r.kinds)}\n*Tables:* ${list(r.tables)}` } },
    ...statements.slice(0, MAX_STATEMENTS).map((st) => ({ type: 'section', text: { type: 'mrkdwn', text: codeBlock(st?.text) } })),
  ];
  if (statements.length > MAX_STATEMENTS) {
    blocks.push({ type: 'context', elements: [{ type: 'mrkdwn', text: `…and ${statements.length - MAX_STATEMENTS} more statements` }] });
  }
  blocks.push({
    type: 'context',
    elements: [{ type: 'mrkdwn', text: `${timing(event, r)} · request ${field(r.id, 64)} · ${link}` }],
  });

  const text = `pgwarden: ${what[0]!.toLowerCase()}${what.slice(1)} (${agent}, ${app}, rule ${field(r.rule)})`;
  return { text, blocks };
}

/** Waits `ms`, or less when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

export interface WebhookOptions {
  url: string;
  /** Per attempt; close() also waits at most this long. */
  timeoutMs: number;
  /** The approval page as reviewers reach it (links); a function when it is known only later. */
  pageUrl: string | (() => string);
  log: Logger;
  /** Undelivered messages kept; past it the oldest is dropped. Default 100. */
  maxQueue?: number;
  /** Extra attempts after a network error, 5xx or 429. Default 2. */
  retries?: number;
}

export class Webhook {
  private readonly url: string;
  /** The only part of the URL that may be logged (the path and query carry the secret). */
  private readonly origin: string;
  private readonly timeoutMs: number;
  private readonly pageUrl: () => string;
  private readonly log: Logger;
  private readonly maxQueue: number;
  private readonly retries: number;
  private readonly queue: string[] = [];
  /** The delivery loop runs (one at a time); `pumping` is its promise, for close(). */
  private active = false;
  private pumping: Promise<void> | null = null;
  private closed = false;
  /** Aborts the in-flight attempt and any backoff when close() gives up waiting. */
  private readonly stop = new AbortController();
  private dropped = 0;
  private dropReport: NodeJS.Immediate | null = null;

  constructor(opts: WebhookOptions) {
    this.url = opts.url;
    let origin = '[invalid url]';
    try {
      origin = new URL(opts.url).origin;
    } catch {
      // keep the placeholder: never log the raw string
    }
    this.origin = origin;
    this.timeoutMs = opts.timeoutMs;
    const page = opts.pageUrl;
    this.pageUrl = typeof page === 'function' ? page : () => page;
    this.log = opts.log;
    this.maxQueue = Math.max(1, opts.maxQueue ?? 100);
    this.retries = Math.max(0, opts.retries ?? 2);
  }

  /** Queues a message for the event; returns at once and never throws. */
  notify(event: WebhookEvent, request: ApprovalRequest): void {
    try {
      if (this.closed) {
        this.log.debug({ webhook: this.origin, event }, 'webhook closed: notification not sent');
        return;
      }
      this.queue.push(JSON.stringify(slackMessage(event, request, this.pageUrl())));
      if (this.queue.length > this.maxQueue) {
        this.dropped += this.queue.length - this.maxQueue;
        this.queue.splice(0, this.queue.length - this.maxQueue);
        this.scheduleDropReport();
      }
      if (!this.active) this.pumping = this.pump();
    } catch (err) {
      try {
        this.log.warn({ webhook: this.origin, event, err: this.describe(err) }, 'webhook notification could not be built');
      } catch {
        // a logger failure must not reach the caller either
      }
    }
  }

  /** Waits for queued and in-flight deliveries, at most timeoutMs; then drops what is left. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.pumping) {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.timeoutMs);
      });
      await Promise.race([this.pumping, deadline]);
      clearTimeout(timer);
    }
    const left = this.queue.length;
    this.queue.length = 0;
    this.stop.abort();
    if (this.dropReport) clearImmediate(this.dropReport);
    this.reportDropped();
    if (left > 0) this.log.warn({ webhook: this.origin, dropped: left }, `webhook closed: ${left} undelivered notification(s) dropped`);
  }

  /** One warning per burst of drops, with the count, instead of one line per message. */
  private scheduleDropReport(): void {
    if (this.dropReport) return;
    this.dropReport = setImmediate(() => this.reportDropped());
  }

  private reportDropped(): void {
    this.dropReport = null;
    if (this.dropped === 0) return;
    const dropped = this.dropped;
    this.dropped = 0;
    this.log.warn({ webhook: this.origin, dropped }, `webhook queue full: dropped ${dropped} oldest notification(s)`);
  }

  private async pump(): Promise<void> {
    this.active = true;
    try {
      for (let body = this.queue.shift(); body !== undefined && !this.stop.signal.aborted; body = this.queue.shift()) {
        await this.deliver(body);
      }
    } catch (err) {
      this.log.warn({ webhook: this.origin, err: this.describe(err) }, 'webhook delivery loop failed');
    } finally {
      // Checked and cleared in the same step as the last shift(): a later notify() starts a new loop.
      this.active = false;
    }
  }

  /** POSTs one message, retrying network errors, 5xx and 429; logs (origin only) when it gives up. */
  private async deliver(body: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      let problem: Record<string, unknown>;
      let retryable: boolean;
      try {
        const res = await fetch(this.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
          signal: AbortSignal.any([AbortSignal.timeout(this.timeoutMs), this.stop.signal]),
        });
        // Drain the answer so the connection can be reused.
        await res.arrayBuffer().catch(() => undefined);
        if (res.ok) return;
        problem = { status: res.status };
        retryable = res.status === 429 || res.status >= 500;
      } catch (err) {
        problem = { err: this.describe(err) };
        retryable = true;
      }
      if (this.stop.signal.aborted) {
        this.log.warn({ webhook: this.origin, attempts: attempt + 1, ...problem }, 'webhook delivery abandoned at close');
        return;
      }
      if (!retryable || attempt >= this.retries) {
        this.log.warn({ webhook: this.origin, attempts: attempt + 1, ...problem }, 'webhook delivery failed');
        return;
      }
      this.log.debug({ webhook: this.origin, attempt: attempt + 1, ...problem }, 'webhook delivery failed, retrying');
      await sleep(BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)]!, this.stop.signal);
    }
  }

  /** An error as a short string that never contains the URL's path or query (fetch errors can quote it). */
  private describe(err: unknown): string {
    const e = err as { name?: unknown; message?: unknown; cause?: { code?: unknown; message?: unknown } } | null;
    let s = `${String(e?.name ?? 'Error')}: ${String(e?.message ?? err)}`;
    const cause = e?.cause?.code ?? e?.cause?.message;
    if (typeof cause === 'string' && cause !== '') s += ` (${cause})`;
    s = s.split(this.url).join(this.origin);
    try {
      const u = new URL(this.url);
      for (const part of [u.pathname + u.search + u.hash, u.search, u.hash, u.pathname]) {
        if (part.length > 1) s = s.split(part).join('[redacted]');
      }
    } catch {
      // unparseable URL: the whole string was replaced above
    }
    return s;
  }
}
