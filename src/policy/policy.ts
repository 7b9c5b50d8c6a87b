import type { Kind } from '../classify/statement-info.js';
import { NO_MASKING, type MaskRules } from '../masking/mask-rules.js';
import { compileGlob, type Glob } from './glob.js';
import type { Action, AgentInput, MatchInput, RuleInput } from './rules-schema.js';

/** Rules compiled for evaluation: one immutable snapshot per load (DESIGN.md style rule 9). */
export interface NamePattern {
  /** null: any schema (the pattern had no dot). */
  schema: Glob | null;
  name: Glob;
}

export interface CompiledMatch {
  kind?: ReadonlySet<Kind>;
  relations?: NamePattern[];
  functions?: NamePattern[];
  settings?: Glob[];
  users?: Glob[];
  agents?: Glob[];
  groups?: Glob[];
  applications?: Glob[];
  databases?: Glob[];
  unanalysable?: boolean;
  inTransaction?: boolean;
}

/** How a statement held by a review rule is decided (the rule's `review` settings). */
export interface ReviewTerms {
  approvers: number;
  /** Reviewer groups allowed to decide; empty: any reviewer. */
  reviewers: readonly string[];
  grants: boolean;
  /** Overrides the configured timeout. */
  timeoutSeconds?: number;
  /** On approval, run under this role (just-in-time elevation). */
  elevate?: string;
}

export const DEFAULT_REVIEW_TERMS: ReviewTerms = Object.freeze({ approvers: 1, reviewers: [], grants: true });

export interface CompiledRule {
  name: string;
  description?: string;
  action: Action;
  message?: string;
  match: CompiledMatch;
  except?: CompiledMatch;
  /** Review rules: how a held statement is decided. */
  review?: ReviewTerms;
  /** Where the rule was defined, for explain output and logs. */
  source: string;
}

export interface Policy {
  /** Content hash of the rule files: changes exactly when the rules do. */
  version: string;
  files: string[];
  default: Action;
  unanalysable: 'review' | 'deny';
  fastpath: Action;
  rules: CompiledRule[];
  sensitive: { tables: NamePattern[]; rowThreshold: number; rowCap: number | null };
  masking: MaskRules;
  /** Statements copying masked data elsewhere: review or deny. */
  maskedCopy: 'review' | 'deny';
  /** Agents pgwarden authenticates (identity.mode: agents), by name. */
  agents: ReadonlyMap<string, AgentEntry>;
}

export interface AgentEntry {
  name: string;
  auth: { scram: string } | { oidcSubject: string };
  role: string;
  database?: string;
  groups: readonly string[];
  elevate: readonly string[];
  /** Changes whenever anything about the agent does: open sessions of a changed agent end. */
  fingerprint: string;
}

export function compileAgent(a: AgentInput): AgentEntry {
  const entry = {
    name: a.name,
    auth: a.scram !== undefined ? { scram: a.scram } : { oidcSubject: a.oidc!.subject },
    role: a.role,
    ...(a.database !== undefined ? { database: a.database } : {}),
    groups: a.groups ?? [],
    elevate: a.elevate ?? [],
  };
  return { ...entry, fingerprint: JSON.stringify(entry) };
}

export function compileNamePattern(pattern: string): NamePattern {
  const dot = pattern.lastIndexOf('.');
  if (dot < 0) return { schema: null, name: compileGlob(pattern) };
  return { schema: compileGlob(pattern.slice(0, dot)), name: compileGlob(pattern.slice(dot + 1)) };
}

export function compileMatch(m: MatchInput): CompiledMatch {
  return {
    ...(m.kind ? { kind: new Set(m.kind) } : {}),
    ...(m.relations ? { relations: m.relations.map(compileNamePattern) } : {}),
    ...(m.functions ? { functions: m.functions.map(compileNamePattern) } : {}),
    ...(m.settings ? { settings: m.settings.map((s) => compileGlob(s.toLowerCase())) } : {}),
    ...(m.users ? { users: m.users.map(compileGlob) } : {}),
    ...(m.agents ? { agents: m.agents.map(compileGlob) } : {}),
    ...(m.groups ? { groups: m.groups.map(compileGlob) } : {}),
    ...(m.applications ? { applications: m.applications.map(compileGlob) } : {}),
    ...(m.databases ? { databases: m.databases.map(compileGlob) } : {}),
    ...(m.unanalysable !== undefined ? { unanalysable: m.unanalysable } : {}),
    ...(m.in_transaction !== undefined ? { inTransaction: m.in_transaction } : {}),
  };
}

export function compileRule(r: RuleInput, source: string): CompiledRule {
  return {
    name: r.name,
    ...(r.description !== undefined ? { description: r.description } : {}),
    action: r.action,
    ...(r.message !== undefined ? { message: r.message } : {}),
    match: compileMatch(r.match),
    ...(r.except ? { except: compileMatch(r.except) } : {}),
    ...(r.action === 'review'
      ? {
          review: {
            approvers: r.review?.approvers ?? 1,
            reviewers: r.review?.reviewers ?? [],
            grants: r.review?.grants ?? true,
            ...(r.review?.timeout_seconds !== undefined ? { timeoutSeconds: r.review.timeout_seconds } : {}),
            ...(r.review?.elevate !== undefined ? { elevate: r.review.elevate } : {}),
          },
        }
      : {}),
    source,
  };
}

/** Used when no rules directory is configured: allow, but never unanalysable SQL. */
export function emptyPolicy(): Policy {
  return {
    version: 'none',
    files: [],
    default: 'allow',
    unanalysable: 'review',
    fastpath: 'deny',
    rules: [],
    sensitive: { tables: [], rowThreshold: 1000, rowCap: null },
    masking: NO_MASKING,
    maskedCopy: 'review',
    agents: new Map(),
  };
}
