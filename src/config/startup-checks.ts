import { accessSync, constants } from 'node:fs';
import { resolveAuditKey } from '../audit/build-audit.js';
import { BUNDLED_RULES_DIR } from '../policy/build-judge.js';
import { RulesInvalid, loadRules } from '../policy/rules-loader.js';
import { splitHostPort } from './load.js';
import type { Config } from './schema.js';

/**
 * Checks across settings that the schema cannot express, made before anything starts, so that
 * `pgwarden config check` finds what `start` would fail on (or silently degrade to) without
 * starting it. `problems` stop `start`; `warnings` are legal but rarely meant.
 */
export interface StartupReport {
  problems: string[];
  warnings: string[];
}

/**
 * Whether statements the rules send to review can be held: approvals need Redis, or
 * `approval.store: memory` in a single process (`pgwarden demo`). Without either (or with
 * approval.enabled off) there is no gate, and such statements are refused with a clear error.
 */
export function approvalsEnabled(config: Config): boolean {
  if (!config.approval.enabled) return false;
  return config.approval.store === 'memory' || config.redisUrl !== undefined;
}

/** Why the approval page must not listen where it does, or null. */
export function approvalExposureProblem(config: Config): string | null {
  const { host } = splitHostPort(config.approval.listen);
  const loopback = host === '127.0.0.1' || host === '::1' || host === 'localhost';
  if (loopback || config.approval.tls || config.approval.allowInsecureHttp) return null;
  return (
    `refusing to serve the approval page on ${config.approval.listen} without TLS: set approval.tls (cert and key), ` +
    'or approval.allowInsecureHttp when a TLS-terminating proxy is in front'
  );
}

export function startupReport(config: Config): StartupReport {
  const problems: string[] = [];
  const warnings: string[] = [];
  const approvals = approvalsEnabled(config);
  // With Redis the key must be configured; without it, start generates one into the journal.
  if (config.audit.enabled && config.redisUrl) {
    try {
      resolveAuditKey(config, { generate: false });
    } catch (err) {
      problems.push(`audit.hmacKey: ${(err as Error).message}`);
    }
  }
  if (approvals) {
    const exposure = approvalExposureProblem(config);
    if (exposure) problems.push(`approval.listen: ${exposure}`);
  }
  const files: [string, string | undefined][] = [
    ['tls.cert', config.tls?.cert],
    ['tls.key', config.tls?.key],
    ['upstream.sslrootcert', config.upstream.sslrootcert],
    ['approval.tls.cert', approvals ? config.approval.tls?.cert : undefined],
    ['approval.tls.key', approvals ? config.approval.tls?.key : undefined],
  ];
  for (const [setting, file] of files) {
    if (file === undefined) continue;
    try {
      accessSync(file, constants.R_OK);
    } catch (err) {
      problems.push(`${setting}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  }
  // The mock SCRAM salt of unknown agents is derived from the masking key; a per-process random
  // key would make an unknown name's salt change between connections while a real agent's stays,
  // telling which agent names exist.
  if (config.identity.mode === 'agents' && !config.masking.hashKey && !config.audit.enabled) {
    problems.push('masking.hashKey: identity.mode agents with audit off needs a stable secret: set PGWARDEN_MASK_KEY (32+ characters)');
  }
  const rulesDir = config.rulesDir ?? BUNDLED_RULES_DIR;
  try {
    loadRules(rulesDir);
  } catch (err) {
    if (!(err instanceof RulesInvalid)) throw err;
    problems.push(...err.problems.map((p) => `rulesDir: ${p.file}: ${p.path}: ${p.message}`));
  }
  if (config.approval.enabled && !approvals) {
    warnings.push('approval: no redisUrl and approval.store is not memory, so every statement the rules send to review is refused');
  }
  if (approvals && config.approval.reviewers.length === 0 && !config.approval.oidc) {
    warnings.push('approval: no reviewers (approval.reviewers or approval.oidc), so held statements can only time out');
  }
  if (!config.audit.enabled) warnings.push('audit.enabled: false: nothing records who ran what (for measurements only)');
  return { problems, warnings };
}
