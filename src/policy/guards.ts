import type { SettingChange, StatementInfo } from '../classify/statement-info.js';
import type { Verdict } from './evaluate.js';

/**
 * Built-in refusals that no rule can loosen, because they would let the server read SQL
 * differently from the parser that judged it (DESIGN.md "standard_conforming_strings must stay
 * on"): libpg-query always parses with standard_conforming_strings on and UTF-8 text.
 */
const ON_VALUES = new Set(['on', 'true', 'yes', '1', 't', 'y']);
const SAFE_ENCODINGS = new Set(['utf8', 'utf-8', 'unicode', 'sql_ascii']);

function normalised(value: string | undefined): string | undefined {
  return value?.trim().replace(/^'(.*)'$/, '$1').toLowerCase();
}

function settingGuard(s: SettingChange): Verdict | null {
  const value = normalised(s.value);
  if (s.name === 'standard_conforming_strings') {
    if (s.via === 'reset' || (value !== undefined && ON_VALUES.has(value))) return null;
    return {
      action: 'deny',
      rule: 'standard-conforming-strings',
      reason: 'standard_conforming_strings must stay on: with it off, the server would read string literals differently from the firewall',
      sqlstate: '42501',
      message: 'pgwarden: changing standard_conforming_strings is not allowed',
    };
  }
  if (s.name === 'client_encoding' || s.name === 'names') {
    if (s.via === 'reset' || (value !== undefined && SAFE_ENCODINGS.has(value))) return null;
    return {
      action: 'deny',
      rule: 'client-encoding',
      reason: 'pgwarden judges SQL as UTF-8; another client encoding would let the server read different text',
      sqlstate: '0A000',
      message: 'pgwarden: client_encoding must stay UTF8',
    };
  }
  return null;
}

export function guardStatement(st: StatementInfo): Verdict | null {
  for (const s of st.settings) {
    const v = settingGuard(s);
    if (v) return v;
  }
  return null;
}

/**
 * Startup parameters are run-time settings too: `options=-c standard_conforming_strings=off`,
 * `--name=value`, or the parameter itself. Returns a refusal message or null.
 */
export function guardStartup(params: ReadonlyMap<string, string>): string | null {
  for (const s of startupSettings(params)) {
    const v = settingGuard(s);
    if (v) return v.message ?? v.reason;
  }
  return null;
}

/** The run-time settings a StartupMessage makes: `options` (-c name=value, --name=value) and parameters. */
export function startupSettings(params: ReadonlyMap<string, string>): SettingChange[] {
  const settings: SettingChange[] = [];
  for (const [name, value] of params) {
    if (name === 'options') {
      // The server splits options on whitespace (backslash escapes a space): -c name=value or --name=value.
      const words = value.match(/(?:\\.|\S)+/g) ?? [];
      for (let i = 0; i < words.length; i++) {
        const w = words[i]!.replace(/\\(.)/g, '$1');
        let assignment: string | undefined;
        if (w === '-c') assignment = words[++i]?.replace(/\\(.)/g, '$1');
        else if (w.startsWith('-c')) assignment = w.slice(2);
        else if (w.startsWith('--')) assignment = w.slice(2);
        if (assignment === undefined) continue;
        const eq = assignment.indexOf('=');
        if (eq < 0) continue;
        settings.push({ name: assignment.slice(0, eq).toLowerCase().replace(/-/g, '_'), value: assignment.slice(eq + 1), local: false, via: 'set' });
      }
    } else if (name !== 'user' && name !== 'database' && name !== 'replication') {
      settings.push({ name: name.toLowerCase(), value, local: false, via: 'set' });
    }
  }
  return settings;
}

/** The server's own report of a setting overrides everything: refuse traffic if it went unsafe. */
export function guardServerParams(params: ReadonlyMap<string, string>): Verdict | null {
  const scs = params.get('standard_conforming_strings');
  if (scs !== undefined && !ON_VALUES.has(scs.toLowerCase())) {
    return {
      action: 'deny',
      rule: 'standard-conforming-strings',
      reason: 'the server reports standard_conforming_strings off; every statement on this connection is refused',
      sqlstate: '42501',
      message: 'pgwarden: standard_conforming_strings is off on this connection; reconnect',
    };
  }
  const enc = params.get('client_encoding');
  if (enc !== undefined && !SAFE_ENCODINGS.has(enc.toLowerCase())) {
    return {
      action: 'deny',
      rule: 'client-encoding',
      reason: `the server reports client_encoding ${enc}; pgwarden only judges UTF-8 text`,
      sqlstate: '0A000',
      message: 'pgwarden: client_encoding must be UTF8; reconnect with client_encoding=UTF8',
    };
  }
  return null;
}
