import type { createRemoteJWKSet } from 'jose';
import type { Config } from '../config/schema.js';
import type { Logger } from '../logger.js';
import type { PgErrorFields } from '../protocol/backend.js';
import type { Frame } from '../protocol/framer.js';
import { pgError } from '../protocol/pg-error.js';
import type { AgentEntry } from '../policy/policy.js';
import type { AgentIdentity } from './agent-identity.js';
import {
  decodePasswordMessage,
  decodeSASLInitialResponse,
  decodeSASLResponse,
  encodeAuthenticationCleartextPassword,
  encodeAuthenticationSASL,
  encodeAuthenticationSASLContinue,
  encodeAuthenticationSASLFinal,
  MAX_AUTH_MESSAGE_BYTES,
} from './auth-messages.js';
import { groupsClaim, stringClaim, verifyOidcToken } from './oidc-token.js';
import { ScramServerExchange } from './scram-server.js';

/**
 * pgwarden authenticating one agent (identity.mode: agents), message by message ("Start-up" in
 * the protocol chapter: the server sends an Authentication request, the client answers with 'p'
 * messages):
 *
 * - an agent with a SCRAM verifier: AuthenticationSASL [SCRAM-SHA-256] → SASLInitialResponse →
 *   AuthenticationSASLContinue → SASLResponse → AuthenticationSASLFinal (the server's proof);
 * - an agent with an OIDC subject: AuthenticationCleartextPassword → PasswordMessage carrying the
 *   access token, verified against the provider's key set (only over TLS unless allowed);
 * - an unknown agent: a mock SCRAM exchange that fails exactly like a wrong secret.
 *
 * AuthenticationOk is not sent here: it is the upstream server's, relayed once pgwarden has
 * logged in as the agent's role. Every failure reads the same to the client; the log says why.
 */
export type LoginStep =
  | { send: Buffer }
  | { done: { identity: AgentIdentity; database: string }; send?: Buffer }
  | { error: PgErrorFields; reason: string };

export interface AgentLoginOptions {
  agent: AgentEntry | null;
  requestedName: string;
  requestedDatabase: string;
  clientTls: boolean;
  oidc: (NonNullable<Config['identity']['oidc']> & { jwks: ReturnType<typeof createRemoteJWKSet> }) | null;
  /** Seeds the salts of mock exchanges (stable across instances). */
  mockSecret: Buffer;
  log: Logger;
  /** Clock tolerance for token expiry, seconds. */
  clockToleranceSec?: number;
}

export class AgentLogin {
  private scram: ScramServerExchange | null = null;
  private stage: 'start' | 'scram-initial' | 'scram-response' | 'token' | 'done' = 'start';

  constructor(private readonly o: AgentLoginOptions) {}

  private fail(reason: string, error: PgErrorFields = pgError.agentAuthFailed(this.o.requestedName)): LoginStep {
    this.stage = 'done';
    return { error, reason };
  }

  /** A malformed SCRAM message is a protocol violation (08P01); a wrong secret the usual 28P01. */
  private failScram(r: { error: string; sqlstate: string }): LoginStep {
    return r.sqlstate === '28P01' ? this.fail(r.error) : this.fail(r.error, pgError.protocolViolation('pgwarden: malformed SASL message'));
  }

  /** The first Authentication request to send the client. */
  start(): LoginStep {
    const agent = this.o.agent;
    if (agent && 'oidcSubject' in agent.auth) {
      if (!this.o.oidc) return this.fail('agent uses OIDC but identity.oidc is not configured');
      if (!this.o.clientTls && !this.o.oidc.allowPlaintext) return this.fail('access token over a connection without TLS', pgError.agentTokenNeedsTls());
      this.stage = 'token';
      return { send: encodeAuthenticationCleartextPassword() };
    }
    this.scram = new ScramServerExchange(agent && 'scram' in agent.auth ? agent.auth.scram : null, { user: this.o.requestedName, mockSecret: this.o.mockSecret });
    this.stage = 'scram-initial';
    return { send: encodeAuthenticationSASL(this.scram.mechanisms()) };
  }

  /** A 'p' message from the client. */
  async onMessage(frame: Frame): Promise<LoginStep> {
    // PostgreSQL's limit for authentication messages (PG_MAX_AUTH_TOKEN_LENGTH is 65535).
    if (frame.bytes.length - 5 > MAX_AUTH_MESSAGE_BYTES) return this.fail('authentication message too long', pgError.protocolViolation('pgwarden: authentication message too long'));
    switch (this.stage) {
      case 'scram-initial': {
        const { mechanism, data } = decodeSASLInitialResponse(frame);
        const r = this.scram!.onInitialResponse(mechanism, data);
        if ('error' in r) return this.failScram(r);
        this.stage = 'scram-response';
        return { send: encodeAuthenticationSASLContinue(r.reply) };
      }
      case 'scram-response': {
        const r = this.scram!.onResponse(decodeSASLResponse(frame));
        if ('error' in r) return this.failScram(r);
        // An initial response without data (length -1) makes the client-first-message arrive here.
        if (!('final' in r)) return { send: encodeAuthenticationSASLContinue(r.reply) };
        const agent = this.o.agent;
        // A mock exchange never gets here with success; checked anyway.
        if (!agent) return this.fail('unknown agent');
        return this.finish(agent, { via: 'scram' }, encodeAuthenticationSASLFinal(r.final));
      }
      case 'token':
        return this.verifyToken(decodePasswordMessage(frame));
      default:
        return this.fail('authentication message out of order');
    }
  }

  private async verifyToken(token: string): Promise<LoginStep> {
    const agent = this.o.agent!;
    const oidc = this.o.oidc!;
    if (token.length > 16 * 1024) return this.fail('token too long');
    const v = await verifyOidcToken(token, oidc, oidc.jwks, this.o.clockToleranceSec ?? 30);
    if (!('payload' in v)) {
      if (v.provider) this.o.log.warn({ reason: v.reason }, 'OIDC key set unavailable; OIDC agents cannot log in');
      return this.fail(`token: ${v.reason}`);
    }
    const subject = stringClaim(v.payload, oidc.agentClaim);
    if (subject === undefined || !('oidcSubject' in agent.auth) || subject !== agent.auth.oidcSubject) {
      return this.fail(`token ${oidc.agentClaim} does not name this agent`);
    }
    return this.finish(agent, {
      via: 'oidc',
      issuer: v.payload.iss ?? oidc.issuer,
      subject: typeof v.payload.sub === 'string' ? v.payload.sub : subject,
      groups: groupsClaim(v.payload, oidc.groupsClaim),
      ...(typeof v.payload.exp === 'number' ? { expiresAt: v.payload.exp * 1000 } : {}),
    });
  }

  private finish(
    agent: AgentEntry,
    how: { via: 'scram' | 'oidc'; issuer?: string; subject?: string; groups?: string[]; expiresAt?: number },
    send?: Buffer,
  ): LoginStep {
    const requested = this.o.requestedDatabase;
    // libpq's default database is the user name: that, or the mapped one, means "the agent's".
    if (agent.database !== undefined && requested !== agent.database && requested !== agent.name) {
      return this.fail(`database ${requested} is not the agent's`, pgError.agentDatabaseRefused(agent.name, agent.database));
    }
    this.stage = 'done';
    const identity: AgentIdentity = {
      agent: agent.name,
      via: how.via,
      role: agent.role,
      groups: [...new Set([...agent.groups, ...(how.groups ?? [])])],
      elevate: agent.elevate,
      fingerprint: agent.fingerprint,
      ...(how.issuer !== undefined ? { issuer: how.issuer } : {}),
      ...(how.subject !== undefined ? { subject: how.subject } : {}),
      ...(how.expiresAt !== undefined ? { expiresAt: how.expiresAt } : {}),
    };
    return { done: { identity, database: agent.database ?? requested }, ...(send ? { send } : {}) };
  }
}
