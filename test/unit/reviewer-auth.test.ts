import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  hashReviewerToken,
  mayDecide,
  newReviewerToken,
  ReviewerAuth,
  type Reviewer,
  type ReviewerAuthConfig,
} from '../../src/approval/reviewer-auth.js';

const ISSUER = 'https://idp.example.test/';
const AUDIENCE = 'pgwarden';
const KID = 'k1';

let server: Server;
let jwksUrl: string;
let jwksFetches = 0;
let publicJwk: JWK;
let privateKey: CryptoKey;
let otherPrivateKey: CryptoKey;
let publicPem: string;

const aliceToken = newReviewerToken();

beforeAll(async () => {
  const pair = await generateKeyPair('RS256');
  const other = await generateKeyPair('RS256');
  privateKey = pair.privateKey;
  otherPrivateKey = other.privateKey;
  publicJwk = { ...(await exportJWK(pair.publicKey)), kid: KID, alg: 'RS256', use: 'sig' };
  publicPem = await exportSPKI(pair.publicKey);

  server = createServer((req, res) => {
    if (req.url === '/jwks') {
      jwksFetches++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [publicJwk] }));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
});

afterAll(async () => {
  await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
});

function config(overrides: Partial<ReviewerAuthConfig> = {}): ReviewerAuthConfig {
  return {
    reviewers: [{ name: 'alice', tokenHash: aliceToken.hash, groups: ['dba'], actsAs: ['agent'] }],
    actsAs: { alice: ['etl', 'agent'], 'carol@example.com': ['reporting'] },
    oidc: { issuer: ISSUER, audience: AUDIENCE, jwksUrl, nameClaim: 'email', groupsClaim: 'groups' },
    ...overrides,
  };
}

/** A logger whose debug/warn lines the test can read. */
function capture(): { log: pino.Logger; lines: string[]; reasons: () => string[] } {
  const lines: string[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(s) });
  return {
    log,
    lines,
    reasons: () => lines.map((l) => (JSON.parse(l) as { reason?: string }).reason ?? ''),
  };
}

const now = () => Math.floor(Date.now() / 1000);

interface SignOpts {
  key?: CryptoKey | Uint8Array;
  alg?: string;
  kid?: string;
  exp?: number | null;
  iss?: string;
  aud?: string;
}

async function sign(claims: JWTPayload, o: SignOpts = {}): Promise<string> {
  const jwt = new SignJWT({ email: 'carol@example.com', groups: ['dba', 'ops'], ...claims })
    .setProtectedHeader({ alg: o.alg ?? 'RS256', kid: o.kid ?? KID })
    .setIssuer(o.iss ?? ISSUER)
    .setAudience(o.aud ?? AUDIENCE)
    .setIssuedAt();
  if (o.exp !== null) jwt.setExpirationTime(o.exp ?? now() + 600);
  return jwt.sign(o.key ?? privateKey);
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

describe('ReviewerAuth static tokens', () => {
  it('accepts a configured token and merges actsAs from both sources without duplicates', async () => {
    const auth = new ReviewerAuth(config());
    expect(await auth.authenticate(aliceToken.token)).toEqual({
      name: 'alice',
      groups: ['dba'],
      actsAs: ['agent', 'etl'],
      via: 'token',
    });
  });

  it('refuses an unknown token and logs why without the token', async () => {
    const c = capture();
    const auth = new ReviewerAuth(config(), { log: c.log });
    const wrong = newReviewerToken().token;
    expect(await auth.authenticate(wrong)).toBeNull();
    expect(c.reasons()).toEqual(['unknown token']);
    expect(c.lines.join('')).not.toContain(wrong);
  });

  it('refuses a token differing from the configured one in its last character', async () => {
    const auth = new ReviewerAuth(config());
    const t = aliceToken.token;
    const flipped = t.slice(0, -1) + (t.endsWith('A') ? 'B' : 'A');
    expect(await auth.authenticate(flipped)).toBeNull();
  });

  it('refuses an empty token', async () => {
    const emptyHash = hashReviewerToken('');
    const c = capture();
    const auth = new ReviewerAuth(
      config({ reviewers: [{ name: 'blank', tokenHash: emptyHash, groups: [], actsAs: [] }] }),
      { log: c.log },
    );
    expect(await auth.authenticate('')).toBeNull();
    expect(c.reasons()).toEqual(['empty']);
  });

  it('refuses a token over 8 KiB even when its hash is configured', async () => {
    const long = 'x'.repeat(8 * 1024 + 1);
    const justFits = 'y'.repeat(8 * 1024);
    const auth = new ReviewerAuth(
      config({
        reviewers: [
          { name: 'long', tokenHash: hashReviewerToken(long), groups: [], actsAs: [] },
          { name: 'fits', tokenHash: hashReviewerToken(justFits), groups: [], actsAs: [] },
        ],
      }),
    );
    expect(await auth.authenticate(long)).toBeNull();
    expect((await auth.authenticate(justFits))?.name).toBe('fits');
  });

  it('never throws for input that is not a string', async () => {
    const auth = new ReviewerAuth(config());
    for (const bad of [undefined, null, 42, {}, ['x'], Symbol('s')]) {
      await expect(auth.authenticate(bad as unknown as string)).resolves.toBeNull();
    }
  });

  it('refuses a token whose hash two reviewers share', async () => {
    const shared = newReviewerToken();
    const auth = new ReviewerAuth(
      config({
        reviewers: [
          { name: 'bob', tokenHash: shared.hash, groups: ['dba'], actsAs: [] },
          { name: 'eve', tokenHash: shared.hash, groups: [], actsAs: [] },
        ],
      }),
    );
    expect(await auth.authenticate(shared.token)).toBeNull();
  });

  it('resolves reviewer names like Object.prototype members without touching the prototype', async () => {
    const t1 = newReviewerToken();
    const t2 = newReviewerToken();
    const auth = new ReviewerAuth(
      config({
        reviewers: [
          { name: 'constructor', tokenHash: t1.hash, groups: [], actsAs: [] },
          { name: 'toString', tokenHash: t2.hash, groups: [], actsAs: ['x'] },
        ],
      }),
    );
    expect(await auth.authenticate(t1.token)).toEqual({ name: 'constructor', groups: [], actsAs: [], via: 'token' });
    expect((await auth.authenticate(t2.token))?.actsAs).toEqual(['x']);
  });

  it('rejects a malformed tokenHash at construction', () => {
    expect(
      () => new ReviewerAuth(config({ reviewers: [{ name: 'z', tokenHash: 'sha256:ABC', groups: [], actsAs: [] }] })),
    ).toThrow(/tokenHash/);
  });

  it('hands out copies: mutating a Reviewer does not change the next one', async () => {
    const auth = new ReviewerAuth(config());
    const first = (await auth.authenticate(aliceToken.token))!;
    first.actsAs.length = 0;
    first.groups.push('admin');
    expect(await auth.authenticate(aliceToken.token)).toMatchObject({ groups: ['dba'], actsAs: ['agent', 'etl'] });
  });
});

describe('hashReviewerToken and newReviewerToken', () => {
  it('hashes as sha256:<hex> of the UTF-8 token', () => {
    expect(hashReviewerToken('abc')).toBe('sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    // UTF-8, not UTF-16 or latin1: "é" is c3 a9.
    expect(hashReviewerToken('é')).toBe('sha256:' + createHash('sha256').update(Buffer.from([0xc3, 0xa9])).digest('hex'));
    expect(hashReviewerToken('x')).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it('makes pgwr_ tokens of 32 random bytes whose hash matches and which authenticate', async () => {
    const a = newReviewerToken();
    const b = newReviewerToken();
    expect(a.token).toMatch(/^pgwr_[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(a.token.slice(5), 'base64url')).toHaveLength(32);
    expect(a.hash).toBe(hashReviewerToken(a.token));
    expect(a.token).not.toBe(b.token);
    const auth = new ReviewerAuth(config({ reviewers: [{ name: 'dave', tokenHash: a.hash, groups: [], actsAs: [] }] }));
    expect((await auth.authenticate(a.token))?.name).toBe('dave');
  });
});

describe('ReviewerAuth OIDC', () => {
  it('accepts a valid token: name, groups and actsAs from approval.actsAs', async () => {
    const auth = new ReviewerAuth(config());
    expect(await auth.authenticate(await sign({ sub: 'carol-123' }))).toEqual({
      name: 'carol@example.com',
      groups: ['dba', 'ops'],
      actsAs: ['reporting'],
      via: 'oidc',
      issuer: ISSUER,
      subject: 'carol-123',
    });
    expect(jwksFetches).toBeGreaterThan(0);
  });

  it('matches approval.actsAs case-insensitively (it only restricts)', async () => {
    const auth = new ReviewerAuth(config());
    const r = await auth.authenticate(await sign({ email: 'Carol@Example.COM' }));
    expect(r).toMatchObject({ name: 'Carol@Example.COM', actsAs: ['reporting'] });
  });

  it('uses the configured name and groups claims', async () => {
    const auth = new ReviewerAuth(
      config({ oidc: { issuer: ISSUER, audience: AUDIENCE, jwksUrl, nameClaim: 'preferred_username', groupsClaim: 'roles' } }),
    );
    const r = await auth.authenticate(await sign({ preferred_username: 'frank', roles: ['sec'] }));
    expect(r).toMatchObject({ name: 'frank', groups: ['sec'], via: 'oidc' });
  });

  it('accepts any of several configured audiences', async () => {
    const auth = new ReviewerAuth(
      config({ oidc: { issuer: ISSUER, audience: ['other', AUDIENCE], jwksUrl, nameClaim: 'email', groupsClaim: 'groups' } }),
    );
    expect(await auth.authenticate(await sign({}))).not.toBeNull();
  });

  it('takes a single string groups claim as one group', async () => {
    const auth = new ReviewerAuth(config());
    expect((await auth.authenticate(await sign({ groups: 'dba' })))?.groups).toEqual(['dba']);
  });

  it.each([
    ['a number', 7],
    ['an object', { dba: true }],
    ['an array with a non-string', ['dba', 1]],
    ['null', null],
  ])('treats a groups claim that is %s as no groups', async (_label, groups) => {
    const auth = new ReviewerAuth(config());
    const r = await auth.authenticate(await sign({ groups: groups as JWTPayload[string] }));
    expect(r).not.toBeNull();
    expect(r!.groups).toEqual([]);
  });

  it('treats a missing groups claim as no groups', async () => {
    const auth = new ReviewerAuth(config());
    const r = await auth.authenticate(await sign({ groups: undefined }));
    expect(r).toMatchObject({ name: 'carol@example.com', groups: [] });
  });

  it.each([
    ['missing', undefined],
    ['empty', ''],
    ['blank', '   '],
    ['a number', 5],
    ['an array', ['carol@example.com']],
  ])('refuses a token whose name claim is %s', async (_label, email) => {
    const c = capture();
    const auth = new ReviewerAuth(config(), { log: c.log });
    expect(await auth.authenticate(await sign({ email: email as JWTPayload[string] }))).toBeNull();
    expect(c.reasons()).toEqual(['no usable email claim']);
  });

  it('refuses an expired token', async () => {
    const c = capture();
    const auth = new ReviewerAuth(config(), { log: c.log });
    expect(await auth.authenticate(await sign({}, { exp: now() - 3600 }))).toBeNull();
    expect(c.reasons()).toEqual(['expired']);
  });

  it('allows 30 s of clock skew by default and none when told', async () => {
    const token = await sign({}, { exp: now() - 5 });
    expect(await new ReviewerAuth(config()).authenticate(token)).not.toBeNull();
    expect(await new ReviewerAuth(config(), { clockToleranceSec: 0 }).authenticate(token)).toBeNull();
  });

  it('refuses a token that is not yet valid', async () => {
    const c = capture();
    const auth = new ReviewerAuth(config(), { log: c.log });
    expect(await auth.authenticate(await sign({ nbf: now() + 3600 }))).toBeNull();
    expect(c.reasons()).toEqual(['not yet valid']);
  });

  it('refuses a token without exp', async () => {
    const c = capture();
    const auth = new ReviewerAuth(config(), { log: c.log });
    expect(await auth.authenticate(await sign({}, { exp: null }))).toBeNull();
    expect(c.reasons()).toEqual(['no usable exp claim']);
  });

  it('refuses a token for another audience', async () => {
    const c = capture();
    const auth = new ReviewerAuth(config(), { log: c.log });
    expect(await auth.authenticate(await sign({}, { aud: 'some-other-app' }))).toBeNull();
    expect(c.reasons()).toEqual(['wrong audience']);
  });

  it('refuses a token from another issuer', async () => {
    const c = capture();
    const auth = new ReviewerAuth(config(), { log: c.log });
    expect(await auth.authenticate(await sign({}, { iss: 'https://evil.example.test/' }))).toBeNull();
    expect(c.reasons()).toEqual(['wrong issuer']);
  });

  it('refuses a token whose payload was changed after signing', async () => {
    const c = capture();
    const auth = new ReviewerAuth(config(), { log: c.log });
    const good = await sign({ groups: ['ops'] });
    expect(await auth.authenticate(good)).not.toBeNull();
    const [h, p, s] = good.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as JWTPayload;
    const tampered = [h, b64({ ...claims, groups: ['dba'] }), s].join('.');
    expect(await auth.authenticate(tampered)).toBeNull();
    expect(c.reasons()).toEqual(['bad signature']);
  });

  it('refuses a token signed by a different key under the served kid', async () => {
    const c = capture();
    const auth = new ReviewerAuth(config(), { log: c.log });
    expect(await auth.authenticate(await sign({}, { key: otherPrivateKey }))).toBeNull();
    expect(c.reasons()).toEqual(['bad signature']);
  });

  it('refuses a token with an unknown kid', async () => {
    const c = capture();
    const auth = new ReviewerAuth(config(), { log: c.log });
    expect(await auth.authenticate(await sign({}, { key: otherPrivateKey, kid: 'k-unknown' }))).toBeNull();
    expect(c.reasons()).toEqual(['no matching key in the key set']);
  });

  it('refuses alg none', async () => {
    const c = capture();
    const auth = new ReviewerAuth(config(), { log: c.log });
    const claims = { email: 'carol@example.com', iss: ISSUER, aud: AUDIENCE, exp: now() + 600 };
    for (const token of [`${b64({ alg: 'none' })}.${b64(claims)}.`, `${b64({ alg: 'none', kid: KID })}.${b64(claims)}.`]) {
      expect(await auth.authenticate(token)).toBeNull();
    }
    expect(c.reasons()).toEqual(['algorithm not allowed', 'algorithm not allowed']);
  });

  it('refuses HS256 signed with the public key as the secret (key confusion)', async () => {
    const c = capture();
    const auth = new ReviewerAuth(config(), { log: c.log });
    const enc = new TextEncoder();
    for (const secret of [enc.encode(publicPem), enc.encode(JSON.stringify(publicJwk))]) {
      expect(await auth.authenticate(await sign({}, { alg: 'HS256', key: secret }))).toBeNull();
    }
    expect(c.reasons()).toEqual(['algorithm not allowed', 'algorithm not allowed']);
  });

  it('refuses JWT-shaped garbage without throwing', async () => {
    const auth = new ReviewerAuth(config());
    for (const t of ['a.b.c', 'x.y.', `${b64({ alg: 'RS256', kid: KID })}.bm90IGpzb24.c2ln`, '..']) {
      await expect(auth.authenticate(t)).resolves.toBeNull();
    }
  });

  it('does not lend a static reviewer’s groups to an OIDC reviewer of the same name, but keeps their actsAs', async () => {
    const auth = new ReviewerAuth(config());
    const r = await auth.authenticate(await sign({ email: 'alice', groups: [] }));
    expect(r).toEqual({ name: 'alice', groups: [], actsAs: ['agent', 'etl'], via: 'oidc', issuer: ISSUER });
  });

  it('refuses a valid OIDC token when OIDC is not configured', async () => {
    const c = capture();
    const auth = new ReviewerAuth(config({ oidc: undefined }), { log: c.log });
    expect(auth.oidcEnabled).toBe(false);
    expect(await auth.authenticate(await sign({}))).toBeNull();
    expect(c.reasons()).toEqual(['OIDC is not configured']);
    expect(new ReviewerAuth(config()).oidcEnabled).toBe(true);
  });

  it('returns null and warns when the key set cannot be fetched', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const c = capture();
    const auth = new ReviewerAuth(
      config({ oidc: { issuer: ISSUER, audience: AUDIENCE, jwksUrl: `http://127.0.0.1:${port}/jwks`, nameClaim: 'email', groupsClaim: 'groups' } }),
      { log: c.log },
    );
    expect(await auth.authenticate(await sign({}))).toBeNull();
    expect(c.lines).toHaveLength(1);
    expect(JSON.parse(c.lines[0]!)).toMatchObject({ level: 40, reason: expect.stringMatching(/^key set fetch failed/) });
  });

  it('never writes a token, or any part of one, to the log', async () => {
    const c = capture();
    const auth = new ReviewerAuth(config(), { log: c.log });
    const tokens = [
      await sign({}, { exp: now() - 3600 }),
      await sign({}, { aud: 'x' }),
      await sign({}, { key: otherPrivateKey }),
      await sign({ email: '' }),
      newReviewerToken().token,
    ];
    for (const t of tokens) expect(await auth.authenticate(t)).toBeNull();
    expect(c.lines).toHaveLength(tokens.length);
    const logged = c.lines.join('\n');
    for (const t of tokens) for (const part of t.split('.')) expect(logged).not.toContain(part);
    expect(logged).not.toContain('carol@example.com');
  });
});

describe('mayDecide', () => {
  it('refuses a reviewer whose OIDC subject is the one an OIDC agent logged in with', () => {
    const session = { user: 'ci-agent', identity: { agent: 'ci-agent', issuer: 'https://idp', subject: 'u-123' } };
    const d = mayDecide({ ...reviewer({ actsAs: [] }), issuer: 'https://idp', subject: 'u-123' }, { session });
    expect(d).toEqual({ ok: false, why: 'you cannot decide a request made by an agent using your own identity (ci-agent)' });
    expect(mayDecide({ ...reviewer({ actsAs: [] }), issuer: 'https://idp', subject: 'u-999' }, { session }).ok).toBe(true);
    expect(mayDecide({ ...reviewer({ actsAs: [] }), issuer: 'https://other-idp', subject: 'u-123' }, { session }).ok).toBe(true);
  });

  const reviewer = (over: Partial<Reviewer> = {}): Reviewer => ({
    name: 'alice',
    groups: ['dba'],
    actsAs: ['agent'],
    via: 'token',
    ...over,
  });

  it('refuses a request made as a database user the reviewer acts as', () => {
    const d = mayDecide(reviewer(), { session: { user: 'agent' } });
    expect(d.ok).toBe(false);
    expect(!d.ok && d.why).toMatch(/act as.*agent/);
  });

  it('refuses a request made as the reviewer’s own name', () => {
    const d = mayDecide(reviewer({ actsAs: [] }), { session: { user: 'alice' } });
    expect(d.ok).toBe(false);
    expect(!d.ok && d.why).toMatch(/act as/);
  });

  it('refuses self-approval regardless of letter case', () => {
    expect(mayDecide(reviewer(), { session: { user: 'AGENT' } }).ok).toBe(false);
    expect(mayDecide(reviewer({ actsAs: [] }), { session: { user: 'Alice' } }).ok).toBe(false);
  });

  it('allows a reviewer in one of the request’s reviewer groups', () => {
    expect(mayDecide(reviewer({ groups: ['ops', 'dba'] }), { session: { user: 'etl' }, reviewerGroups: ['dba', 'security'] })).toEqual({ ok: true });
  });

  it('refuses a reviewer outside the request’s reviewer groups and names them', () => {
    const d = mayDecide(reviewer({ groups: ['ops'] }), { session: { user: 'etl' }, reviewerGroups: ['dba', 'security'] });
    expect(d.ok).toBe(false);
    expect(!d.ok && d.why).toContain('dba, security');
  });

  it('matches groups exactly (group membership grants a right)', () => {
    expect(mayDecide(reviewer({ groups: ['DBA'] }), { session: { user: 'etl' }, reviewerGroups: ['dba'] }).ok).toBe(false);
  });

  it('allows any reviewer when the request names no groups', () => {
    expect(mayDecide(reviewer({ groups: [] }), { session: { user: 'etl' } })).toEqual({ ok: true });
    expect(mayDecide(reviewer({ groups: [] }), { session: { user: 'etl' }, reviewerGroups: [] })).toEqual({ ok: true });
  });

  it('checks self-approval before groups', () => {
    const d = mayDecide(reviewer(), { session: { user: 'agent' }, reviewerGroups: ['dba'] });
    expect(d.ok).toBe(false);
    expect(!d.ok && d.why).toMatch(/act as/);
  });
});
