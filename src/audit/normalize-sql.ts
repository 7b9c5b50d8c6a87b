import { createHash } from 'node:crypto';
import { scanSync } from 'libpg-query';
import { literalKey } from '../classify/literal-key.js';
import { Lru } from '../classify/lru.js';
import type { StatementRef } from './events.js';

/**
 * SQL text → what the audit log may keep of it: every constant replaced by a $n placeholder
 * (numbered after the statement's own parameters), comments dropped, whitespace collapsed; plus
 * a fingerprint that groups the same statement across literal values.
 *
 * Tokens come from PostgreSQL's own lexer (libpg-query scanSync), so every kind of constant is
 * found: '...', E'...', U&'...', B'...', X'...', $tag$...$tag$, numbers. libpg-query's
 * normalize() is not used: it keeps literals inside DDL and utility statements (column
 * defaults, COMMENT ON, CREATE SERVER options, COPY file names, PREPARE bodies), and those must
 * not reach the audit log either. Identifiers (table, column, alias names) are kept.
 *
 * Text the lexer rejects (an unterminated quote) is not stored at all: only its length.
 * The parser must be loaded (loadParser()) first.
 */
const STRING_CONST = /^(?:[eEbBxXnN]|[uU]&)?'/;
const DOLLAR_CONST = /^\$(?:[A-Za-z_\x80-\uffff][A-Za-z_0-9\x80-\uffff]*)?\$/;
const NUMBER_CONST = /^(?:[0-9]|\.[0-9])/;
const PARAM = /^\$([0-9]+)$/;
const COMMENT = /^(?:--|\/\*)/;

interface ScanToken {
  start: number;
  end: number;
  text: string;
}

export function normalizeSql(sql: string): StatementRef {
  let tokens: ScanToken[];
  try {
    tokens = scanSync(sql).tokens as ScanToken[];
  } catch {
    return { text: `<statement the lexer rejects: ${Buffer.byteLength(sql)} bytes>`, fingerprint: 'unscannable' };
  }
  let maxParam = 0;
  for (const t of tokens) {
    const m = PARAM.exec(t.text);
    if (m) maxParam = Math.max(maxParam, Number(m[1]));
  }
  let out = '';
  let lastEnd = -1;
  let next = maxParam;
  for (const t of tokens) {
    if (COMMENT.test(t.text)) continue;
    if (lastEnd >= 0 && t.start > lastEnd) out += ' ';
    lastEnd = t.end;
    out += STRING_CONST.test(t.text) || DOLLAR_CONST.test(t.text) || NUMBER_CONST.test(t.text) ? `$${++next}` : t.text;
  }
  // A hash of the normalized text, not libpg_query's fingerprint: that one keeps some values
  // (ALTER ROLE ... PASSWORD, COMMENT ON, COPY file names) and would let a reader of the log
  // confirm a guessed password. The normalized text holds no constant, so neither does this.
  const fingerprint = createHash('sha256').update(out).digest('hex').slice(0, 16);
  return { text: out, fingerprint };
}

/**
 * normalizeSql with two caches: by exact text (prepared statements, repeated queries) and by
 * literal key (simple-protocol traffic with inline values: texts that differ only in simple
 * literals share one key, and the lexer sees the same tokens for all of them, so they normalize
 * to the same text and fingerprint).
 */
export class SqlNormalizer {
  private readonly byText: Lru<string, StatementRef>;
  private readonly byKey: Lru<string, StatementRef>;

  constructor(capacity = 4096) {
    this.byText = new Lru(capacity);
    this.byKey = new Lru(capacity);
  }

  normalize(sql: string): StatementRef {
    const hit = this.byText.get(sql);
    if (hit) return hit;
    const key = literalKey(sql);
    if (key !== null) {
      const byKey = this.byKey.get(key);
      if (byKey) return byKey;
    }
    const result = normalizeSql(sql);
    if (key !== null) this.byKey.set(key, result);
    else this.byText.set(sql, result);
    return result;
  }
}
