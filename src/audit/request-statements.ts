import { createHash } from 'node:crypto';
import { EarlierRefs } from '../session/earlier-refs.js';
import type { Request } from '../session/request.js';
import type { SessionInfo } from '../session/session-info.js';
import type { StatementRef } from './events.js';
import type { SqlNormalizer } from './normalize-sql.js';

/**
 * The SQL a request runs, normalized (no literals), as the audit log and reviewers see it.
 * Statements bound or executed from earlier requests are looked up in the session.
 */
export function requestStatements(request: Request, session: SessionInfo, normalizer: SqlNormalizer): StatementRef[] {
  const texts = new Set<string>();
  const refs: StatementRef[] = [];
  const add = (sql: string) => {
    if (texts.has(sql)) return;
    texts.add(sql);
    refs.push(normalizer.normalize(sql));
  };
  const earlierRefs = new EarlierRefs();
  for (const { msg } of request.messages) {
    const earlier = earlierRefs.of(msg);
    if (msg.type === 'Query' || msg.type === 'Parse') add(msg.sql);
    else if (earlier?.kind === 'statement') for (const sql of session.statementCandidates(earlier.name)) add(sql);
    else if (earlier?.kind === 'portal') {
      for (const name of session.portalCandidates(earlier.name)) for (const sql of session.statementCandidates(name)) add(sql);
    } else if (msg.type === 'FunctionCall') {
      refs.push({ text: `<fast-path FunctionCall of function oid ${msg.functionOid}>`, fingerprint: 'function-call' });
    }
  }
  return refs;
}

/**
 * One fingerprint for a whole request (its statements' fingerprints in order): what a
 * time-boxed grant is scoped to. Literals do not take part, so a grant for
 * `DELETE FROM t WHERE id = 1` covers the same statement with another id; reviewers see the
 * normalized text they grant and the README says so.
 */
export function requestFingerprint(statements: readonly StatementRef[]): string {
  const h = createHash('sha256');
  for (const s of statements) h.update(s.fingerprint).update('\n');
  return h.digest('hex').slice(0, 32);
}
