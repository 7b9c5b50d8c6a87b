import { expect } from 'vitest';
import { classifyUncached } from '../../src/classify/classifier.js';
import type { StatementInfo } from '../../src/classify/statement-info.js';

/** Classifies SQL that must parse (call loadParser() in beforeAll first). */
export function statements(sql: string): StatementInfo[] {
  const r = classifyUncached(sql);
  if (!r.ok) throw new Error(`expected ${JSON.stringify(sql)} to parse, got: ${r.message}`);
  return r.statements;
}

/** The one statement SQL holds. */
export function one(sql: string): StatementInfo {
  const list = statements(sql);
  expect(list, sql).toHaveLength(1);
  return list[0]!;
}
