import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { configSchema, type Config } from './schema.js';

/**
 * Builds the configuration from a YAML file, PGWARDEN_* environment variables and flags (in
 * rising priority), then validates the merge once, so every problem is reported together with
 * where the value came from.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

type Json = Record<string, unknown>;

/** Environment variable → path in the config document, and how to read its text. */
const ENV: Record<string, { path: string[]; kind: 'string' | 'int' }> = {
  PGWARDEN_LISTEN: { path: ['listen'], kind: 'string' },
  PGWARDEN_UPSTREAM: { path: ['upstream', 'url'], kind: 'string' },
  PGWARDEN_UPSTREAM_SSLMODE: { path: ['upstream', 'sslmode'], kind: 'string' },
  PGWARDEN_UPSTREAM_SSLROOTCERT: { path: ['upstream', 'sslrootcert'], kind: 'string' },
  PGWARDEN_TLS_CERT: { path: ['tls', 'cert'], kind: 'string' },
  PGWARDEN_TLS_KEY: { path: ['tls', 'key'], kind: 'string' },
  PGWARDEN_WORKERS: { path: ['workers'], kind: 'int' },
  PGWARDEN_HEALTH_LISTEN: { path: ['healthListen'], kind: 'string' },
  PGWARDEN_LOG_LEVEL: { path: ['logLevel'], kind: 'string' },
  PGWARDEN_RULES_DIR: { path: ['rulesDir'], kind: 'string' },
  PGWARDEN_ESTIMATOR_URL: { path: ['estimatorUrl'], kind: 'string' },
  PGWARDEN_MAX_MESSAGE_BYTES: { path: ['limits', 'maxMessageBytes'], kind: 'int' },
  PGWARDEN_MAX_CLIENT_CONNECTIONS: { path: ['limits', 'maxClientConnections'], kind: 'int' },
};

/** Command-line flag → path in the config document. */
export const FLAGS: Record<string, { path: string[]; kind: 'string' | 'int' }> = {
  listen: { path: ['listen'], kind: 'string' },
  upstream: { path: ['upstream', 'url'], kind: 'string' },
  'upstream-sslmode': { path: ['upstream', 'sslmode'], kind: 'string' },
  'upstream-sslrootcert': { path: ['upstream', 'sslrootcert'], kind: 'string' },
  'tls-cert': { path: ['tls', 'cert'], kind: 'string' },
  'tls-key': { path: ['tls', 'key'], kind: 'string' },
  workers: { path: ['workers'], kind: 'int' },
  'health-listen': { path: ['healthListen'], kind: 'string' },
  'log-level': { path: ['logLevel'], kind: 'string' },
  rules: { path: ['rulesDir'], kind: 'string' },
  'estimator-url': { path: ['estimatorUrl'], kind: 'string' },
  'max-message-bytes': { path: ['limits', 'maxMessageBytes'], kind: 'int' },
};

function setPath(doc: Json, path: string[], value: unknown): void {
  let node = doc;
  for (const key of path.slice(0, -1)) {
    const child = node[key];
    if (typeof child !== 'object' || child === null) node[key] = {};
    node = node[key] as Json;
  }
  node[path[path.length - 1]!] = value;
}

function convert(source: string, kind: 'string' | 'int', text: string, problems: string[]): unknown {
  if (kind === 'string') return text;
  if (!/^-?\d+$/.test(text)) {
    problems.push(`  ${source}: expected a whole number, got "${text}"`);
    return undefined;
  }
  return Number(text);
}

export interface ConfigSources {
  file?: string;
  env?: NodeJS.ProcessEnv;
  flags?: Record<string, string>;
}

export function loadConfig(sources: ConfigSources = {}): Config {
  let doc: Json = {};
  const file = sources.file ?? sources.env?.PGWARDEN_CONFIG;
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = parseYaml(text, { uniqueKeys: true });
    } catch (err) {
      throw new ConfigError(`${file}: ${(err as Error).message}`);
    }
    if (parsed !== null && parsed !== undefined) {
      if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(`${file}: expected a mapping at the top level`);
      doc = parsed as Json;
    }
  }
  // Every problem is collected and reported together.
  const problems: string[] = [];
  for (const [name, spec] of Object.entries(ENV)) {
    const text = sources.env?.[name];
    if (text === undefined || text === '') continue;
    const value = convert(name, spec.kind, text, problems);
    if (value !== undefined) setPath(doc, spec.path, value);
  }
  for (const [name, text] of Object.entries(sources.flags ?? {})) {
    const spec = FLAGS[name];
    if (!spec) {
      problems.push(`  unknown option --${name}`);
      continue;
    }
    const value = convert(`--${name}`, spec.kind, text, problems);
    if (value !== undefined) setPath(doc, spec.path, value);
  }
  const result = configSchema.safeParse(doc);
  if (!result.success) {
    problems.push(...result.error.issues.map((i) => `  ${i.path.join('.') || '(top level)'}: ${i.message}`));
  }
  if (problems.length > 0 || !result.success) {
    throw new ConfigError(`invalid configuration${file ? ` (${file})` : ''}:\n${problems.join('\n')}`);
  }
  return result.data;
}

export function splitHostPort(value: string): { host: string; port: number } {
  const i = value.lastIndexOf(':');
  const host = value.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(value.slice(i + 1)) };
}

