import type { Classifier } from '../classify/classifier.js';
import type { SettingChange, StatementInfo } from '../classify/statement-info.js';
import type { PgErrorFields } from '../protocol/backend.js';
import { pgError } from '../protocol/pg-error.js';
import { type Decision, type RequestJudge, type RowCap } from '../session/decision.js';
import { EarlierRefs } from '../session/earlier-refs.js';
import type { Request } from '../session/request.js';
import type { SessionInfo } from '../session/session-info.js';
import { evaluateStatement, sensitiveRelations, stricter, type EvalContext, type Verdict } from './evaluate.js';
import { guardServerParams, guardStartup, guardStatement, startupSettings } from './guards.js';
import { DEFAULT_REVIEW_TERMS, type Policy } from './policy.js';
import type { RowEstimator } from './row-estimator.js';

/**
 * The decision step backed by classification and the rules: judges every statement of a
 * request (simple Query, each Parse and each Bind of an extended batch, FunctionCall) against
 * one rules snapshot; the whole request takes the strictest verdict.
 *
 * Per-session knowledge the SQL text alone does not carry is tracked here: SQL-level PREPARE and
 * DECLARE (so EXECUTE and FETCH inherit what they run), and every search_path the session set.
 */
export interface PolicySource {
  readonly current: Policy;
}

interface SessionPolicyState {
  /** SQL-level prepared statements (PREPARE name AS ...) → what they run. */
  prepared: Map<string, StatementInfo>;
  /** Cursors (DECLARE name CURSOR FOR ...) → what they read. */
  cursors: Map<string, StatementInfo>;
  /**
   * Every schema any search_path of this session has named. Only grows: SET LOCAL reverts at
   * transaction end, and a wider candidate set only makes matching stricter (see evaluate.ts).
   */
  searchPath: Set<string>;
}

export interface JudgedStatement {
  statement: StatementInfo;
  verdict: Verdict;
}

export type SqlJudgement =
  | { ok: true; verdict: Verdict; statements: JudgedStatement[] }
  | { ok: false; error: PgErrorFields; verdict: Verdict };

const DEFAULT_SEARCH_PATH = ['$user', 'public'];
const ALWAYS_SEARCHED = ['pg_catalog', 'pg_temp'];

function unanalysable(node: string, reason: string): StatementInfo {
  return { node, kind: 'utility', kinds: ['utility'], relations: [], functions: [], columns: [], settings: [], unanalysable: [reason] };
}

/**
 * The schemas a search_path value names: a list the server splits on commas, case-folding
 * unquoted names (SplitIdentifierString); the classifier quotes SET's arguments as PostgreSQL does.
 */
function searchPathSchemas(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((p) => p.trim())
    .map((p) => (p.startsWith('"') && p.endsWith('"') ? p.slice(1, -1).replace(/""/g, '"') : p.toLowerCase()))
    .filter((p) => p.length > 0);
}

function newState(): SessionPolicyState {
  return { prepared: new Map(), cursors: new Map(), searchPath: new Set(DEFAULT_SEARCH_PATH) };
}

/** The evaluation context: '$user' expanded, pg_catalog and pg_temp always searched. */
function evalContext(
  identity: { user: string; database: string; application: string; inTransaction: boolean; agent?: string; groups?: readonly string[]; role?: string },
  searchPath: Iterable<string>,
): EvalContext {
  const path: string[] = [];
  // '$user' is the role the server session runs as: the mapped upstream role for an agent.
  for (const schema of searchPath) path.push(schema === '$user' ? (identity.role ?? identity.user) : schema);
  path.push(...ALWAYS_SEARCHED);
  return { ...identity, searchPath: path };
}

/** Adds the schemas of every search_path change among `settings` to `into`. */
function addSearchPaths(into: Set<string>, settings: readonly SettingChange[]): void {
  for (const s of settings) if (s.name === 'search_path') for (const schema of searchPathSchemas(s.value)) into.add(schema);
}

/** The context with the search_path changes of `settings` added (unchanged object when none). */
function widenSearchPath(ctx: EvalContext, settings: readonly SettingChange[]): EvalContext {
  if (!settings.some((s) => s.name === 'search_path')) return ctx;
  const path = new Set(ctx.searchPath);
  addSearchPaths(path, settings);
  return { ...ctx, searchPath: [...path] };
}

/**
 * A verified agent never changes whose privileges apply by itself (SET ROLE, SET SESSION
 * AUTHORIZATION, set_config('role')): that is what `elevate` on a review rule is for.
 */
function agentGuard(st: StatementInfo, ctx: EvalContext): Verdict | null {
  if (ctx.agent === undefined) return null;
  if (!st.settings.some((s) => s.name === 'role' || s.name === 'session_authorization')) return null;
  const e = pgError.agentRoleSwitch();
  return { action: 'deny', rule: 'agent-role-switch', reason: e.message, message: e.message };
}

export class PolicyJudge implements RequestJudge {
  private readonly states = new WeakMap<SessionInfo, SessionPolicyState>();

  constructor(
    private readonly rules: PolicySource,
    private readonly classifier: Classifier,
    /** Planner estimates for large reads of sensitive tables; without it only the row cap applies. */
    private readonly estimator: RowEstimator | null = null,
  ) {}

  /** Refuses startup parameters that would change how SQL is read (standard_conforming_strings, encoding). */
  checkStartup(params: ReadonlyMap<string, string>): PgErrorFields | null {
    const problem = guardStartup(params);
    return problem ? pgError.startupRefused(problem) : null;
  }

  private stateFor(session: SessionInfo): SessionPolicyState {
    let s = this.states.get(session);
    if (!s) {
      s = newState();
      // The effective search_path the server reported at session start (role/database defaults).
      for (const schema of searchPathSchemas(session.serverParams.get('search_path'))) s.searchPath.add(schema);
      addSearchPaths(s.searchPath, startupSettings(session.startupParams));
      this.states.set(session, s);
    }
    return s;
  }

  private context(session: SessionInfo, state: SessionPolicyState): EvalContext {
    return evalContext(
      {
        user: session.user,
        database: session.database,
        application: session.serverParams.get('application_name') ?? session.startupParams.get('application_name') ?? '',
        inTransaction: session.txStatus !== 'I',
        ...(session.identity ? { agent: session.identity.agent, groups: session.identity.groups, role: session.identity.role } : {}),
      },
      state.searchPath,
    );
  }

  judge(request: Request, session: SessionInfo): Decision | Promise<Decision> {
    const policy = this.rules.current;
    const serverGuard = guardServerParams(session.serverParams);
    if (serverGuard) return this.toDecision(serverGuard);
    const state = this.stateFor(session);
    let ctx = this.context(session, state);
    const judged: JudgedStatement[] = [];
    let verdict: Verdict = { action: 'allow', rule: 'default', reason: 'nothing to judge' };

    if (request.kind === 'function-call') {
      return this.toDecision({ action: policy.fastpath, rule: 'fastpath', reason: 'fast-path FunctionCall message: a function called by OID, without SQL text' });
    }
    const refs = new EarlierRefs();
    let capKey: string | null = null;
    for (const { msg } of request.messages) {
      const earlier = refs.of(msg);
      let j: SqlJudgement | null = null;
      if (msg.type === 'Execute') capKey = `portal:${msg.portal}`;
      if (earlier?.kind === 'portal') {
        // Execute of a portal bound by an earlier request (fetching in chunks with a row
        // limit): judge what the portal runs again, and keep counting its rows against the cap.
        const texts = session.portalCandidates(earlier.name).flatMap((name) => this.statementTexts(session, state, name));
        j = texts.length > 0
          ? this.judgeAll(policy, texts, state, ctx)
          : this.judgeStatements(policy, [unanalysable('Execute', `Execute of unknown portal "${earlier.name}"`)], state, ctx);
      } else if (earlier?.kind === 'statement') {
        // A statement prepared by an earlier request: judge it again now (rules or the
        // transaction state may have changed since it was parsed).
        const texts = this.statementTexts(session, state, earlier.name);
        j = texts.length > 0
          ? this.judgeAll(policy, texts, state, ctx)
          : this.judgeStatements(policy, [unanalysable('Bind', `Bind of unknown prepared statement "${earlier.name}"`)], state, ctx);
      } else if (msg.type === 'Query' || msg.type === 'Parse') {
        j = this.judgeSql(policy, msg.sql, msg.utf8, state, ctx);
      }
      if (!j) continue;
      if (!j.ok) return { action: 'deny', rule: j.verdict.rule, error: j.error };
      // A SET search_path in this batch applies to the messages after it.
      for (const { statement } of j.statements) ctx = widenSearchPath(ctx, statement.settings);
      verdict = judged.length === 0 ? j.verdict : stricter(verdict, j.verdict);
      judged.push(...j.statements);
    }
    if (verdict.action !== 'allow') return this.toDecision(verdict, judged, undefined, state);
    const rule = verdict.rule;
    const estimateFor = this.estimateCandidate(policy, request, judged, ctx);
    if (!estimateFor) return this.finishAllowed(policy, judged, state, ctx, capKey, rule);
    // A read of a sensitive table: ask the planner how many rows it expects.
    const { sql, statement } = estimateFor;
    return this.estimator!.estimate(session.database, ctx.searchPath, sql).then((rows) => {
      if (rows === null || rows <= policy.sensitive.rowThreshold) return this.finishAllowed(policy, judged, state, ctx, capKey, rule);
      const asExport: StatementInfo = { ...statement, kinds: [...new Set([...statement.kinds, 'export' as const])] };
      const v = evaluateStatement(policy, asExport, ctx);
      const exportVerdict: Verdict = {
        ...v,
        reason: `the planner estimates ${Math.round(rows)} rows from sensitive table(s), above the threshold of ${policy.sensitive.rowThreshold}: treated as a bulk export; ${v.reason}`,
      };
      if (exportVerdict.action !== 'allow') return this.toDecision(exportVerdict, judged, Math.round(rows), state);
      return this.finishAllowed(policy, judged, state, ctx, capKey, exportVerdict.rule);
    });
  }

  private finishAllowed(
    policy: Policy,
    judged: JudgedStatement[],
    state: SessionPolicyState,
    ctx: EvalContext,
    capKey: string | null,
    rule: string,
  ): Decision {
    this.applyEffects(judged, state);
    const cap = this.rowCap(policy, judged, ctx, capKey);
    const about = judged.map((j) => j.statement);
    return cap ? { action: 'allow', rowCap: cap, rule, about } : { action: 'allow', rule, about };
  }

  /**
   * Only a simple Query holding exactly one plain read of a sensitive table, calling no
   * function (planning can evaluate immutable functions), is estimated; parameterised
   * statements cannot be planned without their values on PostgreSQL 15, so they rely on the cap.
   */
  private estimateCandidate(policy: Policy, request: Request, judged: JudgedStatement[], ctx: EvalContext): { sql: string; statement: StatementInfo } | null {
    if (!this.estimator || request.kind !== 'simple' || judged.length !== 1) return null;
    const msg = request.messages[0]?.msg;
    const st = judged[0]!.statement;
    if (msg?.type !== 'Query' || st.node !== 'SelectStmt' || st.functions.length > 0) return null;
    if (!st.kinds.every((k) => k === 'read')) return null;
    return sensitiveRelations(policy, st, ctx).length > 0 ? { sql: msg.sql, statement: st } : null;
  }

  /** Reads of sensitive tables get a hard row cap (when the rules set one). */
  private rowCap(policy: Policy, judged: JudgedStatement[], ctx: EvalContext, portalKey: string | null): RowCap | null {
    const limit = policy.sensitive.rowCap;
    if (limit === null) return null;
    const tables = new Set<string>();
    let key = portalKey;
    let fresh = false;
    for (const { statement } of judged) {
      for (const t of sensitiveRelations(policy, statement, ctx)) tables.add(t);
      if (statement.uses?.type === 'cursor') key = `cursor:${statement.uses.name}`;
      if (statement.defines?.type === 'cursor') {
        key = `cursor:${statement.defines.name}`;
        fresh = true;
      }
    }
    return tables.size > 0 ? { limit, key, tables: [...tables], ...(fresh ? { fresh } : {}) } : null;
  }

  /**
   * What a protocol statement name may run: the texts the tracker knows (confirmed or pending),
   * or the SQL-level PREPARE of that name (the two share one namespace).
   */
  private statementTexts(session: SessionInfo, state: SessionPolicyState, name: string): (string | StatementInfo)[] {
    const texts: (string | StatementInfo)[] = session.statementCandidates(name);
    const sqlLevel = state.prepared.get(name);
    if (sqlLevel) texts.push(sqlLevel);
    return texts;
  }

  /** Judges each candidate and keeps the strictest (an unknown among them fails closed). */
  private judgeAll(policy: Policy, candidates: (string | StatementInfo)[], state: SessionPolicyState, ctx: EvalContext): SqlJudgement {
    let result: SqlJudgement | null = null;
    for (const c of candidates) {
      const j = typeof c === 'string' ? this.judgeSql(policy, c, true, state, ctx) : this.judgeStatements(policy, [c], state, ctx);
      if (!j.ok) return j;
      if (!result || !result.ok) result = j;
      else result = { ok: true, verdict: stricter(result.verdict, j.verdict), statements: [...result.statements, ...j.statements] };
    }
    return result!;
  }

  /** Classifies and evaluates one SQL string (used by judge and by `pgwarden explain`). */
  judgeSql(policy: Policy, sql: string, utf8: boolean, state: SessionPolicyState, ctx: EvalContext): SqlJudgement {
    if (!utf8) {
      return { ok: false, error: pgError.invalidUtf8(), verdict: { action: 'deny', rule: 'invalid-utf8', reason: 'statement text is not valid UTF-8' } };
    }
    const result = this.classifier.classify(sql);
    if (!result.ok) {
      return {
        ok: false,
        error: pgError.unparsable(result.message, result.position),
        verdict: { action: 'deny', rule: 'parse-error', reason: result.message },
      };
    }
    return this.judgeStatements(policy, result.statements, state, ctx);
  }

  private judgeStatements(policy: Policy, statements: StatementInfo[], state: SessionPolicyState, ctx: EvalContext): SqlJudgement {
    const judged: JudgedStatement[] = [];
    let verdict: Verdict = { action: 'allow', rule: 'default', reason: 'empty statement' };
    for (const raw of statements) {
      const st = this.resolveUses(raw, state);
      const v = guardStatement(st) ?? agentGuard(st, ctx) ?? evaluateStatement(policy, st, ctx);
      // A SET search_path applies to the statements after it in the same request.
      ctx = widenSearchPath(ctx, st.settings);
      verdict = judged.length === 0 ? v : stricter(verdict, v);
      judged.push({ statement: st, verdict: v });
    }
    return { ok: true, verdict, statements: judged };
  }

  /** EXECUTE / FETCH / MOVE are judged as what they run; unknown names cannot be analysed. */
  private resolveUses(st: StatementInfo, state: SessionPolicyState): StatementInfo {
    if (!st.uses) return st;
    const target = st.uses.type === 'prepared' ? state.prepared.get(st.uses.name) : state.cursors.get(st.uses.name);
    if (!target) {
      const what = st.uses.type === 'prepared' ? 'prepared statement' : 'cursor';
      return { ...st, unanalysable: [...st.unanalysable, `${st.node} of ${what} "${st.uses.name}" that pgwarden has not seen declared`] };
    }
    return {
      ...target,
      node: st.node,
      uses: st.uses,
      // Parameters of EXECUTE are expressions too (functions and set_config may hide there).
      kinds: [...new Set([...target.kinds, ...st.kinds.filter((k) => k !== 'session')])],
      functions: [...new Set([...target.functions, ...st.functions])],
      settings: [...target.settings, ...st.settings],
      unanalysable: [...target.unanalysable, ...st.unanalysable],
      defines: undefined,
    } as StatementInfo;
  }

  private applyEffects(judged: JudgedStatement[], state: SessionPolicyState): void {
    for (const { statement: st } of judged) {
      if (st.defines?.type === 'prepared') state.prepared.set(st.defines.name, { ...st, defines: undefined } as StatementInfo);
      if (st.defines?.type === 'cursor') state.cursors.set(st.defines.name, { ...st, defines: undefined } as StatementInfo);
      addSearchPaths(state.searchPath, st.settings);
      const f = st.forgets;
      if (f) {
        if (f.type !== 'cursor') (f.name === null ? state.prepared.clear() : state.prepared.delete(f.name));
        if (f.type !== 'prepared') (f.name === null ? state.cursors.clear() : state.cursors.delete(f.name));
      }
    }
  }

  private toDecision(v: Verdict, judged: readonly JudgedStatement[] = [], estimatedRows?: number, state?: SessionPolicyState): Decision {
    const about = judged.map((j) => j.statement);
    switch (v.action) {
      case 'allow':
        return { action: 'allow', rule: v.rule, about };
      case 'deny':
        return {
          action: 'deny',
          rule: v.rule,
          about,
          error: v.sqlstate && v.sqlstate !== '42501'
            ? pgError.guard(v.sqlstate, v.message ?? v.reason, v.reason)
            : pgError.policyDenied(v.rule, v.reason, v.message),
        };
      case 'review': {
        // Refused unless an approval gate takes the hold (approval/approval-gate.ts).
        const terms = v.review ?? DEFAULT_REVIEW_TERMS;
        return {
          action: 'deny',
          rule: v.rule,
          about,
          error: pgError.reviewUnavailable(v.rule, v.message ?? v.reason),
          review: {
            reason: v.message ?? v.reason,
            approvers: terms.approvers,
            reviewers: terms.reviewers,
            grants: terms.grants,
            ...(terms.timeoutSeconds !== undefined ? { timeoutSeconds: terms.timeoutSeconds } : {}),
            ...(estimatedRows !== undefined ? { estimatedRows } : {}),
            ...(terms.elevate !== undefined ? { elevate: terms.elevate } : {}),
            // Approved, the statement runs: a PREPARE or DECLARE in it is then known to later requests.
            ...(state ? { onApproved: () => this.applyEffects([...judged], state) } : {}),
          },
        };
      }
    }
  }

  /** `pgwarden explain`: classification and verdict of SQL for a given identity, as data. */
  explain(sql: string, identity: { user: string; database: string; application: string; inTransaction?: boolean }): {
    rulesVersion: string;
    decision: Verdict;
    statements: JudgedStatement[];
    error?: PgErrorFields;
  } {
    const policy = this.rules.current;
    const state = newState();
    const ctx = evalContext({ ...identity, inTransaction: identity.inTransaction ?? false }, state.searchPath);
    const j = this.judgeSql(policy, sql, true, state, ctx);
    if (!j.ok) return { rulesVersion: policy.version, decision: j.verdict, statements: [], error: j.error };
    return { rulesVersion: policy.version, decision: j.verdict, statements: j.statements };
  }
}
