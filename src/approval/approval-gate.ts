import type { AuditEventInput } from '../audit/events.js';
import type { SqlNormalizer } from '../audit/normalize-sql.js';
import { requestFingerprint, requestStatements } from '../audit/request-statements.js';
import { aboutFields, sessionRef } from '../audit/auditing-judge.js';
import type { Logger } from '../logger.js';
import type { MaskRules } from '../masking/mask-rules.js';
import { pgError } from '../protocol/pg-error.js';
import type { Decision, RequestJudge, ReviewRequest } from '../session/decision.js';
import { JudgeWrapper } from '../session/judge-wrapper.js';
import type { Request } from '../session/request.js';
import type { SessionInfo } from '../session/session-info.js';
import { ApprovalCapReached, ApprovalConflict, type ApprovalRequest, type ApprovalStore } from './approval-store.js';
import type { ApprovalMetrics } from './metrics.js';
import type { VerdictWaiter } from './verdict-waiter.js';
import type { Webhook } from './webhook.js';

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
  /** The masking rules in force: the reviewer sees which PII columns a held statement touches. */
  masking: () => MaskRules;
  log: Logger;
}

type Refusal = Extract<Decision, { action: 'deny' }>;
type Allow = Extract<Decision, { action: 'allow' }>;
/** A refusal the rules want reviewed. */
type Held = Refusal & { review: ReviewRequest };

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

  private async hold(request: Request, session: SessionInfo, signal: AbortSignal, refusal: Held): Promise<Decision> {
    const { store, log } = this.o;
    const review = refusal.review;
    if (review.elevate !== undefined && !session.identity?.elevate.includes(review.elevate)) {
      // Only an agent whose rules entry lists the role may be elevated to it; nobody else is held for it.
      return { ...plain(refusal), error: pgError.elevationNotAllowed(session.identity?.agent ?? session.user, review.elevate) };
    }
    const statements = requestStatements(request, session, this.o.normalizer);
    const fingerprint = requestFingerprint(statements);
    const about = aboutFields(refusal.about);
    const ref = sessionRef(session);

    let rec: ApprovalRequest;
    try {
      if (review.grants) {
        const grant = await store.findGrant(session.user, session.database, fingerprint);
        if (grant) {
          this.o.metrics.count('granted');
          log.info({ rule: refusal.rule, grant: grant.id }, 'statement runs under a time-boxed grant');
          return runs(refusal, { id: grant.id, by: grant.by, grant: grant.id }, review.onDone);
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
          piiColumns: piiColumnsOf(this.o.masking(), about.tables),
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
  private async await(rec: ApprovalRequest, signal: AbortSignal, refusal: Held): Promise<Decision> {
    const { store, waiter } = this.o;
    let current = rec;
    for (;;) {
      const wake = await waiter.next(rec.id, rec.expiresAt, signal);
      try {
        if (wake === 'aborted') return await this.withdraw(rec, refusal);
        current = (await store.get(rec.id)) ?? { ...current, state: 'expired' };
        if (current.state === 'pending' && Date.now() >= rec.expiresAt) return await this.expire(rec, signal, refusal);
      } catch (err) {
        return this.unavailable(rec, refusal, err);
      }
      if (current.state === 'pending') continue;
      return this.settle(current, signal, refusal);
    }
  }

  /** The request left `pending`: run it, or refuse with the reason. */
  private async settle(rec: ApprovalRequest, signal: AbortSignal, refusal: Held): Promise<Decision> {
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
        this.o.webhook?.notify('approved', claimed);
        return runs(refusal, { id: rec.id, by }, (outcome) => {
          refusal.review.onDone?.(outcome);
          this.o.store.finish(rec.id).catch((err: unknown) => this.o.log.warn({ message: (err as Error).message, approval: rec.id }, 'could not mark the approval done'));
        });
      }
      case 'denied': {
        this.o.metrics.count('denied');
        this.o.metrics.observeWait(waited);
        this.o.webhook?.notify('denied', rec);
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

  private async expire(rec: ApprovalRequest, signal: AbortSignal, refusal: Held): Promise<Decision> {
    try {
      const r = await this.o.store.expire(rec.id);
      return this.expired(r, refusal);
    } catch (err) {
      // A verdict landed just before the deadline: honour it (unless the agent is gone meanwhile).
      if (err instanceof ApprovalConflict && err.state !== null) {
        const r = await this.o.store.get(rec.id).catch(() => null);
        if (r) return this.settle(r, signal, refusal);
      }
      return this.unavailable(rec, refusal, err);
    }
  }

  private expired(rec: ApprovalRequest, refusal: Refusal): Decision {
    const entry = approvalEnded('approval.expired', rec);
    this.o.metrics.count('expired');
    this.o.metrics.observeWait(entry.waitMs / 1000);
    this.o.audit?.note(entry);
    this.o.webhook?.notify('expired', rec);
    return { ...plain(refusal), error: pgError.approvalTimedOut(rec.id, Math.round((rec.expiresAt - rec.createdAt) / 1000)) };
  }

  /** The agent cancelled or disconnected: the request disappears from the page. */
  private async withdraw(rec: ApprovalRequest, refusal: Refusal): Promise<Decision> {
    try {
      const r = await this.o.store.withdraw(rec.id);
      this.o.metrics.count('withdrawn');
      this.o.audit?.note(approvalEnded('approval.withdrawn', r));
      this.o.webhook?.notify('withdrawn', r);
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
}

/** The audit entry of a request that ended without a verdict (the gate's, and the janitor's for a holder that is gone). */
export function approvalEnded(
  type: 'approval.expired' | 'approval.withdrawn',
  rec: ApprovalRequest,
): Extract<AuditEventInput, { type: 'approval.expired' | 'approval.withdrawn' }> {
  return { type, session: rec.session, approvalId: rec.id, rule: rec.rule, statements: rec.statements, waitMs: Date.now() - rec.createdAt };
}

/**
 * The PII columns (`schema.table.column`, names only) of the masked tables among `tables`, for
 * the reviewer. An unqualified table name matches a masked table of that name in any schema, as
 * masking itself does. Exemptions are not applied: the reviewer is told which personal data the
 * statement reaches whoever asks, and an exempt agent's request (which would see raw values) is
 * the one where it matters most.
 */
export function piiColumnsOf(masking: MaskRules, tables: readonly string[]): string[] {
  const out = new Set<string>();
  for (const name of tables) {
    const exact = masking.tables.get(name);
    const matches = exact ? [exact] : name.includes('.') ? [] : [...masking.tables.values()].filter((t) => t.table === name);
    for (const t of matches) for (const column of t.columns.keys()) out.add(`${t.schema}.${t.table}.${column}`);
  }
  return [...out];
}

/** The held statement runs (approved, or under a grant): the decision the session applies. */
function runs(refusal: Held, approval: NonNullable<Allow['approval']>, onDone: Allow['onDone']): Decision {
  const review = refusal.review;
  review.onApproved?.();
  return {
    action: 'allow',
    rule: refusal.rule,
    about: refusal.about ?? [],
    approval,
    ...maskOf(review),
    ...(review.elevate !== undefined ? { elevate: review.elevate } : {}),
    ...(onDone ? { onDone } : {}),
  };
}

/** A request that executes something: a Query, an Execute, a FunctionCall or COPY data. */
function runsAnything(request: Request): boolean {
  if (request.kind !== 'extended') return true;
  return request.messages.some((m) => m.msg.type === 'Execute');
}

function needsReview(d: Decision): d is Held {
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
