import {
  ApprovalCapReached,
  ApprovalConflict,
  ApprovalTransitions,
  grantScope,
  newApprovalRecord,
  newGrant,
  recordLifetimeMs,
  TRANSITIONS,
  type ApprovalEvent,
  type ApprovalEvents,
  type ApprovalGrant,
  type ApprovalRequest,
  type ApprovalState,
  type ApprovalStore,
  type NewApprovalRequest,
  type Transition,
} from './approval-store.js';

/**
 * The approval state machine of RedisApprovalStore, kept in this process (`approval.store:
 * memory`; `pgwarden demo`). Only for a single process: holders, reviewers and the janitor must
 * all live in the one that owns the store, so a multi-worker cluster or several instances need
 * Redis.
 *
 * It behaves as the Redis store does, check for check (the same tests run against both):
 *
 * - every method checks the current state and changes it without awaiting in between, which in
 *   one JavaScript thread is as atomic as the Redis store's Lua scripts: of two racing verdicts
 *   or claims exactly one wins;
 * - records are stored as JSON text and parsed on every read, so callers get copies (as from
 *   Redis) and a field set to `undefined` disappears the same way;
 * - a record lives until its deadline plus `keepMs` (the Redis key TTL), a grant until its
 *   expiry; both are dropped lazily, when read or on the next sweep;
 * - each change is announced to subscribers on a later turn of the event loop, after the caller
 *   got its result (as a Redis PUBLISH reaches subscribers after the script returned).
 */
interface Stored {
  json: string;
  /** When the record disappears (Redis: the key's TTL). */
  dropAt: number;
  /** Present while pending: its deadline (the score in the pending sorted sets). */
  pendingUntil?: number;
  /** Present once it left `pending`: its last transition (the score in the recent sorted set). */
  recentAt?: number;
  user: string;
}

/** At most this often, create() drops records and grants whose time is up. */
const SWEEP_MS = 60_000;

export class MemoryApprovalStore extends ApprovalTransitions implements ApprovalStore {
  private readonly records = new Map<string, Stored>();
  private readonly grants = new Map<string, ApprovalGrant>();
  private readonly listeners = new Set<(event: ApprovalEvent) => void>();
  private lastSweep = Date.now();

  constructor(
    /** Finished records are kept this long for "recent decisions" and audits. */
    private readonly keepMs = 24 * 3_600_000,
  ) {
    super();
  }

  /** A fresh subscription to this store's changes (one per waiter or page hub; close() ends it). */
  events(): ApprovalEvents {
    let mine: ((event: ApprovalEvent) => void) | null = null;
    return {
      subscribe: async (listener) => {
        if (mine) this.listeners.delete(mine);
        mine = listener;
        this.listeners.add(listener);
      },
      close: () => {
        if (mine) this.listeners.delete(mine);
        mine = null;
      },
    };
  }

  private publish(id: string, state: ApprovalState): void {
    const event: ApprovalEvent = { id, state };
    // On a later turn of the event loop, after the caller has its result, as a PUBLISH reaches
    // subscribers; one listener's failure never keeps the others (or the store) from going on.
    setImmediate(() => {
      for (const listener of [...this.listeners]) {
        try {
          listener({ ...event });
        } catch {
          // a listener's own problem
        }
      }
    });
  }

  private live(id: string, now = Date.now()): Stored | null {
    const s = this.records.get(id);
    if (!s) return null;
    if (now >= s.dropAt) {
      this.records.delete(id);
      return null;
    }
    return s;
  }

  private sweep(now: number): void {
    if (now - this.lastSweep < SWEEP_MS) return;
    this.lastSweep = now;
    for (const id of this.records.keys()) this.live(id, now);
    for (const [key, g] of this.grants) if (now >= g.expiresAt) this.grants.delete(key);
  }

  private save(s: Stored, rec: ApprovalRequest, now: number): void {
    s.json = JSON.stringify(rec);
    if (rec.state !== 'pending') {
      delete s.pendingUntil;
      s.recentAt = now;
    }
  }

  async create(fields: NewApprovalRequest, maxPendingPerUser = Number.MAX_SAFE_INTEGER): Promise<ApprovalRequest> {
    const now = Date.now();
    this.sweep(now);
    const rec = newApprovalRecord(fields, now);
    const user = rec.session.user;
    // As the Redis store: only this user's pending requests still inside their deadline count.
    let n = 0;
    for (const [id, s] of this.records) {
      if (s.user === user && s.pendingUntil !== undefined && s.pendingUntil > now && this.live(id, now)) n++;
    }
    if (n >= maxPendingPerUser) throw new ApprovalCapReached(n);
    const json = JSON.stringify(rec);
    this.records.set(rec.id, { json, dropAt: now + recordLifetimeMs(rec, this.keepMs, now), pendingUntil: rec.expiresAt, user });
    this.publish(rec.id, 'pending');
    return JSON.parse(json) as ApprovalRequest;
  }

  async get(id: string): Promise<ApprovalRequest | null> {
    const s = this.live(id);
    return s ? (JSON.parse(s.json) as ApprovalRequest) : null;
  }

  async pending(now = Date.now()): Promise<ApprovalRequest[]> {
    const out: { until: number; rec: ApprovalRequest }[] = [];
    for (const [id, s] of this.records) {
      if (s.pendingUntil === undefined || s.pendingUntil < now || !this.live(id)) continue;
      out.push({ until: s.pendingUntil, rec: JSON.parse(s.json) as ApprovalRequest });
    }
    return out.sort((a, b) => a.until - b.until || (a.rec.id < b.rec.id ? -1 : 1)).map((x) => x.rec);
  }

  async overdue(now = Date.now()): Promise<string[]> {
    const out: { until: number; id: string }[] = [];
    for (const [id, s] of this.records) {
      if (s.pendingUntil !== undefined && s.pendingUntil < now && this.live(id)) out.push({ until: s.pendingUntil, id });
    }
    return out.sort((a, b) => a.until - b.until || (a.id < b.id ? -1 : 1)).map((x) => x.id);
  }

  async recent(limit = 50): Promise<ApprovalRequest[]> {
    const since = Date.now() - this.keepMs;
    const out: { at: number; id: string; s: Stored }[] = [];
    for (const [id, s] of this.records) {
      if (s.recentAt !== undefined && s.recentAt >= since && this.live(id)) out.push({ at: s.recentAt, id, s });
    }
    return out
      .sort((a, b) => b.at - a.at || (a.id < b.id ? 1 : -1))
      .slice(0, limit)
      .map((x) => JSON.parse(x.s.json) as ApprovalRequest);
  }

  protected async transition(id: string, t: Transition, patch: Partial<ApprovalRequest> = {}): Promise<ApprovalRequest> {
    const { from, to } = TRANSITIONS[t];
    const now = Date.now();
    const s = this.live(id, now);
    if (!s) throw ApprovalConflict.missing(id);
    const rec = JSON.parse(s.json) as ApprovalRequest;
    if (!(from as readonly ApprovalState[]).includes(rec.state)) throw ApprovalConflict.inState(id, rec.state);
    const next: ApprovalRequest = { ...rec, ...patch, state: to };
    this.save(s, next, now);
    this.publish(id, to);
    return JSON.parse(s.json) as ApprovalRequest;
  }

  async approve(id: string, reviewer: string, reason?: string, grantMinutes?: number): Promise<ApprovalRequest> {
    const now = Date.now();
    const s = this.live(id, now);
    if (!s) throw ApprovalConflict.missing(id);
    const rec = JSON.parse(s.json) as ApprovalRequest;
    if (rec.state !== 'pending') throw ApprovalConflict.inState(id, rec.state);
    if (now >= rec.expiresAt) throw ApprovalConflict.inState(id, 'expired');
    if (rec.approvals.some((a) => a.reviewer === reviewer)) throw ApprovalConflict.alreadyApproved(id);
    rec.approvals.push({ reviewer, at: now, ...(reason ? { reason } : {}) });
    if (rec.approvals.length >= rec.required) {
      rec.state = 'approved';
      rec.verdict = { by: reviewer, at: now, ...(reason ? { reason } : {}), ...(grantMinutes ? { grantMinutes } : {}) };
    }
    this.save(s, rec, now);
    this.publish(id, rec.state);
    return JSON.parse(s.json) as ApprovalRequest;
  }

  async grant(user: string, database: string, fingerprint: string, minutes: number, by: string): Promise<{ id: string; expiresAt: number }> {
    const g = newGrant(by, minutes);
    this.grants.set(grantScope(user, database, fingerprint), g);
    return { id: g.id, expiresAt: g.expiresAt };
  }

  async findGrant(user: string, database: string, fingerprint: string): Promise<ApprovalGrant | null> {
    const key = grantScope(user, database, fingerprint);
    const g = this.grants.get(key);
    if (!g) return null;
    if (Date.now() >= g.expiresAt) {
      this.grants.delete(key);
      return null;
    }
    return { ...g };
  }
}
