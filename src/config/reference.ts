import { z } from 'zod';
import { OPTIONS, type OptionSpec } from './load.js';
import { configSchema } from './schema.js';

/**
 * The configuration reference: one row per setting, derived from the zod schema (types, defaults
 * and the `about` metadata in schema.ts) and the loader's table of environment variables and
 * flags. The README's table is this module's output, and a test compares them, so adding or
 * changing a setting without its documentation fails the build instead of drifting.
 */
export interface SettingDoc {
  /** Dotted path in the config file; `<name>` for a map key, `[]` for list items. */
  path: string;
  env?: string;
  flag?: string;
  /** What values it takes, e.g. `integer ≥ 1`, `` `prefer`, `require` ``. */
  value: string;
  /** The default as shown to readers; `–` when unset means off, `(required)` inside its block. */
  shown: string;
  description: string;
  secret: boolean;
}

/** The JSON Schema subset zod emits for this schema (draft 2020-12). */
interface JsonNode {
  type?: string;
  properties?: Record<string, JsonNode>;
  additionalProperties?: JsonNode | boolean;
  required?: string[];
  items?: JsonNode;
  anyOf?: JsonNode[];
  enum?: unknown[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  pattern?: string;
  format?: string;
  minLength?: number;
  description?: string;
  shownDefault?: string;
  secret?: boolean;
  keyName?: string;
  shownValue?: string;
}

const code = (v: unknown): string => `\`${typeof v === 'string' ? v : JSON.stringify(v)}\``;

/** A readable name for a value's type; patterns are named by what they accept. */
function valueText(node: JsonNode): string {
  if (node.shownValue !== undefined) return node.shownValue;
  if (node.enum) return node.enum.map(code).join(', ');
  if (node.anyOf) return node.anyOf.map(valueText).join(' or ');
  switch (node.type) {
    case 'boolean':
      return '`true`, `false`';
    case 'integer':
    case 'number': {
      const min = node.minimum ?? (node.exclusiveMinimum !== undefined ? node.exclusiveMinimum + 1 : undefined);
      // zod writes "int" as the safe-integer range; only a bound someone chose is worth showing.
      const chosenMax = node.maximum !== undefined && node.maximum < Number.MAX_SAFE_INTEGER ? node.maximum : undefined;
      if (min !== undefined && chosenMax !== undefined) return `integer ${min}–${chosenMax}`;
      if (min !== undefined && min > Number.MIN_SAFE_INTEGER) return `integer ≥ ${min}`;
      return 'integer';
    }
    case 'array':
      return `list of ${node.items ? plural(valueText(node.items)) : 'values'}`;
    case 'string':
      if (node.format === 'uri') return 'URL';
      if (node.pattern?.startsWith('^postgres')) return '`postgres://` URL';
      if (node.pattern?.startsWith('^rediss?')) return '`redis://` or `rediss://` URL';
      if (node.pattern?.includes('\\d{1,5}$')) return '`host:port`';
      if (node.pattern?.startsWith('^sha256')) return '`sha256:<hex>`';
      return 'text';
    default:
      return node.type ?? 'value';
  }
}

const plural = (s: string): string => (s === 'text' ? 'texts' : s === 'URL' ? 'URLs' : s);

function shownDefault(node: JsonNode, required: boolean): string {
  if (node.shownDefault !== undefined) return node.shownDefault;
  if (node.default !== undefined) return code(node.default);
  return required ? '(required)' : '–';
}

function walk(node: JsonNode, path: string[], required: boolean, out: SettingDoc[]): void {
  const extra = node.additionalProperties;
  if (node.type === 'object' && node.properties) {
    for (const [key, child] of Object.entries(node.properties)) {
      walk(child, [...path, key], node.required?.includes(key) ?? false, out);
    }
    return;
  }
  if (node.type === 'object' && typeof extra === 'object') {
    const keyPath = [...path, `<${node.keyName ?? 'name'}>`];
    if (extra.type === 'object' && extra.properties) {
      walk(extra, keyPath, false, out);
    } else {
      out.push(leaf({ ...extra, description: node.description, keyName: undefined }, keyPath, false));
    }
    return;
  }
  if (node.type === 'array' && node.items?.type === 'object' && node.items.properties) {
    walk(node.items, [...path.slice(0, -1), `${path[path.length - 1]}[]`], false, out);
    return;
  }
  out.push(leaf(node, path, required));
}

function leaf(node: JsonNode, path: string[], required: boolean): SettingDoc {
  return {
    path: path.join('.'),
    value: valueText(node),
    shown: shownDefault(node, required),
    description: node.description ?? '',
    secret: node.secret === true,
  };
}

/**
 * Every setting, in schema order, with where it can come from. Throws when a setting has no
 * description, an environment variable or flag names no setting, or a secret has a flag.
 */
export function configReference(schema: z.ZodType = configSchema, options: readonly OptionSpec[] = OPTIONS): SettingDoc[] {
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as JsonNode;
  const settings: SettingDoc[] = [];
  walk(json, [], false, settings);
  const byPath = new Map(settings.map((s) => [s.path, s]));
  const problems: string[] = [];
  for (const option of options) {
    const setting = byPath.get(option.path.join('.'));
    if (!setting) {
      problems.push(`${option.env ?? option.flag}: no setting ${option.path.join('.')} in the schema`);
      continue;
    }
    setting.env = option.env;
    setting.flag = option.flag;
  }
  for (const s of settings) {
    if (s.description === '') problems.push(`${s.path}: no description (add .meta(about(...)) in schema.ts)`);
    if (s.secret && s.flag) problems.push(`${s.path}: a secret must not be a flag (flags show in ps)`);
  }
  if (problems.length > 0) throw new Error(`configuration reference:\n  ${problems.join('\n  ')}`);
  return settings;
}

const cell = (text: string): string => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** The README table (markdown). */
export function renderConfigReference(settings: SettingDoc[] = configReference()): string {
  const rows = settings.map((s) => {
    const env = s.env ? code(s.env) : '–';
    const flag = s.flag ? code(`--${s.flag}`) : s.secret ? '– (secret)' : '–';
    return `| ${[code(s.path), env, flag, s.value, s.shown, s.description].map(cell).join(' | ')} |`;
  });
  return ['| setting | env | flag | value | default | meaning |', '| --- | --- | --- | --- | --- | --- |', ...rows].join('\n') + '\n';
}

export const REFERENCE_BEGIN =
  '<!-- config-reference:begin: generated from src/config/schema.ts by `npm run docs:config`; edit the schema, not this table -->';
export const REFERENCE_END = '<!-- config-reference:end -->';

/** The text between the README's markers, or undefined when the markers are missing. */
export function readmeReference(readme: string): string | undefined {
  const begin = readme.indexOf(REFERENCE_BEGIN);
  const end = readme.indexOf(REFERENCE_END);
  if (begin < 0 || end < begin) return undefined;
  return readme.slice(begin + REFERENCE_BEGIN.length, end).replace(/^\n/, '');
}

/** The README with its reference replaced by `table`. */
export function withReference(readme: string, table: string): string {
  const begin = readme.indexOf(REFERENCE_BEGIN);
  const end = readme.indexOf(REFERENCE_END);
  if (begin < 0 || end < begin) throw new Error(`README has no ${REFERENCE_BEGIN} … ${REFERENCE_END} markers`);
  return `${readme.slice(0, begin + REFERENCE_BEGIN.length)}\n${table}${readme.slice(end)}`;
}
