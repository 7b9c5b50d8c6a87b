import os from 'node:os';
import { z } from 'zod';

/**
 * Every setting pgwarden reads, with its default and its documentation. Sources, strongest first:
 * command-line flags, PGWARDEN_* environment variables, the YAML config file. Unknown keys are
 * errors.
 *
 * Each setting carries its README text as metadata (`about`): the configuration reference in the
 * README is generated from this file (`pgwarden config reference`), and a test fails when the two
 * differ, so the documentation cannot drift from what is validated.
 */

/** What the configuration reference shows for a setting (a type alias: zod's metadata is an open record). */
type About = {
  /** What the setting does, in the README's words (markdown). */
  description: string;
  /** The default as a reader should see it, where the value itself would mislead (computed, bytes). */
  shownDefault?: string;
  /**
   * A secret: never a flag (flags show in `ps`), never printed by `pgwarden config check`. (URLs
   * are not secrets as a whole; their password part is never printed.)
   */
  secret?: true;
  /** For a map: what its keys are, shown as `<keyName>` in the setting's path. */
  keyName?: string;
  /** What the value is, where its type alone says too little (a path rather than any text). */
  shownValue?: string;
};

const about = (description: string, more: Omit<About, 'description'> = {}): About => ({ description, ...more });

const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, 'expected host:port, e.g. 127.0.0.1:6432');
const postgresUrl = z.string().regex(/^postgres(ql)?:\/\//, 'expected a postgres:// URL');

export const configSchema = z
  .object({
    listen: hostPort.default('127.0.0.1:6432').meta(about('where agents connect (`host:port`; port 0 picks a free one)')),
    upstream: z
      .object({
        url: postgresUrl
          .default('postgres://127.0.0.1:5432')
          .meta(
            about(
              'the real server; user and database come from each client. A host starting with `/` is a Unix-socket directory',
            ),
          ),
        sslmode: z
          .enum(['disable', 'prefer', 'require', 'verify-ca', 'verify-full'])
          .default('prefer')
          .meta(about('TLS to the upstream, as in libpq')),
        sslrootcert: z
          .string()
          .optional()
          .meta(about('PEM file with the CA that signed the upstream\'s certificate (`verify-ca`, `verify-full`)', { shownValue: 'file' })),
        connectTimeoutMs: z.number().int().positive().default(10_000).meta(about('how long connecting to the upstream may take')),
      })
      .strict()
      .prefault({}),
    tls: z
      .object({
        cert: z.string().meta(about('PEM certificate (chain) pgwarden presents to clients', { shownValue: 'file' })),
        key: z
          .string()
          .meta(about('its private key; with both set, SSLRequest is answered `S` (`sslmode=require` works), else `N`', { shownValue: 'file' })),
      })
      .strict()
      .optional(),
    limits: z
      .object({
        maxMessageBytes: z
          .number()
          .int()
          .min(1024)
          .default(64 * 1024 * 1024)
          .meta(about('a larger client message: FATAL 54000, connection closed', { shownDefault: '64 MiB' })),
        maxBatchBytes: z
          .number()
          .int()
          .min(1024)
          .default(1024 * 1024)
          .meta(about('an extended-protocol batch without Sync is judged and forwarded in parts of this size', { shownDefault: '1 MiB' })),
        maxHeldBytes: z
          .number()
          .int()
          .min(1024)
          .default(16 * 1024 * 1024)
          .meta(
            about('client bytes buffered while a request waits for its decision; past it the client socket is paused', {
              shownDefault: '16 MiB',
            }),
          ),
        maxClientConnections: z.number().int().positive().default(1000).meta(about('per worker; past it FATAL 53300')),
        startupTimeoutMs: z.number().int().positive().default(60_000).meta(about('from accept to ReadyForQuery')),
        shutdownGraceMs: z
          .number()
          .int()
          .nonnegative()
          .default(30_000)
          .meta(about('how long SIGTERM waits for running statements and open transactions')),
      })
      .strict()
      .prefault({}),
    workers: z
      .number()
      .int()
      .min(1)
      .max(127)
      .default(Math.min(os.availableParallelism(), 127))
      .meta(about('processes sharing the listen port (node:cluster); 1 runs everything in one process', { shownDefault: 'number of cores' })),
    healthListen: hostPort.optional().meta(about('`host:port` serving `GET /healthz` (200 while accepting, 503 while draining); off when unset')),
    estimatorUrl: postgresUrl
      .optional()
      .meta(
        about(
          '`postgres://user:password@host:port` of a side connection allowed to EXPLAIN reads of sensitive tables (the database is each session\'s); unset: no planner estimates, row cap only',
        ),
      ),
    redisUrl: z
      .string()
      .regex(/^rediss?:\/\//, 'expected a redis:// or rediss:// URL')
      .optional()
      .meta(
        about(
          '`redis://` or `rediss://` shared by all instances: the audit stream and approvals. Unset: the embedded mode, where the local journal is the audit log and review refuses (unless `approval.store: memory`)',
        ),
      ),
    audit: z
      .object({
        enabled: z.boolean().default(true).meta(about('`false` records nothing: for measurements only (a warning is logged)')),
        stream: z.string().min(1).default('pgwarden:audit').meta(about('the Redis stream; chain heads live in `<stream>:heads`')),
        wait: z
          .enum(['refusals', 'all'])
          .default('refusals')
          .meta(
            about(
              'which decisions wait until their entry is durable before taking effect: `refusals` (allowed statements are forwarded at once and recorded in the next batch) or `all` (every statement waits for its record: strictest, a round trip each)',
            ),
          ),
        journalDir: z
          .string()
          .min(1)
          .default('pgwarden-audit')
          .meta(
            about('the audit log without Redis; the spool during Redis outages with it (relative to the working directory)', {
              shownValue: 'directory',
            }),
          ),
        hmacKey: z
          .string()
          .min(32, 'the audit key needs at least 32 characters')
          .optional()
          .meta(
            about(
              'HMAC key of the tamper-evident chains, 32+ characters. Required with Redis (every instance and every auditor use the same key); without Redis it is generated once into `<journalDir>/audit.key` (mode 0600)',
              { secret: true, shownDefault: 'generated' },
            ),
          ),
        instanceId: z
          .string()
          .regex(/^[A-Za-z0-9._:-]{1,100}$/, 'letters, digits and . _ : - only')
          .optional()
          .meta(about('names this instance\'s chains', { shownDefault: 'host name' })),
        maxLen: z.number().int().positive().optional().meta(about('retention: keep about this many stream entries (`XADD MAXLEN ~`); off by default')),
        retentionHours: z
          .number()
          .int()
          .positive()
          .optional()
          .meta(about('retention: keep about this many hours of entries (`XADD MINID ~`); off by default; not with `maxLen`')),
      })
      .strict()
      .refine((a) => a.maxLen === undefined || a.retentionHours === undefined, {
        message: 'set either maxLen or retentionHours, not both',
      })
      .prefault({}),
    approval: z
      .object({
        enabled: z
          .boolean()
          .default(true)
          .meta(about('hold statements the rules send to `review` for a reviewer (needs `redisUrl` or `approval.store: memory`; otherwise they are refused)')),
        store: z
          .enum(['redis', 'memory'])
          .optional()
          .meta(
            about(
              'where requests, verdicts and grants live: `redis` (through `redisUrl`, shared by every worker and instance) or `memory` (this process only: needs `workers: 1`; what `pgwarden demo` uses)',
              { shownDefault: '`redis`' },
            ),
          ),
        listen: hostPort
          .default('127.0.0.1:6480')
          .meta(about('the approval page, WebSocket and REST API; a non-loopback address needs `approval.tls` or `approval.allowInsecureHttp`')),
        tls: z
          .object({
            cert: z.string().meta(about('PEM certificate of the page and API (HTTPS)', { shownValue: 'file' })),
            key: z.string().meta(about('its private key', { shownValue: 'file' })),
          })
          .strict()
          .optional(),
        allowInsecureHttp: z
          .boolean()
          .default(false)
          .meta(about('serve plain HTTP on a non-loopback address anyway (behind a TLS-terminating proxy, or published only on a host\'s loopback)')),
        publicUrl: z
          .string()
          .url()
          .optional()
          .meta(
            about('the page\'s address as reviewers reach it (hold notices, webhook links, allowed WebSocket origin)', {
              shownDefault: 'from `listen`',
            }),
          ),
        allowedOrigins: z.array(z.string().url()).default([]).meta(about('further origins allowed to open the WebSocket (the page\'s own origin always is)')),
        timeoutSeconds: z
          .number()
          .int()
          .min(1)
          .max(86_400)
          .default(300)
          .meta(about('how long a held statement waits for a verdict before it fails with 57014 (a rule can set its own)')),
        maxPendingPerUser: z
          .number()
          .int()
          .min(1)
          .default(5)
          .meta(about('pending requests one database user may have at once, across instances; past it 53400. Each held statement keeps an upstream connection')),
        maxGrantMinutes: z.number().int().min(1).default(240).meta(about('longest time-boxed grant a reviewer may give')),
        keepHours: z.number().int().min(1).default(24).meta(about('decided requests stay visible (recent decisions, API) this long')),
        redisPrefix: z.string().min(1).default('pgwarden:approvals').meta(about('Redis key prefix shared by the instances of one deployment')),
        reviewers: z
          .array(
            z
              .object({
                name: z.string().min(1).max(200).meta(about('the reviewer\'s name, shown on decisions and in the audit log')),
                tokenHash: z
                  .string()
                  .regex(/^sha256:[0-9a-f]{64}$/, 'expected sha256:<64 lowercase hex digits>')
                  .meta(about('`sha256:<64 hex digits>` of the reviewer\'s token (`pgwarden reviewer-token` makes both); the token itself is never stored')),
                groups: z.array(z.string().min(1)).default([]).meta(about('groups a rule\'s `reviewers:` can name')),
                actsAs: z
                  .array(z.string().min(1))
                  .default([])
                  .meta(about('database users (or agents) this reviewer acts as: requests made as them are not theirs to decide')),
              })
              .strict(),
          )
          .default([]),
        oidc: z
          .object({
            issuer: z.string().min(1).meta(about('OIDC issuer whose ID or access tokens sign reviewers in')),
            audience: z
              .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
              .meta(about('accepted audience (one or a list)')),
            jwksUrl: z.string().url().meta(about('the issuer\'s JWKS (signing keys)')),
            nameClaim: z.string().min(1).default('email').meta(about('claim naming the reviewer')),
            groupsClaim: z.string().min(1).default('groups').meta(about('claim listing the reviewer\'s groups')),
          })
          .strict()
          .optional(),
        actsAs: z
          .record(z.string(), z.array(z.string().min(1)))
          .default({})
          .meta(about('database users (or agents) a reviewer acts as, by reviewer name (for OIDC reviewers; adds to `reviewers[].actsAs`)', { keyName: 'reviewer' })),
        webhook: z
          .object({
            url: z
              .string()
              .url()
              .meta(about('POST Slack-compatible JSON here on new requests and verdicts (its path often embeds a token)', { secret: true })),
            timeoutMs: z.number().int().positive().default(5000).meta(about('how long one webhook call may take')),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    masking: z
      .object({
        hashKey: z
          .string()
          .min(32, 'the masking key needs at least 32 characters')
          .optional()
          .meta(
            about('HMAC key of the `hash` strategy, 32+ characters; the same on every instance so hashes join', {
              secret: true,
              shownDefault: 'derived from the audit key',
            }),
          ),
        catalogUrl: postgresUrl
          .optional()
          .meta(
            about(
              '`postgres://user:password@host:port` of pgwarden\'s side connection that reads which columns are masked (pg_class, pg_attribute, views; the database is each session\'s); it needs no privilege on the data',
              { shownDefault: 'the upstream as user `postgres`' },
            ),
          ),
        refreshSeconds: z
          .number()
          .int()
          .min(1)
          .default(60)
          .meta(about('the catalog is read again after DDL passes through, on rules reload, and at least this often')),
      })
      .strict()
      .prefault({}),
    identity: z
      .object({
        mode: z
          .enum(['passthrough', 'agents'])
          .default('passthrough')
          .meta(
            about(
              '`passthrough`: clients authenticate to PostgreSQL through pgwarden with a database user and password. `agents`: pgwarden authenticates the agents in the rules\' `agents:` (SCRAM secret or OIDC access token) and logs in upstream as each agent\'s role with credentials the agent never sees',
            ),
          ),
        roles: z
          .record(
            z.string().min(1),
            z
              .object({
                password: z.string().min(1).optional().meta(about('the upstream password of this mapped role', { secret: true })),
                passwordEnv: z
                  .string()
                  .min(1)
                  .optional()
                  .meta(
                    about(
                      'the environment variable holding that password instead. A role not listed uses `PGWARDEN_ROLE_PASSWORD_<ROLE>` (upper case, other characters as `_`), else none (trust or certificate authentication upstream)',
                    ),
                  ),
              })
              .strict(),
          )
          .default({})
          .meta(about('upstream credentials per mapped role', { keyName: 'role' })),
        oidc: z
          .object({
            issuer: z.string().min(1).meta(about('issuer of the access tokens agents send as their password (agents with `oidc: {subject}`)')),
            audience: z
              .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
              .meta(about('accepted audience (one or a list)')),
            jwksUrl: z.string().url().meta(about('the issuer\'s JWKS (signing keys)')),
            agentClaim: z.string().min(1).default('sub').meta(about('claim whose value names the agent (matched with `agents[].oidc.subject`)')),
            groupsClaim: z.string().min(1).default('groups').meta(about('claim listing groups for rules (`match.groups`)')),
            allowPlaintext: z
              .boolean()
              .default(false)
              .meta(about('accept a token without TLS to the client (a bearer token sent in cleartext can be replayed)')),
          })
          .strict()
          .optional(),
        tokenExpiry: z
          .enum(['end-session', 'keep'])
          .default('end-session')
          .meta(about('a session whose OIDC token expires: end it then (FATAL 57P01), or keep it open')),
      })
      .strict()
      .prefault({}),
    rulesDir: z
      .string()
      .optional()
      .meta(
        about('directory of rule files (`*.yaml`), hot-reloaded', {
          shownDefault: 'the `rules/` shipped with pgwarden',
          shownValue: 'directory',
        }),
      ),
    logLevel: z
      .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
      .default('info')
      .meta(about('JSON log lines on stdout; they never contain SQL text, values, passwords or tokens')),
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
