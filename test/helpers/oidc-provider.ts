import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';

/**
 * A local OIDC identity provider for tests: a JWKS endpoint on an ephemeral port serving one
 * ES256 public key, and a signer for tokens with that key (or, to test rejection, a foreign one).
 */
export interface TestOidcProvider {
  issuer: string;
  audience: string;
  jwksUrl: string;
  /** A token with `claims`; iss, aud, exp and the signing key can be overridden. */
  token(claims: Record<string, unknown>, o?: { aud?: string; iss?: string; exp?: number; key?: CryptoKey }): Promise<string>;
  /** A key the JWKS does not hold. */
  otherKey: CryptoKey;
  close(): Promise<void>;
}

export async function startOidcProvider(issuer: string, audience: string): Promise<TestOidcProvider> {
  const kid = 'test-key-1';
  const pair = await generateKeyPair('ES256');
  const otherKey = (await generateKeyPair('ES256')).privateKey;
  const jwk = { ...(await exportJWK(pair.publicKey)), kid, alg: 'ES256', use: 'sig' };
  const server = http.createServer((req, res) => {
    if (req.url === '/jwks') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [jwk] }));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    issuer,
    audience,
    jwksUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`,
    otherKey,
    token: (claims, o = {}) => {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT(claims)
        .setProtectedHeader({ alg: 'ES256', kid, typ: 'JWT' })
        .setIssuer(o.iss ?? issuer)
        .setAudience(o.aud ?? audience)
        .setIssuedAt(now - 60)
        .setExpirationTime(o.exp ?? now + 300)
        .sign(o.key ?? pair.privateKey);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
