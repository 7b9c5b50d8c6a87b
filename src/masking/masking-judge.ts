import type { StatementInfo } from '../classify/statement-info.js';
import type { Logger } from '../logger.js';
import { pgError } from '../protocol/pg-error.js';
import type { Decision, RequestJudge } from '../session/decision.js';
import { JudgeWrapper } from '../session/judge-wrapper.js';
import type { Request } from '../session/request.js';
import type { SessionInfo } from '../session/session-info.js';
import type { ApprovalAudit } from '../approval/approval-gate.js';
import { aboutFields, sessionRef } from '../audit/auditing-judge.js';
import type { StatementRef } from '../audit/events.js';
import { SqlNormalizer } from '../audit/normalize-sql.js';
import { requestStatements } from '../audit/request-statements.js';
import { DEFAULT_REVIEW_TERMS, type Policy } from '../policy/policy.js';
import type { DatabaseMasks, MaskCatalog } from './mask-catalog.js';
import { ResultMasker } from './result-masker.js';

/**
 * Decides, per allowed request, whether its answer must be masked, and refuses what masking
 * cannot protect (DESIGN.md "Masking: how a column is known to be PII"):
 *
 * - a request that reads a masked table, or a view built on one, gets a ResultMasker for its
 *   answer (rows, errors and notices);
 * - a statement that copies masked data somewhere unmasked (INSERT … SELECT, UPDATE … SET x =
 *   email, CREATE TABLE AS, COPY … TO) goes to review or is denied (`policy.masked_copy`);
 * - pg_notify and set_config in such a statement are refused: a NOTIFY payload or a reported
 *   setting (application_name) would carry values past the row masker.
 *
 * An unqualified table name matches a masked table of that name in any schema (fail closed:
 * the session's search_path may point anywhere).
 */
export interface MaskingOptions {
  policy: { readonly current: Policy };
  catalog: MaskCatalog;
  key: Buffer;
  audit: ApprovalAudit | null;
  /** Normalizes the SQL of `statement.masked` entries (a new one when not given). */
  normalizer?: SqlNormalizer;
  log: Logger;
}

/** Masking as one user sees it. */
interface UserView {
  /** Masked tables and views (schema.name) this user is not exempt from. */
  names: Set<string>;
  /** The same, without schema (an unqualified name may mean any of them). */
  bare: Set<string>;
  /** Rule tables this user is exempt from. */
  exempt: Set<string>;
  /** Masked column names (tables and views) this user sees masked. */
  columnNames: Set<string>;
}

const COPY_KINDS = new Set(['write', 'ddl', 'export']);
const LEAKY_FUNCTIONS = ['pg_notify', 'set_config'];

/**
 * COPY text is parsed byte-wise at ASCII delimiters, which is only sound in encodings where those
 * bytes never occur inside a multi-byte character (not so in SJIS, BIG5, GBK …): the copy is
 * masked only when the client encoding is UTF8 and the request does not change it.
 */
function clientEncodingProblem(statements: StatementInfo[], session: SessionInfo): string | null {
  if (statements.some((s) => s.settings.some((x) => x.name === 'client_encoding'))) return 'the request changes client_encoding';
  const enc = session.serverParams.get('client_encoding') ?? 'UTF8';
  return /^utf-?8$/i.test(enc) ? null : `COPY data in client encoding ${enc} cannot be masked`;
}

function asStatements(about: Decision['about']): StatementInfo[] {
  return (about ?? []) as StatementInfo[];
}

export class MaskingJudge extends JudgeWrapper {
  private readonly normalizer: SqlNormalizer;

  constructor(
    inner: RequestJudge,
    private readonly o: MaskingOptions,
  ) {
    super(inner);
    this.normalizer = o.normalizer ?? new SqlNormalizer();
  }

  judge(request: Request, session: SessionInfo, signal: AbortSignal): Decision | Promise<Decision> {
    const d = this.inner.judge(request, session, signal);
    return d instanceof Promise ? d.then((x) => this.mask(x, request, session)) : this.mask(d, request, session);
  }

  private mask(d: Decision, request: Request, session: SessionInfo): Decision | Promise<Decision> {
    if (d.action === 'deny' && d.review) return this.maskHeld(d as Decision & { action: 'deny'; review: NonNullable<Extract<Decision, { action: 'deny' }>['review']> }, request, session);
    if (d.action !== 'allow') return d;
    const policy = this.o.policy.current;
    const rules = policy.masking;
    if (rules.tables.size === 0) return d;
    const withDdl = this.invalidateAfterDdl(d, session);
    if (this.viewFor(session.user, null, policy).names.size === 0) return withDdl;
    const masks = this.o.catalog.get(session.database, rules);
    if (masks instanceof Promise) {
      return masks.then(
        (m) => this.decide(withDdl, request, session, m, policy),
        (err: unknown) => {
          this.o.log.error({ message: (err as Error).message, database: session.database }, 'masking catalog unavailable');
          return this.decideBlind(withDdl);
        },
      );
    }
    return this.decide(withDdl, request, session, masks, policy);
  }

  /**
   * A statement held for review runs once approved: it is masked like an allowed one, so the
   * plan travels with the review request (the approval gate applies it). If masking would refuse
   * it outright, that refusal stands; if masking would hold it too, the reviewer is told why.
   */
  private maskHeld(d: Extract<Decision, { action: 'deny' }> & { review: NonNullable<Extract<Decision, { action: 'deny' }>['review']> }, request: Request, session: SessionInfo): Decision | Promise<Decision> {
    const asAllowed: Decision = { action: 'allow', rule: d.rule, about: d.about ?? [], ...(d.review.onDone ? { onDone: d.review.onDone } : {}) };
    const combine = (m: Decision): Decision => {
      if (m.action === 'allow') return { ...d, review: { ...d.review, ...(m.mask ? { mask: m.mask } : {}), ...(m.onDone ? { onDone: m.onDone } : {}) } };
      if (!m.review) return m;
      // Held by masking too (masked copy): once approved it runs like any held statement, DDL included.
      return { ...d, review: { ...d.review, reason: `${d.review.reason}; also: ${m.review.reason}`, ...(m.review.onDone ? { onDone: m.review.onDone } : {}) } };
    };
    const m = this.mask(asAllowed, request, session);
    return m instanceof Promise ? m.then(combine) : combine(m);
  }

  /** Sessions whose DDL ran inside a transaction block that has not ended yet. */
  private readonly uncommittedDdl = new WeakSet<SessionInfo>();

  /**
   * DDL can create a masked table or a view on one, or rename columns: the catalog is read again
   * once the catalog's own connection can see the change, so after the request that ran it when
   * the session is then outside a transaction block, otherwise after the request that ends the
   * block (COMMIT or ROLLBACK). Not before: reading it while the block holds its locks would wait
   * for them (pg_get_viewdef locks the view and its tables), and would not see the change anyway.
   */
  private invalidateAfterDdl(d: Extract<Decision, { action: 'allow' }>, session: SessionInfo): Extract<Decision, { action: 'allow' }> {
    const ddl = asStatements(d.about).some((s) => s.kinds.includes('ddl'));
    if (!ddl && !this.uncommittedDdl.has(session)) return d;
    const inner = d.onDone;
    return {
      ...d,
      onDone: (o) => {
        // txStatus is that of the ReadyForQuery that ended this request.
        if (session.txStatus === 'I') {
          this.uncommittedDdl.delete(session);
          this.o.catalog.invalidate(session.database);
        } else if (ddl) this.uncommittedDdl.add(session);
        inner?.(o);
      },
    };
  }

  /** What masking means for one user, derived once per catalog state (or rules, without a catalog). */
  private readonly views = new WeakMap<object, Map<string, UserView>>();

  private viewFor(user: string, masks: DatabaseMasks | null, policy: Policy): UserView {
    const owner: object = masks ?? policy.masking;
    let perUser = this.views.get(owner);
    if (!perUser) this.views.set(owner, (perUser = new Map()));
    let v = perUser.get(user);
    if (!v) {
      const names = new Set<string>();
      const exempt = new Set<string>();
      for (const [key, t] of policy.masking.tables) {
        if (t.exempt.some((g) => g(user))) exempt.add(key);
        else names.add(key);
      }
      for (const view of masks?.views ?? []) names.add(view);
      const columnNames = new Set<string>();
      for (const [name, m] of masks?.names ?? []) if (!m.sources.every((src) => exempt.has(src))) columnNames.add(name);
      v = { names, bare: new Set([...names].map((n) => n.slice(n.indexOf('.') + 1))), exempt, columnNames };
      if (perUser.size > 1000) perUser.clear();
      perUser.set(user, v);
    }
    return v;
  }

  /**
   * Whether the statements name a masked table or view (unqualified: in any schema). With
   * `unknownCounts`, a statement pgwarden could not analyse (EXECUTE of a prepared statement it
   * has not seen, a CALL …) counts too: what it reads is unknown, so its answer is masked.
   */
  private touched(statements: StatementInfo[], view: UserView, unknownCounts = false): boolean {
    for (const st of statements) {
      if (unknownCounts && st.unanalysable.length > 0) return true;
      for (const r of st.relations) {
        if (r.schema !== undefined ? view.names.has(`${r.schema}.${r.name}`) : view.bare.has(r.name)) return true;
      }
    }
    return false;
  }

  private decide(d: Extract<Decision, { action: 'allow' }>, request: Request, session: SessionInfo, masks: DatabaseMasks, policy: Policy): Decision {
    const statements = asStatements(d.about);
    const view = this.viewFor(session.user, masks, policy);
    if (!this.touched(statements, view, true)) return d;
    const refusal = this.refusal(d, statements, view, policy, session);
    if (refusal) return refusal;
    const masker = new ResultMasker({ masks, exempt: view.exempt, maskedNames: view.columnNames, statements, key: this.o.key, ordered: request.kind === 'simple' });
    // The SQL is looked up now: by the time the answer is done, the request may have closed the
    // prepared statements it ran.
    const sql = this.o.audit ? requestStatements(request, session, this.normalizer) : [];
    return { ...d, mask: { masker, done: () => this.record(session, request, sql, d, masker, policy) } };
  }

  /**
   * Without the catalog pgwarden cannot tell which views (or views of views) are built on masked
   * tables, so it fails closed: a request reading any relation but the system catalogs, or that
   * cannot be analysed, is refused. An unqualified pg_* name is a catalog: pg_catalog is searched
   * first unless a search_path names it later, which nobody does to read a view.
   */
  private decideBlind(d: Extract<Decision, { action: 'allow' }>): Decision {
    const catalogOnly = asStatements(d.about).every(
      (st) =>
        st.unanalysable.length === 0 &&
        st.relations.every((r) => (r.schema === undefined ? r.name.startsWith('pg_') : r.schema === 'pg_catalog' || r.schema === 'information_schema')),
    );
    if (catalogOnly) return d;
    return { action: 'deny', rule: 'masking-catalog', about: d.about ?? [], error: pgError.maskingUnavailable() };
  }

  private refusal(d: Extract<Decision, { action: 'allow' }>, statements: StatementInfo[], view: UserView, policy: Policy, session: SessionInfo): Decision | null {
    const copyRefusal = (reason: string): Decision => {
      if (policy.maskedCopy === 'deny') {
        return { action: 'deny', rule: 'masked-copy', about: d.about ?? [], error: pgError.policyDenied('masked-copy', reason) };
      }
      return {
        action: 'deny',
        rule: 'masked-copy',
        about: d.about ?? [],
        error: pgError.reviewUnavailable('masked-copy', reason),
        // Once approved it runs: DDL among it (CREATE VIEW … AS SELECT email …) reloads the catalog.
        review: { reason, ...DEFAULT_REVIEW_TERMS, ...(d.onDone ? { onDone: d.onDone } : {}) },
      };
    };
    for (const st of statements) {
      const leaky = st.functions.find((f) => LEAKY_FUNCTIONS.includes(f.slice(f.lastIndexOf('.') + 1)));
      if (leaky) {
        return { action: 'deny', rule: 'masked-side-channel', about: d.about ?? [], error: pgError.maskedSideChannel(leaky) };
      }
      // UPDATE … SET x = email copies within a row, wherever the UPDATE hides (a CTE, COPY (…));
      // a DELETE's or INSERT … VALUES' mention of a masked column (WHERE, RETURNING) moves
      // nothing (RETURNING is masked like any result).
      const mentionsMasked =
        st.updatesRows === true &&
        st.columns.some((c) => {
          const last = c.slice(c.lastIndexOf('.') + 1);
          return last === '*' || view.columnNames.has(last);
        });
      if (mentionsMasked) return copyRefusal('the statement copies data from masked columns to a place where it would not be masked');
      if (st.copy?.direction === 'to' && st.copy.endpoint === 'client' && this.touched([st], view)) {
        // COPY … TO STDOUT is masked row by row (copy-rows.ts) when its bytes can be parsed for sure.
        const unmaskable = 'unsupported' in st.copy.format ? st.copy.format.unsupported : clientEncodingProblem(statements, session);
        if (unmaskable) return copyRefusal(`${unmaskable}; the COPY reads masked columns`);
        continue;
      }
      const copies = st.kinds.some((k) => COPY_KINDS.has(k));
      if (!copies) continue;
      const readsMasked = this.touched([{ ...st, relations: st.relations.filter((r) => r.access === 'read') }], view);
      if (!readsMasked) continue;
      return copyRefusal('the statement copies data from masked columns to a place where it would not be masked');
    }
    return null;
  }

  /** The `statement.masked` entry, with the request described as the auditing judge describes it. */
  private record(session: SessionInfo, request: Request, statements: StatementRef[], d: Extract<Decision, { action: 'allow' }>, masker: ResultMasker, policy: Policy): void {
    if (!this.o.audit || masker.maskedColumns.size === 0) return;
    this.o.audit.note({
      type: 'statement.masked',
      session: sessionRef(session),
      request: request.kind === 'copy-data' ? 'simple' : request.kind,
      statements,
      ...aboutFields(d.about),
      rule: d.rule ?? 'default',
      rulesVersion: policy.version,
      columns: [...masker.maskedColumns].map(([column, strategy]) => ({ column, strategy })),
    });
  }
}
