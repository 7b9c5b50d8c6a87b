/**
 * Who is on a connection, as pgwarden verified it (identity.mode: agents). With passthrough
 * authentication there is none: PostgreSQL checked the credentials, and the database user name
 * is all pgwarden knows.
 */
export interface AgentIdentity {
  /** The agent's name in the rules (`agents[].name`): what rules, audit and reviewers see. */
  agent: string;
  /** How it proved it: its SCRAM secret, or an OIDC access token. */
  via: 'scram' | 'oidc';
  /** The upstream role its connection logged in as. */
  role: string;
  /** Groups for rules: the agent entry's, plus the token's groups claim. */
  groups: readonly string[];
  /** OIDC: issuer and subject of the token (self-approval compares them with the reviewer's). */
  issuer?: string;
  subject?: string;
  /** OIDC: when the token expires (ms since the epoch); the session ends then unless configured otherwise. */
  expiresAt?: number;
  /** Roles an approved statement may be elevated to. */
  elevate: readonly string[];
  /** The agent entry's fingerprint when the session began (revocation compares it). */
  fingerprint: string;
}
