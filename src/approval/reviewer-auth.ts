import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createRemoteJWKSet } from 'jose';
import { codeOf, groupsClaim, JWS_COMPACT, stringClaim, verifyOidcToken } from '../identity/oidc-token.js';
import type { Config } from '../config/schema.js';
import { silentLogger, type Logger } from '../logger.js';

/**
 * Who is calling the approval API (docs/approvals-api.md "Authentication"): a reviewer holding a
 * static token from the config (only its SHA-256 is stored), or one presenting an OIDC token from
 * the organisation's identity provider, verified against the provider's JWKS.
 *
 * Every failure ends the same way for the caller (null, never an exception, never a hint as to
 * why), so the API cannot be used as an oracle. The reason goes to the debug log; the token never
 * does, nor its hash.
 */
export interface Reviewer {
  name: string;
  groups: string[];
  /** Database users this reviewer acts as: requests made as them are not theirs to decide. */
  actsAs: string[];
  via: 'token' | 'oidc';
  /** OIDC: the token's issuer and subject (the same person as an OIDC agent's token subject?). */
  issuer?: string;
  subject?: string;
}

export type ReviewerAuthConfig = Pick<Config['approval'], 'reviewers' | 'oidc' | 'actsAs'>;

/** Longer credentials are refused before hashing or parsing: no real token comes near this. */
const MAX_TOKEN_LENGTH = 8 * 1024;

const TOKEN_HASH = /^sha256:([0-9a-f]{64})$/;

interface StaticEntry {
  name: string;
  groups: string[];
  /** The 32-byte SHA-256 of the token, compared in constant time. */
  digest: Buffer;
}

export class ReviewerAuth {
  private readonly log: Logger;
  private readonly statics: StaticEntry[] = [];
  /**
   * Lower-cased reviewer name → database users they act as, gathered from every source (the static
   * reviewers' `actsAs` and `approval.actsAs`). A Map, not the config object: names such as
   * `__proto__` or `constructor` must not reach Object.prototype.
   */
  private readonly actsAsByName = new Map<string, string[]>();
  private readonly oidc: NonNullable<ReviewerAuthConfig['oidc']> | undefined;
  private readonly jwks: ReturnType<typeof createRemoteJWKSet> | undefined;
  private readonly clockToleranceSec: number;

  constructor(config: ReviewerAuthConfig, opts: { log?: Logger; clockToleranceSec?: number } = {}) {
    this.log = opts.log ?? silentLogger;
    this.clockToleranceSec = opts.clockToleranceSec ?? 30;

    const seen = new Set<string>();
    for (const r of config.reviewers) {
      const m = TOKEN_HASH.exec(r.tokenHash);
      // The schema already checks this; a direct caller with a bad hash must fail loudly at
      // start-up rather than leave a reviewer who silently can never sign in.
      if (!m) throw new Error(`approval.reviewers: ${r.name}: tokenHash must be sha256:<64 lowercase hex digits>`);
      const hex = m[1]!;
      if (seen.has(hex)) {
        // Two reviewers sharing one token cannot be told apart; authenticate() refuses the token.
        this.log.warn({ reviewer: r.name }, 'two approval reviewers share one token hash; that token is refused');
      }
      seen.add(hex);
      this.statics.push({ name: r.name, groups: unique(r.groups), digest: Buffer.from(hex, 'hex') });
      this.addActsAs(r.name, r.actsAs);
    }
    for (const [name, users] of Object.entries(config.actsAs)) this.addActsAs(name, users);

    this.oidc = config.oidc;
    // Created once: jose caches the key set, refetches on an unknown kid at most once per cooldown
    // and shares one in-flight fetch between concurrent callers.
    this.jwks = config.oidc ? createRemoteJWKSet(new URL(config.oidc.jwksUrl)) : undefined;
  }

  get oidcEnabled(): boolean {
    return this.jwks !== undefined;
  }

  /** null for any bad/unknown/expired credential; never throws for bad input; never logs the token. */
  async authenticate(token: string): Promise<Reviewer | null> {
    try {
      // Cheap shape checks first: nothing large or odd is hashed, parsed or sent to jose.
      if (typeof token !== 'string') return this.fail('token', 'not a string');
      if (token.length === 0) return this.fail('token', 'empty');
      if (token.length > MAX_TOKEN_LENGTH) return this.fail('token', 'too long');

      const byToken = this.matchStatic(token);
      if (byToken === 'ambiguous') return this.fail('token', 'token hash shared by several reviewers');
      if (byToken) return this.reviewer(byToken.name, byToken.groups, 'token');

      if (!JWS_COMPACT.test(token)) return this.fail('token', 'unknown token');
      if (!this.oidc || !this.jwks) return this.fail('oidc', 'OIDC is not configured');
      return await this.verifyOidc(token, this.oidc, this.jwks);
    } catch (err) {
      // Defence in depth: authenticate() must not throw. Only a code is logged, never a message
      // that could quote the input.
      return this.fail('token', `unexpected error${codeOf(err) ? ` (${codeOf(err)})` : ''}`);
    }
  }

  /**
   * Compares the presented token's digest with every configured one, without stopping at the
   * first match, with timingSafeEqual on equal-length (32-byte) buffers.
   */
  private matchStatic(token: string): StaticEntry | 'ambiguous' | null {
    const digest = createHash('sha256').update(token, 'utf8').digest();
    let found: StaticEntry | null = null;
    let count = 0;
    for (const entry of this.statics) {
      if (timingSafeEqual(digest, entry.digest)) {
        found = entry;
        count++;
      }
    }
    return count > 1 ? 'ambiguous' : found;
  }

  private async verifyOidc(
    token: string,
    oidc: NonNullable<ReviewerAuthConfig['oidc']>,
    jwks: ReturnType<typeof createRemoteJWKSet>,
  ): Promise<Reviewer | null> {
    const verified = await verifyOidcToken(token, oidc, jwks, this.clockToleranceSec);
    if (!('payload' in verified)) {
      // The provider being unreachable is an operational problem, not a bad credential: warn so
      // that it is seen, since every OIDC reviewer is locked out meanwhile.
      if (verified.provider) {
        this.log.warn({ via: 'oidc', reason: verified.reason }, 'OIDC key set unavailable; OIDC reviewers cannot sign in');
        return null;
      }
      return this.fail('oidc', verified.reason);
    }
    const name = stringClaim(verified.payload, oidc.nameClaim);
    if (name === undefined) return this.fail('oidc', `no usable ${oidc.nameClaim} claim`);
    const groups = groupsClaim(verified.payload, oidc.groupsClaim);

    // Groups come from the token alone: a static reviewer of the same name lends none of theirs.
    const r = this.reviewer(name, groups, 'oidc');
    const { iss, sub } = verified.payload;
    return { ...r, ...(typeof iss === 'string' ? { issuer: iss } : {}), ...(typeof sub === 'string' ? { subject: sub } : {}) };
  }

  private reviewer(name: string, groups: string[], via: Reviewer['via']): Reviewer {
    // Fresh arrays: callers may not mutate the configuration through a Reviewer.
    return { name, groups: [...groups], actsAs: [...(this.actsAsByName.get(name.toLowerCase()) ?? [])], via };
  }

  /**
   * actsAs restricts (it only ever takes decisions away), so every source with the same name adds
   * to it, case-insensitively: an IdP's `Alice@Example.com` still hits `alice@example.com:`.
   * This also applies to an OIDC reviewer named like a static one: their groups do not merge, but
   * the self-approval restriction does, which can only refuse more.
   */
  private addActsAs(name: string, users: readonly string[]): void {
    const key = name.toLowerCase();
    const list = this.actsAsByName.get(key) ?? [];
    for (const u of users) if (!list.includes(u)) list.push(u);
    this.actsAsByName.set(key, list);
  }

  private fail(via: 'token' | 'oidc', reason: string): null {
    this.log.debug({ via, reason }, 'reviewer authentication failed');
    return null;
  }
}

/** 'sha256:' + hex SHA-256 of the UTF-8 token: the form `approval.reviewers[].tokenHash` stores. */
export function hashReviewerToken(token: string): string {
  return 'sha256:' + createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * A new static reviewer token (256 random bits) and its hash. The `pgwr_` prefix makes leaked
 * tokens recognisable to secret scanners; base64url has no dots, so it never looks like a JWT.
 */
export function newReviewerToken(): { token: string; hash: string } {
  const token = 'pgwr_' + randomBytes(32).toString('base64url');
  return { token, hash: hashReviewerToken(token) };
}

/** Self-approval and reviewer-group check for one request. */
export function mayDecide(
  reviewer: Reviewer,
  request: { session: { user: string; identity?: { agent: string; issuer?: string; subject?: string } }; reviewerGroups?: readonly string[] },
): { ok: true } | { ok: false; why: string } {
  const user = request.session.user;
  // An agent that logged in with an OIDC token of the same identity-provider subject as the
  // reviewer is the reviewer (a person running an agent with their own token).
  const id = request.session.identity;
  if (id?.subject !== undefined && reviewer.subject !== undefined && id.subject === reviewer.subject && (id.issuer === undefined || reviewer.issuer === undefined || id.issuer === reviewer.issuer)) {
    return { ok: false, why: `you cannot decide a request made by an agent using your own identity (${id.agent})` };
  }
  // No self-approval: an agent's operator must not wave through what they (or their agent) sent.
  // Case-insensitive because it can only refuse more.
  const u = user.toLowerCase();
  if (reviewer.name.toLowerCase() === u || reviewer.actsAs.some((a) => a.toLowerCase() === u)) {
    return { ok: false, why: `you cannot decide a request made as a database user you act as (${user})` };
  }
  // Group membership grants a right, so it is matched exactly.
  const wanted = request.reviewerGroups ?? [];
  if (wanted.length > 0 && !wanted.some((g) => reviewer.groups.includes(g))) {
    return {
      ok: false,
      why: `only members of ${wanted.length === 1 ? 'group' : 'groups'} ${wanted.join(', ')} may decide this request`,
    };
  }
  return { ok: true };
}

function unique(xs: readonly string[]): string[] {
  return [...new Set(xs)];
}
