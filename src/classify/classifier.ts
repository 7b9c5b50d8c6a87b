import { loadModule, parseSync } from 'libpg-query';
import { classifyStatement } from './classify-statement.js';
import { literalKey } from './literal-key.js';
import { Lru } from './lru.js';
import type { ClassifyResult } from './statement-info.js';

/**
 * SQL text → classification of each statement, with PostgreSQL's own parser (libpg-query,
 * WASM). Results are cached by exact SQL text: never by fingerprint, which maps different
 * tables, roles and settings to one value (DESIGN.md "Decisions already made"). Classification
 * does not depend on the rules, so the cache survives rule reloads.
 */
let loaded: Promise<void> | null = null;

/** Loads the parser once per process; call before the first classify(). */
export function loadParser(): Promise<void> {
  loaded ??= loadModule();
  return loaded;
}

interface ParseTree {
  stmts?: { stmt?: Record<string, unknown> }[];
}

interface SqlErrorLike {
  message: string;
  sqlDetails?: { cursorPosition?: number };
}

/**
 * Statement types whose classification cannot depend on a literal, provided it changes no
 * setting, names no prepared statement or cursor, calls no function and is fully analysable.
 * Utility statements are excluded on purpose: `EXPLAIN (ANALYZE 0)` and `(ANALYZE 1)` differ
 * only in a literal and one of them runs the statement.
 */
const LITERAL_INDEPENDENT_NODES = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt']);

function literalIndependent(result: ClassifyResult): boolean {
  return (
    result.ok &&
    result.statements.length > 0 &&
    result.statements.every(
      (s) =>
        LITERAL_INDEPENDENT_NODES.has(s.node) &&
        s.settings.length === 0 &&
        s.functions.length === 0 &&
        s.unanalysable.length === 0 &&
        s.defines === undefined &&
        s.uses === undefined,
    )
  );
}

export class Classifier {
  private readonly cache: Lru<string, ClassifyResult>;
  private readonly byLiteralKey: Lru<string, ClassifyResult>;

  constructor(cacheEntries = 10_000) {
    this.cache = new Lru(cacheEntries);
    this.byLiteralKey = new Lru(cacheEntries);
  }

  classify(sql: string): ClassifyResult {
    const hit = this.cache.get(sql);
    if (hit) return hit;
    const key = literalKey(sql);
    if (key !== null) {
      const shared = this.byLiteralKey.get(key);
      if (shared) return shared;
    }
    const result = classifyUncached(sql);
    this.cache.set(sql, result);
    if (key !== null && literalIndependent(result)) this.byLiteralKey.set(key, result);
    return result;
  }
}

export function classifyUncached(sql: string): ClassifyResult {
  // An empty query string is valid (the server answers EmptyQueryResponse); libpg-query refuses it.
  if (sql.trim() === '') return { ok: true, statements: [] };
  let tree: ParseTree;
  try {
    tree = parseSync(sql) as ParseTree;
  } catch (err) {
    const e = err as SqlErrorLike;
    const position = e.sqlDetails?.cursorPosition;
    return { ok: false, message: e.message, ...(position !== undefined ? { position: position + 1 } : {}) };
  }
  const statements = (tree.stmts ?? []).flatMap((s) => (s.stmt ? [classifyStatement(s.stmt)] : []));
  return { ok: true, statements };
}
