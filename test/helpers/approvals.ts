import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { hashReviewerToken } from '../../src/approval/reviewer-auth.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { silentLogger } from '../../src/logger.js';
import { startInstance, type RunningInstance } from '../../src/server/run.js';
import { testConfig } from './proxy.js';

/**
 * A whole pgwarden instance (proxy, approval gate, review server, audit) against the machine's
 * PostgreSQL and a given Redis, with reviewers whose tokens the test knows.
 */
export const AUDIT_KEY = 'an-audit-key-for-approval-tests-0123456789';

/** Review rules the approval tests use (plus the bundled DDL/privilege review rules' shape). */
export const APPROVAL_RULES = `
policy:
  default: allow
  unanalysable: review
  fastpath: deny
  rules:
    - name: schema-changes
      description: DDL changes the schema
      match: { kind: [ddl] }
      action: review
    - name: quick-timeout
      description: a probe for the approval timeout
      match: { relations: [timeout_probe] }
      action: review
      review: { timeout_seconds: 1 }
    - name: payroll-two-person
      description: payroll changes need two DBAs
      match: { relations: [payroll], kind: [write] }
      action: review
      review: { approvers: 2, reviewers: [dba] }
    - name: ledger-once
      description: ledger writes are approved one at a time
      match: { relations: [ledger], kind: [write] }
      action: review
      review: { grants: false }
    - name: no-server-files
      match: { functions: [pg_read_file] }
      action: deny
`;

/**
 * APPROVAL_RULES plus masking: `public.pii_people` has two masked columns (the user pii_exempt
 * sees raw values), and any statement naming it is held for review.
 */
export const MASKED_APPROVAL_RULES = `${APPROVAL_RULES}    - name: pii-people
      description: statements on pii_people are reviewed
      match: { relations: [pii_people] }
      action: review
masking:
  - table: public.pii_people
    columns:
      email: partial_email
      ssn: redact
    exempt: [pii_exempt]
`;

/** The table MASKED_APPROVAL_RULES masks (create it in the test database). */
export const PII_PEOPLE_DDL = 'CREATE TABLE pii_people (id int, name text, email text, ssn text)';

export interface TestReviewer {
  name: string;
  token: string;
}

export const REVIEWERS = {
  alice: { name: 'alice', token: `pgwr_alice_${randomBytes(8).toString('hex')}`, groups: ['dba'], actsAs: ['alice_agent'] },
  bob: { name: 'bob', token: `pgwr_bob_${randomBytes(8).toString('hex')}`, groups: ['dba'], actsAs: [] as string[] },
  carol: { name: 'carol', token: `pgwr_carol_${randomBytes(8).toString('hex')}`, groups: ['ops'], actsAs: ['postgres'] },
};

export interface ApprovalInstance extends RunningInstance {
  /** The approval page/API base URL (no trailing slash). */
  api: string;
  prefix: string;
  stream: string;
  dir: string;
  url(db: string, user?: string): string;
  close(): Promise<void>;
}

export function reviewerConfig() {
  return Object.values(REVIEWERS).map((r) => ({ name: r.name, tokenHash: hashReviewerToken(r.token), groups: r.groups, actsAs: r.actsAs }));
}

export async function startApprovalInstance(
  redisUrl: string,
  opts: { prefix?: string; stream?: string; rules?: string; instanceId?: string; approval?: Partial<NonNullable<ConfigInput['approval']>> } = {},
): Promise<ApprovalInstance> {
  const dir = mkdtempSync(path.join(tmpdir(), 'pgw-approvals-'));
  const rulesDir = path.join(dir, 'rules');
  mkdirSync(rulesDir);
  writeFileSync(path.join(rulesDir, 'policy.yaml'), opts.rules ?? APPROVAL_RULES);
  const prefix = opts.prefix ?? `pgw-test:${randomBytes(4).toString('hex')}:approvals`;
  const stream = opts.stream ?? `pgw-test:${randomBytes(4).toString('hex')}:audit`;
  const config = testConfig({
    rulesDir,
    redisUrl,
    audit: { enabled: true, stream, journalDir: path.join(dir, 'journal'), hmacKey: AUDIT_KEY, instanceId: opts.instanceId ?? 'test-a' },
    approval: {
      listen: '127.0.0.1:0',
      redisPrefix: prefix,
      timeoutSeconds: 30,
      reviewers: reviewerConfig(),
      ...opts.approval,
    },
  });
  const inst = await startInstance(config, silentLogger);
  return Object.assign(inst, {
    api: inst.review!.url.replace(/\/$/, ''),
    prefix,
    stream,
    dir,
    url: (db: string, user = 'postgres') => `postgres://${user}@127.0.0.1:${inst.proxy.port}/${db}`,
    close: async () => {
      await inst.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  });
}

/** Calls the REST API as a reviewer. */
export async function callApi(
  base: string,
  token: string | null,
  method: 'GET' | 'POST',
  route: string,
  body?: unknown,
): Promise<{ status: number; json: any }> {
  const res = await fetch(base + route, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json };
}

/** A connected node-postgres client that collects the notices it receives. */
export async function agent(url: string): Promise<pg.Client & { notices: string[] }> {
  const client = new pg.Client({ connectionString: url });
  const notices: string[] = [];
  client.on('notice', (n) => notices.push(n.message ?? ''));
  client.on('error', () => {});
  await client.connect();
  return Object.assign(client, { notices });
}

/** The approval id from the agent's "held for review" notice, once it arrived. */
export async function heldId(client: { notices: string[] }, timeoutMs = 10_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const n of client.notices) {
      const m = /statement held for review \(request ([0-9a-f]{16})\)/.exec(n);
      if (m) {
        client.notices.splice(client.notices.indexOf(n), 1);
        return m[1]!;
      }
    }
    if (Date.now() > deadline) throw new Error(`no hold notice within ${timeoutMs} ms (notices: ${JSON.stringify(client.notices)})`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function readAudit(redisUrl: string, stream: string): Promise<Record<string, any>[]> {
  const r = new Redis(redisUrl);
  try {
    const rows = await r.xrange(stream, '-', '+');
    return rows.map(([, f]) => JSON.parse(f[f.indexOf('entry') + 1]!) as Record<string, any>);
  } finally {
    r.disconnect();
  }
}

export async function until<T>(what: string, fn: () => Promise<T | undefined | false | null> | T | undefined | false | null, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
