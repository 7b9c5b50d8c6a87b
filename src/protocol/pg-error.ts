import type { PgErrorFields } from './backend.js';

/**
 * The catalogue of errors pgwarden itself sends to clients. SQLSTATEs come from PostgreSQL's
 * "Appendix A. PostgreSQL Error Codes"; nothing else in the code writes a code inline.
 */
export const SqlState = {
  ProtocolViolation: '08P01',
  ConnectionFailure: '08006',
  ConnectionRejected: '08004', // sqlserver_rejected_establishment_of_sqlconnection
  FeatureNotSupported: '0A000',
  InsufficientPrivilege: '42501',
  SyntaxError: '42601',
  QueryCanceled: '57014',
  AdminShutdown: '57P01',
  CannotConnectNow: '57P03',
  TooManyConnections: '53300',
  ProgramLimitExceeded: '54000',
  InvalidAuthorizationSpecification: '28000',
  InvalidPassword: '28P01',
  InternalError: 'XX000',
  CharacterNotInRepertoire: '22021',
  IoError: '58030',
  SystemError: '58000',
  ConfigurationLimitExceeded: '53400',
  SuccessfulCompletion: '00000',
} as const;

export type SqlStateCode = (typeof SqlState)[keyof typeof SqlState];

const fatal = (code: string, message: string, extra: Partial<PgErrorFields> = {}): PgErrorFields => ({
  severity: 'FATAL',
  code,
  message,
  ...extra,
});

export const pgError = {
  protocolViolation: (message: string, code: string = SqlState.ProtocolViolation) => fatal(code, message),
  startupTimeout: () => fatal(SqlState.ProtocolViolation, 'pgwarden: startup packet not received in time'),
  tooManyConnections: (max: number) =>
    fatal(SqlState.TooManyConnections, `pgwarden: sorry, too many clients already (limit ${max})`),
  shuttingDown: () => fatal(SqlState.CannotConnectNow, 'pgwarden: the proxy is shutting down'),
  terminatedByShutdown: () =>
    fatal(SqlState.AdminShutdown, 'pgwarden: terminating connection because the proxy is shutting down'),
  // ---- agent identities (identity.mode: agents) ----
  /** Every failed agent login looks the same (unknown agent, wrong secret, bad token): no oracle. */
  agentAuthFailed: (agent: string) => fatal(SqlState.InvalidPassword, `pgwarden: authentication failed for agent "${agent}"`),
  agentTokenNeedsTls: () =>
    fatal(SqlState.InvalidAuthorizationSpecification, 'pgwarden: an access token may only be sent over TLS', {
      hint: 'Connect with sslmode=require (or verify-full).',
    }),
  agentDatabaseRefused: (agent: string, database: string) =>
    fatal(SqlState.InvalidAuthorizationSpecification, `pgwarden: agent "${agent}" may only connect to database "${database}"`),
  agentRevoked: (agent: string) =>
    fatal(SqlState.AdminShutdown, `pgwarden: terminating connection because agent "${agent}" was revoked or changed`),
  agentTokenExpired: () =>
    fatal(SqlState.AdminShutdown, "pgwarden: terminating connection because the agent's access token expired", {
      hint: 'Reconnect with a fresh token.',
    }),
  elevationNeedsSync: () => ({
    severity: 'ERROR' as const,
    code: SqlState.FeatureNotSupported,
    message: 'pgwarden: a statement approved to run under an elevated role must end its batch with Sync',
  }),
  elevationNotAllowed: (agent: string, role: string) => ({
    severity: 'ERROR' as const,
    code: SqlState.InsufficientPrivilege,
    message: `pgwarden: agent "${agent}" may not be elevated to role "${role}"`,
    hint: "List the role in the agent's `elevate` in the rules.",
  }),
  agentRoleSwitch: () => ({
    severity: 'ERROR' as const,
    code: SqlState.InsufficientPrivilege,
    message: 'pgwarden: agents cannot switch roles themselves',
    hint: 'A review rule with `elevate` runs an approved statement under a stronger role.',
  }),
  upstreamLoginFailed: () =>
    fatal(SqlState.ConnectionRejected, "pgwarden: could not log in to the database server as the agent's role", {
      hint: "The pgwarden administrator must check the role's credentials (identity.roles) and pg_hba.conf.",
    }),
  upstreamUnavailable: () =>
    fatal(SqlState.ConnectionFailure, 'pgwarden: could not connect to the upstream database server'),
  upstreamClosed: () => fatal(SqlState.ConnectionFailure, 'pgwarden: the upstream database server closed the connection'),
  upstreamTlsRequired: () =>
    fatal(SqlState.ConnectionFailure, 'pgwarden: the upstream server does not support TLS, but upstream sslmode requires it'),
  replicationRefused: () =>
    fatal(SqlState.InsufficientPrivilege, 'pgwarden: replication connections are not allowed through the proxy'),
  missingUser: () => fatal(SqlState.InvalidAuthorizationSpecification, 'no PostgreSQL user name specified in startup packet'),
  dataBeforeTls: () =>
    fatal(SqlState.ProtocolViolation, 'received unencrypted data after SSL request', {
      hint: 'This could be either a client-software bug or evidence of an attempted man-in-the-middle attack.',
    }),
  // ---- statement-level refusals (severity ERROR: the connection stays usable) ----
  policyDenied: (rule: string, reason: string, message?: string): PgErrorFields => ({
    severity: 'ERROR',
    code: SqlState.InsufficientPrivilege,
    message: message ?? `pgwarden: statement denied by rule "${rule}"`,
    detail: reason,
  }),
  auditUnavailable: (): PgErrorFields => ({
    severity: 'ERROR',
    code: SqlState.IoError,
    message: 'pgwarden: the audit log cannot record this statement, so it was not run',
    hint: 'Neither Redis nor the local audit journal accepted the record; see the pgwarden log.',
  }),
  reviewUnavailable: (rule: string, reason: string): PgErrorFields => ({
    severity: 'ERROR',
    code: SqlState.InsufficientPrivilege,
    message: `statement requires approval: ${rule}; no approval channel is configured`,
    detail: reason,
  }),
  heldForReview: (id: string, rule: string, reason: string, timeoutSeconds: number, pageUrl: string | null): PgErrorFields => ({
    severity: 'NOTICE',
    code: SqlState.SuccessfulCompletion,
    message: `pgwarden: statement held for review (request ${id})`,
    detail: `Rule "${rule}": ${reason}. The statement runs when a reviewer approves it, and fails if nobody decides within ${timeoutSeconds} s.`,
    ...(pageUrl ? { hint: `Reviewers decide at ${pageUrl}` } : {}),
  }),
  approvalDenied: (id: string, reviewer: string, reason: string): PgErrorFields => ({
    severity: 'ERROR',
    code: SqlState.InsufficientPrivilege,
    message: `pgwarden: statement denied by reviewer ${reviewer}: ${reason}`,
    detail: `Approval request ${id} was denied; the statement was not run.`,
  }),
  approvalTimedOut: (id: string, seconds: number): PgErrorFields => ({
    severity: 'ERROR',
    code: SqlState.QueryCanceled,
    message: 'approval timed out',
    detail: `No reviewer decided approval request ${id} within ${seconds} s; the statement was not run.`,
    hint: 'Ask a reviewer to watch the approval page, or retry later.',
  }),
  approvalWithdrawn: (id: string): PgErrorFields => ({
    severity: 'ERROR',
    code: SqlState.QueryCanceled,
    message: 'canceling statement due to user request',
    detail: `Approval request ${id} was withdrawn; the statement was not run.`,
  }),
  approvalUnavailable: (): PgErrorFields => ({
    severity: 'ERROR',
    code: SqlState.SystemError,
    message: 'pgwarden: the approval service is unavailable, so the statement that needs review was not run',
    hint: 'Approval requests are kept in Redis, which pgwarden cannot reach; see the pgwarden log.',
  }),
  tooManyPending: (user: string, pending: number): PgErrorFields => ({
    severity: 'ERROR',
    code: SqlState.ConfigurationLimitExceeded,
    message: `pgwarden: too many statements awaiting review for user "${user}" (${pending} pending)`,
    hint: 'Wait for reviewers to decide the pending ones (approval.maxPendingPerUser).',
  }),
  maskingUnavailable: (): PgErrorFields => ({
    severity: 'ERROR',
    code: SqlState.SystemError,
    message: 'pgwarden: the masking catalog is unavailable, so a statement reading masked tables was not run',
    hint: 'pgwarden could not read which columns are masked (masking.catalogUrl); see the pgwarden log.',
  }),
  maskedSideChannel: (fn: string): PgErrorFields => ({
    severity: 'ERROR',
    code: SqlState.InsufficientPrivilege,
    message: `pgwarden: ${fn} cannot be used in a statement that reads masked columns`,
    detail: 'Its value would reach the client outside the masked result (a notification payload or a reported setting).',
  }),
  unparsable: (parserMessage: string, position?: number): PgErrorFields => ({
    severity: 'ERROR',
    code: SqlState.SyntaxError,
    message: parserMessage,
    detail: 'pgwarden refuses statements that PostgreSQL\'s parser cannot parse; nothing was sent to the server.',
    ...(position !== undefined ? { position } : {}),
  }),
  invalidUtf8: (): PgErrorFields => ({
    severity: 'ERROR',
    code: SqlState.CharacterNotInRepertoire,
    message: 'pgwarden: invalid byte sequence for encoding "UTF8" in the statement text',
  }),
  guard: (code: string, message: string, detail?: string): PgErrorFields => ({
    severity: 'ERROR',
    code,
    message,
    ...(detail !== undefined ? { detail } : {}),
  }),
  rowCapExceeded: (limit: number, tables: string[]): PgErrorFields => ({
    severity: 'ERROR',
    code: SqlState.ProgramLimitExceeded,
    message: `pgwarden: result exceeds the row cap of ${limit} rows for sensitive table(s) ${tables.join(', ')}`,
    hint: 'Narrow the query, or ask for an export through review.',
  }),
  startupRefused: (message: string): PgErrorFields => fatal(SqlState.InsufficientPrivilege, message),
};
