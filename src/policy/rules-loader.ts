import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import { compileMasking } from '../masking/mask-rules.js';
import { compileAgent, compileNamePattern, compileRule, emptyPolicy, type AgentEntry, type Policy } from './policy.js';
import { rulesFileSchema } from './rules-schema.js';

/**
 * Reads and validates every `*.yaml` / `*.yml` file of a rules directory into one Policy.
 * Pure apart from reading the files. Every problem is reported, each with its file and the path
 * inside the document; nothing is partially applied.
 */
export interface RuleProblem {
  file: string;
  path: string;
  message: string;
}

export class RulesInvalid extends Error {
  override readonly name = 'RulesInvalid';
  constructor(readonly problems: RuleProblem[]) {
    super(`invalid rules:\n${problems.map((p) => `  ${p.file}: ${p.path}: ${p.message}`).join('\n')}`);
  }
}

export function listRuleFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f) && !f.startsWith('.'))
    .sort()
    .map((f) => path.join(dir, f));
}

export function loadRules(dir: string): Policy {
  let files: string[];
  try {
    files = listRuleFiles(dir);
  } catch (err) {
    throw new RulesInvalid([{ file: dir, path: '(directory)', message: (err as Error).message }]);
  }
  const texts = files.map((f) => ({ file: f, text: readFileSync(f, 'utf8') }));
  return compileRules(texts);
}

/** Validates and merges rule documents (file name → YAML text) in the given order. */
export function compileRules(docs: { file: string; text: string }[]): Policy {
  const problems: RuleProblem[] = [];
  const policy = emptyPolicy();
  const hash = createHash('sha256');
  const definedIn = new Map<string, string>();
  const names = new Map<string, string>();
  let rowThreshold: number | undefined;
  const masking: Parameters<typeof compileMasking>[0] = [];
  let rowCap: number | undefined;
  const agents = new Map<string, AgentEntry>();

  const setOnce = (key: string, file: string, apply: () => void) => {
    const prev = definedIn.get(key);
    if (prev !== undefined) {
      problems.push({ file: path.basename(file), path: key, message: `already set in ${path.basename(prev)}; set it in one file only` });
      return;
    }
    definedIn.set(key, file);
    apply();
  };

  for (const { file, text } of docs) {
    const base = path.basename(file);
    hash.update(base).update('\0').update(text).update('\0');
    // An empty file is what an in-place save leaves between truncating and writing: loading it
    // would silently drop that file's rules. To remove rules, delete the file (atomic).
    if (/^\s*$/.test(text.replace(/^\s*#.*$/gm, ''))) {
      problems.push({ file: base, path: '(file)', message: 'file is empty; delete it to remove its rules' });
      continue;
    }
    const lineCounter = new LineCounter();
    const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false, lineCounter });
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        problems.push({ file: base, path: `line ${lineCounter.linePos(e.pos[0]).line}`, message: e.message.split('\n')[0]! });
      }
      continue;
    }
    const parsed = rulesFileSchema.safeParse(doc.toJS() ?? {});
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        problems.push({ file: base, path: issue.path.join('.') || '(top level)', message: issue.message });
      }
      continue;
    }
    const data = parsed.data;
    const p = data.policy;
    if (p?.default !== undefined) setOnce('policy.default', file, () => (policy.default = p.default!));
    if (p?.unanalysable !== undefined) setOnce('policy.unanalysable', file, () => (policy.unanalysable = p.unanalysable!));
    if (p?.fastpath !== undefined) setOnce('policy.fastpath', file, () => (policy.fastpath = p.fastpath!));
    if (p?.masked_copy !== undefined) setOnce('policy.masked_copy', file, () => (policy.maskedCopy = p.masked_copy!));
    (data.masking ?? []).forEach((entry, index) => masking.push({ entry, file: base, index }));
    (data.agents ?? []).forEach((a, i) => {
      if (agents.has(a.name)) {
        problems.push({ file: base, path: `agents.${i}.name`, message: `agent "${a.name}" is already defined` });
        return;
      }
      agents.set(a.name, compileAgent(a));
    });
    (p?.rules ?? []).forEach((rule, i) => {
      const prev = names.get(rule.name);
      if (prev !== undefined) {
        problems.push({ file: base, path: `policy.rules.${i}.name`, message: `rule "${rule.name}" is already defined in ${prev}` });
        return;
      }
      names.set(rule.name, base);
      policy.rules.push(compileRule(rule, `${base} policy.rules.${i}`));
    });
    const s = data.sensitive;
    for (const t of s?.tables ?? []) policy.sensitive.tables.push(compileNamePattern(t));
    if (s?.row_threshold !== undefined) setOnce('sensitive.row_threshold', file, () => (rowThreshold = s.row_threshold));
    if (s?.row_cap !== undefined) setOnce('sensitive.row_cap', file, () => (rowCap = s.row_cap));
  }
  const compiledMasking = compileMasking(masking);
  problems.push(...compiledMasking.problems);
  if (problems.length > 0) throw new RulesInvalid(problems);
  policy.masking = compiledMasking.rules;
  policy.agents = agents;
  if (rowThreshold !== undefined) policy.sensitive.rowThreshold = rowThreshold;
  policy.sensitive.rowCap = rowCap ?? null;
  policy.version = hash.digest('hex').slice(0, 12);
  policy.files = docs.map((d) => path.basename(d.file));
  return policy;
}
