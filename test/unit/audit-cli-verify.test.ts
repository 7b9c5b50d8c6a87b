import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { auditCommand } from '../../src/audit/audit-cli.js';
import { seal, type ChainHead } from '../../src/audit/chain.js';
import type { AuditEvent } from '../../src/audit/events.js';
import { chainFileName } from '../../src/audit/journal.js';

/**
 * `pgwarden audit verify` on the embedded journal: retention settings trim only the Redis stream,
 * so a journal chain that lost its first entries is reported even when retention is configured.
 */
const work = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-audit-cli-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const KEY = 'audit-key-for-the-cli-verify-test-0123456789';
const CHAIN = 'pgw-cli@1';

function event(n: number): AuditEvent {
  return {
    v: 1,
    ts: `2024-05-01T12:00:0${n}.000Z`,
    type: 'statement.denied',
    session: { id: 1, user: 'alice', database: 'shop', application: 'psql', client: '10.0.0.1:5000' },
    request: 'simple',
    statements: [{ text: 'DELETE FROM orders WHERE id = $1', fingerprint: 'fp' }],
    kinds: ['write'],
    tables: ['public.orders'],
    rule: 'no-delete',
    sqlstate: '42501',
  };
}

/** A journal whose chain starts at `from` (entries before it deleted), and a config retaining `maxLen`. */
function journalFrom(name: string, from: number): string {
  const dir = path.join(work, name);
  const lines: string[] = [];
  let head: ChainHead | null = null;
  for (let n = 1; n <= 4; n++) {
    const e = seal(event(n), CHAIN, head, Buffer.from(KEY));
    head = { seq: e.seq, hash: e.hash };
    if (n >= from) lines.push(e.json);
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, chainFileName(CHAIN)), `${lines.join('\n')}\n`);
  const config = path.join(work, `${name}.yaml`);
  writeFileSync(config, `audit:\n  journalDir: ${dir}\n  hmacKey: ${KEY}\n  maxLen: 100\n`);
  return config;
}

function capture(): { io: { out: (s: string) => void; err: (s: string) => void }; text: () => string } {
  let text = '';
  return { io: { out: (s) => (text += s), err: (s) => (text += s) }, text: () => text };
}

describe('pgwarden audit verify (journal)', () => {
  it('passes an intact chain with retention configured', async () => {
    const cap = capture();
    expect(await auditCommand(['verify', '--config', journalFrom('intact', 1)], cap.io)).toBe(0);
    expect(cap.text()).toContain('OK');
  });

  it('reports a journal chain whose first entries were deleted, although retention is configured (it trims only Redis)', async () => {
    const cap = capture();
    expect(await auditCommand(['verify', '--config', journalFrom('cut', 3)], cap.io)).toBe(1);
    expect(cap.text()).toContain('chain starts at seq 3');
  });
});
