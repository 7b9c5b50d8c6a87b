import type { PgErrorFields } from '../protocol/backend.js';
import type { Request } from './request.js';
import type { SessionInfo } from './session-info.js';

/**
 * The decision step every request passes before it is forwarded. This is where classification,
 * policy, masking plans and approvals plug in (DESIGN.md "Data flow").
 */
/**
 * A hard limit on the rows a request may return (reads of sensitive tables), counted from the
 * DataRows at run time so that a wrong planner estimate, LIMIT ALL / LIMIT $1, or Execute row
 * limits cannot leak a whole table. `key` carries the count across requests for one portal or
 * cursor (each Execute/FETCH adds to it); null counts this request alone.
 */
export interface RowCap {
  limit: number;
  key: string | null;
  /** The request (re)defines the counted cursor: start its count from zero. */
  fresh?: boolean;
  tables: string[];
}

export type Decision =
  | { action: 'allow'; rowCap?: RowCap }
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

/** The shared allow decision (no allocation on the hot path). */
export const ALLOW: Decision = Object.freeze({ action: 'allow' });

/** The foundation's judge: everything passes. Later issues replace it with the policy engine. */
export const allowEverything: RequestJudge = {
  judge: () => ALLOW,
};
