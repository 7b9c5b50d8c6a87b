import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseSql } from 'libpg-query';
import { parse as parseYaml } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { hashReviewerToken } from '../../src/approval/reviewer-auth.js';
import { loadConfig, OPTIONS, splitHostPort } from '../../src/config/load.js';
import { configReference } from '../../src/config/reference.js';
import type { Config } from '../../src/config/schema.js';
import { loadRules } from '../../src/policy/rules-loader.js';

/**
 * docker-compose.yml, checked without Docker: the file is parsed, interpolated the way Compose
 * does (`${VAR}`, `${VAR:?message}`, `${VAR:-default}`, `$$`), and pgwarden's part of it (its
 * environment plus the inline config file) is loaded with pgwarden's own loadConfig. Then the
 * settings pgwarden will run with are compared with what the compose file wires up around it:
 * published ports, service names, mounts, volumes, the healthcheck, the init script of the
 * catalog role, and the image's build steps.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const COMPOSE_FILE = path.join(ROOT, 'docker-compose.yml');
const composeText = readFileSync(COMPOSE_FILE, 'utf8');

const tmp = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-compose-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// ---------------------------------------------------------------------------------------------
// The compose document (only the parts this test reads).

type Env = Record<string, string | undefined>;
interface PortLong {
  target: number | string;
  published?: number | string;
  host_ip?: string;
  protocol?: string;
}
interface MountLong {
  type: string;
  source?: string;
  target: string;
  read_only?: boolean;
}
interface Service {
  image?: string;
  build?: { context?: string; dockerfile_inline?: string; dockerfile?: string };
  environment?: Record<string, string | number | boolean | null> | string[];
  ports?: (string | number | PortLong)[];
  volumes?: (string | MountLong)[];
  configs?: (string | { source: string; target?: string })[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: { test?: string | string[]; disable?: boolean };
  networks?: string[] | Record<string, unknown>;
  restart?: string;
  stop_grace_period?: string;
  read_only?: boolean;
  user?: string;
  init?: boolean;
  command?: string | string[];
}
interface Compose {
  services: Record<string, Service>;
  configs?: Record<string, { content?: string; file?: string; environment?: string }>;
  volumes?: Record<string, unknown>;
  networks?: Record<string, { internal?: boolean } | null>;
}

const raw = parseYaml(composeText, { uniqueKeys: true }) as Compose;

/** Test values for the variables the compose file requires (none of them has a default). */
const REVIEWER_TOKEN = 'pgwr_compose-test-token';
const ENV: Env = {
  POSTGRES_PASSWORD: 'pg-superuser-password-for-the-test',
  PGWARDEN_CATALOG_PASSWORD: '5f4dcc3b5aa765d61d8327deb882cf99',
  PGWARDEN_AUDIT_KEY: 'a'.repeat(64),
  PGWARDEN_REVIEWER_TOKEN_HASH: hashReviewerToken(REVIEWER_TOKEN),
};

// ---------------------------------------------------------------------------------------------
// Compose's variable interpolation.

interface VarRef {
  name: string;
  /** '' for ${VAR} and $VAR; otherwise the operator: ':?', '?', ':-', '-', ':+', '+'. */
  op: string;
  arg: string;
}

class MissingVariable extends Error {}

const TEMPLATE = /\$(?:(\$)|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))?/g;

function parseBraced(body: string, where: string): VarRef {
  const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([\s\S]*))?$/.exec(body);
  if (!m) throw new Error(`${where}: invalid interpolation "\${${body}}"`);
  return { name: m[1]!, op: m[2] ?? '', arg: m[3] ?? '' };
}

/** The variable references in one string (`$$` is a literal `$`, not a reference). */
function refsIn(text: string, where: string): VarRef[] {
  const refs: VarRef[] = [];
  for (const m of text.matchAll(TEMPLATE)) {
    if (m[1]) continue;
    if (m[3]) refs.push({ name: m[3], op: '', arg: '' });
    else if (m[2] !== undefined) refs.push(parseBraced(m[2], where));
    else throw new Error(`${where}: a lone "$" (Compose rejects it; write $$ for a literal $)`);
  }
  return refs;
}

function interpolate(text: string, env: Env, where: string): string {
  return text.replace(TEMPLATE, (whole, escaped: string | undefined, braced: string | undefined, named: string | undefined) => {
    if (escaped) return '$';
    if (named) return env[named] ?? '';
    if (braced === undefined) throw new Error(`${where}: a lone "$" (Compose rejects it; write $$ for a literal $)`);
    const { name, op, arg } = parseBraced(braced, where);
    const value = env[name];
    const unset = value === undefined;
    const empty = unset || value === '';
    switch (op) {
      case '':
        return value ?? '';
      case ':-':
        return empty ? arg : value!;
      case '-':
        return unset ? arg : value!;
      case ':?':
      case '?':
        if (op === ':?' ? empty : unset) throw new MissingVariable(`required variable ${name} is missing a value: ${arg}`);
        return value!;
      case ':+':
        return empty ? '' : arg;
      case '+':
        return unset ? '' : arg;
      default:
        throw new Error(`${where}: unknown operator in ${whole}`);
    }
  });
}

/** Every string value of the document, with its path (keys are not interpolated). */
function* strings(node: unknown, at: string): Generator<[string, string]> {
  if (typeof node === 'string') yield [at, node];
  else if (Array.isArray(node)) for (const [i, v] of node.entries()) yield* strings(v, `${at}[${i}]`);
  else if (node !== null && typeof node === 'object') for (const [k, v] of Object.entries(node)) yield* strings(v, at ? `${at}.${k}` : k);
}

function interpolateAll<T>(node: T, env: Env, at = ''): T {
  if (typeof node === 'string') return interpolate(node, env, at) as T;
  if (Array.isArray(node)) return node.map((v, i) => interpolateAll(v, env, `${at}[${i}]`)) as T;
  if (node !== null && typeof node === 'object') {
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, interpolateAll(v, env, at ? `${at}.${k}` : k)])) as T;
  }
  return node;
}

function allRefs(doc: unknown): (VarRef & { at: string })[] {
  return [...strings(doc, '')].flatMap(([at, text]) => refsIn(text, at).map((r) => ({ ...r, at })));
}

// ---------------------------------------------------------------------------------------------
// Reading services: environment, ports, mounts, networks.

function environmentOf(s: Service): Record<string, string> {
  const env = s.environment ?? {};
  if (Array.isArray(env)) {
    return Object.fromEntries(env.map((e) => (e.includes('=') ? [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)] : [e, ''])));
  }
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v === null ? '' : String(v)]));
}

interface Port {
  /** '' = every host interface. */
  hostIp: string;
  /** '' = a random host port. */
  published: string;
  target: number;
  protocol: string;
}

function portsOf(s: Service): Port[] {
  return (s.ports ?? []).map((p) => {
    if (typeof p === 'object') {
      return { hostIp: p.host_ip ?? '', published: String(p.published ?? ''), target: Number(p.target), protocol: p.protocol ?? 'tcp' };
    }
    const m = /^(?:(?:(\[[^\]]+\]|[^:[\]]+):)?(\d*):)?(\d+)(?:\/(tcp|udp))?$/.exec(String(p));
    if (!m) throw new Error(`cannot read the port entry "${p}"`);
    return { hostIp: (m[1] ?? '').replace(/^\[(.*)\]$/, '$1'), published: m[2] ?? '', target: Number(m[3]), protocol: m[4] ?? 'tcp' };
  });
}

interface Mount {
  type: string;
  source: string;
  target: string;
  readOnly: boolean;
}

function mountsOf(s: Service): Mount[] {
  return (s.volumes ?? []).map((v) => {
    if (typeof v === 'object') return { type: v.type, source: v.source ?? '', target: v.target, readOnly: v.read_only === true };
    const [source = '', target = '', mode = ''] = v.split(':');
    const type = /^[./~]/.test(source) ? 'bind' : 'volume';
    return { type, source, target, readOnly: mode.split(',').includes('ro') };
  });
}

function configMountsOf(s: Service): { source: string; target: string }[] {
  return (s.configs ?? []).map((c) => (typeof c === 'string' ? { source: c, target: `/${c}` } : { source: c.source, target: c.target ?? `/${c.source}` }));
}

function networksOf(s: Service): string[] {
  if (s.networks === undefined) return ['default'];
  return Array.isArray(s.networks) ? s.networks : Object.keys(s.networks);
}

function dependsOf(s: Service): Record<string, string | undefined> {
  const d = s.depends_on ?? {};
  if (Array.isArray(d)) return Object.fromEntries(d.map((name) => [name, 'service_started']));
  return Object.fromEntries(Object.entries(d).map(([name, v]) => [name, v?.condition ?? 'service_started']));
}

function healthcheckText(s: Service): string {
  const t = s.healthcheck?.test;
  return Array.isArray(t) ? t.join(' ') : (t ?? '');
}

/** Compose durations: 45s, 1m30s, 500ms, 1h. */
function durationMs(text: string): number {
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)/g;
  let consumed = '';
  for (const m of text.matchAll(re)) {
    consumed += m[0];
    const n = Number(m[1]);
    total += n * { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, ns: 0.000001 }[m[2] as 'h' | 'm' | 's' | 'ms' | 'us' | 'ns'];
  }
  if (consumed !== text) throw new Error(`cannot read the duration "${text}"`);
  return total;
}

// ---------------------------------------------------------------------------------------------
// The inline Dockerfile.

interface Stage {
  from: string;
  name?: string;
  instructions: { cmd: string; args: string }[];
}

function parseDockerfile(text: string): Stage[] {
  const logical: string[] = [];
  let pending = '';
  for (const line of text.split('\n')) {
    if (pending === '' && /^\s*#/.test(line)) continue;
    if (/\\\s*$/.test(line)) {
      pending += line.replace(/\\\s*$/, ' ');
      continue;
    }
    const full = (pending + line).trim();
    pending = '';
    if (full !== '') logical.push(full);
  }
  const stages: Stage[] = [];
  for (const line of logical) {
    const [, cmd = '', args = ''] = /^(\S+)\s*([\s\S]*)$/.exec(line) ?? [];
    const upper = cmd.toUpperCase();
    if (upper === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      stages.push({ from: m?.[1] ?? args, ...(m?.[2] ? { name: m[2] } : {}), instructions: [] });
      continue;
    }
    if (stages.length === 0) throw new Error(`Dockerfile: ${upper} before FROM`);
    stages[stages.length - 1]!.instructions.push({ cmd: upper, args });
  }
  return stages;
}

interface Copy {
  from?: string;
  sources: string[];
  dest: string;
}

function copiesOf(stage: Stage): Copy[] {
  return stage.instructions
    .filter((i) => i.cmd === 'COPY' || i.cmd === 'ADD')
    .map((i) => {
      const words = i.args.trim().startsWith('[') ? (JSON.parse(i.args) as string[]) : i.args.split(/\s+/);
      const flags = words.filter((w) => w.startsWith('--'));
      const paths = words.filter((w) => !w.startsWith('--'));
      const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length);
      return { ...(from ? { from } : {}), sources: paths.slice(0, -1), dest: paths[paths.length - 1]! };
    });
}

/**
 * Where each COPY source lands in the image: a relative destination is resolved against the
 * WORKDIR in force; a file copied to a directory (`dest/`) keeps its name; a directory's
 * contents go into the destination.
 */
function copiesLanded(stage: Stage): { source: string; from?: string; dest: string }[] {
  const out: { source: string; from?: string; dest: string }[] = [];
  stage.instructions.forEach((instruction, index) => {
    if (instruction.cmd !== 'COPY' && instruction.cmd !== 'ADD') return;
    const [c] = copiesOf({ ...stage, instructions: [instruction] });
    for (const source of c!.sources) {
      const isFile = c!.from === undefined && existsSync(path.join(ROOT, source)) && statSync(path.join(ROOT, source)).isFile();
      const dest = isFile && c!.dest.endsWith('/') ? path.posix.join(c!.dest, path.posix.basename(source)) : c!.dest;
      out.push({ source, ...(c!.from ? { from: c!.from } : {}), dest: inImage(stage, dest, index) });
    }
  });
  return out;
}

/** Where a COPY destination lands (relative to WORKDIR, as Docker resolves it). */
function inImage(stage: Stage, dest: string, upTo: number): string {
  let workdir = '/';
  for (const i of stage.instructions.slice(0, upTo)) if (i.cmd === 'WORKDIR') workdir = path.posix.resolve(workdir, i.args.trim());
  return path.posix.resolve(workdir, dest);
}

// ---------------------------------------------------------------------------------------------
// The catalog role's init script.

interface InitScript {
  target: string;
  sql: string;
  /** psql variable → environment variable read with \getenv. */
  getenv: Record<string, string>;
}

function initScriptOf(doc: Compose): InitScript {
  const pg = doc.services.postgres!;
  const init = configMountsOf(pg).filter((c) => c.target.startsWith('/docker-entrypoint-initdb.d/'));
  if (init.length !== 1) throw new Error(`expected one init script for postgres, found ${init.length}`);
  const content = doc.configs?.[init[0]!.source]?.content;
  if (content === undefined) throw new Error(`configs.${init[0]!.source} has no inline content`);
  const getenv = Object.fromEntries([...content.matchAll(/^\\getenv\s+(\S+)\s+(\S+)\s*$/gm)].map((m) => [m[1]!, m[2]!]));
  return { target: init[0]!.target, sql: content, getenv };
}

/** The role the init script creates (the SQL with psql's meta-commands and variables removed, parsed by PostgreSQL's parser). */
async function createdRoles(script: InitScript): Promise<{ stmts: Record<string, unknown>[]; roles: string[] }> {
  const sql = script.sql
    .split('\n')
    .filter((l) => !l.startsWith('\\'))
    .join('\n')
    .replace(/:'([A-Za-z_][A-Za-z0-9_]*)'/g, "'psql-variable'");
  const tree = (await parseSql(sql)) as { stmts: { stmt: Record<string, unknown> }[] };
  const stmts = tree.stmts.map((s) => s.stmt);
  const roles = stmts.flatMap((s) => ('CreateRoleStmt' in s ? [(s.CreateRoleStmt as { role: string }).role] : []));
  return { stmts, roles };
}

// ---------------------------------------------------------------------------------------------
// pgwarden's configuration as the container would load it.

let fileCounter = 0;

/** The pgwarden service's environment and config file, interpolated, loaded with loadConfig. */
function pgwardenConfig(doc: Compose): { config: Config; env: Record<string, string>; configTarget: string | undefined } {
  const svc = doc.services.pgwarden!;
  const env = environmentOf(svc);
  const configTarget = env.PGWARDEN_CONFIG;
  const mount = configMountsOf(svc).find((c) => c.target === configTarget);
  const content = mount ? doc.configs?.[mount.source]?.content : undefined;
  if (configTarget !== undefined && content === undefined) throw new Error(`PGWARDEN_CONFIG=${configTarget} is not an inline config mounted in pgwarden`);
  let file: string | undefined;
  if (content !== undefined) {
    file = path.join(tmp, `pgwarden-${++fileCounter}.yaml`);
    writeFileSync(file, content);
  }
  const config = loadConfig({ ...(file ? { file } : {}), env });
  return { config, env, configTarget };
}

const isLoopback = (host: string) => host === '127.0.0.1' || host === '::1' || host === 'localhost';
const isAnyAddress = (host: string) => host === '0.0.0.0' || host === '::' || host === '';

/**
 * Everything the compose file must agree on with pgwarden's configuration, as a list of
 * problems (empty when the wiring is right). `rawDoc` is the document before interpolation.
 */
function wiringProblems(rawDoc: Compose, env: Env = ENV): string[] {
  const problems: string[] = [];
  const doc = interpolateAll(rawDoc, env);
  const svc = doc.services;
  const pgw = svc.pgwarden;
  const pg = svc.postgres;
  const redis = svc.redis;
  if (!pgw || !pg || !redis) return ['services postgres, redis and pgwarden must all exist'];

  let loaded: ReturnType<typeof pgwardenConfig>;
  try {
    loaded = pgwardenConfig(doc);
  } catch (err) {
    return [`pgwarden's configuration does not load: ${(err as Error).message}`];
  }
  const { config, configTarget } = loaded;
  const ports = portsOf(pgw);

  // Agents: the proxy's port is published, and the proxy listens where Docker forwards to.
  const listen = splitHostPort(config.listen);
  const proxyPort = ports.find((p) => p.target === listen.port);
  if (!proxyPort) problems.push(`listen port ${listen.port} is not a published container port (${ports.map((p) => p.target).join(', ')})`);
  if (!isAnyAddress(listen.host)) problems.push(`listen host ${listen.host}: Docker forwards published ports to the container's interface, listen on 0.0.0.0`);

  // Reviewers: the approval page is published on the host's loopback only (plain HTTP).
  const approval = splitHostPort(config.approval.listen);
  const pagePort = ports.find((p) => p.target === approval.port);
  if (!pagePort) problems.push(`approval.listen port ${approval.port} is not a published container port`);
  else if (!config.approval.tls && !isLoopback(pagePort.hostIp)) {
    problems.push(`the approval page (plain HTTP) is published on ${pagePort.hostIp || 'every host interface'}, not on 127.0.0.1 only`);
  }
  if (!isLoopback(approval.host) && !config.approval.tls && !config.approval.allowInsecureHttp) {
    problems.push(`approval.listen ${config.approval.listen} without approval.tls needs approval.allowInsecureHttp, or pgwarden refuses to start`);
  }
  if (config.approval.publicUrl && pagePort) {
    const u = new URL(config.approval.publicUrl);
    const port = u.port || (u.protocol === 'https:' ? '443' : '80');
    if (u.protocol === 'http:' && (port !== (pagePort.published || String(pagePort.target)) || !isLoopback(u.hostname))) {
      problems.push(`approval.publicUrl ${config.approval.publicUrl} is not where the page is published (${pagePort.hostIp}:${pagePort.published})`);
    }
  }

  // The healthcheck asks the health listener, which stays inside the container.
  if (!config.healthListen) problems.push('healthListen is not set: the healthcheck has nothing to ask');
  else {
    const health = splitHostPort(config.healthListen);
    const asked = /https?:\/\/([^/:]+):(\d+)\/healthz/.exec(healthcheckText(pgw));
    if (!asked) problems.push(`pgwarden's healthcheck does not fetch /healthz: ${healthcheckText(pgw)}`);
    else if (Number(asked[2]) !== health.port) problems.push(`the healthcheck fetches port ${asked[2]}, healthListen is ${config.healthListen}`);
    else if (!isLoopback(health.host) && !isAnyAddress(health.host)) problems.push(`healthListen ${config.healthListen} is not reachable from inside the container at ${asked[1]}`);
    if (ports.some((p) => p.target === health.port)) problems.push(`the health port ${health.port} is published; only the healthcheck needs it`);
  }

  // PostgreSQL and Redis: reached by service name, on a network pgwarden shares, never published.
  const shares = (name: string, s: Service) => {
    if (!networksOf(pgw).some((n) => networksOf(s).includes(n))) problems.push(`pgwarden shares no network with ${name}`);
  };
  const upstream = new URL(config.upstream.url);
  if (upstream.hostname !== 'postgres' || (upstream.port || '5432') !== '5432') {
    problems.push(`upstream.url ${config.upstream.url} is not the postgres service at port 5432`);
  }
  shares('postgres', pg);
  if (!config.redisUrl) problems.push('redisUrl is not set: no shared audit stream, and approvals are refused');
  else {
    const r = new URL(config.redisUrl);
    if (r.hostname !== 'redis' || (r.port || '6379') !== '6379') problems.push(`redisUrl ${config.redisUrl} is not the redis service at port 6379`);
  }
  shares('redis', redis);
  for (const [name, s] of [['postgres', pg], ['redis', redis]] as const) {
    if (portsOf(s).length > 0) problems.push(`${name} publishes ports to the host: agents must go through pgwarden`);
  }

  // Startup order and shutdown.
  const deps = dependsOf(pgw);
  for (const [name, s] of [['postgres', pg], ['redis', redis]] as const) {
    if (deps[name] !== 'service_healthy') problems.push(`pgwarden does not wait for ${name} to be healthy (depends_on condition: service_healthy)`);
    if (!s.healthcheck?.test || s.healthcheck.disable) problems.push(`${name} has no healthcheck, so service_healthy never holds`);
  }
  const grace = pgw.stop_grace_period ? durationMs(pgw.stop_grace_period) : 10_000;
  if (grace <= config.limits.shutdownGraceMs) {
    problems.push(`stop_grace_period ${pgw.stop_grace_period ?? '10s (default)'} is not longer than limits.shutdownGraceMs ${config.limits.shutdownGraceMs}: SIGKILL before the drain ends`);
  }

  // Files: the rules from the repository, the journal on a volume, the config file mounted.
  const mounts = mountsOf(pgw);
  const rules = mounts.find((m) => m.target === config.rulesDir);
  if (!config.rulesDir || !rules) problems.push(`rulesDir ${config.rulesDir} is not a mount target (${mounts.map((m) => m.target).join(', ')})`);
  else {
    const source = path.resolve(ROOT, rules.source);
    if (rules.type !== 'bind' || !existsSync(source) || !statSync(source).isDirectory()) problems.push(`rulesDir is mounted from ${rules.source}, not a directory of this repository`);
    if (!rules.readOnly) problems.push('the rules are mounted writable');
  }
  const journal = mounts.find((m) => m.target === config.audit.journalDir);
  if (!journal || journal.type !== 'volume' || !(journal.source in (doc.volumes ?? {}))) {
    problems.push(`audit.journalDir ${config.audit.journalDir} is not on a named volume: a crash's spool would be lost with the container`);
  }
  if (configTarget === undefined) problems.push('PGWARDEN_CONFIG is not set: the reviewers have nowhere to come from');

  // The masking catalog connection logs in as the role the init script creates, with the
  // password that script reads.
  if (!config.masking.catalogUrl) problems.push('masking.catalogUrl is not set: its default (postgres without a password) cannot log in under SCRAM');
  else {
    const cat = new URL(config.masking.catalogUrl);
    if (cat.hostname !== 'postgres') problems.push(`masking.catalogUrl points at ${cat.hostname}, not the postgres service`);
    try {
      const script = initScriptOf(doc);
      const role = /CREATE\s+ROLE\s+("?)([A-Za-z_][A-Za-z0-9_]*)\1/i.exec(script.sql)?.[2];
      if (decodeURIComponent(cat.username) !== role) problems.push(`masking.catalogUrl logs in as "${cat.username}", the init script creates "${role}"`);
      const envName = Object.values(script.getenv)[0];
      const given = envName ? environmentOf(pg)[envName] : undefined;
      if (!given || decodeURIComponent(cat.password) !== given) problems.push('masking.catalogUrl has another password than the one the init script gives the role');
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  return problems;
}

/** A deep copy of the raw document, changed by `edit`. */
function mutated(edit: (doc: Compose) => void): Compose {
  const copy = structuredClone(raw);
  edit(copy);
  return copy;
}

const interpolated = interpolateAll(raw, ENV);
const { config, env: pgwardenEnv } = pgwardenConfig(interpolated);

// ---------------------------------------------------------------------------------------------

describe('docker-compose.yml: services', () => {
  it('has PostgreSQL 15, Redis 7 and pgwarden built from this repository, each restarted unless stopped', () => {
    expect(Object.keys(raw.services).sort()).toEqual(['pgwarden', 'postgres', 'redis']);
    expect(raw.services.postgres!.image).toBe('postgres:15');
    expect(raw.services.redis!.image).toBe('redis:7');
    expect(raw.services.pgwarden!.build?.context).toBe('.');
    expect(raw.services.pgwarden!.build?.dockerfile_inline).toBeTypeOf('string');
    for (const s of Object.values(raw.services)) expect(s.restart).toBe('unless-stopped');
  });

  it('declares every network, named volume and config its services use', () => {
    for (const [name, s] of Object.entries(raw.services)) {
      for (const n of networksOf(s)) expect(Object.keys(raw.networks ?? {}), `${name}: network ${n}`).toContain(n);
      for (const m of mountsOf(s).filter((m) => m.type === 'volume')) expect(Object.keys(raw.volumes ?? {}), `${name}: volume ${m.source}`).toContain(m.source);
      for (const c of configMountsOf(s)) expect(Object.keys(raw.configs ?? {}), `${name}: config ${c.source}`).toContain(c.source);
    }
  });

  it('wires pgwarden to PostgreSQL, Redis, the rules, the journal and the host ports as its configuration says', () => {
    expect(wiringProblems(raw)).toEqual([]);
    // The values a user reads in the README, as pgwarden loads them.
    expect(splitHostPort(config.listen).port).toBe(6432);
    expect(portsOf(raw.services.pgwarden!)).toEqual([
      { hostIp: '', published: '6432', target: 6432, protocol: 'tcp' },
      { hostIp: '127.0.0.1', published: '6480', target: 6480, protocol: 'tcp' },
    ]);
    expect(config.upstream.url).toBe('postgres://postgres:5432');
    expect(config.redisUrl).toBe('redis://redis:6379');
    expect(config.rulesDir).toBe('/app/rules');
    expect(config.approval.store).toBe('redis');
    expect(config.approval.reviewers.map((r) => r.tokenHash)).toEqual([hashReviewerToken(REVIEWER_TOKEN)]);
    expect(config.audit.hmacKey).toBe(ENV.PGWARDEN_AUDIT_KEY);
    expect(config.audit.instanceId).toBeTruthy();
    expect(config.workers).toBeGreaterThanOrEqual(1);
  });

  it('the rules it mounts are the repository\'s rules/, and they validate', () => {
    const rules = mountsOf(raw.services.pgwarden!).find((m) => m.target === config.rulesDir)!;
    expect(path.resolve(ROOT, rules.source)).toBe(path.join(ROOT, 'rules'));
    const policy = loadRules(path.resolve(ROOT, rules.source));
    expect(policy.files.length).toBeGreaterThan(0);
    expect(policy.rules.length).toBeGreaterThan(0);
  });

  it('keeps PostgreSQL and Redis on internal networks of their own, which only pgwarden joins', () => {
    const networks = raw.networks ?? {};
    const internal = (n: string) => networks[n]?.internal === true;
    const pg = networksOf(raw.services.postgres!);
    const redis = networksOf(raw.services.redis!);
    expect(pg.every(internal)).toBe(true);
    expect(redis.every(internal)).toBe(true);
    expect(pg.filter((n) => redis.includes(n))).toEqual([]); // nothing in PostgreSQL can reach Redis (approvals)
    const pgw = networksOf(raw.services.pgwarden!);
    expect(pgw).toEqual(expect.arrayContaining([...pg, ...redis]));
    // Docker gives a container on several networks its way out (and the published ports) through
    // the first non-internal network in name order: that must be one, and it must sort first.
    const sorted = [...pgw].sort();
    expect(internal(sorted[0]!)).toBe(false);
  });
});

describe('docker-compose.yml: pgwarden\'s environment and config file', () => {
  /** The README's "Configuration" section (whatever its heading level), up to the next heading as high. */
  const readmeConfiguration = (() => {
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const heading = /^(#{2,3}) Configuration\s*$/m.exec(readme);
    if (!heading) throw new Error('README.md has no "Configuration" section');
    const rest = readme.slice(heading.index + heading[0].length);
    const end = rest.search(new RegExp(`^#{1,${heading[1]!.length}} `, 'm'));
    return end < 0 ? rest : rest.slice(0, end);
  })();
  const known = new Set([...OPTIONS.flatMap((o) => (o.env ? [o.env] : [])), 'PGWARDEN_CONFIG']);

  it('sets only PGWARDEN_* variables pgwarden reads and the README documents (no typo is silently ignored)', () => {
    const names = Object.keys(environmentOf(raw.services.pgwarden!));
    expect(names.length).toBeGreaterThan(10);
    expect(names.filter((n) => !n.startsWith('PGWARDEN_'))).toEqual([]);
    expect(names.filter((n) => !known.has(n))).toEqual([]);
    expect(names.filter((n) => !readmeConfiguration.includes(n))).toEqual([]);
  });

  it('sets the documented variables of this setup', () => {
    expect(Object.keys(pgwardenEnv)).toEqual(
      expect.arrayContaining([
        'PGWARDEN_LISTEN',
        'PGWARDEN_UPSTREAM',
        'PGWARDEN_REDIS_URL',
        'PGWARDEN_AUDIT_KEY',
        'PGWARDEN_INSTANCE_ID',
        'PGWARDEN_AUDIT_JOURNAL',
        'PGWARDEN_HEALTH_LISTEN',
        'PGWARDEN_RULES_DIR',
        'PGWARDEN_APPROVAL_LISTEN',
        'PGWARDEN_APPROVAL_PUBLIC_URL',
        'PGWARDEN_MASK_CATALOG_URL',
        'PGWARDEN_LOG_LEVEL',
        'PGWARDEN_CONFIG',
      ]),
    );
  });

  it('the config file holds only settings that have no environment variable (one place for each)', () => {
    const mount = configMountsOf(interpolated.services.pgwarden!).find((c) => c.target === pgwardenEnv.PGWARDEN_CONFIG)!;
    const file = parseYaml(interpolated.configs![mount.source]!.content!) as Record<string, unknown>;
    const leaves: string[] = [];
    const walk = (node: unknown, at: string[]) => {
      if (node !== null && typeof node === 'object' && !Array.isArray(node)) for (const [k, v] of Object.entries(node)) walk(v, [...at, k]);
      else leaves.push(at.join('.'));
    };
    walk(file, []);
    const withEnv = new Set(OPTIONS.filter((o) => o.env).map((o) => o.path.join('.')));
    expect(leaves).toEqual(expect.arrayContaining(['approval.allowInsecureHttp', 'approval.reviewers']));
    expect(leaves.filter((l) => withEnv.has(l))).toEqual([]);
  });

  it('the config file is mounted where PGWARDEN_CONFIG points, from an inline configs entry', () => {
    const mounts = configMountsOf(raw.services.pgwarden!);
    const mount = mounts.find((c) => c.target === pgwardenEnv.PGWARDEN_CONFIG);
    expect(mount).toBeDefined();
    expect(raw.configs?.[mount!.source]?.content).toBeTypeOf('string');
  });

  it('does not make the root file system read-only: Compose copies inline configs into it at creation', () => {
    for (const [name, s] of Object.entries(raw.services)) {
      const inline = configMountsOf(s).some((c) => raw.configs?.[c.source]?.content !== undefined);
      if (inline) expect(s.read_only, name).not.toBe(true);
    }
  });
});

describe('docker-compose.yml: secrets', () => {
  const refs = allRefs(raw);
  const REQUIRED = ['POSTGRES_PASSWORD', 'PGWARDEN_CATALOG_PASSWORD', 'PGWARDEN_AUDIT_KEY', 'PGWARDEN_REVIEWER_TOKEN_HASH'];

  it('requires every secret with ${VAR:?message}: Compose refuses to start without it, there are no defaults', () => {
    const required = new Set(refs.filter((r) => r.op === ':?').map((r) => r.name));
    expect([...required].sort()).toEqual([...REQUIRED].sort());
    for (const r of refs.filter((r) => REQUIRED.includes(r.name))) {
      expect(r.op, `${r.at}: \${${r.name}${r.op}…}`).toBe(':?');
      expect(r.arg.trim(), `${r.at}: the message tells the user what to set`).not.toBe('');
    }
    // No literal secret anywhere: every variable that names a password, key or token is a reference.
    for (const s of Object.values(raw.services)) {
      for (const [name, value] of Object.entries(environmentOf(s))) {
        if (/PASSWORD|_KEY$|SECRET|TOKEN/.test(name)) expect(value, name).toMatch(/^\$\{[A-Z_]+:\?[^}]+\}$/);
      }
    }
  });

  it.each(REQUIRED)('refuses to start without %s', (name) => {
    expect(() => interpolateAll(raw, { ...ENV, [name]: undefined })).toThrow(new MissingVariable(`required variable ${name} is missing a value`).message);
    expect(() => interpolateAll(raw, { ...ENV, [name]: '' })).toThrow(MissingVariable);
  });

  it('takes pgwarden\'s secret settings from required variables, never from the file itself', () => {
    const secretEnv = configReference()
      .filter((s) => s.secret && s.env)
      .map((s) => s.env!);
    expect(secretEnv).toContain('PGWARDEN_AUDIT_KEY');
    for (const [name, value] of Object.entries(environmentOf(raw.services.pgwarden!))) {
      if (secretEnv.includes(name)) expect(value, name).toMatch(/^\$\{[A-Z_]+:\?[^}]+\}$/);
    }
    // URLs carry their password from a required variable too.
    const catalog = new URL(pgwardenEnv.PGWARDEN_MASK_CATALOG_URL!);
    expect(decodeURIComponent(catalog.password)).toBe(ENV.PGWARDEN_CATALOG_PASSWORD);
    expect(environmentOf(raw.services.pgwarden!).PGWARDEN_MASK_CATALOG_URL).toMatch(/:\$\{PGWARDEN_CATALOG_PASSWORD:\?[^}]+\}@/);
  });

  it('the header says how to set every required variable, start the stack and connect', () => {
    const header = composeText.slice(0, composeText.search(/^[^#\s]/m));
    for (const name of REQUIRED) expect(header, name).toMatch(new RegExp(`export ${name}=`));
    expect(header).toMatch(/docker compose up -d/);
    const psql = /psql "postgres:\/\/postgres@127\.0\.0\.1:(\d+)\/postgres"/.exec(header);
    expect(psql).not.toBeNull();
    expect(portsOf(raw.services.pgwarden!).find((p) => p.target === splitHostPort(config.listen).port)?.published).toBe(psql![1]);
  });
});

describe('docker-compose.yml: PostgreSQL', () => {
  it('uses SCRAM for every connection and publishes nothing', () => {
    const env = environmentOf(interpolated.services.postgres!);
    expect(env.POSTGRES_PASSWORD).toBe(ENV.POSTGRES_PASSWORD);
    expect(env.POSTGRES_HOST_AUTH_METHOD).toBe('scram-sha-256');
    expect(env.POSTGRES_INITDB_ARGS?.split(/\s+/)).toEqual(expect.arrayContaining(['--auth-host=scram-sha-256', '--auth-local=scram-sha-256']));
    expect(JSON.stringify(raw.services.postgres)).not.toMatch(/trust/);
    expect(portsOf(raw.services.postgres!)).toEqual([]);
    // The check must not pass on the image's socket-only initialisation server.
    expect(healthcheckText(raw.services.postgres!)).toMatch(/pg_isready .*--host=127\.0\.0\.1/);
  });

  it('creates the catalog role at first start with a login and nothing else: no table data, no predefined roles', async () => {
    const script = initScriptOf(raw);
    expect(script.target).toMatch(/^\/docker-entrypoint-initdb\.d\/[^/]+\.sql$/);
    const { stmts, roles } = await createdRoles(script);
    expect(roles).toHaveLength(1);
    const role = roles[0]!;
    expect(new URL(pgwardenEnv.PGWARDEN_MASK_CATALOG_URL!).username).toBe(role);
    for (const stmt of stmts) {
      const [kind] = Object.keys(stmt);
      expect(['CreateRoleStmt', 'AlterRoleSetStmt', 'CommentStmt'], JSON.stringify(stmt)).toContain(kind);
    }
    const create = stmts.find((s) => 'CreateRoleStmt' in s)!.CreateRoleStmt as { options: { DefElem: { defname: string; arg?: { Boolean?: { boolval?: boolean } } } }[] };
    const options = create.options.map((o) => o.DefElem);
    expect(options.find((o) => o.defname === 'canlogin')?.arg?.Boolean?.boolval).toBe(true);
    expect(options.some((o) => o.defname === 'password')).toBe(true);
    for (const o of options.filter((o) => !['canlogin', 'password'].includes(o.defname))) {
      // NOSUPERUSER, NOCREATEDB, …: only ever "no"; IN ROLE / ROLE / ADMIN would add memberships.
      expect(o.arg?.Boolean?.boolval, o.defname).toBe(false);
    }
    // The password comes from the container's environment (\getenv), never from the script,
    // and that variable is given to the postgres container from a required variable.
    const [[psqlVar, envName]] = Object.entries(script.getenv) as [[string, string]];
    expect(script.sql).toMatch(new RegExp(`PASSWORD\\s+:'${psqlVar}'`));
    expect(environmentOf(raw.services.postgres!)[envName]).toMatch(new RegExp(`^\\$\\{PGWARDEN_CATALOG_PASSWORD:\\?`));
  });

  it('gives the postgres container only PGWARDEN_* variables its init script reads', () => {
    const script = initScriptOf(raw);
    const names = Object.keys(environmentOf(raw.services.postgres!)).filter((n) => n.startsWith('PGWARDEN_'));
    expect(names.filter((n) => !Object.values(script.getenv).includes(n))).toEqual([]);
  });
});

describe('docker-compose.yml: the pgwarden image (dockerfile_inline)', () => {
  const stages = parseDockerfile(raw.services.pgwarden!.build!.dockerfile_inline!);
  const build = stages[0]!;
  const runtime = stages[stages.length - 1]!;

  it('builds in a node:20 stage and runs in a separate one', () => {
    expect(stages).toHaveLength(2);
    expect(build.from).toBe('node:20-bookworm-slim');
    expect(build.name).toBeTruthy();
    expect(runtime.from).toBe('node:20-bookworm-slim');
    const run = (s: Stage) => s.instructions.filter((i) => i.cmd === 'RUN').map((i) => i.args).join('\n');
    expect(run(build)).toMatch(/\bnpm ci\b/);
    expect(run(build)).toMatch(/\bnpm run build\b/);
    expect(run(build)).toMatch(/\bnpm prune --omit=dev\b/);
    expect(run(runtime)).not.toMatch(/\bnpm (ci|install|i)\b/);
  });

  it('copies named files from the context, never node_modules or the whole context', () => {
    for (const stage of stages) {
      for (const c of copiesOf(stage).filter((c) => c.from === undefined)) {
        for (const source of c.sources) {
          expect(source, `COPY ${c.sources.join(' ')} ${c.dest}`).not.toMatch(/^(\.|\.\/|\*|\/)$|node_modules/);
          expect(existsSync(path.join(ROOT, source)), `COPY source ${source} exists in the repository`).toBe(true);
        }
      }
    }
    expect(stages.flatMap((s) => s.instructions).filter((i) => i.cmd === 'ADD')).toEqual([]);
  });

  it('the build stage has everything the build compiles', () => {
    const copied = copiesOf(build).flatMap((c) => c.sources);
    const tsconfig = JSON.parse(readFileSync(path.join(ROOT, 'tsconfig.build.json'), 'utf8')) as { include: string[]; extends?: string };
    expect(copied).toEqual(expect.arrayContaining(['package.json', 'package-lock.json', 'tsconfig.build.json', ...tsconfig.include]));
    if (tsconfig.extends) expect(copied).toContain(path.posix.normalize(tsconfig.extends));
  });

  it('the runtime stage keeps the repository\'s layout for what pgwarden reads at run time', () => {
    const landed = copiesLanded(runtime);
    /** Where `source` (from the context, or from another stage) lands in the image. */
    const at = (source: string, from?: string) => landed.find((l) => l.source === source && l.from === from)?.dest;
    const app = inImage(runtime, '.', runtime.instructions.length);
    const buildDir = inImage(build, '.', build.instructions.length);
    // package.json: "type": "module" makes the compiled ESM in dist/ loadable.
    expect(JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).type).toBe('module');
    expect(at('package.json')).toBe(path.posix.join(app, 'package.json'));
    // Pruned to production dependencies in the build stage; compiled code only.
    expect(at(path.posix.join(buildDir, 'node_modules'), build.name)).toBe(path.posix.join(app, 'node_modules'));
    expect(at(path.posix.join(buildDir, 'dist/src'), build.name)).toBe(path.posix.join(app, 'dist/src'));
    // The bundled rules (the default rulesDir, ../../../rules from dist/src/policy) and the
    // approval page (read from src/approval/page/index.html at run time).
    expect(at('rules')).toBe(path.posix.join(app, 'rules'));
    expect(existsSync(path.join(ROOT, 'src/approval/page/index.html'))).toBe(true);
    expect(at('src/approval/page')).toBe(path.posix.join(app, 'src/approval/page'));
    // The service mounts the rules exactly over the bundled ones.
    expect(config.rulesDir).toBe(path.posix.join(app, 'rules'));
  });

  it('starts pgwarden\'s CLI as the non-root node user', () => {
    const users = runtime.instructions.filter((i) => i.cmd === 'USER').map((i) => i.args.trim());
    expect(users.length).toBeGreaterThan(0);
    expect(users[users.length - 1]).not.toMatch(/^(root|0)(:|$)/);
    expect(raw.services.pgwarden!.user ?? 'node').not.toMatch(/^(root|0)(:|$)/);
    const cmd = runtime.instructions.filter((i) => i.cmd === 'CMD').pop()!;
    const argv = JSON.parse(cmd.args) as string[];
    expect(argv).toEqual(['node', 'dist/src/cli.js', 'start']);
    expect(JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).bin.pgwarden).toBe(argv[1]);
    expect(existsSync(path.join(ROOT, 'src/cli.ts'))).toBe(true);
  });

  it('prepares the audit journal directory for the node user (a new named volume takes its owner)', () => {
    const run = runtime.instructions.filter((i) => i.cmd === 'RUN').map((i) => i.args).join('\n');
    expect(run).toContain(`mkdir -p ${config.audit.journalDir}`);
    expect(run).toMatch(new RegExp(`chown node(:node)? ${config.audit.journalDir.replace(/[/.]/g, '\\$&')}`));
  });
});

describe('docker-compose.yml: the checks can fail', () => {
  const cases: [string, (doc: Compose) => void, RegExp][] = [
    ['the proxy port published as another container port', (d) => (d.services.pgwarden!.ports![0] = '6432:5432'), /listen port 6432 is not a published container port/],
    ['the approval page published on every interface', (d) => (d.services.pgwarden!.ports![1] = '6480:6480'), /approval page .* published on every host interface/],
    ['PostgreSQL published', (d) => (d.services.postgres!.ports = ['5432:5432']), /postgres publishes ports/],
    ['a healthcheck on the wrong port', (d) => (d.services.pgwarden!.healthcheck!.test = ['CMD', 'node', '-e', "fetch('http://127.0.0.1:9999/healthz')"]), /healthcheck fetches port 9999/],
    ['the upstream misspelt', (d) => (environmentOfRaw(d).PGWARDEN_UPSTREAM = 'postgres://postgress:5432'), /upstream\.url .* is not the postgres service/],
    ['the rules mounted elsewhere', (d) => ((d.services.pgwarden!.volumes![0] as MountLong).target = '/etc/pgwarden/rules'), /rulesDir \/app\/rules is not a mount target/],
    ['a grace period shorter than the drain', (d) => (d.services.pgwarden!.stop_grace_period = '10s'), /stop_grace_period 10s is not longer/],
    ['no health condition', (d) => (d.services.pgwarden!.depends_on = ['postgres', 'redis']), /does not wait for postgres to be healthy/],
    ['the catalog URL as another user', (d) => (environmentOfRaw(d).PGWARDEN_MASK_CATALOG_URL = 'postgres://postgres:${PGWARDEN_CATALOG_PASSWORD:?x}@postgres:5432'), /logs in as "postgres"/],
    ['the approval page without allowInsecureHttp', (d) => (d.configs!['pgwarden-config']!.content = d.configs!['pgwarden-config']!.content!.replace('allowInsecureHttp: true', 'allowInsecureHttp: false')), /needs approval\.allowInsecureHttp/],
    ['an invalid setting', (d) => (environmentOfRaw(d).PGWARDEN_WORKERS = 'two'), /does not load: [\s\S]*PGWARDEN_WORKERS: expected a whole number/],
  ];

  /** The raw environment map of pgwarden (mutable, in the copy). */
  function environmentOfRaw(d: Compose): Record<string, string> {
    return d.services.pgwarden!.environment as Record<string, string>;
  }

  it.each(cases)('reports %s', (_name, edit, problem) => {
    const problems = wiringProblems(mutated(edit));
    expect(problems.join('\n')).toMatch(problem);
  });

  it('leaves the parsed document itself unchanged', () => {
    expect(wiringProblems(raw)).toEqual([]);
  });
});
