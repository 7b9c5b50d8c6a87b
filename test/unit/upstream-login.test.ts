import { createRequire } from 'node:module';
import { serialize } from 'pg-protocol';
import { describe, expect, it } from 'vitest';
import {
  decodeAuthenticationRequest,
  decodePasswordMessage,
  decodeSASLInitialResponse,
  decodeSASLResponse,
  encodeAuthenticationCleartextPassword,
  encodeAuthenticationOk,
  encodeAuthenticationSASL,
  encodeAuthenticationSASLContinue,
  encodeAuthenticationSASLFinal,
  encodePasswordMessage,
  encodeSASLInitialResponse,
  encodeSASLResponse,
} from '../../src/identity/auth-messages.js';
import { ScramServerExchange } from '../../src/identity/scram-server.js';
import { makeScramVerifier } from '../../src/identity/scram-verifier.js';
import { UpstreamLogin, md5PasswordResponse, type UpstreamLoginStep } from '../../src/identity/upstream-login.js';
import type { Frame } from '../../src/protocol/framer.js';
import { ProtocolViolation } from '../../src/protocol/protocol-violation.js';

/**
 * UpstreamLogin (pgwarden logging in to PostgreSQL) against in-memory servers: pgwarden's own
 * SCRAM server (itself checked against PostgreSQL's verifiers and node-postgres), hand-built
 * Authentication requests for the other methods, and hostile or out-of-order servers.
 * test/integration/upstream-login.test.ts runs it against real PostgreSQL servers.
 */

const frame = (bytes: Buffer): Frame => ({ tag: bytes[0]!, bytes, bodyOffset: 5 });

/** An 'R' message with this code and body. */
function auth(code: number, body: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(9 + body.length);
  b[0] = 0x52;
  b.writeInt32BE(8 + body.length, 1);
  b.writeInt32BE(code, 5);
  body.copy(b, 9);
  return b;
}

const md5Request = (salt: Buffer): Buffer => auth(5, salt);

/** The password a PasswordMessage carries. */
function sentPassword(step: UpstreamLoginStep): string {
  expect(step.error).toBeUndefined();
  expect(step.send).toHaveLength(1);
  return decodePasswordMessage(frame(step.send![0]!));
}

function errorOf(step: UpstreamLoginStep): string {
  expect(step.send).toBeUndefined();
  expect(step.done).toBeUndefined();
  expect(typeof step.error).toBe('string');
  return step.error!;
}

/** Runs a full SCRAM login against pgwarden's SCRAM server holding `serverSecret`'s verifier. */
async function scramLogin(password: string, serverSecret: string): Promise<{ login: UpstreamLogin; steps: UpstreamLoginStep[]; serverError?: string }> {
  const login = new UpstreamLogin({ user: 'app_role', password });
  const server = new ScramServerExchange(makeScramVerifier(serverSecret), { user: 'app_role' });
  const steps: UpstreamLoginStep[] = [];
  const s1 = await login.onAuthentication(encodeAuthenticationSASL(server.mechanisms()));
  steps.push(s1);
  const initial = decodeSASLInitialResponse(frame(s1.send![0]!));
  expect(initial.mechanism).toBe('SCRAM-SHA-256');
  expect(initial.data!.toString()).toMatch(/^n,,n=\*,r=[A-Za-z0-9+/=]{24}$/);
  const first = server.onInitialResponse(initial.mechanism, initial.data);
  if (!('reply' in first)) throw new Error(first.error);
  const s2 = await login.onAuthentication(encodeAuthenticationSASLContinue(first.reply));
  steps.push(s2);
  const last = server.onResponse(decodeSASLResponse(frame(s2.send![0]!)));
  if ('error' in last) return { login, steps, serverError: last.error };
  if (!('final' in last)) throw new Error('unexpected reply');
  steps.push(await login.onAuthentication(encodeAuthenticationSASLFinal(last.final)));
  steps.push(await login.onAuthentication(encodeAuthenticationOk()));
  return { login, steps };
}

describe('UpstreamLogin', () => {
  it('trust: AuthenticationOk at once, with or without a password', async () => {
    for (const password of [undefined, null, '', 'unused']) {
      const login = new UpstreamLogin({ user: 'r', password });
      expect(await login.onAuthentication(encodeAuthenticationOk())).toEqual({ done: true });
      expect(login.done).toBe(true);
    }
  });

  it('password: sends the cleartext password', async () => {
    const login = new UpstreamLogin({ user: 'r', password: 'pässword 1' });
    expect(sentPassword(await login.onAuthentication(encodeAuthenticationCleartextPassword()))).toBe('pässword 1');
    expect(await login.onAuthentication(encodeAuthenticationOk())).toEqual({ done: true });
  });

  it('md5: sends md5(md5(password + user) + salt), as node-postgres computes it', async () => {
    const utils = createRequire(import.meta.url)('pg/lib/crypto/utils.js') as {
      postgresMd5PasswordHash(user: string, password: string, salt: Buffer): Promise<string> | string;
    };
    const salt = Buffer.from([0x01, 0xfe, 0x00, 0x7f]);
    const login = new UpstreamLogin({ user: 'md5_role', password: 'md5 secret' });
    const sent = sentPassword(await login.onAuthentication(md5Request(salt)));
    expect(sent).toBe(await utils.postgresMd5PasswordHash('md5_role', 'md5 secret', salt));
    expect(sent).toBe(md5PasswordResponse('md5_role', 'md5 secret', salt));
    expect(sent).toMatch(/^md5[0-9a-f]{32}$/);
    expect(await login.onAuthentication(encodeAuthenticationOk())).toEqual({ done: true });
  });

  it('SCRAM-SHA-256: a full exchange with pgwarden\'s SCRAM server, the server signature checked', async () => {
    const { login, steps, serverError } = await scramLogin('role secret', 'role secret');
    expect(serverError).toBeUndefined();
    expect(steps[2]).toEqual({});
    expect(steps[3]).toEqual({ done: true });
    expect(login.done).toBe(true);
  });

  it('SCRAM-SHA-256 with a wrong password: the server refuses the proof', async () => {
    const { login, serverError } = await scramLogin('wrong', 'role secret');
    expect(serverError).toBe('password authentication failed for user "app_role"');
    expect(login.done).toBe(false);
  });

  it('picks SCRAM-SHA-256 when -PLUS is offered too (no channel binding)', async () => {
    const login = new UpstreamLogin({ user: 'r', password: 'p' });
    const step = await login.onAuthentication(encodeAuthenticationSASL(['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256']));
    const initial = decodeSASLInitialResponse(frame(step.send![0]!));
    expect(initial.mechanism).toBe('SCRAM-SHA-256');
    expect(initial.data!.toString().startsWith('n,,')).toBe(true);
  });

  it('refuses a server that does not prove it knows the verifier', async () => {
    const login = new UpstreamLogin({ user: 'r', password: 'hunter2-secret' });
    const s1 = await login.onAuthentication(encodeAuthenticationSASL(['SCRAM-SHA-256']));
    const nonce = decodeSASLInitialResponse(frame(s1.send![0]!)).data!.toString().split('r=')[1]!;
    await login.onAuthentication(encodeAuthenticationSASLContinue(Buffer.from(`r=${nonce}server,s=c2FsdHNhbHQ=,i=4096`)));
    const err = errorOf(await login.onAuthentication(encodeAuthenticationSASLFinal(Buffer.from(`v=${Buffer.alloc(32).toString('base64')}`))));
    expect(err).toMatch(/server signature does not match/);
    expect(err).not.toContain('hunter2');
    expect(login.done).toBe(false);
  });

  it('refuses AuthenticationOk in the middle of a SCRAM exchange (before SASLFinal)', async () => {
    for (const stop of [1, 2]) {
      const login = new UpstreamLogin({ user: 'r', password: 'p' });
      const s1 = await login.onAuthentication(encodeAuthenticationSASL(['SCRAM-SHA-256']));
      if (stop === 2) {
        const nonce = decodeSASLInitialResponse(frame(s1.send![0]!)).data!.toString().split('r=')[1]!;
        await login.onAuthentication(encodeAuthenticationSASLContinue(Buffer.from(`r=${nonce}server,s=c2FsdHNhbHQ=,i=4096`)));
      }
      expect(errorOf(await login.onAuthentication(encodeAuthenticationOk()))).toMatch(/before completing the SCRAM exchange/);
      expect(login.done).toBe(false);
    }
  });

  it.each([
    ['a server nonce not extending the client one', () => 'r=someoneelse,s=c2FsdA==,i=4096', /nonce/],
    ['no extra server nonce', (n: string) => `r=${n},s=c2FsdA==,i=4096`, /too short/],
    ['too many iterations', (n: string) => `r=${n}x,s=c2FsdA==,i=100001`, /iteration count 100001 exceeds/],
    ['a salt that is not base64', (n: string) => `r=${n}x,s=***,i=4096`, /salt must be base64/],
    ['garbage', () => 'garbage', /Invalid attribute pair/],
  ])('refuses a SASLContinue with %s', async (_name, data, message) => {
    const login = new UpstreamLogin({ user: 'r', password: 'p' });
    const s1 = await login.onAuthentication(encodeAuthenticationSASL(['SCRAM-SHA-256']));
    const nonce = decodeSASLInitialResponse(frame(s1.send![0]!)).data!.toString().split('r=')[1]!;
    expect(errorOf(await login.onAuthentication(encodeAuthenticationSASLContinue(Buffer.from(data(nonce)))))).toMatch(message);
  });

  it('scramMaxIterations raises or lifts the limit', async () => {
    const login = new UpstreamLogin({ user: 'r', password: 'p', scramMaxIterations: 0 });
    const s1 = await login.onAuthentication(encodeAuthenticationSASL(['SCRAM-SHA-256']));
    const nonce = decodeSASLInitialResponse(frame(s1.send![0]!)).data!.toString().split('r=')[1]!;
    const s2 = await login.onAuthentication(encodeAuthenticationSASLContinue(Buffer.from(`r=${nonce}x,s=c2FsdA==,i=100001`)));
    expect(s2.error).toBeUndefined();
    expect(decodeSASLResponse(frame(s2.send![0]!)).toString()).toMatch(/^c=biws,r=.*,p=[A-Za-z0-9+/=]{44}$/);
  }, 20_000);

  it.each([
    [2, 'KerberosV5'],
    [6, 'SCMCredential'],
    [7, 'GSS'],
    [9, 'SSPI'],
    [99, 'code 99'],
  ])('refuses method %i (%s) by name', async (code, name) => {
    const login = new UpstreamLogin({ user: 'r', password: 'p' });
    expect(errorOf(await login.onAuthentication(auth(code)))).toBe(`upstream asked for an authentication method pgwarden cannot use: ${name}`);
  });

  it.each([
    ['cleartext', encodeAuthenticationCleartextPassword()],
    ['md5', md5Request(Buffer.alloc(4))],
    ['SASL', encodeAuthenticationSASL(['SCRAM-SHA-256'])],
  ])('%s with no password configured → error naming the role', async (_name, request) => {
    for (const password of [undefined, null, '']) {
      const login = new UpstreamLogin({ user: 'app_role', password });
      expect(errorOf(await login.onAuthentication(request))).toBe('upstream requires a password for role "app_role", but none is configured');
    }
  });

  it('refuses SASL without SCRAM-SHA-256', async () => {
    const login = new UpstreamLogin({ user: 'r', password: 'p' });
    expect(errorOf(await login.onAuthentication(encodeAuthenticationSASL(['SCRAM-SHA-256-PLUS', 'OAUTHBEARER'])))).toBe(
      'upstream offered no SASL mechanism pgwarden can use (offered: SCRAM-SHA-256-PLUS, OAUTHBEARER)',
    );
  });

  it('allowedMethods refuses the others before sending anything', async () => {
    const scramOnly = { user: 'r', password: 'p', allowedMethods: ['scram-sha-256'] as const };
    expect(errorOf(await new UpstreamLogin(scramOnly).onAuthentication(encodeAuthenticationCleartextPassword()))).toMatch(/"password", which pgwarden is configured not to use/);
    expect(errorOf(await new UpstreamLogin(scramOnly).onAuthentication(md5Request(Buffer.alloc(4))))).toMatch(/"md5"/);
    expect(errorOf(await new UpstreamLogin(scramOnly).onAuthentication(encodeAuthenticationOk()))).toMatch(/"none"/);
    expect((await new UpstreamLogin(scramOnly).onAuthentication(encodeAuthenticationSASL(['SCRAM-SHA-256']))).send).toHaveLength(1);
    // AuthenticationOk after a completed SCRAM exchange is the end of it, not "trust".
    const { steps } = await (async () => {
      const login = new UpstreamLogin({ ...scramOnly, password: 's' });
      const server = new ScramServerExchange(makeScramVerifier('s'), { user: 'r' });
      const s1 = await login.onAuthentication(encodeAuthenticationSASL(['SCRAM-SHA-256']));
      const i = decodeSASLInitialResponse(frame(s1.send![0]!));
      const f = server.onInitialResponse(i.mechanism, i.data) as { reply: Buffer };
      const s2 = await login.onAuthentication(encodeAuthenticationSASLContinue(f.reply));
      const fin = server.onResponse(decodeSASLResponse(frame(s2.send![0]!))) as { final: Buffer };
      return { steps: [await login.onAuthentication(encodeAuthenticationSASLFinal(fin.final)), await login.onAuthentication(encodeAuthenticationOk())] };
    })();
    expect(steps).toEqual([{}, { done: true }]);
  });

  it('refuses messages out of order, and stays failed', async () => {
    const cont = encodeAuthenticationSASLContinue(Buffer.from('r=x,s=c2FsdA==,i=4096'));
    expect(errorOf(await new UpstreamLogin({ user: 'r', password: 'p' }).onAuthentication(cont))).toMatch(/SASLContinue out of order/);
    expect(errorOf(await new UpstreamLogin({ user: 'r', password: 'p' }).onAuthentication(encodeAuthenticationSASLFinal(Buffer.from('v=x'))))).toMatch(/SASLFinal out of order/);

    const twice = new UpstreamLogin({ user: 'r', password: 'p' });
    await twice.onAuthentication(encodeAuthenticationSASL(['SCRAM-SHA-256']));
    expect(errorOf(await twice.onAuthentication(encodeAuthenticationSASL(['SCRAM-SHA-256'])))).toMatch(/twice/);
    expect(errorOf(await twice.onAuthentication(encodeAuthenticationOk()))).toMatch(/already failed/);

    const pw = new UpstreamLogin({ user: 'r', password: 'p' });
    await pw.onAuthentication(encodeAuthenticationCleartextPassword());
    expect(errorOf(await pw.onAuthentication(md5Request(Buffer.alloc(4))))).toMatch(/in the middle/);

    const done = new UpstreamLogin({ user: 'r', password: 'p' });
    await done.onAuthentication(encodeAuthenticationOk());
    expect(errorOf(await done.onAuthentication(encodeAuthenticationCleartextPassword()))).toMatch(/after AuthenticationOk/);
  });

  it.each([
    ['empty', Buffer.alloc(0)],
    ['header only', Buffer.from([0x52, 0, 0, 0, 4])],
    ['length larger than the message', Buffer.from([0x52, 0, 0, 0, 12, 0, 0, 0, 0])],
    ['length smaller than the message', Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 0, 0])],
    ['not an R message', Buffer.from([0x45, 0, 0, 0, 8, 0, 0, 0, 0])],
    ['md5 salt cut short', auth(5, Buffer.from([1, 2]))],
    ['AuthenticationOk with trailing bytes', auth(0, Buffer.from([1]))],
    ['unterminated mechanism list', auth(10, Buffer.from('SCRAM-SHA-256'))],
    ['mechanism list without the final empty name', auth(10, Buffer.from('SCRAM-SHA-256\0'))],
  ])('reports a malformed request (%s) without throwing', async (_name, bytes) => {
    const login = new UpstreamLogin({ user: 'r', password: 'p' });
    expect(errorOf(await login.onAuthentication(bytes))).toMatch(/^upstream sent a malformed authentication request/);
  });

  it('never rejects on random input', async () => {
    for (let i = 0; i < 500; i++) {
      const body = Buffer.from(Array.from({ length: i % 40 }, (_, j) => (i * 31 + j * 17) & 0xff));
      const login = new UpstreamLogin({ user: 'r', password: 'p' });
      const step = await login.onAuthentication(auth(i % 14, body));
      expect(step.done === true || step.error !== undefined || step.send !== undefined).toBe(true);
    }
  });

  it('puts no password into error messages', async () => {
    const password = 'very-secret-password';
    const login = new UpstreamLogin({ user: 'r', password, allowedMethods: ['md5'] });
    const errors = [errorOf(await login.onAuthentication(encodeAuthenticationCleartextPassword()))];
    const l2 = new UpstreamLogin({ user: 'r', password });
    await l2.onAuthentication(encodeAuthenticationSASL(['SCRAM-SHA-256']));
    errors.push(errorOf(await l2.onAuthentication(encodeAuthenticationSASLContinue(Buffer.from('r=bad,s=c2FsdA==,i=4096')))));
    for (const e of errors) expect(e).not.toContain(password);
  });
});

describe('authentication messages (client side)', () => {
  it('encodes PasswordMessage, SASLInitialResponse and SASLResponse byte for byte as node-postgres does', () => {
    expect(encodePasswordMessage('pw').toString('hex')).toBe('7000000007707700');
    expect(encodePasswordMessage('pässword')).toEqual(serialize.password('pässword'));
    expect(encodeSASLInitialResponse('SCRAM-SHA-256', Buffer.from('n,,n=*,r=a'))).toEqual(
      serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', 'n,,n=*,r=a'),
    );
    expect(encodeSASLInitialResponse('SCRAM-SHA-256', Buffer.from('n,,n=*,r=a')).readInt32BE(1)).toBe(4 + 14 + 4 + 10);
    expect(encodeSASLResponse(Buffer.from('c=biws,r=a,p=b'))).toEqual(serialize.sendSCRAMClientFinalMessage('c=biws,r=a,p=b'));
  });

  it('decodes each Authentication request', () => {
    expect(decodeAuthenticationRequest(frame(encodeAuthenticationOk()))).toEqual({ type: 'Ok' });
    expect(decodeAuthenticationRequest(frame(encodeAuthenticationCleartextPassword()))).toEqual({ type: 'CleartextPassword' });
    expect(decodeAuthenticationRequest(frame(md5Request(Buffer.from([1, 2, 3, 4]))))).toEqual({ type: 'MD5Password', salt: Buffer.from([1, 2, 3, 4]) });
    expect(decodeAuthenticationRequest(frame(encodeAuthenticationSASL(['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256'])))).toEqual({
      type: 'SASL',
      mechanisms: ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256'],
    });
    expect(decodeAuthenticationRequest(frame(encodeAuthenticationSASLContinue(Buffer.from('abc'))))).toEqual({ type: 'SASLContinue', data: Buffer.from('abc') });
    expect(decodeAuthenticationRequest(frame(encodeAuthenticationSASLFinal(Buffer.from('v=x'))))).toEqual({ type: 'SASLFinal', data: Buffer.from('v=x') });
    expect(decodeAuthenticationRequest(frame(auth(7)))).toEqual({ type: 'Other', code: 7, name: 'GSS' });
    expect(() => decodeAuthenticationRequest(frame(auth(3, Buffer.from([0]))))).toThrow(ProtocolViolation);
  });
});
