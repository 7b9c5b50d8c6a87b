import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type { Frame } from '../protocol/framer.js';
import { ProtocolViolation } from '../protocol/protocol-violation.js';
import {
  decodeAuthenticationRequest,
  encodePasswordMessage,
  encodeSASLInitialResponse,
  encodeSASLResponse,
  type AuthenticationRequest,
} from './auth-messages.js';
import { SCRAM_MECHANISM } from './scram-verifier.js';

/**
 * pgwarden as the client of PostgreSQL's authentication: after sending the StartupMessage for an
 * agent's mapped role, the session feeds each Authentication ('R') message here and writes what
 * comes back, until AuthenticationOk. The role's password stays inside pgwarden.
 * Protocol: "Message Flow" → "Start-up" and "SASL Authentication" in the PostgreSQL docs.
 *
 * Methods: trust (AuthenticationOk straight away), password (cleartext), md5, and SCRAM-SHA-256
 * without channel binding. SCRAM is node-postgres's own client (pg/lib/crypto/sasl.js), so it
 * behaves like the driver the test suite already trusts; that implementation derives keys with
 * Web Crypto, which is asynchronous, so onAuthentication always returns a Promise.
 *
 * Mutual authentication: once a SCRAM exchange has started, AuthenticationOk is accepted only
 * after a SASLFinal whose server signature checked out (finalizeSession), so a server that does
 * not know the role's verifier cannot skip the end of the exchange. `allowedMethods` can also
 * refuse weaker methods outright (libpq's require_auth), e.g. so that the password is never sent
 * in cleartext to whatever answers at the upstream address.
 *
 * Only 'R' messages come here. An ErrorResponse during authentication (28P01 for a wrong
 * password, 28000 for no pg_hba.conf entry, ...) ends the attempt and is the session's to report,
 * as are a NegotiateProtocolVersion before the first request and the ParameterStatus,
 * BackendKeyData and ReadyForQuery that follow AuthenticationOk.
 */

/** An upstream method, named as in pg_hba.conf and libpq's require_auth ('none': trust). */
export type UpstreamAuthMethod = 'none' | 'password' | 'md5' | 'scram-sha-256';

export interface UpstreamLoginOptions {
  /** The role named in the StartupMessage (md5 hashes it in). */
  user: string;
  /** The role's password; null/undefined/empty for none (trust or certificate upstream). */
  password?: string | null;
  /** Methods the upstream may ask for; default all. */
  allowedMethods?: readonly UpstreamAuthMethod[];
  /** Refuse a SCRAM iteration count above this (node-postgres's scramMaxIterations; 0: no limit). Default 100000. */
  scramMaxIterations?: number;
}

/** An empty step ({}) means: nothing to send, wait for the next message (after SASLFinal). */
export interface UpstreamLoginStep {
  /** Messages to write to the server, in order. */
  send?: Buffer[];
  /** AuthenticationOk seen: the server continues with ParameterStatus … ReadyForQuery. */
  done?: true;
  /** Authentication cannot proceed: close the upstream connection. Holds no secret. */
  error?: string;
}

/** The part of pg/lib/crypto/sasl.js used here (CommonJS, no type declarations). */
interface PgSaslSession {
  mechanism: string;
  response: string;
  message: string;
}
interface PgSasl {
  startSession(mechanisms: string[], stream?: unknown, scramMaxIterations?: number): PgSaslSession;
  continueSession(session: PgSaslSession, password: string, serverData: string, stream?: unknown): Promise<void>;
  finalizeSession(session: PgSaslSession, serverData: string): void;
  DEFAULT_MAX_SCRAM_ITERATIONS: number;
}

const pgSasl = createRequire(import.meta.url)('pg/lib/crypto/sasl.js') as PgSasl;

/** md5 authentication: "md5" + md5hex(md5hex(password + user) + salt) ("Message Formats", AuthenticationMD5Password). */
export function md5PasswordResponse(user: string, password: string, salt: Buffer): string {
  const inner = createHash('md5').update(password + user, 'utf8').digest('hex');
  return 'md5' + createHash('md5').update(Buffer.concat([Buffer.from(inner, 'utf8'), salt])).digest('hex');
}

const METHOD_OF: Partial<Record<AuthenticationRequest['type'], UpstreamAuthMethod>> = {
  Ok: 'none',
  CleartextPassword: 'password',
  MD5Password: 'md5',
  SASL: 'scram-sha-256',
};

type State = 'start' | 'password-sent' | 'sasl-first-sent' | 'sasl-final-sent' | 'sasl-verified' | 'done' | 'failed';

export class UpstreamLogin {
  private state: State = 'start';
  private sasl: PgSaslSession | null = null;
  private readonly password: string | null;

  constructor(private readonly options: UpstreamLoginOptions) {
    this.password = options.password ? options.password : null;
  }

  /** True once AuthenticationOk was accepted. */
  get done(): boolean {
    return this.state === 'done';
  }

  /**
   * One Authentication ('R') message from the server, whole (tag and length included). Resolves
   * with what to do next; never rejects. After an error every further call errors too.
   */
  async onAuthentication(message: Buffer): Promise<UpstreamLoginStep> {
    if (this.state === 'failed') return { error: 'upstream authentication already failed' };
    if (this.state === 'done') return this.fail('upstream sent an authentication request after AuthenticationOk');
    let req: AuthenticationRequest;
    try {
      req = decodeAuthenticationRequest(asFrame(message));
    } catch (err) {
      const why = err instanceof ProtocolViolation ? err.message : 'undecodable message';
      return this.fail(`upstream sent a malformed authentication request: ${why}`);
    }
    // AuthenticationOk after a password or SCRAM exchange ends that method; only at the start is it "trust".
    const method = req.type === 'Ok' && this.state !== 'start' ? undefined : METHOD_OF[req.type];
    if (method && this.options.allowedMethods && !this.options.allowedMethods.includes(method)) {
      return this.fail(`upstream asked for authentication method "${method}", which pgwarden is configured not to use`);
    }
    switch (req.type) {
      case 'Ok':
        // In the middle of SCRAM, only after the server proved it knows the verifier.
        if (this.state === 'sasl-first-sent' || this.state === 'sasl-final-sent') {
          return this.fail('upstream sent AuthenticationOk before completing the SCRAM exchange');
        }
        this.state = 'done';
        return { done: true };
      case 'CleartextPassword':
      case 'MD5Password': {
        if (this.state !== 'start') return this.fail(`upstream asked for a password in the middle of authentication`);
        if (this.password === null) return this.noPassword();
        this.state = 'password-sent';
        const response =
          req.type === 'MD5Password' ? md5PasswordResponse(this.options.user, this.password, req.salt) : this.password;
        if (response.includes('\0')) return this.fail('the configured upstream password contains a NUL character');
        return { send: [encodePasswordMessage(response)] };
      }
      case 'SASL': {
        if (this.state !== 'start') return this.fail('upstream started SASL authentication twice');
        if (this.password === null) return this.noPassword();
        // Only SCRAM-SHA-256: no stream is passed, so pg never picks -PLUS (channel binding).
        if (!req.mechanisms.includes(SCRAM_MECHANISM)) {
          const offered = req.mechanisms.filter((m) => /^[\x20-\x7e]{1,64}$/.test(m)).join(', ') || 'none';
          return this.fail(`upstream offered no SASL mechanism pgwarden can use (offered: ${offered})`);
        }
        try {
          this.sasl = pgSasl.startSession([SCRAM_MECHANISM], undefined, this.options.scramMaxIterations);
        } catch (err) {
          return this.fail(`upstream SCRAM authentication failed: ${(err as Error).message}`);
        }
        this.state = 'sasl-first-sent';
        return { send: [encodeSASLInitialResponse(this.sasl.mechanism, Buffer.from(this.sasl.response, 'utf8'))] };
      }
      case 'SASLContinue': {
        if (this.state !== 'sasl-first-sent' || !this.sasl) return this.fail('upstream sent SASLContinue out of order');
        try {
          await pgSasl.continueSession(this.sasl, this.password!, req.data.toString('utf8'), undefined);
        } catch (err) {
          // pg's messages name the failed check, never the password or derived keys.
          return this.fail(`upstream SCRAM authentication failed: ${(err as Error).message}`);
        }
        this.state = 'sasl-final-sent';
        return { send: [encodeSASLResponse(Buffer.from(this.sasl.response, 'utf8'))] };
      }
      case 'SASLFinal': {
        if (this.state !== 'sasl-final-sent' || !this.sasl) return this.fail('upstream sent SASLFinal out of order');
        try {
          pgSasl.finalizeSession(this.sasl, req.data.toString('utf8'));
        } catch (err) {
          return this.fail(`upstream SCRAM authentication failed: ${(err as Error).message}`);
        }
        this.sasl = null;
        this.state = 'sasl-verified';
        return {};
      }
      case 'Other':
        return this.fail(`upstream asked for an authentication method pgwarden cannot use: ${req.name}`);
    }
  }

  private noPassword(): UpstreamLoginStep {
    return this.fail(`upstream requires a password for role "${this.options.user}", but none is configured`);
  }

  private fail(error: string): UpstreamLoginStep {
    this.state = 'failed';
    this.sasl = null;
    return { error };
  }
}

/** A whole typed message as a Frame, after checking that its length field covers it exactly. */
function asFrame(message: Buffer): Frame {
  if (message.length < 5) throw new ProtocolViolation('message too short');
  const length = message.readInt32BE(1);
  if (length !== message.length - 1) throw new ProtocolViolation(`length field ${length} does not match the message size`);
  return { tag: message[0]!, bytes: message, bodyOffset: 5 };
}
