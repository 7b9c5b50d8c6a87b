import { jwtVerify, type JWTPayload, type createRemoteJWKSet } from 'jose';

/**
 * OIDC token verification shared by reviewers (approval API) and agents (a token sent as the
 * password): a JWS from the organisation's identity provider, verified with jose against the
 * provider's JWKS, asymmetric algorithms only, issuer, audience and an expiry required.
 */
/**
 * JWS compact serialization: three base64url segments. Only such tokens reach jose, so static
 * tokens and junk never cause a JWKS fetch. The signature segment may be empty here (`alg: none`)
 * so that jose refuses it with a logged reason rather than it vanishing silently.
 */
export const JWS_COMPACT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/**
 * Asymmetric algorithms only. An HMAC algorithm would let anyone holding the provider's public key
 * (it is public) forge tokens if a key were ever used as an HMAC secret (key confusion); `none`
 * is never acceptable.
 */
export const OIDC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];


export function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * A loggable reason for a jose failure, from its code and claim only: the error's payload and
 * message are not logged. `provider` marks failures to obtain the key set.
 */
export function joseReason(err: unknown): { reason: string; provider: boolean } {
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

export interface OidcTrust {
  issuer: string;
  audience: string | string[];
}

/** The verified payload, or why not (`provider`: the key set could not be obtained). */
export async function verifyOidcToken(
  token: string,
  trust: OidcTrust,
  jwks: ReturnType<typeof createRemoteJWKSet>,
  clockToleranceSec: number,
): Promise<{ payload: JWTPayload } | { reason: string; provider: boolean }> {
  if (!JWS_COMPACT.test(token)) return { reason: 'not a JWS', provider: false };
  try {
    const { payload } = await jwtVerify(token, jwks, {
      issuer: trust.issuer,
      audience: trust.audience,
      algorithms: OIDC_ALGORITHMS,
      clockTolerance: clockToleranceSec,
      // A token without an expiry would be valid forever once leaked.
      requiredClaims: ['exp'],
    });
    return { payload };
  } catch (err) {
    return joseReason(err);
  }
}

/** A string claim (own properties only: a claim named like an Object.prototype member must not resolve to it). */
export function stringClaim(payload: JWTPayload, claim: string): string | undefined {
  const v = Object.hasOwn(payload, claim) ? payload[claim] : undefined;
  return typeof v === 'string' && v.trim() !== '' ? v : undefined;
}

/** A groups claim: one string or an array of strings; anything else is not trusted at all. */
export function groupsClaim(payload: JWTPayload, claim: string): string[] {
  const raw = Object.hasOwn(payload, claim) ? payload[claim] : undefined;
  if (typeof raw === 'string') return raw === '' ? [] : [raw];
  if (Array.isArray(raw) && raw.every((g) => typeof g === 'string')) return [...new Set((raw as string[]).filter((g) => g !== ''))];
  return [];
}
