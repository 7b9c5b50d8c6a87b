import net from 'node:net';
import { serialize } from 'pg-protocol';
import type { DataRowMessage, DatabaseError } from 'pg-protocol/dist/messages.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeAuthenticationRequest } from '../../src/identity/auth-messages.js';
import { formatScramVerifier, makeScramVerifier } from '../../src/identity/scram-verifier.js';
import { UpstreamLogin, type UpstreamLoginOptions } from '../../src/identity/upstream-login.js';
import { decodeBackendMessage } from '../../src/protocol/backend.js';
import { BackendTag, StartupCode } from '../../src/protocol/codes.js';
import { Framer, type Frame } from '../../src/protocol/framer.js';
import { encodeStartupMessage } from '../../src/protocol/frontend-encode.js';
import { startScratchCluster, type ScratchCluster } from '../helpers/scratch-cluster.js';

/**
 * UpstreamLogin against real PostgreSQL 15 over a raw socket, as the session will drive it:
 * StartupMessage, then every Authentication request through UpstreamLogin, until
 * ReadyForQuery or an ErrorResponse. A scratch cluster requires scram-sha-256, md5 or password
 * per role over TCP; the machine's server (127.0.0.1:5432, trust) covers trust.
 */
const SCRAM = { name: 'pgw_up_scram', password: 'upstream scram secret' };
const MD5 = { name: 'pgw_up_md5', password: 'upstream md5 secret' };
const CLEARTEXT = { name: 'pgw_up_clear', password: 'upstream cleartext secret' };
/** A role whose stored verifier pgwarden made: PostgreSQL must accept the secret it came from. */
const MADE_HERE = { name: 'pgw_up_made', secret: 'made by pgwarden' };
const MADE_HERE_NON_ASCII = { name: 'pgw_up_made_utf8', secret: 'pässwörd ｆüｒ ａｇｅｎｔｓ\u00AD' };

let cluster: ScratchCluster;

beforeAll(async () => {
  cluster = await startScratchCluster({
    roles: [
      { name: SCRAM.name, password: SCRAM.password },
      { name: MD5.name, password: MD5.password, passwordEncryption: 'md5', auth: 'md5' },
      { name: CLEARTEXT.name, password: CLEARTEXT.password, auth: 'password' },
      // A password that already is a SCRAM verifier is stored as is (CREATE ROLE … PASSWORD).
      { name: MADE_HERE.name, password: formatScramVerifier(makeScramVerifier(MADE_HERE.secret)) },
      { name: MADE_HERE_NON_ASCII.name, password: formatScramVerifier(makeScramVerifier(MADE_HERE_NON_ASCII.secret, 4096)) },
    ],
  });
});

afterAll(async () => {
  await cluster?.stop();
});

interface LoginOutcome {
  /** Authentication request types the server sent, in order. */
  requests: string[];
  authOk: boolean;
  ready: boolean;
  /** current_user, queried once ReadyForQuery arrived. */
  currentUser?: string;
  /** UpstreamLogin's error, after which the connection was closed. */
  loginError?: string;
  serverError?: { code?: string; severity?: string; message: string };
}

/** One login over a raw socket, driven by UpstreamLogin like the session will. */
function login(port: number, options: UpstreamLoginOptions): Promise<LoginOutcome> {
  const out: LoginOutcome = { requests: [], authOk: false, ready: false };
  const upstream = new UpstreamLogin(options);
  const framer = new Framer(1 << 20, 'typed');
  const socket = net.connect({ host: '127.0.0.1', port });
  return new Promise<LoginOutcome>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`login timed out: ${JSON.stringify(out)}`));
    }, 10_000);
    const finish = (): void => {
      clearTimeout(timer);
      socket.end();
      resolve(out);
    };
    // Frames are handled one at a time: onAuthentication is asynchronous (SCRAM key derivation).
    let chain = Promise.resolve();
    const handle = async (frame: Frame): Promise<void> => {
      switch (frame.tag) {
        case BackendTag.Authentication: {
          const req = decodeAuthenticationRequest(frame);
          out.requests.push(req.type);
          const step = await upstream.onAuthentication(Buffer.from(frame.bytes));
          if (step.error !== undefined) {
            out.loginError = step.error;
            return finish();
          }
          for (const m of step.send ?? []) socket.write(m);
          if (step.done) out.authOk = true;
          return;
        }
        case BackendTag.ErrorResponse: {
          const e = decodeBackendMessage(frame) as DatabaseError;
          out.serverError = { code: e.code, severity: e.severity, message: e.message };
          return finish();
        }
        case BackendTag.ReadyForQuery:
          if (!out.ready) {
            out.ready = true;
            socket.write(serialize.query('SELECT current_user'));
            return;
          }
          socket.write(serialize.end());
          return finish();
        case BackendTag.DataRow:
          out.currentUser = (decodeBackendMessage(frame) as DataRowMessage).fields[0] ?? undefined;
          return;
        default:
          return; // ParameterStatus, BackendKeyData, RowDescription, CommandComplete
      }
    };
    socket.on('connect', () => {
      socket.write(
        encodeStartupMessage(StartupCode.ProtocolV3, new Map([['user', options.user], ['database', 'postgres'], ['application_name', 'pgwarden-upstream-login-test']])),
      );
    });
    socket.on('data', (chunk: Buffer) => {
      framer.push(chunk);
      for (let f = framer.next(); f; f = framer.next()) {
        const frame = f;
        chain = chain.then(() => handle(frame)).catch((err: unknown) => {
          clearTimeout(timer);
          socket.destroy();
          reject(err as Error);
        });
      }
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

async function methodsLogged(user: string): Promise<string[]> {
  const log = await cluster.log();
  const re = new RegExp(`connection authenticated: identity="${user}" method=([a-z0-9-]+)`, 'g');
  return [...log.matchAll(re)].map((m) => m[1] ?? '');
}

describe('UpstreamLogin against PostgreSQL', () => {
  it('scram-sha-256: logs in with the right password, the server proving itself', async () => {
    const r = await login(cluster.port, { user: SCRAM.name, password: SCRAM.password });
    expect(r).toMatchObject({ requests: ['SASL', 'SASLContinue', 'SASLFinal', 'Ok'], authOk: true, ready: true, currentUser: SCRAM.name });
    expect(r.loginError).toBeUndefined();
    expect(await methodsLogged(SCRAM.name)).toContain('scram-sha-256');
  });

  it('scram-sha-256: a wrong password gets FATAL 28P01 from the server', async () => {
    const r = await login(cluster.port, { user: SCRAM.name, password: 'not the password' });
    expect(r.requests).toEqual(['SASL', 'SASLContinue']);
    expect(r.authOk).toBe(false);
    expect(r.serverError).toEqual({ code: '28P01', severity: 'FATAL', message: `password authentication failed for user "${SCRAM.name}"` });
  });

  it('md5: logs in with the right password; a wrong one gets 28P01', async () => {
    const ok = await login(cluster.port, { user: MD5.name, password: MD5.password });
    expect(ok).toMatchObject({ requests: ['MD5Password', 'Ok'], authOk: true, ready: true, currentUser: MD5.name });
    expect(await methodsLogged(MD5.name)).toContain('md5');
    const bad = await login(cluster.port, { user: MD5.name, password: 'wrong' });
    expect(bad.serverError).toMatchObject({ code: '28P01', message: `password authentication failed for user "${MD5.name}"` });
  });

  it('password (cleartext): logs in with the right password; a wrong one gets 28P01', async () => {
    const ok = await login(cluster.port, { user: CLEARTEXT.name, password: CLEARTEXT.password });
    expect(ok).toMatchObject({ requests: ['CleartextPassword', 'Ok'], authOk: true, ready: true, currentUser: CLEARTEXT.name });
    expect(await methodsLogged(CLEARTEXT.name)).toContain('password');
    const bad = await login(cluster.port, { user: CLEARTEXT.name, password: 'wrong' });
    expect(bad.serverError).toMatchObject({ code: '28P01' });
  });

  it('accepts the secrets of verifiers pgwarden made (ASCII and SASLprep-normalized non-ASCII)', async () => {
    for (const role of [MADE_HERE, MADE_HERE_NON_ASCII]) {
      const r = await login(cluster.port, { user: role.name, password: role.secret });
      expect(r, role.name).toMatchObject({ authOk: true, ready: true, currentUser: role.name });
    }
    const bad = await login(cluster.port, { user: MADE_HERE.name, password: 'made by pgwarden ' });
    expect(bad.serverError).toMatchObject({ code: '28P01' });
  });

  it('a role with no configured password: UpstreamLogin stops before sending anything', async () => {
    const r = await login(cluster.port, { user: SCRAM.name });
    expect(r.requests).toEqual(['SASL']);
    expect(r.loginError).toBe(`upstream requires a password for role "${SCRAM.name}", but none is configured`);
  });

  it('allowedMethods: refuses to send a password in cleartext', async () => {
    const r = await login(cluster.port, { user: CLEARTEXT.name, password: CLEARTEXT.password, allowedMethods: ['scram-sha-256'] });
    expect(r.requests).toEqual(['CleartextPassword']);
    expect(r.loginError).toMatch(/"password", which pgwarden is configured not to use/);
  });

  it('trust (the machine server on 127.0.0.1:5432): AuthenticationOk at once, no password needed', async () => {
    const r = await login(5432, { user: 'postgres' });
    expect(r).toMatchObject({ requests: ['Ok'], authOk: true, ready: true, currentUser: 'postgres' });
  });
});
