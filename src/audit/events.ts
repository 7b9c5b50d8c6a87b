import { z } from 'zod';

/**
 * The audit event schema, version 1. Every event is one decision or lifecycle fact; none carries
 * a row value, an SQL literal, a password or a token. SQL appears only normalized (constants
 * replaced by $n placeholders, comments removed) together with a fingerprint.
 *
 * Adding an optional field keeps version 1; renaming or removing one, or changing a meaning,
 * bumps AUDIT_SCHEMA_VERSION (readers must accept every version they know).
 */
export const AUDIT_SCHEMA_VERSION = 1 as const;

/** Who is on the other end of a connection, as the client presented it. */
const sessionRef = z
  .object({
    id: z.number().int(),
    user: z.string(),
    database: z.string(),
    application: z.string(),
    client: z.string(),
    /** The verified agent (identity.mode agents): `user` is then its name, `role` the upstream role. */
    identity: z
      .object({
        agent: z.string(),
        via: z.enum(['scram', 'oidc']),
        role: z.string(),
        groups: z.array(z.string()),
        issuer: z.string().optional(),
        subject: z.string().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

const statementRef = z
  .object({
    /** Normalized SQL: constants → $n, comments dropped, whitespace collapsed. */
    text: z.string(),
    /** sha256 of the normalized text (16 hex digits): one value per statement shape. */
    fingerprint: z.string(),
  })
  .strict();

/** What a judged request was about: the statements, their kinds and the tables they name. */
const requestRef = {
  session: sessionRef,
  request: z.enum(['simple', 'extended', 'function-call']),
  statements: z.array(statementRef),
  kinds: z.array(z.string()),
  tables: z.array(z.string()),
  /** The rule that decided ('default' when none matched). */
  rule: z.string(),
  rulesVersion: z.string().optional(),
  /** The statement ran (or was refused) on a reviewer's verdict or a grant. */
  approval: z.object({ id: z.string(), by: z.string(), grant: z.string().optional() }).strict().optional(),
};

const outcome = z
  .object({
    durationMs: z.number(),
    rowsReturned: z.number().int(),
    rowsAffected: z.number().int(),
    /** SQLSTATE of the first error the server reported, when the request failed. */
    sqlstate: z.string().optional(),
  })
  .strict();

const base = {
  v: z.literal(AUDIT_SCHEMA_VERSION),
  /** ISO 8601 time the event was recorded. */
  ts: z.string(),
};

const approvalRef = {
  session: sessionRef,
  approvalId: z.string(),
  rule: z.string(),
  statements: z.array(statementRef),
};

export const auditEventSchema = z.discriminatedUnion('type', [
  z.object({ ...base, type: z.literal('connection.opened'), session: sessionRef, tls: z.boolean() }).strict(),
  z
    .object({
      ...base,
      type: z.literal('connection.closed'),
      session: sessionRef,
      durationMs: z.number(),
      statements: z.number().int(),
    })
    .strict(),
  /** Startup reached us but the session never became usable (authentication failed, refused, dropped). */
  z
    .object({ ...base, type: z.literal('connection.refused'), session: sessionRef, reason: z.string() })
    .strict(),
  z
    .object({
      ...base,
      type: z.literal('statement.allowed'),
      ...requestRef,
      /**
       * How it ran, when it finished within the outcome window (then this one entry records both
       * the decision and the outcome; otherwise a statement.executed entry follows).
       */
      outcome: outcome.optional(),
    })
    .strict(),
  z
    .object({
      ...base,
      type: z.literal('statement.masked'),
      ...requestRef,
      columns: z.array(z.object({ column: z.string(), strategy: z.string() }).strict()),
    })
    .strict(),
  z.object({ ...base, type: z.literal('statement.denied'), ...requestRef, sqlstate: z.string() }).strict(),
  z.object({ ...base, type: z.literal('statement.held'), ...requestRef, approvalId: z.string() }).strict(),
  z
    .object({
      ...base,
      type: z.literal('statement.executed'),
      session: sessionRef,
      /** The sequence number of the decision event this execution belongs to (same chain). */
      decisionSeq: z.number().int(),
      durationMs: z.number(),
      rowsReturned: z.number().int(),
      rowsAffected: z.number().int(),
      /** SQLSTATE of the first error the server reported, when the request failed. */
      sqlstate: z.string().optional(),
    })
    .strict(),
  z
    .object({
      ...base,
      type: z.literal('approval.approved'),
      ...approvalRef,
      reviewer: z.string(),
      reason: z.string().optional(),
      waitMs: z.number(),
      /** Approvals so far and needed (with N approvers an approval may not decide yet). */
      approvals: z.number().int().optional(),
      required: z.number().int().optional(),
      grantMinutes: z.number().int().optional(),
    })
    .strict(),
  z
    .object({ ...base, type: z.literal('approval.denied'), ...approvalRef, reviewer: z.string(), reason: z.string(), waitMs: z.number() })
    .strict(),
  z.object({ ...base, type: z.literal('approval.expired'), ...approvalRef, waitMs: z.number() }).strict(),
  z.object({ ...base, type: z.literal('approval.withdrawn'), ...approvalRef, waitMs: z.number() }).strict(),
  z
    .object({
      ...base,
      type: z.literal('grant.created'),
      grantId: z.string(),
      reviewer: z.string(),
      user: z.string(),
      database: z.string(),
      fingerprint: z.string(),
      expiresAt: z.string(),
    })
    .strict(),
  z.object({ ...base, type: z.literal('grant.expired'), grantId: z.string(), user: z.string(), fingerprint: z.string() }).strict(),
  z
    .object({
      ...base,
      type: z.literal('rules.reloaded'),
      version: z.string(),
      previous: z.string().optional(),
      /** What triggered the load: startup, file-change, SIGHUP. */
      trigger: z.string(),
      files: z.array(z.string()),
      rules: z.number().int(),
    })
    .strict(),
  z
    .object({ ...base, type: z.literal('rules.rejected'), trigger: z.string(), problems: z.number().int(), inForce: z.string() })
    .strict(),
]);

export type AuditEvent = z.infer<typeof auditEventSchema>;
export type SessionRef = z.infer<typeof sessionRef>;
export type StatementRef = z.infer<typeof statementRef>;

/** Distributes Omit over the union so each event type keeps its own fields. */
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
/** An event as its producer writes it: version and time are filled in by the sink. */
export type AuditEventInput = DistributiveOmit<AuditEvent, 'v' | 'ts'>;

