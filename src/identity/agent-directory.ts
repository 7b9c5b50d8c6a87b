import { createRemoteJWKSet } from 'jose';
import type { Config } from '../config/schema.js';
import type { Logger } from '../logger.js';
import type { PgErrorFields } from '../protocol/backend.js';
import { pgError } from '../protocol/pg-error.js';
import type { AgentEntry, Policy } from '../policy/policy.js';
import type { AgentIdentity } from './agent-identity.js';
import { AgentLogin } from './agent-login.js';

/**
 * The agents of one process (identity.mode: agents): who may connect (the rules' `agents:`, read
 * afresh for every login so a reload applies at once), the upstream credentials of their mapped
 * roles, and the open sessions of each agent, so that removing or changing an agent ends them
 * ("revocation") and an OIDC session ends when its token expires.
 */
export interface RevocableSession {
  readonly identity?: AgentIdentity;
  /** Ends the session with a FATAL ErrorResponse. */
  fail(error: PgErrorFields): void;
}

export class AgentDirectory {
  private readonly sessions = new Map<RevocableSession, NodeJS.Timeout | null>();
  private readonly jwks: ReturnType<typeof createRemoteJWKSet> | undefined;

  constructor(
    private readonly rules: { readonly current: Policy; onChange(fn: (p: Policy) => void): void },
    private readonly config: Config['identity'],
    private readonly log: Logger,
    /** Seeds mock SCRAM salts for unknown agents: the same on every instance. */
    private readonly mockSecret: Buffer,
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {
    this.jwks = config.oidc ? createRemoteJWKSet(new URL(config.oidc.jwksUrl)) : undefined;
    rules.onChange((p) => this.revokeChanged(p));
  }

  /** Starts authenticating a client that asked for agent `user` (database `database`). */
  begin(user: string, database: string, clientTls: boolean): AgentLogin {
    const agent = this.rules.current.agents.get(user);
    return new AgentLogin({
      agent: agent ?? null,
      requestedName: user,
      requestedDatabase: database,
      clientTls,
      oidc: this.config.oidc && this.jwks ? { ...this.config.oidc, jwks: this.jwks } : null,
      mockSecret: this.mockSecret,
      log: this.log,
    });
  }

  /** The password of an upstream role (config, or PGWARDEN_ROLE_PASSWORD_<ROLE>); undefined: none. */
  rolePassword(role: string): string | undefined {
    const c = this.config.roles[role];
    if (c?.passwordEnv) return this.env[c.passwordEnv];
    if (c?.password) return c.password;
    return this.env[`PGWARDEN_ROLE_PASSWORD_${role.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`];
  }

  /** A session authenticated as an agent: watched for revocation and token expiry. */
  register(session: RevocableSession): void {
    const id = session.identity;
    if (!id) return;
    let timer: NodeJS.Timeout | null = null;
    if (id.expiresAt !== undefined && this.config.tokenExpiry === 'end-session') {
      // setTimeout's limit is about 24.8 days; tokens live far shorter.
      const ms = Math.max(0, Math.min(id.expiresAt - Date.now(), 2_000_000_000));
      timer = setTimeout(() => {
        this.log.info({ agent: id.agent }, 'agent token expired: session ended');
        session.fail(pgError.agentTokenExpired());
      }, ms);
      timer.unref();
    }
    this.sessions.set(session, timer);
  }

  unregister(session: RevocableSession): void {
    const timer = this.sessions.get(session);
    if (timer) clearTimeout(timer);
    this.sessions.delete(session);
  }

  /** Open sessions of agents that were removed or changed end now. */
  private revokeChanged(policy: Policy): void {
    for (const session of [...this.sessions.keys()]) {
      const id = session.identity;
      if (!id) continue;
      const now: AgentEntry | undefined = policy.agents.get(id.agent);
      if (now && now.fingerprint === id.fingerprint) continue;
      this.log.warn({ agent: id.agent, reason: now ? 'changed' : 'removed' }, 'agent revoked: session ended');
      this.unregister(session);
      session.fail(pgError.agentRevoked(id.agent));
    }
  }
}
