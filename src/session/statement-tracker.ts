import { BackendTag } from '../protocol/codes.js';
import type { FrontendMessage } from '../protocol/frontend.js';

/**
 * Tracks protocol-level prepared statements and portals, so that a later Bind/Execute of a named
 * statement is judged by the SQL the server will actually run ("Extended Query").
 *
 * A Parse, Bind or Close only takes effect when the server confirms it (ParseComplete,
 * BindComplete, CloseComplete). Until then it is pending: a second Parse of an existing name is
 * rejected by the server, which keeps the first text, so recording the new text on sight would
 * let the old statement run while the new one was judged. Lookups therefore return every text a
 * name may stand for (confirmed and pending) and the judge takes the strictest verdict.
 */
type Op =
  | { op: 'parse'; name: string; sql: string }
  | { op: 'bind'; portal: string; statement: string }
  | { op: 'close'; target: 'S' | 'P'; name: string }
  | { op: 'sync' };

export class StatementTracker {
  readonly statements = new Map<string, string>();
  /** portal name → statement name */
  readonly portals = new Map<string, string>();
  private pending: Op[] = [];

  /** A client message was forwarded to the server. */
  observe(msg: FrontendMessage): void {
    switch (msg.type) {
      case 'Parse':
        this.pending.push({ op: 'parse', name: msg.statement, sql: msg.sql });
        return;
      case 'Bind':
        this.pending.push({ op: 'bind', portal: msg.portal, statement: msg.statement });
        return;
      case 'Close':
        this.pending.push({ op: 'close', target: msg.target, name: msg.name });
        return;
      case 'Sync':
        this.pending.push({ op: 'sync' });
        return;
      case 'Query':
        // A simple Query destroys the unnamed statement and portal ("Simple Query").
        this.statements.delete('');
        this.portals.delete('');
        return;
      default:
        return;
    }
  }

  /** A server message arrived (only the tags below matter). */
  onServerMessage(tag: number): void {
    switch (tag) {
      case BackendTag.ParseComplete:
        this.commit('parse');
        return;
      case BackendTag.BindComplete:
        this.commit('bind');
        return;
      case BackendTag.CloseComplete:
        this.commit('close');
        return;
      case BackendTag.ErrorResponse:
        // The failed message and everything up to Sync are discarded by the server.
        this.dropUntilSync(false);
        return;
      case BackendTag.ReadyForQuery:
        this.dropUntilSync(true);
        return;
      default:
        return;
    }
  }

  private commit(kind: 'parse' | 'bind' | 'close'): void {
    const i = this.pending.findIndex((o) => o.op !== 'sync');
    const op = this.pending[i];
    if (!op || op.op !== kind) {
      // Out of step with the server: forget everything uncertain (lookups then fail closed).
      this.pending = [];
      return;
    }
    this.pending.splice(i, 1);
    if (op.op === 'parse') this.statements.set(op.name, op.sql);
    else if (op.op === 'bind') this.portals.set(op.portal, op.statement);
    else if (op.target === 'S') this.statements.delete(op.name);
    else this.portals.delete(op.name);
  }

  private dropUntilSync(includingSync: boolean): void {
    const i = this.pending.findIndex((o) => o.op === 'sync');
    if (i < 0) this.pending = [];
    else this.pending.splice(0, includingSync ? i + 1 : i);
  }

  /** Every SQL text the statement name may stand for: confirmed first, then pending Parses. */
  statementCandidates(name: string): string[] {
    const out: string[] = [];
    const confirmed = this.statements.get(name);
    if (confirmed !== undefined) out.push(confirmed);
    for (const o of this.pending) if (o.op === 'parse' && o.name === name) out.push(o.sql);
    return out;
  }

  /** Every statement name the portal may be bound to: confirmed first, then pending Binds. */
  portalCandidates(portal: string): string[] {
    const out: string[] = [];
    const confirmed = this.portals.get(portal);
    if (confirmed !== undefined) out.push(confirmed);
    for (const o of this.pending) if (o.op === 'bind' && o.portal === portal) out.push(o.statement);
    return out;
  }
}
