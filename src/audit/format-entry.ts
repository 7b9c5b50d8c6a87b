import { terminalSafe } from '../terminal-text.js';
import type { StoredRecord } from './chain.js';

/**
 * One audit entry as a line for people (`pgwarden audit tail`) and as CSV columns for auditors
 * (`pgwarden audit export --format csv`). Entries hold no literals or row values, so neither can
 * leak one.
 */
type Entry = Record<string, unknown> & {
  ts?: string;
  type?: string;
  chain?: string;
  seq?: number;
  session?: { id: number; user: string; database: string; application: string; client: string };
  /** Statement references; in connection.closed, how many requests the session made. */
  statements?: { text: string; fingerprint: string }[] | number;
};

function statementList(e: Entry): { text: string; fingerprint: string }[] {
  return Array.isArray(e.statements) ? e.statements : [];
}

export function parseEntry(rec: StoredRecord): Entry | null {
  try {
    const v = JSON.parse(rec.raw) as unknown;
    return typeof v === 'object' && v !== null ? (v as Entry) : null;
  } catch {
    return null;
  }
}

function who(e: Entry): string {
  const s = e.session;
  if (!s) return '';
  return `${s.user}@${s.database}${s.application ? ` (${s.application})` : ''} from ${s.client} #${s.id}`;
}

/** Outcome fields live in the entry itself (statement.executed) or in its `outcome` (statement.allowed). */
function field(e: Entry, key: string): unknown {
  const outcome = e.outcome as Record<string, unknown> | undefined;
  return e[key] ?? outcome?.[key];
}

function details(e: Entry): string {
  const parts: string[] = [];
  const add = (label: string, key: string) => {
    const v = field(e, key);
    if (v !== undefined && v !== '' && !(Array.isArray(v) && v.length === 0)) parts.push(`${label}=${Array.isArray(v) ? v.join(',') : String(v)}`);
  };
  add('rule', 'rule');
  add('sqlstate', 'sqlstate');
  add('tables', 'tables');
  add('approval', 'approvalId');
  add('reviewer', 'reviewer');
  add('reason', 'reason');
  add('wait_ms', 'waitMs');
  add('rows', 'rowsReturned');
  add('affected', 'rowsAffected');
  add('ms', 'durationMs');
  add('of', 'decisionSeq');
  add('version', 'version');
  add('trigger', 'trigger');
  if (typeof e.statements === 'number') parts.push(`requests=${e.statements}`);
  return parts.join(' ');
}

/** One line per entry: every field but the layout comes from the entry, whose text a client chose. */
export function formatEntry(rec: StoredRecord): string {
  const e = parseEntry(rec);
  if (!e) return `?? unreadable entry at ${rec.where}`;
  const sql = statementList(e).map((s) => s.text).join(' ; ');
  const fields = [e.ts ?? '', (e.type ?? '?').padEnd(19), who(e), details(e), sql].filter((x) => x !== '');
  return terminalSafe(`${fields.join('  ')}  [${e.chain ?? '?'}#${e.seq ?? '?'}]`);
}

export const CSV_COLUMNS = [
  'ts', 'type', 'chain', 'seq', 'user', 'database', 'application', 'client', 'session',
  'rule', 'sqlstate', 'tables', 'statements', 'fingerprints', 'reviewer', 'reason', 'approval_id',
  'wait_ms', 'rows_returned', 'rows_affected', 'duration_ms', 'rules_version', 'hash',
] as const;

function csvCell(v: unknown): string {
  if (v === undefined || v === null) return '';
  const s = Array.isArray(v) ? v.join(';') : String(v);
  // Quote every cell that needs it (RFC 4180); a leading =,+,-,@ is neutralised so a
  // spreadsheet never evaluates a table or rule name as a formula.
  const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return /[",\r\n]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

export function csvHeader(): string {
  return CSV_COLUMNS.join(',');
}

export function csvRow(rec: StoredRecord): string {
  const e = parseEntry(rec) ?? {};
  const s = e.session;
  const row: Record<(typeof CSV_COLUMNS)[number], unknown> = {
    ts: e.ts,
    type: e.type,
    chain: e.chain,
    seq: e.seq,
    user: s?.user ?? e.user,
    database: s?.database ?? e.database,
    application: s?.application,
    client: s?.client,
    session: s?.id,
    rule: e.rule,
    sqlstate: field(e, 'sqlstate'),
    tables: e.tables,
    statements: typeof e.statements === 'number' ? e.statements : statementList(e).map((x) => x.text),
    fingerprints: Array.isArray(e.statements) ? e.statements.map((x) => x.fingerprint) : e.fingerprint,
    reviewer: e.reviewer,
    reason: e.reason,
    approval_id: e.approvalId,
    wait_ms: e.waitMs,
    rows_returned: field(e, 'rowsReturned'),
    rows_affected: field(e, 'rowsAffected'),
    duration_ms: field(e, 'durationMs'),
    rules_version: e.rulesVersion ?? e.version,
    hash: e.hmac,
  };
  return CSV_COLUMNS.map((c) => csvCell(row[c])).join(',');
}
