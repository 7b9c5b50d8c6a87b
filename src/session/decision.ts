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

/** How a forwarded request ended, as the server answered it (for the audit log). */
export interface RequestOutcome {
  durationMs: number;
  /** DataRows, plus rows of a COPY TO STDOUT. */
  rowsReturned: number;
  /** Rows inserted, updated, deleted, merged or copied in (from the CommandComplete tags). */
  rowsAffected: number;
  /** SQLSTATE of the first error the server reported; undefined when it succeeded. */
  sqlstate?: string;
}

/** What the decision was about, for the audit log: each statement's kinds and tables. */
export interface JudgedAbout {
  readonly kinds: readonly string[];
  readonly relations: readonly { readonly schema?: string; readonly name: string }[];
}

export type Decision =
  | {
      action: 'allow';
      rowCap?: RowCap;
      /** The rule that allowed it (absent: no rule; the default). */
      rule?: string;
      about?: readonly JudgedAbout[];
      /** Called once when the server has answered the request (its ReadyForQuery arrived). */
      onDone?: (outcome: RequestOutcome) => void;
      /** The answer shows masked columns: it goes through this masker (session/mask-windows.ts). */
      mask?: { masker: AnswerMasker; done?: (masker: AnswerMasker) => void };
      /** Allowed by a reviewer's approval or a grant: recorded before it is forwarded. */
      approval?: { id: string; by: string; grant?: string };
      /**
       * Just-in-time elevation (an approved statement whose rule says `elevate`): the session
       * runs SET ROLE before the request and RESET ROLE after it, their answers unseen.
       */
      elevate?: string;
    }
  | {
      action: 'deny';
      rule: string;
      error: PgErrorFields;
      about?: readonly JudgedAbout[];
      /**
       * Set when the rules ask for a reviewer's decision. The approval gate holds such a request
       * and replaces this refusal with the verdict; without a gate the refusal stands (fail
       * closed by construction: nothing that needs review can run unreviewed).
       */
      review?: ReviewRequest;
      /** Refused by a reviewer (or the hold ended without approval). */
      approval?: { id: string; by: string };
    };

/** Rewrites one request's answer (masking/result-masker.ts implements it). */
export interface AnswerMasker {
  onRowDescription(frame: Buffer): Buffer;
  onDataRow(frame: Buffer): Buffer;
  /** The result ended (CommandComplete, EmptyQueryResponse, PortalSuspended, ErrorResponse). */
  endResult(): void;
  /** NoData. */
  clearPlan(): void;
  /** CopyOutResponse, CopyData and CopyDone of a COPY … TO STDOUT (CopyData: null = forward nothing). */
  onCopyOut(frame: Buffer): Buffer;
  onCopyData(frame: Buffer): Buffer | null;
  onCopyDone(frame: Buffer): Buffer;
  /** Masked columns seen (column → strategy label), for the audit log. */
  readonly maskedColumns: ReadonlyMap<string, string>;
}

/** What a review rule asked for, as the approval gate needs it. */
export interface ReviewRequest {
  /** Why the rule held it (its description). */
  reason: string;
  approvers: number;
  /** Reviewer groups allowed to decide; empty: any reviewer. */
  reviewers: readonly string[];
  grants: boolean;
  timeoutSeconds?: number;
  /** The planner's row estimate, when the hold is a bulk read. */
  estimatedRows?: number;
  /**
   * How the answer is masked once approved (set by the masking judge): an approved statement
   * is masked exactly like an allowed one.
   */
  mask?: { masker: AnswerMasker; done?: (masker: AnswerMasker) => void };
  /** Effects of the statement on the session's policy state (PREPARE, DECLARE …) once it runs. */
  onApproved?: () => void;
  /** Called with the outcome once an approved statement has run (e.g. the masking catalog reloads after DDL). */
  onDone?: Extract<Decision, { action: 'allow' }>['onDone'];
  /** Just-in-time elevation: on approval the statement runs under this role. */
  elevate?: string;
}

/** How a connection ended, for the decision step's bookkeeping and the audit log. */
export interface SessionEnd {
  /** The session completed authentication and was usable. */
  authenticated: boolean;
  /** SQLSTATE of the FATAL error that ended it, or 'client-disconnected' / 'server-disconnected'. */
  reason: string;
}

export interface RequestJudge {
  /**
   * May answer synchronously (the hot path: no Promise allocated) or asynchronously (a held
   * statement waiting for a reviewer). `signal` aborts when the client cancels or disconnects.
   */
  judge(request: Request, session: SessionInfo, signal: AbortSignal): Decision | Promise<Decision>;
  /** Optional check of the startup parameters before connecting upstream; an error refuses the connection. */
  checkStartup?(params: ReadonlyMap<string, string>): PgErrorFields | null;
  /** The session authenticated and is ready for requests. */
  opened?(session: SessionInfo): void;
  /** The session ended (after a StartupMessage; bare SSL probes and cancels are not sessions). */
  closed?(session: SessionInfo, end: SessionEnd): void;
}

/** The shared allow decision (no allocation on the hot path). */
export const ALLOW: Decision = Object.freeze({ action: 'allow' });

/** The foundation's judge: everything passes. Later issues replace it with the policy engine. */
export const allowEverything: RequestJudge = {
  judge: () => ALLOW,
};
