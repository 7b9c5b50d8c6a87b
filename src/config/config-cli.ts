import { readFileSync, writeFileSync } from 'node:fs';
import { stringify } from 'yaml';
import { ConfigError, loadConfig, parseConfigArgs } from './load.js';
import { BUNDLED_RULES_DIR } from '../policy/build-judge.js';
import { configReference, readmeReference, renderConfigReference, withReference } from './reference.js';
import { startupReport } from './startup-checks.js';

/**
 * `pgwarden config check [--config FILE] [start options]`: validate what `start` would run with
 * and print the effective settings (secrets never shown).
 * `pgwarden config reference [--update README.md | --verify README.md]`: the settings table.
 */
const USAGE = `usage: pgwarden config check [--config FILE] [start options]
       pgwarden config reference [--update FILE | --verify FILE]
`;

type Out = (text: string) => void;

export function configCommand(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
  out: Out = (s) => process.stdout.write(s),
  err: Out = (s) => process.stderr.write(s),
): number {
  const [sub, ...rest] = args;
  if (sub === 'check') return checkCommand(rest, env, out, err);
  if (sub === 'reference') return referenceCommand(rest, out, err);
  err(USAGE);
  return 2;
}

function checkCommand(args: string[], env: NodeJS.ProcessEnv, out: Out, err: Out): number {
  try {
    const { file, flags } = parseConfigArgs(args);
    const config = loadConfig({ file, env, flags });
    const { problems, warnings } = startupReport(config);
    const rulesDir = config.rulesDir ?? BUNDLED_RULES_DIR;
    for (const w of warnings) err(`pgwarden: warning: ${w}\n`);
    if (problems.length > 0) {
      err(`pgwarden: start would fail:\n${problems.map((p) => `  ${p}`).join('\n')}\n`);
      return 2;
    }
    const source = file ?? env.PGWARDEN_CONFIG;
    out(`# pgwarden configuration: valid (${source ? `${source} + ` : 'defaults + '}environment + flags; rules in ${rulesDir})\n`);
    out(stringify(redactSecrets(config)));
    return 0;
  } catch (e) {
    if (e instanceof ConfigError) {
      err(`pgwarden: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}

function referenceCommand(args: string[], out: Out, err: Out): number {
  const [mode, file, ...extra] = args;
  const table = renderConfigReference();
  if (mode === undefined) {
    out(table);
    return 0;
  }
  if ((mode !== '--update' && mode !== '--verify') || !file || extra.length > 0) {
    err(USAGE);
    return 2;
  }
  const readme = readFileSync(file, 'utf8');
  if (mode === '--verify') {
    if (readmeReference(readme) === table) return 0;
    err(`${file}: the configuration reference differs from src/config/schema.ts; run: npm run docs:config\n`);
    return 1;
  }
  writeFileSync(file, withReference(readme, table));
  return 0;
}

/** Secret paths as patterns over concrete paths (`identity.roles.<role>.password` → any role). */
function secretPatterns(): RegExp[] {
  return configReference()
    .filter((s) => s.secret)
    .map((s) => {
      const escaped = s.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/<[^>]+>/g, '[^.]+');
      return new RegExp(`^${escaped}$`);
    });
}

/** The config with every secret replaced and every URL's password hidden, for printing. */
export function redactSecrets(config: unknown): unknown {
  const secrets = secretPatterns();
  const visit = (value: unknown, path: string): unknown => {
    if (path !== '' && secrets.some((re) => re.test(path))) return value === undefined ? value : '(secret, set)';
    if (Array.isArray(value)) return value.map((v) => visit(v, `${path}[]`));
    if (typeof value === 'object' && value !== null) {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, visit(v, path === '' ? k : `${path}.${k}`)]));
    }
    if (typeof value === 'string' && /^[a-z][a-z0-9+.-]*:\/\//i.test(value)) return withoutPassword(value);
    return value;
  };
  return visit(config, '');
}

function withoutPassword(url: string): string {
  try {
    const u = new URL(url);
    if (u.password === '') return url;
    u.password = '***';
    return u.toString();
  } catch {
    // Not parseable as a URL: it may still carry credentials, so show none of it.
    return '(unparseable URL hidden)';
  }
}
