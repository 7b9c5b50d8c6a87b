import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../logger.js';
import type { ApprovalStore } from './approval-store.js';
import { METRICS_CONTENT_TYPE, renderMetrics, type MetricsSnapshot } from './metrics.js';
import { DeskError, MAX_REASON, type ReviewDesk } from './review-desk.js';
import type { ReviewHub } from './review-hub.js';
import type { Reviewer, ReviewerAuth } from './reviewer-auth.js';

/**
 * The reviewers' HTTP listener: the page at `/`, the WebSocket at `/ws`, the REST API under
 * `/api/`, plus `/healthz` and `/metrics` (docs/approvals-api.md).
 *
 * Security choices: every API call needs a bearer credential; the WebSocket upgrade is refused
 * unless the Origin is the page's own (or configured), so another site open in a reviewer's
 * browser cannot drive it; the page is served with a Content-Security-Policy that allows only
 * its own inline script and style (by hash), so agent-controlled text can never run as script.
 */
export interface ApprovalHttpOptions {
  host: string;
  port: number;
  tls?: { cert: string; key: string };
  /** Origins allowed besides the page's own. */
  allowedOrigins: readonly string[];
  store: ApprovalStore;
  desk: ReviewDesk;
  auth: ReviewerAuth;
  hub: ReviewHub;
  /** Metrics of every process holding statements (summed), without the pending gauge. */
  metrics: () => MetricsSnapshot;
  log: Logger;
}

export interface ApprovalHttp {
  server: http.Server;
  port: number;
  close(): Promise<void>;
}

const MAX_BODY = 16 * 1024;

interface Page {
  html: Buffer;
  csp: string;
}

const MAX_REASON_SLOT = '{{MAX_REASON}}';

/** The page file, next to this module in src/, or found from dist/ (it needs no build step). */
function loadPage(): Page {
  const candidates = [new URL('./page/index.html', import.meta.url), new URL('../../../src/approval/page/index.html', import.meta.url)];
  const file = candidates.map((u) => fileURLToPath(u)).find((p) => existsSync(p));
  if (!file) throw new Error('approval page (src/approval/page/index.html) not found');
  // The page's reason field takes what the desk accepts: one limit, written into the page here.
  const template = readFileSync(file, 'utf8');
  if (!template.includes(MAX_REASON_SLOT)) throw new Error(`approval page ${file} lacks ${MAX_REASON_SLOT}`);
  const text = template.replaceAll(MAX_REASON_SLOT, String(MAX_REASON));
  const html = Buffer.from(text, 'utf8');
  const hashes = (tag: 'script' | 'style') =>
    [...text.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))].map((m) => `'sha256-${createHash('sha256').update(m[1]!, 'utf8').digest('base64')}'`).join(' ');
  const csp = [
    "default-src 'none'",
    `script-src ${hashes('script') || "'none'"}`,
    `style-src ${hashes('style') || "'none'"}`,
    "connect-src 'self'",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  return { html, csp };
}

const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...SECURITY_HEADERS });
  res.end(text);
}

function bearer(req: http.IncomingMessage): string | null {
  const h = req.headers.authorization;
  if (!h) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m ? m[1]! : null;
}

function readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new DeskError(400, 'request body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (size === 0) return resolve({});
      try {
        const v = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
        if (typeof v !== 'object' || v === null || Array.isArray(v)) return reject(new DeskError(400, 'expected a JSON object'));
        resolve(v as Record<string, unknown>);
      } catch {
        reject(new DeskError(400, 'invalid JSON'));
      }
    });
    req.on('error', reject);
  });
}

/** The page's own origin as the browser names it (scheme + Host header). */
function ownOrigin(req: http.IncomingMessage, tls: boolean): string | null {
  const host = req.headers.host;
  return host ? `${tls ? 'https' : 'http'}://${host}` : null;
}

export async function startApprovalHttp(o: ApprovalHttpOptions): Promise<ApprovalHttp> {
  const page = loadPage();
  const tls = o.tls !== undefined;
  const allowed = new Set(o.allowedOrigins.map((u) => new URL(u).origin));

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname;
    if (req.method === 'GET' && (path === '/' || path === '/index.html')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': page.csp, 'x-frame-options': 'DENY', ...SECURITY_HEADERS });
      res.end(page.html);
      return;
    }
    if (req.method === 'GET' && path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
      return;
    }
    if (req.method === 'GET' && path === '/metrics') {
      const pending = await o.store.pending().then((p) => p.length, () => null);
      res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE });
      res.end(renderMetrics(o.metrics(), { pending }));
      return;
    }
    if (!path.startsWith('/api/')) {
      sendJson(res, 404, { error: 'not found' });
      return;
    }
    const token = bearer(req);
    const reviewer: Reviewer | null = token ? await o.auth.authenticate(token) : null;
    if (!reviewer) {
      res.setHeader('www-authenticate', 'Bearer realm="pgwarden"');
      sendJson(res, 401, { error: 'a valid reviewer token is required (Authorization: Bearer …)' });
      return;
    }
    await api(req, res, path, url, reviewer);
  };

  const api = async (req: http.IncomingMessage, res: http.ServerResponse, path: string, url: URL, reviewer: Reviewer): Promise<void> => {
    if (req.method === 'GET' && path === '/api/me') {
      sendJson(res, 200, { name: reviewer.name, groups: reviewer.groups, via: reviewer.via });
      return;
    }
    if (req.method === 'GET' && path === '/api/requests') {
      const status = url.searchParams.get('status') ?? 'pending';
      if (status !== 'pending' && status !== 'recent') throw new DeskError(400, 'status must be pending or recent');
      const requests = status === 'pending' ? await o.store.pending() : await o.store.recent();
      sendJson(res, 200, { now: Date.now(), requests });
      return;
    }
    const m = /^\/api\/requests\/([^/]+)(?:\/(approve|deny))?$/.exec(path);
    if (m && req.method === 'GET' && !m[2]) {
      sendJson(res, 200, await o.desk.get(m[1]!));
      return;
    }
    if (m && req.method === 'POST' && m[2]) {
      const body = await readJson(req);
      const rec =
        m[2] === 'approve'
          ? await o.desk.approve(reviewer, m[1]!, { reason: body.reason, grantMinutes: body.grant_minutes })
          : await o.desk.deny(reviewer, m[1]!, { reason: body.reason });
      sendJson(res, 200, rec);
      return;
    }
    sendJson(res, 404, { error: 'not found' });
  };

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
    handle(req, res).catch((err: unknown) => {
      if (err instanceof DeskError) {
        sendJson(res, err.status, { error: err.message, ...(err.state ? { state: err.state } : {}) });
        return;
      }
      o.log.error({ message: (err as Error).message }, 'approval API request failed');
      if (!res.headersSent) sendJson(res, 503, { error: 'the approval service is unavailable (Redis unreachable?)' });
      else res.destroy();
    });
  };

  const server = tls ? https.createServer({ cert: readFileSync(o.tls!.cert), key: readFileSync(o.tls!.key) }, onRequest) : http.createServer(onRequest);
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const origin = req.headers.origin;
    const refuse = (status: number, text: string) => {
      socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    };
    if (path !== '/ws') return refuse(404, 'Not Found');
    // Browsers always send Origin on WebSocket upgrades; a missing one is a non-browser
    // client (CLI, scripts), which still has to authenticate with its first message.
    if (origin !== undefined && origin !== ownOrigin(req, tls) && !allowed.has(origin)) {
      o.log.warn({ origin }, 'WebSocket from a foreign origin refused');
      return refuse(403, 'Forbidden');
    }
    o.hub.wss.handleUpgrade(req, socket, head, (ws) => o.hub.wss.emit('connection', ws, req));
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: o.host, port: o.port }, () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  return {
    server,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        o.hub.close();
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}
