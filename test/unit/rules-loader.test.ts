import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { compileRules, loadRules, RulesInvalid, type RuleProblem } from '../../src/policy/rules-loader.js';
import { RulesStore } from '../../src/policy/rules-store.js';

/** Validation and merging of rule files, and the store that reloads them. */
const SHIPPED_RULES = fileURLToPath(new URL('../../rules', import.meta.url));

type Doc = { file: string; text: string };

/** The problems compileRules reports, or a failure when it accepts the documents. */
function problemsOf(docs: Doc[]): RuleProblem[] {
  try {
    compileRules(docs);
  } catch (err) {
    if (err instanceof RulesInvalid) return err.problems;
    throw err;
  }
  throw new Error('expected the rules to be rejected');
}

const rule = (name: string, action = 'deny', kind = 'ddl') => `    - name: ${name}\n      match: { kind: [${kind}] }\n      action: ${action}\n`;

describe('compileRules: merging documents', () => {
  it('merges the rules of several documents in the given order, each with its source', () => {
    const policy = compileRules([
      { file: '/etc/pgwarden/rules/10-base.yaml', text: `policy:\n  default: review\n  rules:\n${rule('a')}${rule('b', 'review')}` },
      { file: '/etc/pgwarden/rules/20-more.yaml', text: `policy:\n  rules:\n${rule('c', 'allow', 'read')}` },
    ]);
    expect(policy.rules.map((r) => r.name)).toEqual(['a', 'b', 'c']);
    expect(policy.rules.map((r) => r.source)).toEqual(['10-base.yaml policy.rules.0', '10-base.yaml policy.rules.1', '20-more.yaml policy.rules.0']);
    expect(policy.default).toBe('review');
    expect(policy.files).toEqual(['10-base.yaml', '20-more.yaml']);
  });

  it('keeps built-in defaults for settings no document sets', () => {
    const policy = compileRules([{ file: 'a.yaml', text: `policy:\n  rules:\n${rule('a')}` }]);
    expect(policy.default).toBe('allow');
    expect(policy.unanalysable).toBe('review');
    expect(policy.fastpath).toBe('deny');
    expect(policy.sensitive.rowCap).toBeNull();
  });

  it('rejects an empty or comment-only file (what an in-place save leaves mid-write)', () => {
    expect(problemsOf([{ file: 'empty.yaml', text: '' }])).toEqual([expect.objectContaining({ file: 'empty.yaml' })]);
    expect(problemsOf([{ file: 'c.yaml', text: '# nothing yet\n\n' }])).toEqual([expect.objectContaining({ file: 'c.yaml' })]);
  });

  it('collects sensitive tables from every document', () => {
    const policy = compileRules([
      { file: 'a.yaml', text: 'sensitive:\n  tables: [public.customers]\n  row_threshold: 500\n' },
      { file: 'b.yaml', text: 'sensitive:\n  tables: [hr.*]\n  row_cap: 50\n' },
    ]);
    expect(policy.sensitive.tables).toHaveLength(2);
    expect(policy.sensitive.rowThreshold).toBe(500);
    expect(policy.sensitive.rowCap).toBe(50);
  });

  it('rejects a rule name defined in two files, naming both', () => {
    const problems = problemsOf([
      { file: 'a.yaml', text: `policy:\n  rules:\n${rule('same')}` },
      { file: 'b.yaml', text: `policy:\n  rules:\n${rule('other')}${rule('same', 'review')}` },
    ]);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ file: 'b.yaml', path: 'policy.rules.1.name' });
    expect(problems[0]?.message).toContain('a.yaml');
  });

  it('rejects a rule name defined twice in one file', () => {
    const problems = problemsOf([{ file: 'a.yaml', text: `policy:\n  rules:\n${rule('same')}${rule('same')}` }]);
    expect(problems.map((p) => p.path)).toEqual(['policy.rules.1.name']);
  });

  it.each([
    ['policy.default', 'policy:\n  default: allow\n', 'policy:\n  default: deny\n'],
    ['policy.unanalysable', 'policy:\n  unanalysable: review\n', 'policy:\n  unanalysable: deny\n'],
    ['policy.fastpath', 'policy:\n  fastpath: deny\n', 'policy:\n  fastpath: deny\n'],
    ['sensitive.row_threshold', 'sensitive:\n  row_threshold: 10\n', 'sensitive:\n  row_threshold: 20\n'],
    ['sensitive.row_cap', 'sensitive:\n  row_cap: 10\n', 'sensitive:\n  row_cap: 10\n'],
  ])('rejects %s set in two files, even to the same value', (key, first, second) => {
    const problems = problemsOf([
      { file: 'a.yaml', text: first },
      { file: 'b.yaml', text: second },
    ]);
    expect(problems).toHaveLength(1);
    expect(problems[0]?.path).toBe(key);
    expect(path.basename(problems[0]!.file)).toBe('b.yaml');
    expect(problems[0]?.message).toContain('a.yaml');
  });

  it('reports every problem of every file, not only the first', () => {
    const problems = problemsOf([
      { file: 'a.yaml', text: 'policy:\n  defualt: allow\n' },
      { file: 'b.yaml', text: 'policy:\n  rules:\n    - name: x\n      match: { kind: [nonsense] }\n      action: maybe\n' },
    ]);
    expect(problems.filter((p) => p.file === 'a.yaml')).toHaveLength(1);
    expect(problems.filter((p) => p.file === 'b.yaml').map((p) => p.path).sort()).toEqual(['policy.rules.0.action', 'policy.rules.0.match.kind.0']);
  });

  it('applies nothing when any document is invalid', () => {
    expect(() =>
      compileRules([
        { file: 'a.yaml', text: `policy:\n  rules:\n${rule('fine')}` },
        { file: 'b.yaml', text: 'policy: [' },
      ]),
    ).toThrow(RulesInvalid);
  });
});

describe('compileRules: unknown keys are rejected with file and path', () => {
  it.each([
    ['at the top level', 'polcy: {}\n', '(top level)', 'polcy'],
    ['in policy', 'policy:\n  defualt: allow\n', 'policy', 'defualt'],
    ['in a rule', `policy:\n  rules:\n    - name: r\n      match: { kind: [ddl] }\n      action: deny\n      severity: high\n`, 'policy.rules.0', 'severity'],
    ['in a match', 'policy:\n  rules:\n    - name: r\n      match: { kinds: [ddl] }\n      action: deny\n', 'policy.rules.0.match', 'kinds'],
    ['in except (kind is not an identity condition)', 'policy:\n  rules:\n    - name: r\n      match: { kind: [ddl] }\n      except: { kind: [ddl] }\n      action: deny\n', 'policy.rules.0.except', 'kind'],
    ['in sensitive', 'sensitive:\n  tables: []\n  bogus: 1\n', 'sensitive', 'bogus'],
  ])('rejects an unknown key %s', (_where, text, expectedPath, key) => {
    const problems = problemsOf([{ file: '/rules/site.yaml', text }]);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ file: 'site.yaml', path: expectedPath });
    expect(problems[0]?.message).toContain(key);
  });

  it('rejects invalid values with the path of the value', () => {
    const problems = problemsOf([{ file: 'a.yaml', text: 'policy:\n  rules:\n    - name: "bad name!"\n      match: { relations: [] }\n      action: deny\n' }]);
    expect(problems.map((p) => p.path).sort()).toEqual(['policy.rules.0.match.relations', 'policy.rules.0.name']);
  });

  it('rejects a document that is not a mapping', () => {
    expect(problemsOf([{ file: 'a.yaml', text: '- 1\n- 2\n' }])[0]).toMatchObject({ file: 'a.yaml', path: '(top level)' });
  });
});

describe('compileRules: YAML syntax', () => {
  it('reports a YAML syntax error with its file', () => {
    const problems = problemsOf([
      { file: 'good.yaml', text: `policy:\n  rules:\n${rule('a')}` },
      { file: 'broken.yaml', text: 'policy:\n  rules: [\n' },
    ]);
    expect(problems.length).toBeGreaterThan(0);
    expect(problems.every((p) => p.file === 'broken.yaml')).toBe(true);
  });

  it('reports the line of a YAML syntax error', () => {
    const problems = problemsOf([{ file: 'broken.yaml', text: 'policy:\n  default: allow\n  rules: [\n' }]);
    expect(problems[0]?.path).toMatch(/^line \d+$/);
  });

  it('rejects duplicate keys in a mapping', () => {
    const problems = problemsOf([{ file: 'dup.yaml', text: 'policy:\n  default: allow\n  default: deny\n' }]);
    expect(problems).toHaveLength(1);
    expect(problems[0]?.file).toBe('dup.yaml');
  });

  it('rejects duplicate keys inside a rule', () => {
    const problems = problemsOf([{ file: 'dup.yaml', text: 'policy:\n  rules:\n    - name: r\n      action: allow\n      match: { kind: [read] }\n      action: deny\n' }]);
    expect(problems).toHaveLength(1);
  });
});

describe('compileRules: version', () => {
  const docs: Doc[] = [
    { file: 'a.yaml', text: `policy:\n  rules:\n${rule('a')}` },
    { file: 'b.yaml', text: `policy:\n  rules:\n${rule('b', 'review')}` },
  ];

  it('gives the same version for the same contents', () => {
    expect(compileRules(docs).version).toBe(compileRules(docs.map((d) => ({ ...d }))).version);
  });

  it('ignores the directory part of file names', () => {
    expect(compileRules(docs).version).toBe(compileRules(docs.map((d) => ({ ...d, file: `/other/dir/${d.file}` }))).version);
  });

  it('changes the version when any byte of any file changes', () => {
    const base = compileRules(docs).version;
    expect(compileRules([docs[0]!, { file: 'b.yaml', text: `${docs[1]!.text}\n` }]).version).not.toBe(base);
    expect(compileRules([docs[0]!, { file: 'b.yaml', text: docs[1]!.text.replace('review', 'deny') }]).version).not.toBe(base);
  });

  it('changes the version when a file is renamed or content moves between files', () => {
    const base = compileRules(docs).version;
    expect(compileRules([docs[0]!, { file: 'c.yaml', text: docs[1]!.text }]).version).not.toBe(base);
    const moved = [
      { file: 'a.yaml', text: docs[0]!.text + docs[1]!.text.replace('policy:\n  rules:\n', '') },
      { file: 'b.yaml', text: 'sensitive: {}\n' },
    ];
    expect(compileRules(moved).rules.map((r) => r.name)).toEqual(['a', 'b']);
    expect(compileRules(moved).version).not.toBe(base);
  });
});

describe('loadRules: the shipped rules', () => {
  it('loads the shipped rules/ directory with no problems', () => {
    const policy = loadRules(SHIPPED_RULES);
    expect(policy.files).toEqual(readdirSync(SHIPPED_RULES).filter((f) => /\.ya?ml$/.test(f)).sort());
    expect(policy.rules.length).toBeGreaterThan(0);
    expect(policy.version).toMatch(/^[0-9a-f]{12}$/);
  });

  it('ships safe defaults: unanalysable review, fastpath deny', () => {
    const policy = loadRules(SHIPPED_RULES);
    expect(policy.unanalysable).toBe('review');
    expect(policy.fastpath).toBe('deny');
  });

  it('reports a missing directory as a problem, not a crash', () => {
    try {
      loadRules(path.join(os.tmpdir(), 'pgwarden-no-such-dir-7f3a'));
      expect.unreachable('a missing directory must be rejected');
    } catch (err) {
      expect(err).toBeInstanceOf(RulesInvalid);
      expect((err as RulesInvalid).problems[0]?.path).toBe('(directory)');
    }
  });
});

describe('RulesStore', () => {
  let dir: string;
  let events: Record<string, unknown>[];
  let store: RulesStore | null;

  const capture = () =>
    pino({ level: 'info' }, {
      write(line: string) {
        events.push(JSON.parse(line) as Record<string, unknown>);
      },
    });

  const write = (name: string, text: string) => writeFileSync(path.join(dir, name), text);

  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-rules-'));
    events = [];
    store = null;
    write('policy.yaml', `policy:\n  default: allow\n  rules:\n${rule('first')}`);
  });

  afterEach(() => {
    store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses to start with invalid rules', () => {
    write('policy.yaml', 'policy: {nope: 1}\n');
    expect(() => new RulesStore(dir, capture())).toThrow(RulesInvalid);
  });

  it('swaps the snapshot on reload() after a valid edit and notifies listeners', () => {
    store = new RulesStore(dir, capture());
    const before = store.current;
    const seen: string[] = [];
    store.onChange((p) => seen.push(p.version));
    write('policy.yaml', `policy:\n  default: deny\n  rules:\n${rule('first')}${rule('second', 'review')}`);
    expect(store.reload('test')).toBe(true);
    expect(store.current).not.toBe(before);
    expect(store.current.version).not.toBe(before.version);
    expect(store.current.default).toBe('deny');
    expect(store.current.rules.map((r) => r.name)).toEqual(['first', 'second']);
    expect(seen).toEqual([store.current.version]);
    // The old snapshot is untouched: a request judged with it sees consistent rules.
    expect(before.default).toBe('allow');
    expect(before.rules.map((r) => r.name)).toEqual(['first']);
  });

  it('returns false from reload() when nothing changed', () => {
    store = new RulesStore(dir, capture());
    const before = store.current;
    expect(store.reload('test')).toBe(false);
    expect(store.current).toBe(before);
  });

  it('keeps the previous snapshot after an invalid edit, returns false and logs every problem', () => {
    store = new RulesStore(dir, capture());
    const before = store.current;
    write('policy.yaml', 'policy:\n  default: sometimes\n  rulez: []\n');
    expect(store.reload('test')).toBe(false);
    expect(store.current).toBe(before);
    const rejected = events.find((e) => e.event === 'rules-rejected');
    expect(rejected).toBeDefined();
    expect(rejected?.problems).toHaveLength(2);
  });

  it('keeps the previous snapshot when a new file duplicates a rule name', () => {
    store = new RulesStore(dir, capture());
    const before = store.current;
    write('zz-extra.yaml', `policy:\n  rules:\n${rule('first', 'allow', 'read')}`);
    expect(store.reload('test')).toBe(false);
    expect(store.current).toBe(before);
  });

  it('recovers when the invalid edit is fixed', () => {
    store = new RulesStore(dir, capture());
    write('policy.yaml', 'policy: [');
    expect(store.reload('test')).toBe(false);
    write('policy.yaml', `policy:\n  default: review\n  rules:\n${rule('first')}`);
    expect(store.reload('test')).toBe(true);
    expect(store.current.default).toBe('review');
  });

  it('ignores files that are not YAML or are hidden', () => {
    store = new RulesStore(dir, capture());
    const before = store.current.version;
    write('notes.txt', 'not rules');
    write('.policy.yaml.swp', 'policy: [');
    expect(store.reload('test')).toBe(false);
    expect(store.current.version).toBe(before);
  });

  it('watch() picks up a file change within about a second', async () => {
    store = new RulesStore(dir, capture());
    store.watch(50);
    const before = store.current.version;
    write('policy.yaml', `policy:\n  default: review\n  rules:\n${rule('first')}`);
    const deadline = Date.now() + 1500;
    while (store.current.version === before && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    expect(store.current.version).not.toBe(before);
    expect(store.current.default).toBe('review');
  });

  it('watch() keeps the previous rules when the changed file is invalid', async () => {
    store = new RulesStore(dir, capture());
    store.watch(50);
    const before = store.current;
    write('policy.yaml', 'policy: {default: nope}\n');
    const deadline = Date.now() + 1500;
    while (!events.some((e) => e.event === 'rules-rejected') && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    expect(events.some((e) => e.event === 'rules-rejected')).toBe(true);
    expect(store.current).toBe(before);
  });
});

describe('agents', () => {
  const agent = (scram: string) => `agents:\n  - name: bot\n    scram: "${scram}"\n    role: app_ro\n`;

  it('accepts a verifier the login can use, and rejects one it could not (short key, bad base64)', () => {
    const good = 'SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$' + Buffer.alloc(32, 1).toString('base64') + ':' + Buffer.alloc(32, 2).toString('base64');
    expect(compileRules([{ file: 'a.yaml', text: agent(good) }]).agents.get('bot')?.role).toBe('app_ro');
    const short = good.replace(/\$[^$]*$/, '$' + Buffer.alloc(16, 1).toString('base64') + ':' + Buffer.alloc(32, 2).toString('base64'));
    expect(problemsOf([{ file: 'a.yaml', text: agent(short) }])).toEqual([
      { file: 'a.yaml', path: 'agents.0.scram', message: 'malformed SCRAM verifier: StoredKey must be 32 bytes in base64' },
    ]);
    expect(problemsOf([{ file: 'a.yaml', text: agent('SCRAM-SHA-256$4096:!!!$a:b') }])[0]?.path).toBe('agents.0.scram');
  });
});
