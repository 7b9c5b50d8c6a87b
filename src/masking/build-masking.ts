import { createHmac, randomBytes } from 'node:crypto';
import type { Config } from '../config/schema.js';
import { resolveAuditKey } from '../audit/build-audit.js';
import type { Logger } from '../logger.js';
import { MaskCatalog } from './mask-catalog.js';

/**
 * The `hash` strategy's key: configured (PGWARDEN_MASK_KEY), else derived from the audit key
 * (HMAC with a fixed label, so the two secrets stay separate while every instance that shares
 * the audit key hashes alike, and hashes still join across connections and workers).
 */
export function maskingKey(config: Config, log: Logger): Buffer {
  if (config.masking.hashKey) return Buffer.from(config.masking.hashKey, 'utf8');
  if (config.audit.enabled) {
    try {
      return createHmac('sha256', resolveAuditKey(config, { generate: true })).update('pgwarden masking hash key v1').digest();
    } catch {
      // fall through
    }
  }
  log.warn('no masking.hashKey and no audit key: hashed columns use a per-process key and will not join across processes');
  return randomBytes(32);
}

/** The catalog side connection: configured, or the upstream (as user postgres when it names none: sidePool's default). */
export function catalogUrl(config: Config): string {
  return config.masking.catalogUrl ?? config.upstream.url;
}

export function createMaskCatalog(config: Config, log: Logger): MaskCatalog {
  return new MaskCatalog(catalogUrl(config), log, config.masking.refreshSeconds * 1000);
}
