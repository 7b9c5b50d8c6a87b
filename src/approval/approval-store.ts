import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { SessionRef, StatementRef } from '../audit/events.js';

/**
 * Approval requests and grants (DESIGN.md "Approvals: one request, explicit states"):
 *
 *   pending → approved → executing → done
 *   pending → denied | expired | withdrawn
 *
 * `ApprovalStore` is what the gate, the review desk, the page and the janitor need; two
 * implementations keep the same state machine:
 *
 * - RedisApprovalStore (below): shared by every pgwarden instance and worker. Every transition
 *   is one Lua script that checks the current state, so two reviewers (or a reviewer and the
 *   expiry) racing on one request cannot both win, and `executing` is claimed exactly once: an
 *   approval never runs twice. Each change is published on `<prefix>:events`, which the
 *   holding instance and every reviewer page listen to;
 * - MemoryApprovalStore (memory-approval-store.ts): one process only (`approval.store: memory`,
 *   the demo), the same checks made synchronously.
 *
 * Records hold what a reviewer needs to decide and nothing that leaks: normalized statements
 * (no literals, no parameters), tables, identity, rule and reason.
 */
export type ApprovalState = 'pending' | 'approved' | 'executing' | 'done' | 'denied' | 'expired' | 'withdrawn';

export interface ApprovalRequest {
  id: string;
  state: ApprovalState;
  /** Milliseconds since the epoch. */
  createdAt: number;
  expiresAt: number;
  /** The instance holding the connection. */
  instance: string;
  session: SessionRef;
  statements: StatementRef[];
  kinds: string[];
  tables: string[];
  rule: string;
  /** Why the rule held it (the rule's description). */
  reason: string;
  /** Planner estimate of rows, for reads and exports. */
  estimatedRows?: number;
  /** The session was inside a transaction block since this time (locks are held meanwhile). */
  inTransactionSince?: number;
  /** Fingerprint of the whole request (all its statements): what a grant is scoped to. */
  fingerprint: string;
  /** PII columns the statements touch (from the masking rules). */
  piiColumns: string[];
  /** Distinct approvals needed. */
  required: number;
  /** Reviewer groups allowed to decide; empty: any reviewer. */
  reviewerGroups: string[];
  /** A reviewer may approve with a time-boxed grant. */
  grantable: boolean;
  /** Approved, the statement runs under this role (just-in-time elevation). */
  elevate?: string;
  approvals: { reviewer: string; at: number; reason?: string }[];
  verdict?: { by: string; at: number; reason?: string; grantMinutes?: number };
}

export interface ApprovalEvent {
  id: string;
  state: ApprovalState;
}

export class ApprovalConflict extends Error {
  override readonly name = 'ApprovalConflict';
  constructor(
    readonly id: string,
    readonly state: ApprovalState | null,
    message: string,
  ) {
    super(message);
  }

  /** No such request (never made, or gone after its keep period). */
  static missing(id: string): ApprovalConflict {
    return new ApprovalConflict(id, null, `no approval request ${id}`);
  }

  /** The request is not in a state the change starts from. */
  static inState(id: string, state: ApprovalState): ApprovalConflict {
    return new ApprovalConflict(id, state, `request ${id} is ${state}`);
  }

  /** The same reviewer approved already (an approval counts once per reviewer). */
  static alreadyApproved(id: string): ApprovalConflict {
    return new ApprovalConflict(id, 'pending', `request ${id} already has this reviewer's approval`);
  }
}

/**
 * Every state change but approve() (which counts distinct reviewers): the states it starts from
 * and the one it makes. Both stores make exactly these.
 */
export const TRANSITIONS = {
  deny: { from: ['pending'], to: 'denied' },
  expire: { from: ['pending'], to: 'expired' },
  withdraw: { from: ['pending', 'approved'], to: 'withdrawn' },
  claim: { from: ['approved'], to: 'executing' },
  finish: { from: ['executing'], to: 'done' },
} as const satisfies Record<string, { from: readonly ApprovalState[]; to: ApprovalState }>;

export type Transition = keyof typeof TRANSITIONS;

/**
 * ARGV: id, allowed-from states (comma list), new state, JSON patch merged into the record,
 * now. Returns the updated record JSON, or an error reply "STATE <current>" / "MISSING".
 */
const TRANSITION = `
local key = KEYS[1]
local raw = redis.call('GET', key)
if not raw then return redis.error_reply('MISSING') end
local rec = cjson.decode(raw)
local allowed = false
for s in string.gmatch(ARGV[2], '[^,]+') do if rec.state == s then allowed = true end end
if not allowed then return redis.error_reply('STATE ' .. rec.state) end
local patch = cjson.decode(ARGV[4])
for k, v in pairs(patch) do rec[k] = v end
rec.state = ARGV[3]
local out = cjson.encode(rec)
redis.call('SET', key, out, 'KEEPTTL')
if rec.state ~= 'pending' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[2] .. ':user:' .. rec.session.user, ARGV[1])
  redis.call('ZADD', KEYS[2] .. ':recent', tonumber(ARGV[5]), ARGV[1])
end
redis.call('PUBLISH', KEYS[3], cjson.encode({ id = ARGV[1], state = rec.state }))
return out
`;

/**
 * One reviewer's approval. ARGV: id, reviewer, reason, now. The same reviewer counts once;
 * the request becomes approved when `required` distinct reviewers approved.
 */
const APPROVE = `
local key = KEYS[1]
local raw = redis.call('GET', key)
if not raw then return redis.error_reply('MISSING') end
local rec = cjson.decode(raw)
if rec.state ~= 'pending' then return redis.error_reply('STATE ' .. rec.state) end
if tonumber(ARGV[4]) >= rec.expiresAt then return redis.error_reply('STATE expired') end
for _, a in ipairs(rec.approvals) do
  if a.reviewer == ARGV[2] then return redis.error_reply('ALREADY') end
end
local entry = { reviewer = ARGV[2], at = tonumber(ARGV[4]) }
if ARGV[3] ~= '' then entry.reason = ARGV[3] end
table.insert(rec.approvals, entry)
if #rec.approvals >= rec.required then
  rec.state = 'approved'
  rec.verdict = { by = ARGV[2], at = tonumber(ARGV[4]) }
  if ARGV[3] ~= '' then rec.verdict.reason = ARGV[3] end
  if ARGV[5] ~= '' then rec.verdict.grantMinutes = tonumber(ARGV[5]) end
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[2] .. ':user:' .. rec.session.user, ARGV[1])
  redis.call('ZADD', KEYS[2] .. ':recent', tonumber(ARGV[4]), ARGV[1])
end
local out = cjson.encode(rec)
redis.call('SET', key, out, 'KEEPTTL')
redis.call('PUBLISH', KEYS[3], cjson.encode({ id = ARGV[1], state = rec.state }))
return out
`;

/**
 * A new pending request, unless its database user already has `cap` pending ones (approval
 * spam, DESIGN.md "Security and operations notes"). KEYS: record, pending, channel.
 * ARGV: id, record JSON, expiresAt, ttl ms, cap, now. Error reply "CAP <n>" past the cap.
 */
const CREATE = `
local rec = cjson.decode(ARGV[2])
local userKey = KEYS[2] .. ':user:' .. rec.session.user
redis.call('ZREMRANGEBYSCORE', userKey, '-inf', ARGV[6])
local n = redis.call('ZCARD', userKey)
if n >= tonumber(ARGV[5]) then return redis.error_reply('CAP ' .. n) end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[1])
redis.call('ZADD', userKey, tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', userKey, ARGV[4])
redis.call('PUBLISH', KEYS[3], cjson.encode({ id = ARGV[1], state = 'pending' }))
return 'OK'
`;

/** Too many pending requests for one database user. */
export class ApprovalCapReached extends Error {
  override readonly name = 'ApprovalCapReached';
  constructor(readonly pending: number) {
    super(`${pending} requests already pending`);
  }
}

/** What a new request carries; the store adds id, state, approvals (and createdAt when absent). */
export type NewApprovalRequest = Omit<ApprovalRequest, 'id' | 'state' | 'approvals' | 'createdAt'> & { createdAt?: number };

/** The record of a new pending request. */
export function newApprovalRecord(fields: NewApprovalRequest, now = Date.now()): ApprovalRequest {
  return { ...fields, id: randomBytes(8).toString('hex'), state: 'pending', createdAt: fields.createdAt ?? now, approvals: [] };
}

/** How long a request's record is kept: until its deadline, then `keepMs` for "recent decisions" and audits. */
export function recordLifetimeMs(rec: ApprovalRequest, keepMs: number, now = Date.now()): number {
  return Math.max(1, rec.expiresAt - now) + keepMs;
}

/** A time-boxed grant: the same statement, agent and database run without a hold until expiresAt. */
export interface ApprovalGrant {
  id: string;
  by: string;
  expiresAt: number;
}

/** A new grant by reviewer `by`, for `minutes` from now. */
export function newGrant(by: string, minutes: number, now = Date.now()): ApprovalGrant {
  return { id: randomBytes(6).toString('hex'), by, expiresAt: now + minutes * 60_000 };
}

/** What a grant is scoped to: the database user, the database and the request's fingerprint. */
export function grantScope(user: string, database: string, fingerprint: string): string {
  return `${encodeURIComponent(user)}:${encodeURIComponent(database)}:${fingerprint}`;
}

/**
 * The approval state machine as its users see it (gate, review desk, page, API, janitor).
 * Transitions reject with ApprovalConflict (state null: no such request) when the request is
 * not in a state they start from, `create` with ApprovalCapReached past the per-user cap, and
 * anything else (the store is unreachable) with a plain Error. Every successful change is
 * announced on the store's ApprovalEvents.
 */
export interface ApprovalStore {
  /**
   * Stores a new pending request and announces it. Throws ApprovalCapReached when its database
   * user already has `maxPendingPerUser` pending requests (past their deadline ones do not count).
   */
  create(fields: NewApprovalRequest, maxPendingPerUser?: number): Promise<ApprovalRequest>;
  get(id: string): Promise<ApprovalRequest | null>;
  /** Pending requests not past their deadline, oldest expiry first. */
  pending(now?: number): Promise<ApprovalRequest[]>;
  /** Ids of pending requests whose deadline passed (their holder is gone or late): for the janitor. */
  overdue(now?: number): Promise<string[]>;
  /** Decided, expired or withdrawn requests of the keep period, newest first. */
  recent(limit?: number): Promise<ApprovalRequest[]>;
  /** One reviewer approves; the request is approved once enough distinct reviewers did. */
  approve(id: string, reviewer: string, reason?: string, grantMinutes?: number): Promise<ApprovalRequest>;
  deny(id: string, reviewer: string, reason: string): Promise<ApprovalRequest>;
  /** The deadline passed without a verdict. */
  expire(id: string): Promise<ApprovalRequest>;
  /** The agent cancelled or disconnected (pending or approved, not yet claimed). */
  withdraw(id: string): Promise<ApprovalRequest>;
  /** The holding instance takes an approved request to run it: succeeds exactly once. */
  claim(id: string): Promise<ApprovalRequest>;
  finish(id: string): Promise<ApprovalRequest>;
  /** Records a time-boxed grant; it expires by itself. */
  grant(user: string, database: string, fingerprint: string, minutes: number, by: string): Promise<{ id: string; expiresAt: number }>;
  /** A live grant for exactly this agent, database and statement, if any. */
  findGrant(user: string, database: string, fingerprint: string): Promise<ApprovalGrant | null>;
}

/**
 * Where a process hears that requests changed state: Redis pub/sub, or in-process for the
 * memory store. A notification only says "look again"; the store holds the truth.
 */
export interface ApprovalEvents {
  /** Delivers every later change to `listener`; resolves once listening (rejects if it cannot). */
  subscribe(listener: (event: ApprovalEvent) => void): Promise<void>;
  /** Stops delivering (and releases the subscriber connection). */
  close(): void;
}

/**
 * The five plain transitions (TRANSITIONS), the same for both stores: a store supplies only the
 * atomic step that checks the current state and makes the change.
 */
export abstract class ApprovalTransitions {
  /**
   * Moves request `id` as `t` says, merging `patch` into the record; rejects with
   * ApprovalConflict when it is missing or in another state.
   */
  protected abstract transition(id: string, t: Transition, patch?: Partial<ApprovalRequest>): Promise<ApprovalRequest>;

  deny(id: string, reviewer: string, reason: string): Promise<ApprovalRequest> {
    return this.transition(id, 'deny', { verdict: { by: reviewer, at: Date.now(), reason } });
  }

  /** The deadline passed without a verdict. */
  expire(id: string): Promise<ApprovalRequest> {
    return this.transition(id, 'expire');
  }

  /** The agent cancelled or disconnected. */
  withdraw(id: string): Promise<ApprovalRequest> {
    return this.transition(id, 'withdraw');
  }

  /** The holding instance takes an approved request to run it: succeeds exactly once. */
  claim(id: string): Promise<ApprovalRequest> {
    return this.transition(id, 'claim');
  }

  finish(id: string): Promise<ApprovalRequest> {
    return this.transition(id, 'finish');
  }
}

/**
 * The Redis store's events: `subscriber` is a connection of its own (a subscribed connection
 * can run no other commands), listening on the store's events channel.
 */
export function redisApprovalEvents(subscriber: Redis, channel: string): ApprovalEvents {
  return {
    subscribe: async (listener) => {
      subscriber.on('message', (from: string, message: string) => {
        if (from !== channel) return;
        let event: ApprovalEvent;
        try {
          event = JSON.parse(message) as ApprovalEvent;
        } catch {
          return;
        }
        if (typeof event?.id === 'string') listener(event);
      });
      await subscriber.subscribe(channel);
    },
    close: () => subscriber.disconnect(),
  };
}

type ScriptFn = (k1: string, k2: string, k3: string, ...args: string[]) => Promise<string>;

function conflictOf(id: string, err: unknown): Error {
  // Redis prefixes a one-word error reply with "ERR ".
  const msg = ((err as Error).message ?? '').replace(/^ERR /, '');
  if (msg.startsWith('MISSING')) return ApprovalConflict.missing(id);
  if (msg.startsWith('ALREADY')) return ApprovalConflict.alreadyApproved(id);
  const m = /^STATE (\w+)/.exec(msg);
  if (m) return ApprovalConflict.inState(id, m[1] as ApprovalState);
  return err as Error;
}

/** cjson encodes an empty Lua table as {}: give arrays back their shape. */
function parse(raw: string): ApprovalRequest {
  const r = JSON.parse(raw) as ApprovalRequest;
  for (const k of ['statements', 'kinds', 'tables', 'approvals', 'piiColumns', 'reviewerGroups'] as const) if (!Array.isArray(r[k])) (r as unknown as Record<string, unknown>)[k] = [];
  return r;
}

export class RedisApprovalStore extends ApprovalTransitions implements ApprovalStore {
  private readonly pendingKey: string;
  private readonly channel: string;

  constructor(
    private readonly redis: Redis,
    private readonly prefix = 'pgwarden:approvals',
    /** Finished records are kept this long for "recent decisions" and audits. */
    private readonly keepMs = 24 * 3_600_000,
  ) {
    super();
    this.pendingKey = `${prefix}:pending`;
    this.channel = `${prefix}:events`;
    const r = redis as unknown as Record<string, unknown>;
    if (!r.pgwardenTransition) redis.defineCommand('pgwardenTransition', { numberOfKeys: 3, lua: TRANSITION });
    if (!r.pgwardenApprove) redis.defineCommand('pgwardenApprove', { numberOfKeys: 3, lua: APPROVE });
    if (!r.pgwardenCreate) redis.defineCommand('pgwardenCreate', { numberOfKeys: 3, lua: CREATE });
  }

  get eventsChannel(): string {
    return this.channel;
  }

  private key(id: string): string {
    return `${this.prefix}:req:${id}`;
  }

  private script(name: 'pgwardenTransition' | 'pgwardenApprove' | 'pgwardenCreate'): ScriptFn {
    const fn = (this.redis as unknown as Record<string, ScriptFn>)[name]!;
    return fn.bind(this.redis);
  }

  /**
   * Stores a new pending request and announces it. Throws ApprovalCapReached when its database
   * user already has `maxPendingPerUser` pending requests.
   */
  async create(fields: NewApprovalRequest, maxPendingPerUser = Number.MAX_SAFE_INTEGER): Promise<ApprovalRequest> {
    const rec = newApprovalRecord(fields);
    const ttl = recordLifetimeMs(rec, this.keepMs);
    try {
      await this.script('pgwardenCreate')(
        this.key(rec.id), this.pendingKey, this.channel,
        rec.id, JSON.stringify(rec), String(rec.expiresAt), String(ttl), String(maxPendingPerUser), String(Date.now()),
      );
    } catch (err) {
      const m = /CAP (\d+)/.exec((err as Error).message ?? '');
      if (m) throw new ApprovalCapReached(Number(m[1]));
      throw err;
    }
    return rec;
  }

  async get(id: string): Promise<ApprovalRequest | null> {
    const raw = await this.redis.get(this.key(id));
    return raw ? parse(raw) : null;
  }

  /** Pending requests not past their deadline, oldest expiry first. */
  async pending(now = Date.now()): Promise<ApprovalRequest[]> {
    const ids = await this.redis.zrangebyscore(this.pendingKey, String(now), '+inf');
    return this.load(ids, (r) => r.state === 'pending');
  }

  /** Pending requests whose deadline passed (their holder is gone or late): for the janitor. */
  async overdue(now = Date.now()): Promise<string[]> {
    return this.redis.zrangebyscore(this.pendingKey, '-inf', `(${now}`);
  }

  /** Decided, expired or withdrawn requests of the last `keepMs`, newest first. */
  async recent(limit = 50): Promise<ApprovalRequest[]> {
    const recentKey = `${this.pendingKey}:recent`;
    await this.redis.zremrangebyscore(recentKey, '-inf', `(${Date.now() - this.keepMs}`);
    const ids = await this.redis.zrevrange(recentKey, 0, limit - 1);
    return this.load(ids, () => true);
  }

  private async load(ids: string[], keep: (r: ApprovalRequest) => boolean): Promise<ApprovalRequest[]> {
    if (ids.length === 0) return [];
    const raws = await this.redis.mget(ids.map((id) => this.key(id)));
    return raws.filter((r): r is string => r !== null).map(parse).filter(keep);
  }

  protected async transition(id: string, t: Transition, patch: Partial<ApprovalRequest> = {}): Promise<ApprovalRequest> {
    const { from, to } = TRANSITIONS[t];
    try {
      return parse(await this.script('pgwardenTransition')(this.key(id), this.pendingKey, this.channel, id, from.join(','), to, JSON.stringify(patch), String(Date.now())));
    } catch (err) {
      throw conflictOf(id, err);
    }
  }

  /** One reviewer approves; the request is approved once enough distinct reviewers did. */
  async approve(id: string, reviewer: string, reason?: string, grantMinutes?: number): Promise<ApprovalRequest> {
    try {
      return parse(
        await this.script('pgwardenApprove')(this.key(id), this.pendingKey, this.channel, id, reviewer, reason ?? '', String(Date.now()), grantMinutes ? String(grantMinutes) : ''),
      );
    } catch (err) {
      throw conflictOf(id, err);
    }
  }

  // ---- grants: the same statement for the same agent and database, for N minutes ----

  private grantKey(user: string, database: string, fingerprint: string): string {
    return `${this.prefix}:grant:${grantScope(user, database, fingerprint)}`;
  }

  /** Records a time-boxed grant; it expires by itself (Redis key TTL). */
  async grant(user: string, database: string, fingerprint: string, minutes: number, by: string): Promise<{ id: string; expiresAt: number }> {
    const g = newGrant(by, minutes);
    await this.redis.set(this.grantKey(user, database, fingerprint), JSON.stringify(g), 'PX', minutes * 60_000);
    return { id: g.id, expiresAt: g.expiresAt };
  }

  /** A live grant for exactly this agent, database and statement, if any. */
  async findGrant(user: string, database: string, fingerprint: string): Promise<ApprovalGrant | null> {
    const raw = await this.redis.get(this.grantKey(user, database, fingerprint));
    return raw ? (JSON.parse(raw) as ApprovalGrant) : null;
  }
}
