import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { configCommand, redactSecrets } from '../../src/config/config-cli.js';
import { FLAGS, OPTIONS, loadConfig } from '../../src/config/load.js';
import { configReference, readmeReference, renderConfigReference, withReference, type SettingDoc } from '../../src/config/reference.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const README = readFileSync(path.join(ROOT, 'README.md'), 'utf8');

/** A value the setting accepts, as it would be written in the environment or on the command line. */
function sampleText(s: SettingDoc): string {
  if (s.value.startsWith('`true`')) return 'off';
  if (s.value.startsWith('integer')) {
    const range = /integer (\d+)–(\d+)/.exec(s.value);
    if (range) return String(Number(range[1]) + 1);
    return '4096';
  }
  if (s.value.includes(', ')) return /`([^`]+)`$/.exec(s.value)![1]!; // an enum: its last value
  if (s.value === '`host:port`') return '127.0.0.9:1234';
  if (s.value === '`postgres://` URL') return 'postgres://db.example:5433';
  if (s.value.startsWith('`redis://`')) return 'redis://cache.example:6380';
  if (s.value === 'URL') return 'https://pgwarden.example/hook';
  return 'sample-value-0123456789abcdef0123456789';
}

const asConfigValue = (s: SettingDoc, text: string): unknown =>
  text === 'off' ? false : s.value.startsWith('integer') ? Number(text) : text;

function at(config: unknown, dotted: string): unknown {
  return dotted.split('.').reduce<unknown>((node, key) => (node as Record<string, unknown> | undefined)?.[key], config);
}

describe('configuration reference', () => {
  it('the README table is exactly what the schema generates (run npm run docs:config after changing the schema)', () => {
    const inReadme = readmeReference(README);
    expect(inReadme, 'README.md lacks the config-reference markers').toBeDefined();
    expect(inReadme).toBe(renderConfigReference());
  });

  it('lists every setting of the schema with a description, including nested, list and map settings', () => {
    const paths = configReference().map((s) => s.path);
    for (const p of ['listen', 'upstream.sslmode', 'limits.shutdownGraceMs', 'approval.reviewers[].tokenHash', 'approval.oidc.nameClaim', 'identity.roles.<role>.passwordEnv', 'approval.actsAs.<reviewer>', 'logLevel']) {
      expect(paths).toContain(p);
    }
    for (const s of configReference()) expect(s.description.length, s.path).toBeGreaterThan(10);
  });

  it('every environment variable and flag in the table sets the setting it is listed for', () => {
    const withSource = configReference().filter((s) => s.env || s.flag);
    expect(withSource.length).toBe(OPTIONS.length);
    for (const s of withSource) {
      const text = sampleText(s);
      // A block's required siblings (tls.cert with tls.key) must come along for the block to be valid.
      const block = s.path.slice(0, s.path.lastIndexOf('.') + 1);
      const siblings = withSource.filter((o) => o !== s && block !== '' && o.path.startsWith(block) && o.shown === '(required)');
      if (s.env) {
        const env = Object.fromEntries(siblings.map((o) => [o.env!, sampleText(o)]));
        const config = loadConfig({ env: { ...env, [s.env]: text } });
        expect(at(config, s.path), `${s.env} → ${s.path}`).toEqual(asConfigValue(s, text));
      }
      if (s.flag) {
        expect(FLAGS[s.flag]?.path.join('.')).toBe(s.path);
        const flags = Object.fromEntries(siblings.filter((o) => o.flag).map((o) => [o.flag!, sampleText(o)]));
        const config = loadConfig({ flags: { ...flags, [s.flag]: text } });
        expect(at(config, s.path), `--${s.flag} → ${s.path}`).toEqual(asConfigValue(s, text));
      }
    }
  });

  it('defaults in the table are the schema defaults', () => {
    const byPath = new Map(configReference().map((s) => [s.path, s.shown]));
    const config = loadConfig({});
    for (const p of ['listen', 'upstream.url', 'audit.stream', 'approval.timeoutSeconds', 'masking.refreshSeconds', 'identity.mode', 'logLevel']) {
      expect(byPath.get(p)).toBe(`\`${String(at(config, p))}\``);
    }
    expect(byPath.get('limits.maxMessageBytes')).toBe('64 MiB');
    expect(config.limits.maxMessageBytes).toBe(64 * 1024 * 1024);
  });

  it('refuses an undocumented setting, a loader entry naming no setting, and a secret given a flag', () => {
    const undocumented = z.object({ documented: z.string().meta({ description: 'has words enough' }), bare: z.number() }).strict();
    expect(() => configReference(undocumented, [])).toThrow(/bare: no description/);
    expect(() => configReference(undocumented, [{ path: ['gone'], kind: 'string', env: 'PGWARDEN_GONE' }])).toThrow(
      /PGWARDEN_GONE: no setting gone/,
    );
    const secret = z.object({ key: z.string().meta({ description: 'a secret key here', secret: true }) }).strict();
    expect(() => configReference(secret, [{ path: ['key'], kind: 'string', flag: 'key' }])).toThrow(/key: a secret must not be a flag/);
  });

  it('--update rewrites only the text between the markers, and --verify notices a stale table', () => {
    const stale = withReference(README, '| stale |\n');
    expect(readmeReference(stale)).toBe('| stale |\n');
    expect(stale.slice(0, README.indexOf('<!-- config-reference:begin'))).toBe(README.slice(0, README.indexOf('<!-- config-reference:begin')));
    expect(withReference(stale, renderConfigReference())).toBe(README);
  });
});

describe('pgwarden config check', () => {
  function run(args: string[], env: NodeJS.ProcessEnv): { code: number; out: string; err: string } {
    let out = '';
    let err = '';
    const code = configCommand(['check', ...args], env, (s) => (out += s), (s) => (err += s));
    return { code, out, err };
  }

  it('prints the effective configuration with secrets and URL passwords hidden', () => {
    const { code, out } = run(['--upstream', 'postgres://app:upstream-pw@db.example:5432', '--workers', '1'], {
      PGWARDEN_AUDIT_KEY: 'audit-key-0123456789-0123456789-0123456789',
      PGWARDEN_MASK_KEY: 'mask-key-0123456789-0123456789-0123456789',
      PGWARDEN_APPROVAL_WEBHOOK: 'https://hooks.example/services/T000/B000/webhook-token',
      PGWARDEN_REDIS_URL: 'redis://:redis-pw@cache.example:6379',
    });
    expect(code).toBe(0);
    expect(out).toContain('url: postgres://app:***@db.example:5432');
    expect(out).toContain('redisUrl: redis://:***@cache.example:6379');
    expect(out).toContain('hmacKey: (secret, set)');
    expect(out).toContain('workers: 1');
    for (const secret of ['upstream-pw', 'redis-pw', 'audit-key-', 'mask-key-', 'webhook-token']) expect(out).not.toContain(secret);
  });

  it('hides map and list secrets too', () => {
    const shown = JSON.stringify(
      redactSecrets({ identity: { roles: { app_ro: { password: 'role-pw' } } }, approval: { webhook: { url: 'https://x/token' } } }),
    );
    expect(shown).not.toContain('role-pw');
    expect(shown).not.toContain('token');
  });

  it('finds what start would fail on: Redis without the audit key, an open page without TLS, unreadable files, invalid rules', () => {
    const rules = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-check-rules-'));
    writeFileSync(path.join(rules, 'policy.yaml'), 'policy:\n  default: maybe\n');
    const { code, err, out } = run(['--rules', rules, '--tls-cert', '/nonexistent/proxy.crt', '--tls-key', '/nonexistent/proxy.key'], {
      PGWARDEN_REDIS_URL: 'redis://cache.example:6379',
      PGWARDEN_APPROVAL_LISTEN: '0.0.0.0:6480',
    });
    rmSync(rules, { recursive: true, force: true });
    expect(code).toBe(2);
    expect(out).toBe('');
    expect(err).toContain('start would fail');
    expect(err).toContain('audit.hmacKey: the audit key is required when audit entries go to Redis');
    expect(err).toContain('approval.listen: refusing to serve the approval page on 0.0.0.0:6480 without TLS');
    expect(err).toContain('tls.cert: cannot read /nonexistent/proxy.crt (ENOENT)');
    expect(err).toMatch(/rulesDir: policy\.yaml: policy\.default: /);
  });

  it('refuses agent identities without a stable secret (an unknown agent\'s mock salt would change per process)', () => {
    const file = path.join(os.tmpdir(), `pgwarden-check-agents-${process.pid}.yaml`);
    writeFileSync(file, 'identity:\n  mode: agents\naudit:\n  enabled: false\n');
    const { code, err } = run(['--config', file], {});
    expect(code).toBe(2);
    expect(err).toContain('masking.hashKey: identity.mode agents with audit off needs a stable secret');
    expect(run(['--config', file], { PGWARDEN_MASK_KEY: 'm'.repeat(40) }).code).toBe(0);
    rmSync(file, { force: true });
  });

  it('warns about legal settings that are rarely meant, and still exits 0', () => {
    const { code, err, out } = run([], {});
    expect(code).toBe(0);
    expect(err).toContain('warning: approval: no redisUrl and approval.store is not memory, so every statement the rules send to review is refused');
    expect(out).toContain('rules in ');
    const withRedis = run([], { PGWARDEN_REDIS_URL: 'redis://cache.example:6379', PGWARDEN_AUDIT_KEY: 'k'.repeat(40) });
    expect(withRedis.code).toBe(0);
    expect(withRedis.err).toContain('warning: approval: no reviewers');
  });

  it('exits 2 and names each invalid setting', () => {
    const { code, err } = run(['--listen', 'nowhere'], { PGWARDEN_APPROVAL_TIMEOUT: 'soon' });
    expect(code).toBe(2);
    expect(err).toContain('listen: expected host:port');
    expect(err).toContain('PGWARDEN_APPROVAL_TIMEOUT: expected a whole number');
  });
});

describe('pgwarden --help', () => {
  it('names every start flag', () => {
    const help = execFileSync(process.execPath, [path.join(ROOT, 'dist/src/cli.js'), '--help'], { encoding: 'utf8' });
    for (const flag of Object.keys(FLAGS)) expect(help, `--${flag}`).toContain(`--${flag}`);
  });
});
