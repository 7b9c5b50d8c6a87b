import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, runOk, type RunResult } from '../helpers/spawn.js';

/**
 * The built CLI as a DBA uses it: `pgwarden explain` shows which rule decides, as JSON, and
 * `pgwarden rules check` validates a rules directory, listing every problem with file and path.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');

interface ExplainOutput {
  rulesVersion: string;
  decision: { action: string; rule: string; reason: string };
  statements: { statement: { kind: string; functions: string[] }; verdict: { action: string; rule: string } }[];
  error?: { code: string; message: string };
}

let badDir: string;

function cli(args: string[]): Promise<RunResult> {
  return run(process.execPath, [CLI, ...args], { cwd: ROOT, timeoutMs: 30_000 });
}

async function explain(sql: string, extra: string[] = []): Promise<ExplainOutput> {
  const r = await cli(['explain', ...extra, sql]);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as ExplainOutput;
}

beforeAll(async () => {
  // `npm test` builds dist first; a bare `vitest run` may find it missing.
  if (!existsSync(CLI)) await runOk('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, timeoutMs: 120_000 });
  badDir = mkdtempSync(path.join(tmpdir(), 'pgw-badrules-'));
  writeFileSync(path.join(badDir, 'a.yaml'), 'policy:\n  rules:\n    - name: x\n      match: { bogus: 1 }\n      action: deny\n');
  writeFileSync(path.join(badDir, 'b.yml'), 'policy:\n  default: permit\n  extra: 1\n');
  writeFileSync(path.join(badDir, 'c.yaml'), 'policy:\n  rules:\n    - name: ok\n      match: { kind: [ddl] }\n      action: review\n');
  writeFileSync(path.join(badDir, 'd.yaml'), 'policy:\n  rules:\n    - name: ok\n      match: { kind: [ddl] }\n      action: deny\n');
}, 150_000);

afterAll(() => {
  if (badDir) rmSync(badDir, { recursive: true, force: true });
});

describe('pgwarden explain', () => {
  it('shows DROP TABLE needing review by rule schema-changes', async () => {
    const out = await explain('DROP TABLE t');
    expect(out.decision.action).toBe('review');
    expect(out.decision.rule).toBe('schema-changes');
    expect(out.statements).toHaveLength(1);
    expect(out.statements[0]?.statement.kind).toBe('ddl');
    expect(out.rulesVersion).toMatch(/^[0-9a-f]{12}$/);
  });

  it("shows SELECT pg_read_file('x') denied by rule server-files-and-network", async () => {
    const out = await explain("SELECT pg_read_file('x')");
    expect(out.decision.action).toBe('deny');
    expect(out.decision.rule).toBe('server-files-and-network');
    expect(out.statements[0]?.statement.functions).toEqual(['pg_read_file']);
  });

  it('shows an ordinary read allowed by default', async () => {
    const out = await explain('SELECT id FROM t WHERE id = 1');
    expect(out.decision.action).toBe('allow');
    expect(out.decision.rule).toBe('default');
  });

  it('shows the strictest verdict of a multi-statement string', async () => {
    const out = await explain("SELECT 1; DROP TABLE t; SELECT pg_read_file('x')");
    expect(out.decision.action).toBe('deny');
    expect(out.decision.rule).toBe('server-files-and-network');
    expect(out.statements.map((s) => s.verdict.action)).toEqual(['allow', 'review', 'deny']);
  });

  it('shows a syntax error as a parse-error denial with SQLSTATE 42601', async () => {
    const out = await explain('SELEC 1');
    expect(out.decision.action).toBe('deny');
    expect(out.decision.rule).toBe('parse-error');
    expect(out.error?.code).toBe('42601');
    expect(out.error?.message).toBe('syntax error at or near "SELEC"');
  });

  it('uses the rules directory given with --rules', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pgw-explain-rules-'));
    try {
      writeFileSync(path.join(dir, 'policy.yaml'), 'policy:\n  rules:\n    - name: no-ddl\n      match: { kind: [ddl] }\n      action: deny\n');
      const out = await explain('DROP TABLE t', ['--rules', dir]);
      expect(out.decision.action).toBe('deny');
      expect(out.decision.rule).toBe('no-ddl');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('exits 1 listing the problems when the rules are invalid', async () => {
    const r = await cli(['explain', '--rules', badDir, 'SELECT 1']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('a.yaml: policy.rules.0.match: Unrecognized key: "bogus"');
  });
});

describe('pgwarden rules check', () => {
  it('exits 0 for the shipped rules', async () => {
    const r = await cli(['rules', 'check', 'rules']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^rules: 2 file\(s\), \d+ rule\(s\), version [0-9a-f]{12}: OK\n$/);
  });

  it('exits 1 and prints every problem with its file name and path', async () => {
    const r = await cli(['rules', 'check', badDir]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines).toEqual([
      'a.yaml: policy.rules.0.match: Unrecognized key: "bogus"',
      'b.yml: policy.default: Invalid option: expected one of "allow"|"review"|"deny"',
      'b.yml: policy: Unrecognized key: "extra"',
      'd.yaml: policy.rules.0.name: rule "ok" is already defined in c.yaml',
      '4 problem(s); rules not valid',
    ]);
  });

  it('reports a YAML syntax error with the file name and the line it is on', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pgw-yamlerr-'));
    try {
      writeFileSync(path.join(dir, 'broken.yaml'), 'policy:\n  default: allow\n  rules: [\n    { name: x\n');
      const r = await cli(['rules', 'check', dir]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^broken\.yaml: line [1-9]\d*: \S/m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
