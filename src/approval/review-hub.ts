import { WebSocketServer, type WebSocket } from 'ws';
import type { Logger } from '../logger.js';
import type { ApprovalEvent, ApprovalEvents, ApprovalStore } from './approval-store.js';
import type { ReviewerAuth } from './reviewer-auth.js';

/**
 * The live feed behind the approval page (docs/approvals-api.md, "WebSocket /ws").
 *
 * Authentication is the first message, never the URL: URLs end up in proxy and access logs and
 * browser history. Until a socket authenticates it receives nothing, and it is closed (4401)
 * when the credential is wrong or does not come within AUTH_TIMEOUT_MS. The Origin check happens
 * at the HTTP upgrade (approval-http.ts), before this hub sees the socket.
 *
 * Every change in the store (made by any instance) reaches every authenticated socket: the hub
 * subscribes to the store's events and sends the current record.
 */
const AUTH_TIMEOUT_MS = 5000;
const PING_MS = 25_000;
/** Messages from a client are tiny (the auth message); anything larger is hostile. */
const MAX_CLIENT_MESSAGE = 16 * 1024;

interface Member {
  alive: boolean;
  /**
   * Pushes that came while this socket's snapshot was being read: sent after the snapshot,
   * which the page takes as the whole truth and would otherwise let hide them. Null once sent.
   */
  held: string[] | null;
}

export class ReviewHub {
  readonly wss = new WebSocketServer({ noServer: true, maxPayload: MAX_CLIENT_MESSAGE });
  private readonly members = new Map<WebSocket, Member>();
  private readonly ping: NodeJS.Timeout;

  constructor(
    private readonly store: ApprovalStore,
    private readonly auth: ReviewerAuth,
    private readonly events: ApprovalEvents,
    private readonly log: Logger,
  ) {
    this.wss.on('connection', (ws: WebSocket) => this.onConnection(ws));
    void events.subscribe((event) => void this.onEvent(event)).catch((err: unknown) => log.warn({ message: (err as Error).message }, 'approval events subscription failed'));
    this.ping = setInterval(() => this.heartbeat(), PING_MS).unref();
  }

  private onConnection(ws: WebSocket): void {
    ws.on('error', () => ws.terminate());
    const timer = setTimeout(() => ws.close(4401, 'authentication required'), AUTH_TIMEOUT_MS);
    ws.once('message', (data, isBinary) => {
      clearTimeout(timer);
      void this.authenticate(ws, isBinary ? null : data.toString());
    });
    ws.on('close', () => {
      clearTimeout(timer);
      this.members.delete(ws);
    });
  }

  private async authenticate(ws: WebSocket, text: string | null): Promise<void> {
    let token: unknown;
    try {
      const msg = text === null ? null : (JSON.parse(text) as { type?: unknown; token?: unknown });
      token = msg?.type === 'auth' ? msg.token : undefined;
    } catch {
      token = undefined;
    }
    const reviewer = typeof token === 'string' ? await this.auth.authenticate(token) : null;
    if (!reviewer) {
      ws.close(4401, 'invalid credentials');
      return;
    }
    if (ws.readyState !== ws.OPEN) return;
    // Anything a client sends after auth is ignored; decisions go through REST.
    ws.on('message', () => {});
    ws.on('pong', () => {
      const m = this.members.get(ws);
      if (m) m.alive = true;
    });
    const member: Member = { alive: true, held: [] };
    this.members.set(ws, member);
    this.send(ws, { type: 'hello', reviewer: { name: reviewer.name, groups: reviewer.groups, via: reviewer.via }, now: Date.now() });
    try {
      const [pending, recent] = await Promise.all([this.store.pending(), this.store.recent()]);
      this.send(ws, { type: 'snapshot', now: Date.now(), pending, recent });
    } catch (err) {
      this.log.warn({ message: (err as Error).message }, 'approval snapshot failed (Redis unreachable?)');
      ws.close(1011, 'approval store unavailable');
      return;
    }
    // A held push may be older than the snapshot; the page never moves a request back a state.
    const held = member.held ?? [];
    member.held = null;
    for (const text of held) if (ws.readyState === ws.OPEN) ws.send(text);
  }

  private async onEvent(event: ApprovalEvent): Promise<void> {
    if (this.members.size === 0) return;
    const request = await this.store.get(event.id).catch(() => null);
    if (!request) return;
    const text = JSON.stringify({ type: 'request', now: Date.now(), request });
    for (const [ws, m] of this.members) {
      if (m.held) m.held.push(text);
      else if (ws.readyState === ws.OPEN) ws.send(text);
    }
  }

  private send(ws: WebSocket, msg: unknown): void {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(msg));
  }

  /** Drops sockets that stopped answering pings (a laptop that went to sleep). */
  private heartbeat(): void {
    for (const [ws, m] of this.members) {
      if (!m.alive) {
        ws.terminate();
        continue;
      }
      m.alive = false;
      ws.ping();
    }
  }

  close(): void {
    clearInterval(this.ping);
    for (const ws of this.wss.clients) ws.terminate();
    this.wss.close();
    this.events.close();
  }
}
