import os from 'node:os';
import { z } from 'zod';

/**
 * Every setting pgwarden reads, with its default. Sources, strongest first: command-line flags,
 * PGWARDEN_* environment variables, the YAML config file. Unknown keys are errors.
 */
const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, 'expected host:port, e.g. 127.0.0.1:6432');

export const configSchema = z
  .object({
    /** Where agents connect. Port 0 picks a free port (tests). */
    listen: hostPort.default('127.0.0.1:6432'),
    upstream: z
      .object({
        /** postgres://host:port of the real server; user/database come from each client. */
        url: z
          .string()
          .regex(/^postgres(ql)?:\/\//, 'expected a postgres:// URL')
          .default('postgres://127.0.0.1:5432'),
        sslmode: z.enum(['disable', 'prefer', 'require', 'verify-ca', 'verify-full']).default('prefer'),
        /** PEM file with the CA that signed the upstream's certificate (verify-ca/verify-full). */
        sslrootcert: z.string().optional(),
        connectTimeoutMs: z.number().int().positive().default(10_000),
      })
      .strict()
      .default({ url: 'postgres://127.0.0.1:5432', sslmode: 'prefer', connectTimeoutMs: 10_000 }),
    /** TLS for clients: both paths set → SSLRequest is answered 'S'; otherwise 'N'. */
    tls: z
      .object({ cert: z.string(), key: z.string() })
      .strict()
      .optional(),
    limits: z
      .object({
        maxMessageBytes: z.number().int().min(1024).default(64 * 1024 * 1024),
        maxBatchBytes: z.number().int().min(1024).default(1024 * 1024),
        maxHeldBytes: z.number().int().min(1024).default(16 * 1024 * 1024),
        maxClientConnections: z.number().int().positive().default(1000),
        startupTimeoutMs: z.number().int().positive().default(60_000),
        shutdownGraceMs: z.number().int().nonnegative().default(30_000),
      })
      .strict()
      .default({
        maxMessageBytes: 64 * 1024 * 1024,
        maxBatchBytes: 1024 * 1024,
        maxHeldBytes: 16 * 1024 * 1024,
        maxClientConnections: 1000,
        startupTimeoutMs: 60_000,
        shutdownGraceMs: 30_000,
      }),
    /** Worker processes sharing the listen port; 1 runs everything in one process. */
    workers: z.number().int().min(1).max(127).default(Math.min(os.availableParallelism(), 127)),
    /** host:port for GET /healthz (200 while accepting, 503 while draining); off when unset. */
    healthListen: hostPort.optional(),
    /**
     * postgres:// URL (user and password; the database is each session's) of a side connection
     * allowed to EXPLAIN reads of sensitive tables. Unset: no planner estimates, row cap only.
     */
    estimatorUrl: z.string().regex(/^postgres(ql)?:\/\//, 'expected a postgres:// URL').optional(),
    /**
     * redis:// URL shared by every pgwarden instance (audit stream; approvals later). Unset: the
     * embedded mode, where the local audit journal is the audit log.
     */
    redisUrl: z.string().regex(/^rediss?:\/\//, 'expected a redis:// or rediss:// URL').optional(),
    audit: z
      .object({
        /** Off only for measurements: with audit off nothing records who ran what. */
        enabled: z.boolean().default(true),
        stream: z.string().min(1).default('pgwarden:audit'),
        /**
         * Which decisions wait until their entry is durable before taking effect: 'refusals'
         * (denials; allowed statements are forwarded at once and recorded in the next batch) or
         * 'all' (every statement waits for its record: strictest, costs a round trip each).
         */
        wait: z.enum(['refusals', 'all']).default('refusals'),
        /** The audit log without Redis; the spool for Redis outages with it. */
        journalDir: z.string().min(1).default('pgwarden-audit'),
        /**
         * HMAC key of the tamper-evident chain (a secret: set it with PGWARDEN_AUDIT_KEY). Required
         * with Redis; without Redis a key is generated into journalDir/audit.key when unset.
         */
        hmacKey: z.string().min(32, 'the audit key needs at least 32 characters').optional(),
        /** Names this instance's chains; default: the host name. */
        instanceId: z
          .string()
          .regex(/^[A-Za-z0-9._:-]{1,100}$/, 'letters, digits and . _ : - only')
          .optional(),
        /** Retention: keep about this many stream entries (XADD MAXLEN ~). Off by default. */
        maxLen: z.number().int().positive().optional(),
        /** Retention: keep about this many hours of entries (XADD MINID ~). Off by default. */
        retentionHours: z.number().int().positive().optional(),
      })
      .strict()
      .refine((a) => a.maxLen === undefined || a.retentionHours === undefined, {
        message: 'set either maxLen or retentionHours, not both',
      })
      .default({ enabled: true, stream: 'pgwarden:audit', wait: 'refusals', journalDir: 'pgwarden-audit' }),
    approval: z
      .object({
        /**
         * Statements the rules send to `review` are held for a reviewer. Needs Redis (requests
         * and verdicts are shared by every instance there); without Redis they are refused.
         */
        enabled: z.boolean().default(true),
        /**
         * Where requests, verdicts and grants live: `redis` (redisUrl; shared by every worker and
         * instance) or `memory` (this one process only: `workers: 1`; used by `pgwarden demo`).
         * Unset: redis.
         */
        store: z.enum(['redis', 'memory']).optional(),
        /** host:port of the approval page, WebSocket and REST API. */
        listen: hostPort.default('127.0.0.1:6480'),
        /** HTTPS for the page and API; both paths or neither. */
        tls: z.object({ cert: z.string(), key: z.string() }).strict().optional(),
        /** Serve plain HTTP on a non-loopback address anyway (behind a TLS-terminating proxy). */
        allowInsecureHttp: z.boolean().default(false),
        /** The page's address as reviewers reach it (links in webhooks); default: from listen. */
        publicUrl: z.string().url().optional(),
        /** Extra origins allowed to open the WebSocket (the page's own origin always is). */
        allowedOrigins: z.array(z.string().url()).default([]),
        /** How long a held statement waits for a verdict before it fails with 57014. */
        timeoutSeconds: z.number().int().min(1).max(86_400).default(300),
        /** Pending requests one database user may have at once; past it new holds are refused. */
        maxPendingPerUser: z.number().int().min(1).default(5),
        /** Longest time-boxed grant a reviewer may give, in minutes. */
        maxGrantMinutes: z.number().int().min(1).default(240),
        /** Finished requests stay visible (recent decisions, API) this long. */
        keepHours: z.number().int().min(1).default(24),
        /** Redis key prefix shared by the instances of one deployment. */
        redisPrefix: z.string().min(1).default('pgwarden:approvals'),
        /** Reviewers with static tokens; only the SHA-256 of each token is stored. */
        reviewers: z
          .array(
            z
              .object({
                name: z.string().min(1).max(200),
                /** "sha256:<64 hex digits>" of the token (`pgwarden reviewer-token` makes one). */
                tokenHash: z.string().regex(/^sha256:[0-9a-f]{64}$/, 'expected sha256:<64 lowercase hex digits>'),
                groups: z.array(z.string().min(1)).default([]),
                /** Database users this reviewer acts as: requests made as them are not theirs to decide. */
                actsAs: z.array(z.string().min(1)).default([]),
              })
              .strict(),
          )
          .default([]),
        /** Reviewers signing in with OIDC ID or access tokens from the organisation's provider. */
        oidc: z
          .object({
            issuer: z.string().min(1),
            audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
            jwksUrl: z.string().url(),
            /** Claim naming the reviewer. */
            nameClaim: z.string().min(1).default('email'),
            /** Claim listing the reviewer's groups. */
            groupsClaim: z.string().min(1).default('groups'),
          })
          .strict()
          .optional(),
        /** Reviewer name → database users they act as (for OIDC reviewers; adds to `reviewers[].actsAs`). */
        actsAs: z.record(z.string(), z.array(z.string().min(1))).default({}),
        /** Outgoing webhook on new requests and verdicts (Slack-compatible JSON). */
        webhook: z
          .object({ url: z.string().url(), timeoutMs: z.number().int().positive().default(5000) })
          .strict()
          .optional(),
      })
      .strict()
      .default({
        enabled: true,
        listen: '127.0.0.1:6480',
        allowInsecureHttp: false,
        allowedOrigins: [],
        timeoutSeconds: 300,
        maxPendingPerUser: 5,
        maxGrantMinutes: 240,
        keepHours: 24,
        redisPrefix: 'pgwarden:approvals',
        reviewers: [],
        actsAs: {},
      }),
    masking: z
      .object({
        /**
         * HMAC key of the `hash` strategy (a secret: PGWARDEN_MASK_KEY). Every instance needs the
         * same key for hashes to join. Default: derived from the audit key.
         */
        hashKey: z.string().min(32, 'the masking key needs at least 32 characters').optional(),
        /**
         * postgres:// URL (pgwarden's own user) of the side connection that reads which table
         * columns are masked (pg_class, pg_attribute, views); the database is each session's.
         * Default: the upstream URL as user postgres.
         */
        catalogUrl: z.string().regex(/^postgres(ql)?:\/\//, 'expected a postgres:// URL').optional(),
        /** The catalog is read again after DDL and at least this often. */
        refreshSeconds: z.number().int().min(1).default(60),
      })
      .strict()
      .default({ refreshSeconds: 60 }),
    /**
     * How agents authenticate. passthrough (default): the client authenticates to PostgreSQL
     * through pgwarden with a database user and password. agents: pgwarden authenticates the
     * agents listed in the rules (`agents:`; SCRAM secret or OIDC access token) and logs in
     * upstream as each agent's mapped role with credentials the agent never sees.
     */
    identity: z
      .object({
        mode: z.enum(['passthrough', 'agents']).default('passthrough'),
        /**
         * Upstream credentials per mapped role. The password comes from `passwordEnv` (the name
         * of an environment variable) or `password`; a role not listed uses the environment
         * variable PGWARDEN_ROLE_PASSWORD_<ROLE> (upper case, other characters as _), else none
         * (for trust or certificate authentication upstream).
         */
        roles: z
          .record(
            z.string().min(1),
            z.object({ password: z.string().min(1).optional(), passwordEnv: z.string().min(1).optional() }).strict(),
          )
          .default({}),
        /** Agents sending an OIDC access token as their password (agents with `oidc: {subject}`). */
        oidc: z
          .object({
            issuer: z.string().min(1),
            audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
            jwksUrl: z.string().url(),
            /** Claim whose value names the agent (matched with `agents[].oidc.subject`). */
            agentClaim: z.string().min(1).default('sub'),
            /** Claim listing groups for rules (`match.groups`). */
            groupsClaim: z.string().min(1).default('groups'),
            /** A bearer token sent in cleartext can be replayed: without TLS to the client it is refused unless this is set. */
            allowPlaintext: z.boolean().default(false),
          })
          .strict()
          .optional(),
        /** A session whose OIDC token expires: end it then (default), or keep it open. */
        tokenExpiry: z.enum(['end-session', 'keep']).default('end-session'),
      })
      .strict()
      .default({ mode: 'passthrough', roles: {}, tokenExpiry: 'end-session' }),
    /** Directory of rule files (*.yaml). Default: the rules/ directory shipped with pgwarden. */
    rulesDir: z.string().optional(),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .strict()
  .superRefine((c, ctx) => {
    // Each worker would hold its own requests, invisible to the page and to the other workers.
    if (c.approval.enabled && c.approval.store === 'memory' && c.workers > 1) {
      ctx.addIssue({
        code: 'custom',
        path: ['approval', 'store'],
        message: `memory keeps approval requests inside one process, but workers is ${c.workers}: set workers: 1, or keep approvals in Redis (redisUrl, approval.store: redis), which every worker shares`,
      });
    }
  });

export type Config = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
