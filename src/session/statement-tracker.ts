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
 *
 * Which answer ends which pending message is not guessed from the client's messages: the session
 * numbers every ReadyForQuery it expects (one per forwarded Query, FunctionCall and counted Sync,
 * including its own injected statements and the Sync a COPY swallows), and tags each forwarded
 * message with the number of the ReadyForQuery that ends its batch. The server answers in order:
 *   - ParseComplete/BindComplete/CloseComplete confirm the oldest pending message;
 *   - an ErrorResponse while ReadyForQuery n is awaited ends batch n: the messages of batch n
 *     before the failing one were confirmed already, the failing one and the rest up to Sync are
 *     skipped by the server ("Extended Query": "the backend will ... discard messages until a
 *     Sync is reached"), so every pending message of batch n is dropped;
 *   - ReadyForQuery n ends every batch up to n: what is still pending there never took effect.
 * This stays right whatever was pipelined in between (simple Queries and their errors, pgwarden's
 * own statements, COPY), which a count of Sync messages is not.
 *
 * Pure: no I/O; the session supplies the numbers.
 */
type Op = (
  | { op: 'parse'; name: string; sql: string }
  | { op: 'bind'; portal: string; statement: string }
  | { op: 'close'; target: 'S' | 'P'; name: string }
  /** A simple Query: it destroys the unnamed statement and portal when the server reaches it. */
  | { op: 'query' }
) & {
  /** Number of the ReadyForQuery that ends this message's batch. */
  ready: number;
};

export class StatementTracker {
  readonly statements = new Map<string, string>();
  /** portal name → statement name */
  readonly portals = new Map<string, string>();
  /** In forwarding order, so `ready` never decreases along the list. */
  private pending: Op[] = [];

  /**
   * A client message was forwarded to the server; `ready` is the number of the ReadyForQuery
   * that ends its batch (for a Query, its own).
   */
  observe(msg: FrontendMessage, ready: number): void {
    switch (msg.type) {
      case 'Parse':
        this.pending.push({ op: 'parse', name: msg.statement, sql: msg.sql, ready });
        return;
      case 'Bind':
        this.pending.push({ op: 'bind', portal: msg.portal, statement: msg.statement, ready });
        return;
      case 'Close':
        this.pending.push({ op: 'close', target: msg.target, name: msg.name, ready });
        return;
      case 'Query':
        this.pending.push({ op: 'query', ready });
        return;
      default:
        return;
    }
  }

  /**
   * A server message arrived (only the tags below matter). `answering` is the number of the
   * ReadyForQuery that ends what the server is answering now (for a ReadyForQuery, its own).
   */
  onServerMessage(tag: number, answering: number): void {
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
      case BackendTag.ReadyForQuery:
        // Both end what is pending in batch `answering` (and anything older): an error makes the
        // server skip the rest of the batch, ReadyForQuery closes it.
        this.finish(answering);
        return;
      default:
        return;
    }
  }

  /**
   * The Sync ending batch `batch` was swallowed by the COPY FROM STDIN that batch started ("COPY
   * Operations": the backend ignores Sync received during copy-in mode): that batch now ends at
   * the next Sync, so every later batch ends one ReadyForQuery earlier than counted.
   */
  syncIgnored(batch: number): void {
    for (const o of this.pending) if (o.ready > batch) o.ready--;
  }

  private commit(kind: 'parse' | 'bind' | 'close'): void {
    // A Query before the confirmed message has run by now.
    while (this.pending[0]?.op === 'query') this.apply(this.pending.shift()!);
    const op = this.pending[0];
    if (!op || op.op !== kind) {
      // Out of step with the server: forget everything uncertain (lookups then fail closed).
      this.pending = [];
      return;
    }
    this.pending.shift();
    this.apply(op);
  }

  private finish(ready: number): void {
    while (this.pending[0] && this.pending[0].ready <= ready) {
      const op = this.pending.shift()!;
      // Messages never confirmed did not take effect; a Query did (even one that failed: it
      // destroys the unnamed statement before running anything).
      if (op.op === 'query') this.apply(op);
    }
  }

  private apply(op: Op): void {
    switch (op.op) {
      case 'parse':
        this.statements.set(op.name, op.sql);
        return;
      case 'bind':
        this.portals.set(op.portal, op.statement);
        return;
      case 'close':
        if (op.target === 'S') this.statements.delete(op.name);
        else this.portals.delete(op.name);
        return;
      case 'query':
        // "Simple Query": the unnamed statement and portal do not survive a Query message.
        this.statements.delete('');
        this.portals.delete('');
        return;
    }
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
