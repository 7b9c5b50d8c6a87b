import type { PgErrorFields } from '../protocol/backend.js';
import type { AgentIdentity } from '../identity/agent-identity.js';
import type { TxStatus } from '../protocol/codes.js';

/** What the decision step may know about a connection (read-only view of the session). */
export interface SessionInfo {
  readonly id: number;
  /** Startup parameters as the client sent them (user, database, application_name, options, ...). */
  readonly startupParams: ReadonlyMap<string, string>;
  /** The database user, or with identity.mode agents the verified agent's name. */
  readonly user: string;
  /** The verified agent (identity.mode: agents); undefined with passthrough authentication. */
  readonly identity?: AgentIdentity;
  readonly database: string;
  readonly clientAddress: string;
  readonly tls: boolean;
  /** Transaction status from the last ReadyForQuery. */
  readonly txStatus: TxStatus;
  /** When the current transaction block began (ms since the epoch); null outside one. */
  readonly transactionSince: number | null;
  /** Run-time parameters the server reported (ParameterStatus). */
  readonly serverParams: ReadonlyMap<string, string>;
  /** Every SQL text a protocol-level statement name ('' = unnamed) may stand for (see StatementTracker). */
  statementCandidates(name: string): string[];
  /** Every statement name a portal may be bound to. */
  portalCandidates(portal: string): string[];
  /** Sends the client a NoticeResponse now (e.g. "statement held for review"). */
  notify(notice: PgErrorFields): void;
}
