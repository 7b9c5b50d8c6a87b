import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, splitHostPort, type ConfigSources } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let fileCounter = 0;
function yamlFile(text: string): string {
  const file = path.join(dir, `config-${++fileCounter}.yaml`);
  writeFileSync(file, text);
  return file;
}

/** Runs loadConfig, requires a ConfigError and returns its message. */
function configError(sources: ConfigSources): string {
  let thrown: unknown;
  try {
    loadConfig(sources);
  } catch (err) {
    thrown = err;
  }
  if (thrown === undefined) throw new Error('expected a ConfigError, but the configuration was accepted');
  expect(thrown).toBeInstanceOf(ConfigError);
  return (thrown as ConfigError).message;
}

const DEFAULTS: Config = {
  listen: '127.0.0.1:6432',
  upstream: { url: 'postgres://127.0.0.1:5432', sslmode: 'prefer', connectTimeoutMs: 10_000 },
  limits: {
    maxMessageBytes: 64 * 1024 * 1024,
    maxBatchBytes: 1024 * 1024,
    maxHeldBytes: 16 * 1024 * 1024,
    maxClientConnections: 1000,
    startupTimeoutMs: 60_000,
    shutdownGraceMs: 30_000,
  },
  workers: Math.min(os.availableParallelism(), 127),
  audit: { enabled: true, stream: 'pgwarden:audit', wait: 'refusals', journalDir: 'pgwarden-audit' },
  approval: {
    enabled: true,
    listen: '127.0.0.1:6480',
    allowInsecureHttp: false,
    allowedOrigins: [],
    timeoutSeconds: 300,
    maxPendingPerUser: 5,
    maxGrantMinutes: 240,
    keepHours: 24,
    redisPrefix: 'pgwarden:approvals',
    reviewers: [],
    actsAs: {},
  },
  masking: { refreshSeconds: 60 },
  identity: { mode: 'passthrough', roles: {}, tokenExpiry: 'end-session' },
  logLevel: 'info',
};

describe('loadConfig: sources and precedence', () => {
  it('uses the defaults when nothing is given', () => {
    expect(loadConfig({})).toEqual(DEFAULTS);
    expect(loadConfig()).toEqual(DEFAULTS);
  });

  it('reads settings from a YAML file and fills the rest with defaults', () => {
    const file = yamlFile(
      [
        'listen: 0.0.0.0:7000',
        'upstream:',
        '  url: postgresql://db.internal:5433',
        '  sslmode: require',
        'limits:',
        '  maxBatchBytes: 4096',
        'workers: 3',
        'logLevel: debug',
        'healthListen: 127.0.0.1:8080',
        'tls:',
        '  cert: /etc/pgwarden/cert.pem',
        '  key: /etc/pgwarden/key.pem',
      ].join('\n'),
    );
    const config = loadConfig({ file });
    expect(config.listen).toBe('0.0.0.0:7000');
    expect(config.upstream).toEqual({ url: 'postgresql://db.internal:5433', sslmode: 'require', connectTimeoutMs: 10_000 });
    expect(config.limits).toEqual({ ...DEFAULTS.limits, maxBatchBytes: 4096 });
    expect(config.workers).toBe(3);
    expect(config.logLevel).toBe('debug');
    expect(config.healthListen).toBe('127.0.0.1:8080');
    expect(config.tls).toEqual({ cert: '/etc/pgwarden/cert.pem', key: '/etc/pgwarden/key.pem' });
  });

  it('treats an empty file as all defaults', () => {
    expect(loadConfig({ file: yamlFile('') })).toEqual(DEFAULTS);
    expect(loadConfig({ file: yamlFile('# only a comment\n') })).toEqual(DEFAULTS);
  });

  it('reads PGWARDEN_* environment variables, converting whole numbers', () => {
    const config = loadConfig({
      env: {
        PGWARDEN_LISTEN: '127.0.0.1:0',
        PGWARDEN_UPSTREAM: 'postgres://10.0.0.5:5432',
        PGWARDEN_UPSTREAM_SSLMODE: 'verify-full',
        PGWARDEN_UPSTREAM_SSLROOTCERT: '/ca.pem',
        PGWARDEN_TLS_CERT: '/c.pem',
        PGWARDEN_TLS_KEY: '/k.pem',
        PGWARDEN_WORKERS: '4',
        PGWARDEN_HEALTH_LISTEN: '[::1]:9000',
        PGWARDEN_LOG_LEVEL: 'warn',
        PGWARDEN_MAX_MESSAGE_BYTES: '2048',
        PGWARDEN_MAX_CLIENT_CONNECTIONS: '50',
        PGWARDEN_RULES_DIR: '/etc/pgwarden/rules',
      },
    });
    expect(config).toEqual({
      ...DEFAULTS,
      listen: '127.0.0.1:0',
      upstream: { url: 'postgres://10.0.0.5:5432', sslmode: 'verify-full', sslrootcert: '/ca.pem', connectTimeoutMs: 10_000 },
      tls: { cert: '/c.pem', key: '/k.pem' },
      workers: 4,
      healthListen: '[::1]:9000',
      logLevel: 'warn',
      rulesDir: '/etc/pgwarden/rules',
      limits: { ...DEFAULTS.limits, maxMessageBytes: 2048, maxClientConnections: 50 },
    });
  });

  it('reads flags, converting whole numbers', () => {
    const config = loadConfig({
      flags: {
        listen: '127.0.0.1:1',
        upstream: 'postgres://h:1',
        'upstream-sslmode': 'disable',
        workers: '2',
        'log-level': 'error',
        'max-message-bytes': '4096',
        'health-listen': 'localhost:81',
        rules: './my-rules',
      },
    });
    expect(config.listen).toBe('127.0.0.1:1');
    expect(config.upstream.url).toBe('postgres://h:1');
    expect(config.upstream.sslmode).toBe('disable');
    expect(config.workers).toBe(2);
    expect(config.logLevel).toBe('error');
    expect(config.limits.maxMessageBytes).toBe(4096);
    expect(config.healthListen).toBe('localhost:81');
    expect(config.rulesDir).toBe('./my-rules');
  });

  it('applies flags over environment over file over defaults, per setting', () => {
    const file = yamlFile(['listen: 127.0.0.1:1111', 'workers: 5', 'logLevel: debug', 'upstream: { url: "postgres://file:1" }'].join('\n'));
    const config = loadConfig({
      file,
      env: { PGWARDEN_LISTEN: '127.0.0.1:2222', PGWARDEN_WORKERS: '6' },
      flags: { listen: '127.0.0.1:3333' },
    });
    expect(config.listen).toBe('127.0.0.1:3333'); // flag beats env and file
    expect(config.workers).toBe(6); // env beats file
    expect(config.logLevel).toBe('debug'); // file beats default
    expect(config.upstream.url).toBe('postgres://file:1');
    expect(config.upstream.sslmode).toBe('prefer'); // default
  });

  it('merges an environment value into a nested section from the file without losing its siblings', () => {
    const file = yamlFile(['upstream:', '  url: postgres://file:1', '  sslmode: require', '  connectTimeoutMs: 500'].join('\n'));
    const config = loadConfig({ file, env: { PGWARDEN_UPSTREAM: 'postgres://env:2' } });
    expect(config.upstream).toEqual({ url: 'postgres://env:2', sslmode: 'require', connectTimeoutMs: 500 });
  });

  it('finds the file through PGWARDEN_CONFIG, and an explicit file wins over it', () => {
    const viaEnv = yamlFile('workers: 7');
    const explicit = yamlFile('workers: 8');
    expect(loadConfig({ env: { PGWARDEN_CONFIG: viaEnv } }).workers).toBe(7);
    expect(loadConfig({ file: explicit, env: { PGWARDEN_CONFIG: viaEnv } }).workers).toBe(8);
  });

  it('ignores empty environment variables', () => {
    const file = yamlFile('logLevel: trace');
    expect(loadConfig({ file, env: { PGWARDEN_LOG_LEVEL: '', PGWARDEN_WORKERS: '' } }).logLevel).toBe('trace');
  });

  it('ignores environment variables that are not pgwarden settings', () => {
    expect(loadConfig({ env: { PATH: '/bin', PGWARDEN_SOMETHING_ELSE: 'x', PGHOST: 'h' } })).toEqual(DEFAULTS);
  });
});

describe('loadConfig: errors', () => {
  it('rejects an unknown top-level key, naming it', () => {
    const message = configError({ file: yamlFile('listen: 127.0.0.1:1\nlistenn: 127.0.0.1:2\n') });
    expect(message).toContain('listenn');
  });

  it('rejects an unknown nested key, naming its section and the key', () => {
    const message = configError({ file: yamlFile('upstream:\n  url: postgres://h:1\n  sslmod: require\n') });
    expect(message).toMatch(/upstream/);
    expect(message).toContain('sslmod');
    const limits = configError({ file: yamlFile('limits:\n  maxBatchByte: 4096\n') });
    expect(limits).toMatch(/limits/);
    expect(limits).toContain('maxBatchByte');
  });

  it('rejects unknown keys inside tls', () => {
    const message = configError({ file: yamlFile('tls:\n  cert: a\n  key: b\n  ca: c\n') });
    expect(message).toMatch(/tls/);
    expect(message).toContain('ca');
  });

  it('reports every bad value of a file together, each with its path', () => {
    const file = yamlFile(
      [
        'listen: not-a-host-port',
        'upstream:',
        '  url: mysql://h:1',
        '  sslmode: sometimes',
        'limits:',
        '  maxMessageBytes: 10',
        'workers: 0',
        'logLevel: loud',
      ].join('\n'),
    );
    const message = configError({ file });
    expect(message).toContain(file);
    for (const p of ['listen', 'upstream.url', 'upstream.sslmode', 'limits.maxMessageBytes', 'workers', 'logLevel']) {
      expect(message).toContain(`${p}:`);
    }
  });

  it('rejects values of the wrong type', () => {
    const message = configError({ file: yamlFile('workers: "four"\nlimits:\n  startupTimeoutMs: 1.5\n') });
    expect(message).toContain('workers:');
    expect(message).toContain('limits.startupTimeoutMs:');
  });

  it('rejects more than 127 workers (the process id encodes the worker in 7 bits)', () => {
    expect(configError({ flags: { workers: '128' } })).toContain('workers:');
  });

  it('rejects a non-integer environment variable, naming it', () => {
    const message = configError({ env: { PGWARDEN_WORKERS: 'four' } });
    expect(message).toContain('PGWARDEN_WORKERS');
    expect(message).toContain('four');
  });

  it('rejects a non-integer flag, naming it', () => {
    expect(configError({ flags: { 'max-message-bytes': '1e6' } })).toContain('--max-message-bytes');
  });

  it('rejects an unknown flag', () => {
    expect(configError({ flags: { 'no-such-flag': 'x' } })).toContain('no-such-flag');
  });

  it('reports a bad environment value together with bad file values', () => {
    // "every problem reported" (DESIGN.md): a typo in one variable must not hide the others.
    const file = yamlFile('logLevel: loud\n');
    const message = configError({ file, env: { PGWARDEN_WORKERS: 'four', PGWARDEN_LISTEN: 'nope' } });
    expect(message).toContain('PGWARDEN_WORKERS');
    expect(message).toContain('logLevel:');
    expect(message).toContain('listen:');
  });

  it('reports a missing file as a ConfigError naming it', () => {
    const missing = path.join(dir, 'does-not-exist.yaml');
    expect(configError({ file: missing })).toContain(missing);
  });

  it('rejects a file whose top level is not a mapping', () => {
    expect(configError({ file: yamlFile('- listen\n- workers\n') })).toContain('mapping');
    expect(configError({ file: yamlFile('just a string\n') })).toContain('mapping');
  });

  it('reports a YAML syntax error as a ConfigError naming the file', () => {
    const file = yamlFile('listen: [127.0.0.1:1\nworkers: 2\n');
    expect(configError({ file })).toContain(file);
  });

  it('reports duplicate keys in the file as a ConfigError', () => {
    configError({ file: yamlFile('workers: 2\nworkers: 3\n') });
  });
});

describe('splitHostPort', () => {
  it('splits IPv4, host names and bracketed IPv6', () => {
    expect(splitHostPort('127.0.0.1:6432')).toEqual({ host: '127.0.0.1', port: 6432 });
    expect(splitHostPort('db.internal:0')).toEqual({ host: 'db.internal', port: 0 });
    expect(splitHostPort('[::1]:5432')).toEqual({ host: '::1', port: 5432 });
    expect(splitHostPort('[fe80::1:2]:1')).toEqual({ host: 'fe80::1:2', port: 1 });
  });
});
