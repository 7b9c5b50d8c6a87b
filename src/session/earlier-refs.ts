import type { FrontendMessage } from '../protocol/frontend.js';

/**
 * Within one request, the messages that run something an earlier request prepared: a Bind of a
 * statement not parsed in this request, an Execute of a portal not bound in it. The judge must
 * judge those again, and the audit log must name their SQL; both read it from here. Feed the
 * request's messages in order.
 */
export type EarlierRef = { kind: 'statement'; name: string } | { kind: 'portal'; name: string } | null;

export class EarlierRefs {
  private readonly parsed = new Set<string>();
  private readonly bound = new Set<string>();

  of(msg: FrontendMessage): EarlierRef {
    switch (msg.type) {
      case 'Parse':
        this.parsed.add(msg.statement);
        return null;
      case 'Bind': {
        const earlier = !this.parsed.has(msg.statement);
        // A second Bind of the same earlier statement in this request needs no second look.
        this.parsed.add(msg.statement);
        this.bound.add(msg.portal);
        return earlier ? { kind: 'statement', name: msg.statement } : null;
      }
      case 'Execute':
        return this.bound.has(msg.portal) ? null : { kind: 'portal', name: msg.portal };
      default:
        return null;
    }
  }
}
