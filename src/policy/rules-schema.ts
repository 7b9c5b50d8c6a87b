import { z } from 'zod';
import { KINDS } from '../classify/statement-info.js';
import { parseScramVerifier } from '../identity/scram-verifier.js';

/**
 * The format of the YAML files in `rules/` that DBAs edit. Strict: unknown keys are errors.
 * Several files are merged in file-name order; see the README ("Rules") for the semantics.
 */
export const ACTIONS = ['allow', 'review', 'deny'] as const;
export type Action = (typeof ACTIONS)[number];

const nonEmptyList = <T extends z.ZodTypeAny>(item: T) => z.array(item).min(1, 'must list at least one entry');
const identifierPattern = z.string().min(1).max(200);
const ROLE_NAME = /^[A-Za-z_][A-Za-z0-9_$-]{0,62}$/;
/** An agent's name: the user name in its connection string (also checked by `pgwarden agent-secret --name`). */
export const AGENT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$/;

/** Conditions of a rule; every condition given must hold (AND); within a list, see README. */
export const matchSchema = z
  .object({
    kind: nonEmptyList(z.enum(KINDS)).optional(),
    relations: nonEmptyList(identifierPattern).optional(),
    functions: nonEmptyList(identifierPattern).optional(),
    settings: nonEmptyList(identifierPattern).optional(),
    users: nonEmptyList(identifierPattern).optional(),
    /** Verified agent names (identity.mode: agents); never matches a passthrough connection. */
    agents: nonEmptyList(identifierPattern).optional(),
    /** Groups of the verified agent (its `groups` here, plus the OIDC groups claim). */
    groups: nonEmptyList(identifierPattern).optional(),
    applications: nonEmptyList(z.string().max(200)).optional(),
    databases: nonEmptyList(identifierPattern).optional(),
    /** true: the rule applies to statements that cannot be analysed (DO, CALL, dynamic SQL ...). */
    unanalysable: z.boolean().optional(),
    /** true: only inside an explicit transaction block. */
    in_transaction: z.boolean().optional(),
  })
  .strict();

export const ruleSchema = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9_.-]*$/i, 'use letters, digits, "-", "_" or "."'),
    description: z.string().optional(),
    match: matchSchema,
    /** Identity conditions under which the rule does not apply (e.g. a migration user). */
    except: matchSchema.pick({ users: true, agents: true, groups: true, applications: true, databases: true }).strict().optional(),
    action: z.enum(ACTIONS),
    /** Deny: replaces the error message. Review: shown as the error's DETAIL. */
    message: z.string().max(500).optional(),
    /** Review only: how a held statement is decided. */
    review: z
      .object({
        /** Distinct reviewers who must approve (default 1). */
        approvers: z.number().int().min(1).max(10).optional(),
        /** Only reviewers in one of these groups may decide (default: any reviewer). */
        reviewers: nonEmptyList(z.string().min(1).max(200)).optional(),
        /** false: approvals run the statement once only; no time-boxed grants (default true). */
        grants: z.boolean().optional(),
        /** Overrides approval.timeoutSeconds for this rule. */
        timeout_seconds: z.number().int().min(1).max(86_400).optional(),
        /**
         * Just-in-time elevation: on approval the statement runs under this role (pgwarden
         * issues SET ROLE before it and RESET ROLE after). Only for agents whose `elevate` lists it.
         */
        elevate: z.string().regex(ROLE_NAME, 'a role name').optional(),
      })
      .strict()
      .optional(),
  })
  .strict()
  .refine((r) => r.review === undefined || r.action === 'review', { message: '`review` settings apply only to rules with action: review', path: ['review'] });

/**
 * An agent pgwarden authenticates itself (identity.mode: agents): how it proves who it is, and
 * which upstream role (and database) its connections use. No secret is stored here: a SCRAM
 * verifier cannot be turned back into the secret, and the upstream role's password lives in the
 * configuration or environment.
 */
export const agentSchema = z
  .object({
    name: z.string().regex(AGENT_NAME, 'letters, digits, "_", ".", "@" or "-" (at most 63)'),
    description: z.string().max(500).optional(),
    /** SCRAM-SHA-256 verifier of the agent's secret (`pgwarden agent-secret` prints one). */
    scram: z
      .string()
      // The parser the login uses, so a verifier that loads is one that works.
      .superRefine((v, ctx) => {
        try {
          parseScramVerifier(v);
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: (err as Error).message });
        }
      })
      .optional(),
    /** OIDC: the agent sends an access token as its password; identity.oidc.agentClaim must equal `subject`. */
    oidc: z.object({ subject: z.string().min(1).max(500) }).strict().optional(),
    /** The upstream role its connections log in as. */
    role: z.string().regex(ROLE_NAME, 'a role name'),
    /** The one database it may use (default: the one it asks for). */
    database: z.string().min(1).max(63).optional(),
    /** Groups for rules (`match.groups`). */
    groups: z.array(identifierPattern).optional(),
    /** Roles a review rule's `elevate` may switch it to for an approved statement. */
    elevate: z.array(z.string().regex(ROLE_NAME, 'a role name')).optional(),
  })
  .strict()
  .refine((a) => (a.scram === undefined) !== (a.oidc === undefined), { message: 'give exactly one of scram or oidc' });

/** How one masked column is shown (see src/masking/strategies.ts). */
export const maskStrategySchema = z.union([
  z.enum(['redact', 'partial_email', 'hash', 'null']),
  z.object({ strategy: z.literal('redact'), text: z.string().max(200).optional() }).strict(),
  z.object({ strategy: z.enum(['keep_first', 'keep_last']), count: z.number().int().min(1).max(64) }).strict(),
  z.object({ strategy: z.literal('fixed'), value: z.string().max(200) }).strict(),
  z.object({ strategy: z.enum(['partial_email', 'hash', 'null']) }).strict(),
]);

/** One table's masked columns. Exact names (no patterns): a PII column is named, not guessed. */
export const maskingEntrySchema = z
  .object({
    table: z.string().regex(/^[^.*?\s]+\.[^.*?\s]+$/, 'write schema.table (exact names, no patterns)'),
    columns: z.record(z.string().min(1).max(63), maskStrategySchema).refine((c) => Object.keys(c).length > 0, 'list at least one column'),
    /** Database users that see raw values (e.g. the data protection officer). */
    exempt: z.array(identifierPattern).optional(),
  })
  .strict();

export const rulesFileSchema = z
  .object({
    /** PII columns masked in every result an agent receives. */
    masking: z.array(maskingEntrySchema).optional(),
    /** Agents pgwarden authenticates itself (identity.mode: agents). */
    agents: z.array(agentSchema).optional(),
    policy: z
      .object({
        /**
         * Statements that copy masked data elsewhere (INSERT ... SELECT, UPDATE ... FROM,
         * CREATE TABLE AS, COPY ... TO over a masked table): review (default) or deny.
         */
        masked_copy: z.enum(['review', 'deny']).optional(),
        /** For statements no rule matches. */
        default: z.enum(ACTIONS).optional(),
        /** For statements that cannot be analysed and that no rule matches (default: review). */
        unanalysable: z.enum(['review', 'deny']).optional(),
        /** The fast-path FunctionCall message carries no SQL (default: deny). */
        fastpath: z.enum(ACTIONS).optional(),
        rules: z.array(ruleSchema).optional(),
      })
      .strict()
      .optional(),
    /** Tables whose large reads count as exports ("Bulk export" in the README). */
    sensitive: z
      .object({
        tables: z.array(identifierPattern).optional(),
        /** A read whose planner estimate exceeds this is an export. */
        row_threshold: z.number().int().positive().optional(),
        /** Hard cap on rows a read of a sensitive table may return, counted at run time. */
        row_cap: z.number().int().positive().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export type RuleInput = z.infer<typeof ruleSchema>;
export type AgentInput = z.infer<typeof agentSchema>;
export type MatchInput = z.infer<typeof matchSchema>;
export type RulesFile = z.infer<typeof rulesFileSchema>;
