import type { Logger } from '../logger.js';
import type { ApprovalAudit } from './approval-gate.js';
import { ApprovalConflict, type ApprovalRequest, type ApprovalStore } from './approval-store.js';
import { mayDecide, type Reviewer } from './reviewer-auth.js';

/**
 * What a reviewer can do to a request, whichever channel they use (page, REST, CLI): every
 * check that protects the decision lives here, once.
 *
 * - only pending requests can be decided; a race with another reviewer or the deadline is a
 *   conflict, never a second verdict;
 * - no self-approval (a reviewer never decides a request made as a database user they act as),
 *   and only the rule's reviewer groups may decide;
 * - grants only where the rule allows them, and no longer than the configured maximum;
 * - a denial needs a reason (the agent reads it in its error).
 *
 * The verdict is recorded in the audit log once it took effect. The holding instance records
 * its own entry (with the approver) before it forwards the statement, so what runs is always
 * on record first.
 */
export class DeskError extends Error {
  override readonly name = 'DeskError';
  constructor(
    /** HTTP status that describes it: 400, 403, 404 or 409. */
    readonly status: 400 | 403 | 404 | 409,
    message: string,
    readonly state?: string,
  ) {
    super(message);
  }
}

/** The longest reason a reviewer may give (after trimming); the page's reason field is limited to it too. */
export const MAX_REASON = 500;

export interface DeskOptions {
  store: ApprovalStore;
  audit: ApprovalAudit | null;
  maxGrantMinutes: number;
  log: Logger;
}

export class ReviewDesk {
  constructor(private readonly o: DeskOptions) {}

  /** The request, for a reviewer (404 when unknown). */
  async get(id: string): Promise<ApprovalRequest> {
    if (!/^[0-9a-f]{16}$/.test(id)) throw new DeskError(404, `no approval request ${id}`);
    const rec = await this.o.store.get(id);
    if (!rec) throw new DeskError(404, `no approval request ${id}`);
    return rec;
  }

  async approve(reviewer: Reviewer, id: string, input: { reason?: unknown; grantMinutes?: unknown }): Promise<ApprovalRequest> {
    const reason = optionalReason(input.reason);
    const grantMinutes = this.grantMinutes(input.grantMinutes);
    const rec = await this.decidable(reviewer, id);
    if (grantMinutes !== undefined && !rec.grantable) {
      throw new DeskError(403, `rule "${rec.rule}" allows single approvals only, not time-boxed grants`);
    }
    let after: ApprovalRequest;
    try {
      after = await this.o.store.approve(id, reviewer.name, reason, grantMinutes);
    } catch (err) {
      throw conflict(err);
    }
    await this.record({
      type: 'approval.approved',
      session: after.session,
      approvalId: id,
      rule: after.rule,
      statements: after.statements,
      reviewer: reviewer.name,
      ...(reason ? { reason } : {}),
      waitMs: Date.now() - after.createdAt,
      approvals: after.approvals.length,
      required: after.required,
      ...(grantMinutes !== undefined ? { grantMinutes } : {}),
    });
    if (after.state === 'approved' && grantMinutes !== undefined) {
      const grant = await this.o.store.grant(after.session.user, after.session.database, after.fingerprint, grantMinutes, reviewer.name);
      await this.record({
        type: 'grant.created',
        grantId: grant.id,
        reviewer: reviewer.name,
        user: after.session.user,
        database: after.session.database,
        fingerprint: after.fingerprint,
        expiresAt: new Date(grant.expiresAt).toISOString(),
      });
    }
    this.o.log.info({ approval: id, reviewer: reviewer.name, state: after.state, grantMinutes }, 'approval given');
    return after;
  }

  async deny(reviewer: Reviewer, id: string, input: { reason?: unknown }): Promise<ApprovalRequest> {
    const reason = optionalReason(input.reason);
    if (!reason) throw new DeskError(400, 'a denial needs a reason: the agent sees it in its error');
    await this.decidable(reviewer, id);
    let after: ApprovalRequest;
    try {
      after = await this.o.store.deny(id, reviewer.name, reason);
    } catch (err) {
      throw conflict(err);
    }
    await this.record({
      type: 'approval.denied',
      session: after.session,
      approvalId: id,
      rule: after.rule,
      statements: after.statements,
      reviewer: reviewer.name,
      reason,
      waitMs: Date.now() - after.createdAt,
    });
    this.o.log.info({ approval: id, reviewer: reviewer.name }, 'approval denied');
    return after;
  }

  /** The request, if this reviewer may decide it now. */
  private async decidable(reviewer: Reviewer, id: string): Promise<ApprovalRequest> {
    const rec = await this.get(id);
    if (rec.state !== 'pending') throw new DeskError(409, `request ${id} is already ${rec.state}`, rec.state);
    if (Date.now() >= rec.expiresAt) throw new DeskError(409, `request ${id} has expired`, 'expired');
    const allowed = mayDecide(reviewer, rec);
    if (!allowed.ok) throw new DeskError(403, allowed.why);
    if (rec.approvals.some((a) => a.reviewer === reviewer.name)) {
      throw new DeskError(409, `you already approved request ${id}; it needs ${rec.required} distinct approvers`, 'pending');
    }
    return rec;
  }

  private grantMinutes(v: unknown): number | undefined {
    if (v === undefined || v === null || v === '' || v === 0) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new DeskError(400, 'grant_minutes must be a whole number of minutes, at least 1');
    if (v > this.o.maxGrantMinutes) throw new DeskError(403, `grants are limited to ${this.o.maxGrantMinutes} minutes`);
    return v;
  }

  /** The verdict took effect: record it (a failure is logged; the holder's entry still precedes execution). */
  private async record(event: Parameters<ApprovalAudit['record']>[0]): Promise<void> {
    if (!this.o.audit) return;
    try {
      await this.o.audit.record(event);
    } catch (err) {
      this.o.log.error({ message: (err as Error).message, type: event.type }, 'could not record a reviewer verdict in the audit log');
    }
  }
}

function optionalReason(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new DeskError(400, 'reason must be a string');
  const t = v.trim();
  if (t.length > MAX_REASON) throw new DeskError(400, `reason is limited to ${MAX_REASON} characters`);
  // Control characters would let a reason forge lines in the agent's terminal or in logs.
  if (/[\u0000-\u0008\u000b-\u001f\u007f]/.test(t)) throw new DeskError(400, 'reason must not contain control characters');
  return t.length > 0 ? t : undefined;
}

function conflict(err: unknown): Error {
  if (err instanceof ApprovalConflict) {
    if (err.state === null) return new DeskError(404, err.message);
    return new DeskError(409, err.message, err.state);
  }
  return err as Error;
}
