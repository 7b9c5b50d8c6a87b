import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
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

export interface OptionSpec {
  /** Where the value goes in the config document. */
  path: string[];
  kind: 'string' | 'int' | 'bool';
  env?: string;
  flag?: string;
}

/** Every setting that can come from the environment or a flag, in one table. */
export const OPTIONS: OptionSpec[] = [
  { path: ['listen'], kind: 'string', env: 'PGWARDEN_LISTEN', flag: 'listen' },
  { path: ['upstream', 'url'], kind: 'string', env: 'PGWARDEN_UPSTREAM', flag: 'upstream' },
  { path: ['upstream', 'sslmode'], kind: 'string', env: 'PGWARDEN_UPSTREAM_SSLMODE', flag: 'upstream-sslmode' },
  { path: ['upstream', 'sslrootcert'], kind: 'string', env: 'PGWARDEN_UPSTREAM_SSLROOTCERT', flag: 'upstream-sslrootcert' },
  { path: ['tls', 'cert'], kind: 'string', env: 'PGWARDEN_TLS_CERT', flag: 'tls-cert' },
  { path: ['tls', 'key'], kind: 'string', env: 'PGWARDEN_TLS_KEY', flag: 'tls-key' },
  { path: ['workers'], kind: 'int', env: 'PGWARDEN_WORKERS', flag: 'workers' },
  { path: ['healthListen'], kind: 'string', env: 'PGWARDEN_HEALTH_LISTEN', flag: 'health-listen' },
  { path: ['logLevel'], kind: 'string', env: 'PGWARDEN_LOG_LEVEL', flag: 'log-level' },
  { path: ['rulesDir'], kind: 'string', env: 'PGWARDEN_RULES_DIR', flag: 'rules' },
  { path: ['estimatorUrl'], kind: 'string', env: 'PGWARDEN_ESTIMATOR_URL', flag: 'estimator-url' },
  { path: ['limits', 'maxMessageBytes'], kind: 'int', env: 'PGWARDEN_MAX_MESSAGE_BYTES', flag: 'max-message-bytes' },
  { path: ['limits', 'maxClientConnections'], kind: 'int', env: 'PGWARDEN_MAX_CLIENT_CONNECTIONS' },
  { path: ['redisUrl'], kind: 'string', env: 'PGWARDEN_REDIS_URL', flag: 'redis' },
  { path: ['audit', 'enabled'], kind: 'bool', env: 'PGWARDEN_AUDIT', flag: 'audit' },
  { path: ['audit', 'stream'], kind: 'string', env: 'PGWARDEN_AUDIT_STREAM', flag: 'audit-stream' },
  { path: ['audit', 'wait'], kind: 'string', env: 'PGWARDEN_AUDIT_WAIT', flag: 'audit-wait' },
  { path: ['audit', 'journalDir'], kind: 'string', env: 'PGWARDEN_AUDIT_JOURNAL', flag: 'audit-journal' },
  // A secret: environment or config file only, never a flag (flags show in `ps`).
  { path: ['audit', 'hmacKey'], kind: 'string', env: 'PGWARDEN_AUDIT_KEY' },
  { path: ['audit', 'instanceId'], kind: 'string', env: 'PGWARDEN_INSTANCE_ID', flag: 'instance-id' },
  { path: ['audit', 'maxLen'], kind: 'int', env: 'PGWARDEN_AUDIT_MAXLEN', flag: 'audit-maxlen' },
  { path: ['audit', 'retentionHours'], kind: 'int', env: 'PGWARDEN_AUDIT_RETENTION_HOURS', flag: 'audit-retention-hours' },
  { path: ['approval', 'enabled'], kind: 'bool', env: 'PGWARDEN_APPROVALS', flag: 'approvals' },
  { path: ['approval', 'listen'], kind: 'string', env: 'PGWARDEN_APPROVAL_LISTEN', flag: 'approval-listen' },
  { path: ['approval', 'publicUrl'], kind: 'string', env: 'PGWARDEN_APPROVAL_PUBLIC_URL', flag: 'approval-public-url' },
  { path: ['approval', 'timeoutSeconds'], kind: 'int', env: 'PGWARDEN_APPROVAL_TIMEOUT', flag: 'approval-timeout' },
  { path: ['approval', 'tls', 'cert'], kind: 'string', env: 'PGWARDEN_APPROVAL_TLS_CERT', flag: 'approval-tls-cert' },
  { path: ['approval', 'tls', 'key'], kind: 'string', env: 'PGWARDEN_APPROVAL_TLS_KEY', flag: 'approval-tls-key' },
  // Webhook URLs embed a secret (Slack's path token): environment or config file only.
  { path: ['approval', 'webhook', 'url'], kind: 'string', env: 'PGWARDEN_APPROVAL_WEBHOOK' },
  // Secrets and credentials: environment or config file only.
  { path: ['masking', 'hashKey'], kind: 'string', env: 'PGWARDEN_MASK_KEY' },
  { path: ['masking', 'catalogUrl'], kind: 'string', env: 'PGWARDEN_MASK_CATALOG_URL' },
];

/** Command-line flag → its setting (the CLI declares these options). */
export const FLAGS: Record<string, OptionSpec> = Object.fromEntries(
  OPTIONS.filter((o) => o.flag !== undefined).map((o) => [o.flag!, o]),
);

/**
 * The config sources named on a command line: `--config FILE` and the flags of `pgwarden start`.
 * Throws ConfigError on an unknown or incomplete option.
 */
export function parseConfigArgs(args: string[]): { file?: string; flags: Record<string, string> } {
  const options: Record<string, { type: 'string' }> = { config: { type: 'string' } };
  for (const name of Object.keys(FLAGS)) options[name] = { type: 'string' };
  let values: Record<string, string | undefined>;
  try {
    values = parseArgs({ args, options, strict: true, allowPositionals: false }).values as Record<string, string | undefined>;
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const { config: file, ...flagValues } = values;
  const flags = Object.fromEntries(Object.entries(flagValues).filter((e): e is [string, string] => e[1] !== undefined));
  return { file, flags };
}

function setPath(doc: Json, path: string[], value: unknown): void {
  let node = doc;
  for (const key of path.slice(0, -1)) {
    const child = node[key];
    if (typeof child !== 'object' || child === null) node[key] = {};
    node = node[key] as Json;
  }
  node[path[path.length - 1]!] = value;
}

function convert(source: string, kind: OptionSpec['kind'], text: string, problems: string[]): unknown {
  if (kind === 'string') return text;
  if (kind === 'bool') {
    const t = text.toLowerCase();
    if (['on', 'true', 'yes', '1'].includes(t)) return true;
    if (['off', 'false', 'no', '0'].includes(t)) return false;
    problems.push(`  ${source}: expected on or off, got "${text}"`);
    return undefined;
  }
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
  for (const spec of OPTIONS) {
    const name = spec.env;
    if (name === undefined) continue;
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

