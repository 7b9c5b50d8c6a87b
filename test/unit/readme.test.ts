import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { pgError } from '../../src/protocol/pg-error.js';

/** The README is the user's manual: its links must lead somewhere and its commands must exist. */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const README = readFileSync(path.join(ROOT, 'README.md'), 'utf8');

/** The README without its code blocks (a `# comment` in YAML is not a heading). */
const prose = README.replace(/^```[\s\S]*?^```/gm, '');

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens. */
const slug = (heading: string): string =>
  heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/ /g, '-');

const headings = [...prose.matchAll(/^#{1,6} (.+)$/gm)].map((m) => m[1]!.trim());

describe('README', () => {
  it('every #anchor link names a heading', () => {
    const anchors = new Set(headings.map(slug));
    const links = [...prose.matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1]!);
    expect(links.length).toBeGreaterThan(10);
    for (const link of links) expect(anchors.has(link), `#${link}`).toBe(true);
  });

  it('every relative file link exists', () => {
    const links = [...prose.matchAll(/\]\((?!#|https?:)([^)#]+)(#[^)]*)?\)/g)].map((m) => m[1]!);
    expect(links).toContain('docs/benchmarks.md');
    for (const link of links) expect(existsSync(path.join(ROOT, link)), link).toBe(true);
  });

  it('is organised for operators, reviewers and DBAs, with an architecture section', () => {
    for (const h of ['Quick start: `npx pgwarden demo`', 'Run it', 'Test it', 'How it works', "For agents' operators", 'For reviewers', 'For DBAs', 'Configuration', 'Troubleshooting: errors an agent can receive']) {
      expect(headings).toContain(h);
    }
  });

  it('documents every command the CLI offers', () => {
    const help = execFileSync(process.execPath, [path.join(ROOT, 'dist/src/cli.js'), '--help'], { encoding: 'utf8' });
    const commands = [...help.split('Options for start')[0]!.matchAll(/^ {2}([a-z][a-z-]*(?: (?:check|reference|tail\|verify\|export))?)/gm)].map((m) => m[1]!);
    expect(commands).toEqual(expect.arrayContaining(['start', 'demo', 'explain', 'rules check', 'config check', 'audit tail|verify|export', 'approve', 'agent-secret']));
    for (const command of commands) {
      for (const word of command.split('|')) {
        const name = word.includes(' ') || word === command ? word : `audit ${word}`;
        expect(README, `pgwarden ${name}`).toContain(`pgwarden ${name}`);
      }
    }
  });

  it('the troubleshooting table lists every error pgwarden itself sends, with its SQLSTATE and severity', () => {
    const section = README.slice(README.indexOf('### Troubleshooting: errors an agent can receive'));
    const rows = section
      .slice(0, section.indexOf('\n\n', section.indexOf('| SQLSTATE')))
      .split('\n')
      .filter((l) => /^\| [0-9A-Z]{5} \|/.test(l));
    expect(rows.length).toBeGreaterThan(20);
    // Generic builders whose text comes from elsewhere (the parser, the guards): their callers' texts are listed by hand.
    const generic = new Set(['protocolViolation', 'guard', 'startupRefused', 'unparsable']);
    const mark = 'ⓧ';
    for (const [name, build] of Object.entries(pgError) as [string, (...args: unknown[]) => { code: string; severity: string; message: string }][]) {
      if (generic.has(name)) continue;
      const args = Array.from({ length: build.length }, () => mark);
      let error;
      try {
        error = name === 'policyDenied' ? build(mark, mark) : build(...args);
      } catch {
        error = build(...args.map(() => [mark])); // a list parameter (tables)
      }
      const fixed = error.message.split(mark)[0]!.replace(/\(request $/, '');
      const row = rows.find((r) => r.startsWith(`| ${error.code} | ${error.severity} |`) && r.includes(fixed));
      expect(row, `${name}: | ${error.code} | ${error.severity} | \`${fixed}…\``).toBeDefined();
    }
  });

  it('documents every PGWARDEN_* environment variable the code reads', () => {
    const names = new Set<string>();
    const walk = (dir: string): void => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const file = path.join(dir, entry.name);
        if (entry.isDirectory()) walk(file);
        else if (file.endsWith('.ts')) for (const m of readFileSync(file, 'utf8').matchAll(/\bPGWARDEN_[A-Z][A-Z_]*[A-Z]\b/g)) names.add(m[0]);
      }
    };
    walk(path.join(ROOT, 'src'));
    // Internal: the primary tells a worker its number; PGWARDEN_CHAIN is an error tag inside a Lua script.
    for (const internal of ['PGWARDEN_WORKER_ID', 'PGWARDEN_CHAIN']) names.delete(internal);
    expect(names.size).toBeGreaterThan(30);
    for (const name of names) expect(README, name).toContain(name);
  });

  it('gives the test command CI runs', () => {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts.test).toBeDefined();
    expect(README).toMatch(/## Test it\n\n```\nnpm test\n```/);
    expect(readFileSync(path.join(ROOT, '.ci/run'), 'utf8')).toMatch(/^npm test$/m);
  });
});
