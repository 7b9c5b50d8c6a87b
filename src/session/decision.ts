import type { PgErrorFields } from '../protocol/backend.js';
import type { Request } from './request.js';
import type { SessionInfo } from './session-info.js';

/**
 * The decision step every request passes before it is forwarded. This is where classification,
 * policy, masking plans and approvals plug in (DESIGN.md "Data flow").
 */
export type Decision =
  | { action: 'allow' }
  | { action: 'deny'; rule: string; error: PgErrorFields };

export interface RequestJudge {
  /**
   * May answer synchronously (the hot path: no Promise allocated) or asynchronously (a held
   * statement waiting for a reviewer). `signal` aborts when the client cancels or disconnects.
   */
  judge(request: Request, session: SessionInfo, signal: AbortSignal): Decision | Promise<Decision>;
  /** Optional check of the startup parameters before connecting upstream; an error refuses the connection. */
  checkStartup?(params: ReadonlyMap<string, string>): PgErrorFields | null;
}

const ALLOW: Decision = Object.freeze({ action: 'allow' });

/** The foundation's judge: everything passes. Later issues replace it with the policy engine. */
export const allowEverything: RequestJudge = {
  judge: () => ALLOW,
};
