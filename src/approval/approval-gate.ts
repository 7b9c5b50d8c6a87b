import type { AuditEventInput } from '../audit/events.js';
import type { SqlNormalizer } from '../audit/normalize-sql.js';
import { requestFingerprint, requestStatements } from '../audit/request-statements.js';
import { aboutFields, sessionRef } from '../audit/auditing-judge.js';
import type { Logger } from '../logger.js';
import { pgError } from '../protocol/pg-error.js';
import type { Decision, RequestJudge, ReviewRequest } from '../session/decision.js';
import { JudgeWrapper } from '../session/judge-wrapper.js';
import type { Request } from '../session/request.js';
import type { SessionInfo } from '../session/session-info.js';
import { ApprovalCapReached, ApprovalConflict, type ApprovalRequest, type ApprovalStore } from './approval-store.js';
import type { ApprovalMetrics } from './metrics.js';
import type { VerdictWaiter } from './verdict-waiter.js';
import type { Webhook, WebhookEvent } from './webhook.js';

/**
 * The approval gate (DESIGN.md "Data flow": hold → approval gate). It wraps the policy judge;
 * a refusal that carries `review` becomes a hold:
 *
 * 1. a live grant for the same agent, database and statement lets it run at once;
 * 2. otherwise a pending request goes to Redis (shared by every instance), its `statement.held`
 *    entry is made durable, and the agent gets a NoticeResponse naming the request;
 * 3. the connection waits (other connections do not: this is one pending Promise) until the
 *    request is approved (claimed as `executing` exactly once, then forwarded), denied, or the
 *    deadline passes, or the agent cancels or disconnects (withdrawn).
 *
 * Anything that goes wrong on the way refuses the statement: nothing is approved by default.
 */
export interface ApprovalAudit {
  /** Records an entry durably; rejects when it cannot be recorded. */
  record(event: AuditEventInput): Promise<void>;
  /** Records an entry nothing waits for. */
  note(event: AuditEventInput): void;
}

export interface GateOptions {
  store: ApprovalStore;
  waiter: VerdictWaiter;
  normalizer: SqlNormalizer;
  audit: ApprovalAudit | null;
  metrics: ApprovalMetrics;
  webhook: Webhook | null;
  /** Names the holding instance in the request (for reviewers and operators). */
  instance: string;
  timeoutSeconds: number;
  maxPendingPerUser: number;
  /** The page's address, shown to the agent in the hold notice. */
  pageUrl: () => string | null;
  rulesVersion: () => string;
  /** PII columns of the given tables (from the masking rules), for the reviewer. */
  piiColumns?: (tables: readonly string[]) => string[];
  log: Logger;
}

type Refusal = Extract<Decision, { action: 'deny' }>;

export class ApprovalGate extends JudgeWrapper {
  constructor(
    inner: RequestJudge,
    private readonly o: GateOptions,
  ) {
    super(inner);
  }

  judge(request: Request, session: SessionInfo, signal: AbortSignal): Decision | Promise<Decision> {
    const d = this.inner.judge(request, session, signal);
    if (d instanceof Promise) return d.then((x) => this.decide(request, session, signal, x));
    return this.decide(request, session, signal, d);
  }

  private decide(request: Request, session: SessionInfo, signal: AbortSignal, d: Decision): Decision | Promise<Decision> {
    if (!needsReview(d)) return d;
    if (!runsAnything(request)) {
      // Parse/Describe/Sync only (postgres.js, psycopg prepare=True, pgbench -M prepared): nothing
      // runs yet, and the Bind/Execute that runs it is judged (and held) on its own. Holding here
      // would make reviewers approve one statement twice.
      return { action: 'allow', rule: d.rule, about: d.about ?? [], ...maskOf(d.review) };
    }
    return this.hold(request, session, signal, d);
  }

  private async hold(request: Request, session: SessionInfo, signal: AbortSignal, refusal: Refusal & { review: ReviewRequest }): Promise<Decision> {
    const { store, log } = this.o;
    const review = refusal.review;
    const statements = requestStatements(request, session, this.o.normalizer);
    const fingerprint = requestFingerprint(statements);
    const about = aboutFields(refusal.about);
    const ref = sessionRef(session);
    if (review.elevate !== undefined && !session.identity?.elevate.includes(review.elevate)) {
      // Only an agent whose rules entry lists the role may be elevated to it; nobody else is held for it.
      return { ...plain(refusal), error: pgError.elevationNotAllowed(session.identity?.agent ?? session.user, review.elevate) };
    }

    let rec: ApprovalRequest;
    try {
      if (review.grants) {
        const grant = await store.findGrant(session.user, session.database, fingerprint);
        if (grant) {
          this.o.metrics.count('granted');
          log.info({ rule: refusal.rule, grant: grant.id }, 'statement runs under a time-boxed grant');
          review.onApproved?.();
          return {
            action: 'allow',
            rule: refusal.rule,
            about: refusal.about ?? [],
            approval: { id: grant.id, by: grant.by, grant: grant.id },
            ...maskOf(review),
            ...(review.elevate !== undefined ? { elevate: review.elevate } : {}),
            ...(review.onDone ? { onDone: review.onDone } : {}),
          };
        }
      }
      if (signal.aborted) return { ...plain(refusal), error: pgError.approvalWithdrawn('(not created)') };
      const timeoutSeconds = review.timeoutSeconds ?? this.o.timeoutSeconds;
      const now = Date.now();
      rec = await store.create(
        {
          createdAt: now,
          expiresAt: now + timeoutSeconds * 1000,
          instance: this.o.instance,
          session: ref,
          statements,
          kinds: about.kinds,
          tables: about.tables,
          piiColumns: this.o.piiColumns?.(about.tables) ?? [],
          rule: refusal.rule,
          reason: review.reason,
          ...(review.estimatedRows !== undefined ? { estimatedRows: review.estimatedRows } : {}),
          ...(session.transactionSince !== null ? { inTransactionSince: session.transactionSince } : {}),
          required: review.approvers,
          reviewerGroups: [...review.reviewers],
          grantable: review.grants,
          fingerprint,
          ...(review.elevate !== undefined ? { elevate: review.elevate } : {}),
        },
        this.o.maxPendingPerUser,
      );
    } catch (err) {
      if (err instanceof ApprovalCapReached) {
        this.o.metrics.count('refused');
        return { ...plain(refusal), error: pgError.tooManyPending(session.user, err.pending) };
      }
      log.error({ message: (err as Error).message }, 'approval store unavailable; refusing the statement that needs review');
      this.o.metrics.count('refused');
      return { ...plain(refusal), error: pgError.approvalUnavailable() };
    }

    // The hold is recorded before anyone can see it.
    try {
      await this.o.audit?.record({
        type: 'statement.held',
        session: ref,
        request: request.kind === 'copy-data' ? 'simple' : request.kind,
        statements,
        kinds: about.kinds,
        tables: about.tables,
        rule: refusal.rule,
        rulesVersion: this.o.rulesVersion(),
        approvalId: rec.id,
      });
    } catch {
      await store.withdraw(rec.id).catch(() => undefined);
      return { ...plain(refusal), error: pgError.auditUnavailable() };
    }
    this.o.metrics.count('held');
    this.o.webhook?.notify('held', rec);
    log.info({ approval: rec.id, rule: rec.rule }, 'statement held for review');
    session.notify(pgError.heldForReview(rec.id, rec.rule, rec.reason, Math.round((rec.expiresAt - rec.createdAt) / 1000), this.o.pageUrl()));
    return this.await(rec, signal, refusal);
  }

  /** Waits for the verdict and turns it into the decision the session applies. */
  private async await(rec: ApprovalRequest, signal: AbortSignal, refusal: Refusal): Promise<Decision> {
    const { store, waiter } = this.o;
    let current = rec;
    for (;;) {
      const wake = await waiter.next(rec.id, rec.expiresAt, signal);
      try {
        if (wake === 'aborted') return await this.withdraw(rec, refusal);
        current = (await store.get(rec.id)) ?? { ...current, state: 'expired' };
        if (current.state === 'pending' && Date.now() >= rec.expiresAt) return await this.expire(rec, refusal);
      } catch (err) {
        return this.unavailable(rec, refusal, err);
      }
      if (current.state === 'pending') continue;
      return this.settle(current, signal, refusal);
    }
  }

  /** The request left `pending`: run it, or refuse with the reason. */
  private async settle(rec: ApprovalRequest, signal: AbortSignal, refusal: Refusal): Promise<Decision> {
    const waited = (Date.now() - rec.createdAt) / 1000;
    switch (rec.state) {
      case 'approved': {
        if (signal.aborted) return this.withdraw(rec, refusal);
        let claimed: ApprovalRequest;
        try {
          claimed = await this.o.store.claim(rec.id);
        } catch (err) {
          if (err instanceof ApprovalConflict && err.state !== null) return this.settle({ ...rec, state: err.state }, signal, refusal);
          return this.unavailable(rec, refusal, err);
        }
        const by = claimed.approvals.map((a) => a.reviewer).join(', ') || (claimed.verdict?.by ?? 'reviewer');
        this.o.metrics.count('approved');
        this.o.metrics.observeWait(waited);
        this.notifyWebhook('approved', claimed);
        const review = refusal.review!;
        review.onApproved?.();
        return {
          action: 'allow',
          rule: refusal.rule,
          about: refusal.about ?? [],
          approval: { id: rec.id, by },
          ...maskOf(review),
          ...(review.elevate !== undefined ? { elevate: review.elevate } : {}),
          onDone: (outcome) => {
            review.onDone?.(outcome);
            this.o.store.finish(rec.id).catch((err: unknown) => this.o.log.warn({ message: (err as Error).message, approval: rec.id }, 'could not mark the approval done'));
          },
        };
      }
      case 'denied': {
        this.o.metrics.count('denied');
        this.o.metrics.observeWait(waited);
        this.notifyWebhook('denied', rec);
        const by = rec.verdict?.by ?? 'a reviewer';
        return { ...plain(refusal), approval: { id: rec.id, by }, error: pgError.approvalDenied(rec.id, by, rec.verdict?.reason ?? 'no reason given') };
      }
      case 'expired':
        return this.expired(rec, refusal);
      case 'withdrawn':
        return { ...plain(refusal), error: pgError.approvalWithdrawn(rec.id) };
      default:
        // executing / done: another holder claimed it; this one never runs it twice.
        this.o.log.error({ approval: rec.id, state: rec.state }, 'approval already used by another holder');
        return { ...plain(refusal), error: pgError.approvalUnavailable() };
    }
  }

  private async expire(rec: ApprovalRequest, refusal: Refusal): Promise<Decision> {
    try {
      const r = await this.o.store.expire(rec.id);
      return this.expired(r, refusal);
    } catch (err) {
      // A verdict landed just before the deadline: honour it.
      if (err instanceof ApprovalConflict && err.state !== null && err.state !== 'pending') {
        const r = await this.o.store.get(rec.id).catch(() => null);
        if (r) return this.settle(r, new AbortController().signal, refusal);
      }
      return this.unavailable(rec, refusal, err);
    }
  }

  private expired(rec: ApprovalRequest, refusal: Refusal): Decision {
    const waitMs = Date.now() - rec.createdAt;
    this.o.metrics.count('expired');
    this.o.metrics.observeWait(waitMs / 1000);
    this.o.audit?.note({ type: 'approval.expired', session: rec.session, approvalId: rec.id, rule: rec.rule, statements: rec.statements, waitMs });
    this.notifyWebhook('expired', rec);
    return { ...plain(refusal), error: pgError.approvalTimedOut(rec.id, Math.round((rec.expiresAt - rec.createdAt) / 1000)) };
  }

  /** The agent cancelled or disconnected: the request disappears from the page. */
  private async withdraw(rec: ApprovalRequest, refusal: Refusal): Promise<Decision> {
    const waitMs = Date.now() - rec.createdAt;
    try {
      const r = await this.o.store.withdraw(rec.id);
      this.o.metrics.count('withdrawn');
      this.o.audit?.note({ type: 'approval.withdrawn', session: r.session, approvalId: r.id, rule: r.rule, statements: r.statements, waitMs });
      this.notifyWebhook('withdrawn', r);
    } catch (err) {
      this.o.log.warn({ message: (err as Error).message, approval: rec.id }, 'could not withdraw the approval request');
    }
    return { ...plain(refusal), error: pgError.approvalWithdrawn(rec.id) };
  }

  private unavailable(rec: ApprovalRequest, refusal: Refusal, err: unknown): Decision {
    this.o.log.error({ message: (err as Error).message, approval: rec.id }, 'approval store unavailable while holding; refusing the statement');
    this.o.metrics.count('refused');
    return { ...plain(refusal), error: pgError.approvalUnavailable() };
  }

  private notifyWebhook(event: WebhookEvent, rec: ApprovalRequest): void {
    this.o.webhook?.notify(event, rec);
  }
}

/** A request that executes something: a Query, an Execute, a FunctionCall or COPY data. */
function runsAnything(request: Request): boolean {
  if (request.kind !== 'extended') return true;
  return request.messages.some((m) => m.msg.type === 'Execute');
}

function needsReview(d: Decision): d is Refusal & { review: ReviewRequest } {
  return d.action === 'deny' && d.review !== undefined;
}

/** The refusal without its review request (so no outer gate holds it again). */
function plain(refusal: Refusal): Refusal {
  const { review: _review, ...rest } = refusal;
  return rest;
}

/** The masking an approved statement gets: the one the masking judge planned for it. */
function maskOf(review: ReviewRequest): Pick<Extract<Decision, { action: 'allow' }>, 'mask'> {
  return review.mask ? { mask: review.mask } : {};
}
