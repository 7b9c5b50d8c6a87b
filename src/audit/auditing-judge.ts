import type { AgentIdentity } from '../identity/agent-identity.js';
import type { Logger } from '../logger.js';
import { pgError } from '../protocol/pg-error.js';
import type { Decision, JudgedAbout, RequestJudge, RequestOutcome, SessionEnd } from '../session/decision.js';
import { JudgeWrapper } from '../session/judge-wrapper.js';
import type { Request } from '../session/request.js';
import type { SessionInfo } from '../session/session-info.js';
import type { AuditSink } from './audit-sink.js';
import type { AuditEventInput, SessionRef } from './events.js';
import type { SqlNormalizer } from './normalize-sql.js';
import { requestStatements } from './request-statements.js';

/**
 * Wraps the decision step so that every decision is recorded:
 *
 * - refusals (and, later, holds and verdicts) are sealed into the chain and wait until their
 *   entry is durable (Redis or the fsync'd journal) before the client is answered; when it
 *   cannot be recorded anywhere the client still gets the refusal;
 * - with `waitFor` 'all', allowed requests are sealed and wait for their entry the same way
 *   before they are forwarded; their outcome (rows, duration, error) follows in a
 *   statement.executed entry;
 * - with 'refusals' (the default) allowed requests are forwarded at once, and their entry is
 *   written when they finish, with the outcome in it, or after `outcomeWindowMs` without it
 *   (then a statement.executed entry follows). A durable round trip per statement, or two
 *   entries per statement, cost more than the statement itself (docs/benchmarks.md).
 *
 * Either way, once the sink has failed to record anything, allowed requests are refused (fail
 * closed) until it records again.
 */
export type AuditWait = 'refusals' | 'all';
/** An allowed request's entry, kept back briefly so that its outcome can join it. */
interface Deferred {
  event: AuditEventInput & { type: 'statement.allowed' };
  since: number;
  /** Set once the entry was written without its outcome (the window passed). */
  seq: number | null;
}

interface SessionTally {
  openedAt: number;
  statements: number;
  /** The identity as last recorded (rebuilt when application_name changes). */
  ref: SessionRef;
}

export class AuditingJudge extends JudgeWrapper {
  private readonly tallies = new WeakMap<SessionInfo, SessionTally>();

  constructor(
    inner: RequestJudge,
    private readonly sink: AuditSink,
    private readonly normalizer: SqlNormalizer,
    private readonly rulesVersion: () => string,
    private readonly log: Logger,
    private readonly waitFor: AuditWait = 'refusals',
    /**
     * With waitFor 'refusals': how long an allowed request's entry waits for the outcome to be
     * recorded in the same entry (one entry instead of two per statement). 0 writes at once.
     */
    private readonly outcomeWindowMs = 100,
  ) {
    super(inner);
  }

  private readonly deferred = new Set<Deferred>();
  private sweeper: NodeJS.Timeout | null = null;

  judge(request: Request, session: SessionInfo, signal: AbortSignal): Decision | Promise<Decision> {
    const d = this.inner.judge(request, session, signal);
    return d instanceof Promise ? d.then((x) => this.record(request, session, x)) : this.record(request, session, d);
  }

  override opened(session: SessionInfo): void {
    super.opened(session);
    const ref = sessionRef(session);
    this.tallies.set(session, { openedAt: Date.now(), statements: 0, ref });
    this.fireAndForget({ type: 'connection.opened', session: ref, tls: session.tls });
  }

  override closed(session: SessionInfo, end: SessionEnd): void {
    super.closed(session, end);
    const tally = this.tallies.get(session);
    if (end.authenticated && tally) {
      this.fireAndForget({
        type: 'connection.closed',
        session: this.ref(session),
        durationMs: Date.now() - tally.openedAt,
        statements: tally.statements,
      });
    } else if (!end.authenticated) {
      this.fireAndForget({ type: 'connection.refused', session: sessionRef(session), reason: end.reason });
    }
  }

  private record(request: Request, session: SessionInfo, decision: Decision): Decision | Promise<Decision> {
    // Nothing runs while the audit log is known to be failing.
    if (decision.action === 'allow' && this.sink.failing) return this.unrecorded(decision);
    const tally = this.tallies.get(session);
    if (tally) tally.statements++;
    const about = aboutFields(decision.about);
    const common = {
      session: this.ref(session),
      request: request.kind === 'copy-data' ? ('simple' as const) : request.kind,
      statements: requestStatements(request, session, this.normalizer),
      kinds: about.kinds,
      tables: about.tables,
      rule: decision.rule ?? 'default',
      rulesVersion: this.rulesVersion(),
      ...(decision.approval ? { approval: decision.approval } : {}),
    };
    const event: AuditEventInput =
      decision.action === 'deny'
        ? { type: 'statement.denied', ...common, sqlstate: decision.error.code }
        : { type: 'statement.allowed', ...common };
    try {
      // A reviewer's approval is recorded before the statement runs, whatever the wait mode.
      if (decision.action === 'allow' && this.waitFor === 'refusals' && !decision.approval) {
        // Forwarded now. A statement that finishes within the window gets one entry with its
        // outcome; a longer one gets its decision entry when the window passes, then an
        // outcome entry.
        if (this.outcomeWindowMs <= 0) return this.withOutcome(session, decision, this.sink.note(event));
        return this.deferUntilOutcome(session, decision, event as Deferred['event']);
      }
      const recorded = this.sink.record(event);
      return recorded.durable.then(
        () => this.withOutcome(session, decision, recorded.seq),
        () => this.unrecorded(decision),
      );
    } catch (err) {
      this.log.error({ message: (err as Error).message }, 'audit record failed');
      return this.unrecorded(decision);
    }
  }

  private deferUntilOutcome(session: SessionInfo, decision: Extract<Decision, { action: 'allow' }>, event: Deferred['event']): Decision {
    const d: Deferred = { event, since: performance.now(), seq: null };
    this.deferred.add(d);
    this.sweeper ??= setInterval(() => this.sweep(false), Math.max(10, this.outcomeWindowMs / 2)).unref();
    const inner = decision.onDone;
    return {
      ...decision,
      onDone: (o: RequestOutcome) => {
        inner?.(o);
        if (d.seq !== null) {
          this.executed(session, d.seq, o);
          return;
        }
        this.deferred.delete(d);
        this.sink.note({ ...d.event, outcome: outcomeOf(o) });
      },
    };
  }

  /** Writes decision entries whose window passed (all of them when `all`). */
  private sweep(all: boolean): void {
    const cutoff = performance.now() - this.outcomeWindowMs;
    for (const d of this.deferred) {
      if (!all && d.since > cutoff) continue;
      d.seq = this.sink.note(d.event);
      this.deferred.delete(d);
    }
    if (this.deferred.size === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
  }

  /** Writes every entry still kept back (before the sink closes). */
  flush(): void {
    this.sweep(true);
  }

  private withOutcome(session: SessionInfo, decision: Decision, seq: number): Decision {
    if (decision.action !== 'allow') return decision;
    // The inner judge's own completion hook (the approval gate marks the request done) runs too.
    const inner = decision.onDone;
    return {
      ...decision,
      onDone: (o: RequestOutcome) => {
        inner?.(o);
        this.executed(session, seq, o);
      },
    };
  }

  /** A decision whose record could not be written: nothing runs unrecorded. */
  private unrecorded(decision: Decision): Decision {
    if (decision.action === 'deny') return decision;
    return { action: 'deny', rule: 'audit-unavailable', error: pgError.auditUnavailable() };
  }

  private executed(session: SessionInfo, decisionSeq: number, o: RequestOutcome): void {
    this.fireAndForget({
      type: 'statement.executed',
      session: this.ref(session),
      decisionSeq,
      ...outcomeOf(o),
    });
  }

  /** The session's identity, shared between its events (entries are serialised, not kept). */
  private ref(session: SessionInfo): SessionRef {
    const tally = this.tallies.get(session);
    if (!tally) return sessionRef(session);
    const app = session.serverParams.get('application_name') ?? session.startupParams.get('application_name') ?? '';
    if (tally.ref.application !== app) tally.ref = sessionRef(session);
    return tally.ref;
  }

  /** Records an event nothing waits for (the sink logs failures and turns `failing` on). */
  fireAndForget(event: AuditEventInput): void {
    try {
      this.sink.note(event);
    } catch (err) {
      this.log.error({ message: (err as Error).message }, 'audit record failed');
    }
  }
}

function outcomeOf(o: RequestOutcome): RequestOutcome {
  return {
    durationMs: o.durationMs,
    rowsReturned: o.rowsReturned,
    rowsAffected: o.rowsAffected,
    ...(o.sqlstate ? { sqlstate: o.sqlstate } : {}),
  };
}

export function sessionRef(session: SessionInfo): SessionRef {
  return {
    id: session.id,
    user: session.user,
    database: session.database,
    application: session.serverParams.get('application_name') ?? session.startupParams.get('application_name') ?? '',
    client: session.clientAddress,
    ...(session.identity ? { identity: identityRef(session.identity) } : {}),
  };
}

function identityRef(id: AgentIdentity): NonNullable<SessionRef['identity']> {
  return {
    agent: id.agent,
    via: id.via,
    role: id.role,
    groups: [...id.groups],
    ...(id.issuer !== undefined ? { issuer: id.issuer } : {}),
    ...(id.subject !== undefined ? { subject: id.subject } : {}),
  };
}

export function aboutFields(about: readonly JudgedAbout[] | undefined): { kinds: string[]; tables: string[] } {
  if (!about || about.length === 0) return { kinds: [], tables: [] };
  const kinds = new Set<string>();
  const tables = new Set<string>();
  for (const st of about) {
    for (const k of st.kinds) kinds.add(k);
    for (const r of st.relations) tables.add(r.schema ? `${r.schema}.${r.name}` : r.name);
  }
  return { kinds: [...kinds], tables: [...tables] };
}
