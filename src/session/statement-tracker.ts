import type { FrontendMessage } from '../protocol/frontend.js';

/**
 * Tracks protocol-level prepared statements and portals as the client creates and closes them,
 * so that a later Bind/Execute of a named statement is judged (and its results masked) by the
 * SQL it was prepared from, even without a fresh Parse or Describe ("Extended Query").
 */
export class StatementTracker {
  readonly statements = new Map<string, string>();
  /** portal name → statement name */
  readonly portals = new Map<string, string>();

  observe(msg: FrontendMessage): void {
    switch (msg.type) {
      case 'Parse':
        // Re-Parse of the unnamed statement replaces it; a named one must be closed first
        // (the server rejects a duplicate name, so tracking the newest text is correct).
        this.statements.set(msg.statement, msg.sql);
        return;
      case 'Bind':
        this.portals.set(msg.portal, msg.statement);
        return;
      case 'Close':
        if (msg.target === 'S') this.statements.delete(msg.name);
        else this.portals.delete(msg.name);
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
}
