import type { RelationRef, StatementInfo } from '../classify/statement-info.js';
import type { Glob } from './glob.js';
import { DEFAULT_REVIEW_TERMS, type CompiledMatch, type CompiledRule, type NamePattern, type Policy, type ReviewTerms } from './policy.js';
import type { Action } from './rules-schema.js';

/**
 * Policy evaluation: pure, one statement against one rules snapshot.
 *
 * Semantics (documented in the README):
 * - every rule whose `match` holds and whose `except` does not applies; the strictest applies
 *   (deny > review > allow), the first such rule in file order is reported;
 * - list conditions are read in the safe direction for the action: a deny/review rule matches
 *   when ANY relation/function/kind of the statement matches a pattern, an allow rule only when
 *   ALL of them do (so "allow analytics.*" never lets a join with another table through);
 * - an unqualified relation could resolve to any schema on the search path: for deny/review any
 *   candidate matching is enough, for allow every candidate must match;
 * - allow rules do not apply to unanalysable statements unless they say `unanalysable: true`;
 * - no rule applies: unanalysable → `policy.unanalysable`, otherwise `policy.default`.
 */
export interface EvalContext {
  user: string;
  /** The verified agent (identity.mode: agents); undefined for passthrough connections. */
  agent?: string;
  /** The verified agent's groups (rules file and OIDC claim). */
  groups?: readonly string[];
  database: string;
  application: string;
  /** Schemas an unqualified name may resolve to, in any order. */
  searchPath: readonly string[];
  inTransaction: boolean;
}

export interface Verdict {
  action: Action;
  /** The rule that decided, or 'default' / 'unanalysable' / a built-in guard name. */
  rule: string;
  reason: string;
  message?: string;
  /** SQLSTATE for a deny (42501 unless a guard says otherwise). */
  sqlstate?: string;
  /** Review: how the held statement is decided (defaults when a built-in verdict asks for review). */
  review?: ReviewTerms;
}

const SEVERITY: Record<Action, number> = { allow: 0, review: 1, deny: 2 };

export function stricter(a: Verdict, b: Verdict): Verdict {
  if (a.action === 'review' && b.action === 'review' && (a.review || b.review)) {
    // Two review rules apply: the held statement must satisfy both (first rule reported).
    return { ...a, review: strictestTerms(a.review ?? DEFAULT_REVIEW_TERMS, b.review ?? DEFAULT_REVIEW_TERMS) };
  }
  return SEVERITY[b.action] > SEVERITY[a.action] ? b : a;
}

/**
 * The terms that satisfy both: more approvers, no grants if either forbids them, the shorter
 * timeout, and reviewers in groups both name (an empty intersection leaves nobody who may
 * approve, so the statement times out: fail closed, documented in the README).
 */
function strictestTerms(a: ReviewTerms, b: ReviewTerms): ReviewTerms {
  const reviewers = a.reviewers.length === 0 ? b.reviewers : b.reviewers.length === 0 ? a.reviewers : a.reviewers.filter((g) => b.reviewers.includes(g));
  const timeouts = [a.timeoutSeconds, b.timeoutSeconds].filter((t): t is number => t !== undefined);
  return {
    approvers: Math.max(a.approvers, b.approvers),
    reviewers: a.reviewers.length > 0 && b.reviewers.length > 0 && reviewers.length === 0 ? ['(no group satisfies every rule)'] : reviewers,
    grants: a.grants && b.grants,
    ...(timeouts.length > 0 ? { timeoutSeconds: Math.min(...timeouts) } : {}),
  };
}

const anyGlob = (globs: readonly Glob[], text: string) => globs.some((g) => g(text));

function candidateSchemas(schema: string | undefined, ctx: EvalContext): readonly string[] {
  return schema !== undefined ? [schema] : ctx.searchPath;
}

function nameMatches(p: NamePattern, schemas: readonly string[], name: string, all: boolean): boolean {
  if (!p.name(name)) return false;
  if (p.schema === null) return true;
  const schemaGlob = p.schema;
  return all ? schemas.every((s) => schemaGlob(s)) : schemas.some((s) => schemaGlob(s));
}

function relationMatches(patterns: NamePattern[], r: RelationRef, ctx: EvalContext, all: boolean): boolean {
  const schemas = candidateSchemas(r.schema, ctx);
  return patterns.some((p) => nameMatches(p, schemas, r.name, all));
}

function functionMatches(patterns: NamePattern[], fn: string, ctx: EvalContext, all: boolean): boolean {
  const dot = fn.lastIndexOf('.');
  const name = dot < 0 ? fn : fn.slice(dot + 1);
  const schemas = dot < 0 ? [...ctx.searchPath, 'pg_catalog'] : [fn.slice(0, dot)];
  // Deny/review also match a quoted upper-case look-alike ("PG_READ_FILE"): the safe reading.
  if (!all && name !== name.toLowerCase() && patterns.some((p) => nameMatches(p, schemas.map((s) => s.toLowerCase()), name.toLowerCase(), false))) {
    return true;
  }
  return patterns.some((p) => nameMatches(p, schemas, name, all));
}

/** A list condition over the statement's items: ANY for deny/review, ALL (and non-empty) for allow. */
function listHolds<T>(items: readonly T[], test: (item: T, all: boolean) => boolean, all: boolean): boolean {
  if (all) return items.length > 0 && items.every((i) => test(i, true));
  return items.some((i) => test(i, false));
}

function identityHolds(m: CompiledMatch, ctx: EvalContext): boolean {
  if (m.users && !anyGlob(m.users, ctx.user)) return false;
  if (m.agents && (ctx.agent === undefined || !anyGlob(m.agents, ctx.agent))) return false;
  if (m.groups && !(ctx.groups ?? []).some((g) => anyGlob(m.groups!, g))) return false;
  if (m.applications && !anyGlob(m.applications, ctx.application)) return false;
  if (m.databases && !anyGlob(m.databases, ctx.database)) return false;
  return true;
}

export function ruleApplies(rule: CompiledRule, st: StatementInfo, ctx: EvalContext): boolean {
  const m = rule.match;
  const all = rule.action === 'allow';
  const unanalysable = st.unanalysable.length > 0;
  if (m.unanalysable !== undefined && m.unanalysable !== unanalysable) return false;
  if (all && unanalysable && m.unanalysable !== true) return false;
  if (m.inTransaction !== undefined && m.inTransaction !== ctx.inTransaction) return false;
  if (!identityHolds(m, ctx)) return false;
  if (m.kind && !listHolds(st.kinds, (k) => m.kind!.has(k), all)) return false;
  if (m.relations && !listHolds(st.relations, (r, a) => relationMatches(m.relations!, r, ctx, a), all)) return false;
  if (m.functions && !listHolds(st.functions, (f, a) => functionMatches(m.functions!, f, ctx, a), all)) return false;
  if (m.settings && !listHolds(st.settings, (s) => anyGlob(m.settings!, s.name), all)) return false;
  if (rule.except && identityHolds(rule.except, ctx)) return false;
  return true;
}

function describe(rule: CompiledRule): string {
  return rule.description ?? `matched rule "${rule.name}" (${rule.source})`;
}

export function evaluateStatement(policy: Policy, st: StatementInfo, ctx: EvalContext): Verdict {
  let verdict: Verdict | null = null;
  for (const rule of policy.rules) {
    if (!ruleApplies(rule, st, ctx)) continue;
    const v: Verdict = {
      action: rule.action,
      rule: rule.name,
      reason: describe(rule),
      ...(rule.message !== undefined ? { message: rule.message } : {}),
      ...(rule.review ? { review: rule.review } : {}),
    };
    verdict = verdict ? stricter(verdict, v) : v;
  }
  if (verdict) return verdict;
  if (st.unanalysable.length > 0) {
    return { action: policy.unanalysable, rule: 'unanalysable', reason: st.unanalysable.join('; ') };
  }
  return { action: policy.default, rule: 'default', reason: 'no rule matched; the default action applies' };
}

/** The sensitive tables (by pattern) a statement reads; unqualified names match on any candidate. */
export function sensitiveRelations(policy: Policy, st: StatementInfo, ctx: EvalContext): string[] {
  const patterns = policy.sensitive.tables;
  if (patterns.length === 0) return [];
  return st.relations
    .filter((r) => r.access === 'read' && relationMatches(patterns, r, ctx, false))
    .map((r) => (r.schema !== undefined ? `${r.schema}.${r.name}` : r.name));
}
