import { compileGlob, type Glob } from '../policy/glob.js';
import type { maskingEntrySchema, maskStrategySchema } from '../policy/rules-schema.js';
import type { z } from 'zod';
import type { MaskStrategy } from './strategies.js';

/**
 * The masking rules of one rules snapshot: which columns of which tables are PII, how each is
 * shown, and who is exempt. Tables are named exactly (schema.table); a table of the same name in
 * another schema is masked only when the rules name it too.
 */
export interface MaskedTable {
  schema: string;
  table: string;
  /** column name (as stored) → strategy */
  columns: ReadonlyMap<string, MaskStrategy>;
  exempt: readonly Glob[];
}

export interface MaskRules {
  /** "schema.table" → its masked columns */
  tables: ReadonlyMap<string, MaskedTable>;
  /** Every masked column name, of any table (lineage of expressions goes by name). */
  columnNames: ReadonlySet<string>;
}

export const NO_MASKING: MaskRules = Object.freeze({ tables: new Map(), columnNames: new Set<string>() });

export const DEFAULT_REDACTION = '***';

/** Redaction with the default text: what a value pgwarden cannot show partially becomes. */
export const REDACT: MaskStrategy = Object.freeze({ kind: 'redact', text: DEFAULT_REDACTION });

export function toStrategy(s: z.infer<typeof maskStrategySchema>): MaskStrategy {
  if (typeof s === 'string') {
    if (s === 'redact') return { kind: 'redact', text: DEFAULT_REDACTION };
    return { kind: s };
  }
  switch (s.strategy) {
    case 'redact':
      return { kind: 'redact', text: s.text ?? DEFAULT_REDACTION };
    case 'keep_first':
    case 'keep_last':
      return { kind: s.strategy, count: s.count };
    case 'fixed':
      return { kind: 'fixed', value: s.value };
    default:
      return { kind: s.strategy };
  }
}

/** Merges the masking entries of all rule files; returns problems for tables listed twice. */
export function compileMasking(entries: { entry: z.infer<typeof maskingEntrySchema>; file: string; index: number }[]): { rules: MaskRules; problems: { file: string; path: string; message: string }[] } {
  const tables = new Map<string, MaskedTable>();
  const where = new Map<string, string>();
  const columnNames = new Set<string>();
  const problems: { file: string; path: string; message: string }[] = [];
  for (const { entry, file, index } of entries) {
    const dot = entry.table.indexOf('.');
    const schema = entry.table.slice(0, dot);
    const table = entry.table.slice(dot + 1);
    const key = `${schema}.${table}`;
    const prev = where.get(key);
    if (prev !== undefined) {
      problems.push({ file, path: `masking.${index}.table`, message: `${key} is already listed in ${prev}; list each table once` });
      continue;
    }
    where.set(key, file);
    const columns = new Map<string, MaskStrategy>();
    for (const [col, strategy] of Object.entries(entry.columns)) {
      columns.set(col, toStrategy(strategy));
      columnNames.add(col);
    }
    tables.set(key, { schema, table, columns, exempt: (entry.exempt ?? []).map(compileGlob) });
  }
  return { rules: { tables, columnNames }, problems };
}

/** The masked tables for `user` (exempt identities see raw values). */
export function maskedFor(rules: MaskRules, user: string): MaskedTable[] {
  const out: MaskedTable[] = [];
  for (const t of rules.tables.values()) if (!t.exempt.some((g) => g(user))) out.push(t);
  return out;
}
