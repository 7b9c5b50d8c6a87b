import type { PgErrorFields } from '../protocol/backend.js';
import type { Decision, RequestJudge, SessionEnd } from './decision.js';
import type { Request } from './request.js';
import type { SessionInfo } from './session-info.js';

/**
 * A decision step layered on another (masking, approvals, audit): the session hooks pass through
 * to the inner judge unless a layer adds to them.
 */
export abstract class JudgeWrapper implements RequestJudge {
  constructor(protected readonly inner: RequestJudge) {}

  abstract judge(request: Request, session: SessionInfo, signal: AbortSignal): Decision | Promise<Decision>;

  checkStartup(params: ReadonlyMap<string, string>): PgErrorFields | null {
    return this.inner.checkStartup?.(params) ?? null;
  }

  opened(session: SessionInfo): void {
    this.inner.opened?.(session);
  }

  closed(session: SessionInfo, end: SessionEnd): void {
    this.inner.closed?.(session, end);
  }
}
