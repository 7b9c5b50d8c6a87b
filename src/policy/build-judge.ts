import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../config/schema.js';
import { Classifier, loadParser } from '../classify/classifier.js';
import type { Logger } from '../logger.js';
import { PolicyJudge } from './policy-judge.js';
import { RowEstimator } from './row-estimator.js';
import { RulesStore } from './rules-store.js';

/**
 * The rules shipped with pgwarden (safe defaults), used when no rules directory is configured.
 * This file runs from src/policy (tests) or dist/src/policy (built), hence two candidates.
 */
export const BUNDLED_RULES_DIR =
  ['../../rules', '../../../rules']
    .map((rel) => fileURLToPath(new URL(rel, import.meta.url)))
    .find((dir) => existsSync(path.join(dir, 'policy.yaml'))) ?? 'rules';

/** Composition of the decision step: parser, rules store (watched), judge. */
export async function buildPolicyJudge(config: Config, log: Logger): Promise<{ judge: PolicyJudge; rules: RulesStore }> {
  await loadParser();
  const rules = new RulesStore(config.rulesDir ?? BUNDLED_RULES_DIR, log);
  rules.watch();
  log.info({ event: 'rules-loaded', version: rules.current.version, files: rules.current.files, rules: rules.current.rules.length }, 'rules loaded');
  const estimator = config.estimatorUrl ? new RowEstimator(config.estimatorUrl, log) : null;
  if (!estimator) log.info('no estimatorUrl configured: large reads of sensitive tables are limited by the row cap only');
  return { judge: new PolicyJudge(rules, new Classifier(), estimator), rules };
}
