import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose';
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
}

export type ReviewerAuthConfig = Pick<Config['approval'], 'reviewers' | 'oidc' | 'actsAs'>;

/** Longer credentials are refused before hashing or parsing: no real token comes near this. */
const MAX_TOKEN_LENGTH = 8 * 1024;

/**
 * JWS compact serialization: three base64url segments. Only such tokens reach jose, so static
 * tokens and junk never cause a JWKS fetch. The signature segment may be empty here (`alg: none`)
 * so that jose refuses it with a logged reason rather than it vanishing silently.
 */
const JWS_COMPACT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/**
 * Asymmetric algorithms only. An HMAC algorithm would let anyone holding the provider's public key
 * (it is public) forge tokens if a key were ever used as an HMAC secret (key confusion); `none`
 * is never acceptable.
 */
const OIDC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];

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
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, jwks, {
        issuer: oidc.issuer,
        audience: oidc.audience,
        algorithms: OIDC_ALGORITHMS,
        clockTolerance: this.clockToleranceSec,
        // A token without an expiry would be valid forever once leaked.
        requiredClaims: ['exp'],
      }));
    } catch (err) {
      const { reason, provider } = joseReason(err);
      // The provider being unreachable is an operational problem, not a bad credential: warn so
      // that it is seen, since every OIDC reviewer is locked out meanwhile.
      if (provider) {
        this.log.warn({ via: 'oidc', reason }, 'OIDC key set unavailable; OIDC reviewers cannot sign in');
        return null;
      }
      return this.fail('oidc', reason);
    }

    // Own properties only: a claim named like an Object.prototype member must not resolve to it.
    const name = Object.hasOwn(payload, oidc.nameClaim) ? payload[oidc.nameClaim] : undefined;
    if (typeof name !== 'string' || name.trim() === '') return this.fail('oidc', `no usable ${oidc.nameClaim} claim`);

    const raw = Object.hasOwn(payload, oidc.groupsClaim) ? payload[oidc.groupsClaim] : undefined;
    let groups: string[] = [];
    if (typeof raw === 'string') groups = [raw];
    // An array with anything but strings is not trusted at all rather than partly.
    else if (Array.isArray(raw) && raw.every((g) => typeof g === 'string')) groups = raw as string[];

    // Groups come from the token alone: a static reviewer of the same name lends none of theirs.
    return this.reviewer(name, unique(groups.filter((g) => g !== '')), 'oidc');
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
  request: { session: { user: string }; reviewerGroups?: readonly string[] },
): { ok: true } | { ok: false; why: string } {
  const user = request.session.user;
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

function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * A loggable reason for a jose failure, from its code and claim only: the error's payload and
 * message are not logged. `provider` marks failures to obtain the key set.
 */
function joseReason(err: unknown): { reason: string; provider: boolean } {
  const code = codeOf(err);
  const claim = (err as { claim?: unknown } | null)?.claim;
  const why = (err as { reason?: unknown } | null)?.reason;
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return { reason: 'expired', provider: false };
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (claim === 'aud') return { reason: 'wrong audience', provider: false };
      if (claim === 'iss') return { reason: 'wrong issuer', provider: false };
      if (claim === 'nbf') return { reason: 'not yet valid', provider: false };
      if (claim === 'exp') return { reason: 'no usable exp claim', provider: false };
      return { reason: `claim ${String(claim)} ${String(why)}`, provider: false };
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return { reason: 'bad signature', provider: false };
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return { reason: 'algorithm not allowed', provider: false };
    case 'ERR_JWKS_NO_MATCHING_KEY':
      return { reason: 'no matching key in the key set', provider: false };
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return { reason: 'several matching keys, none verified', provider: false };
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return { reason: 'malformed token', provider: false };
    case 'ERR_JOSE_NOT_SUPPORTED':
      return { reason: 'unsupported algorithm or key', provider: false };
    case 'ERR_JWK_INVALID':
      return { reason: 'invalid key in the key set', provider: false };
    case 'ERR_JWKS_TIMEOUT':
      return { reason: 'key set fetch timed out', provider: true };
    case 'ERR_JWKS_INVALID':
      return { reason: 'key set is not a valid JWKS', provider: true };
    case 'ERR_JOSE_GENERIC':
      // jose's fetch: non-200 answer or a body that is not JSON.
      return { reason: 'key set fetch failed', provider: true };
    default: {
      // fetch() failing (connection refused, DNS, TLS) surfaces as a TypeError with a cause; jose's
      // own TypeErrors have none.
      // Anything else is not blamed on the provider (and not warned about: a caller must not be
      // able to fill the warn log with crafted tokens).
      if (err instanceof TypeError && err.cause !== undefined) {
        const cause = codeOf(err.cause);
        return { reason: `key set fetch failed${cause ? ` (${cause})` : ''}`, provider: true };
      }
      return { reason: `unexpected error${code ? ` (${code})` : ''}`, provider: false };
    }
  }
}
