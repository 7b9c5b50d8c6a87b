import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config/load.js';
import type { ApprovalRequest } from './approval-store.js';
import { pageUrl } from './build-approvals.js';
import { terminalSafe } from '../terminal-text.js';
import { newReviewerToken } from './reviewer-auth.js';

/**
 * Reviewers' commands: `pgwarden requests`, `pgwarden approve <id>`, `pgwarden deny <id>`, and
 * `pgwarden reviewer-token` for administrators. They call the REST API of any instance (the
 * requests live in Redis), so the same checks apply as on the page.
 *
 * The token comes from PGWARDEN_REVIEWER_TOKEN only: a flag would show in `ps` and shell history.
 */
const REQUESTS_USAGE = `Usage:
  pgwarden requests [--status pending|recent] [--json]   list approval requests
  pgwarden approve <id> [--reason TEXT] [--grant-minutes N]
  pgwarden deny <id> --reason TEXT
  pgwarden reviewer-token                               print a new reviewer token and the hash for the config
Where: --url URL of the approval API (env PGWARDEN_APPROVAL_URL; default: approval.listen of --config FILE).
Who: the reviewer token in PGWARDEN_REVIEWER_TOKEN (a static token or an OIDC token).
`;

interface Out {
  out: (s: string) => void;
  err: (s: string) => void;
}

const stdio: Out = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };


function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 120 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

function describe(r: ApprovalRequest, now: number): string {
  const when = r.state === 'pending' ? `expires in ${duration(r.expiresAt - now)}` : r.verdict ? `by ${r.verdict.by}${r.verdict.reason ? `: ${r.verdict.reason}` : ''}` : '';
  const lines = [
    `${r.id}  ${r.state.padEnd(9)} ${terminalSafe(r.session.user)}@${terminalSafe(r.session.database)} (${terminalSafe(r.session.application) || 'no application_name'}, ${terminalSafe(r.session.client)})`,
    `  rule ${terminalSafe(r.rule)}: ${terminalSafe(r.reason)}`,
    ...r.statements.slice(0, 3).map((s) => `  > ${terminalSafe(s.text).slice(0, 200)}`),
    `  kinds ${r.kinds.join(', ') || '-'}; tables ${r.tables.map(terminalSafe).join(', ') || '-'}${r.estimatedRows !== undefined ? `; ~${r.estimatedRows} rows` : ''}`,
    `  waiting ${duration(now - r.createdAt)}, ${terminalSafe(when)}; approvals ${r.approvals.length}/${r.required}${r.reviewerGroups.length ? ` from ${r.reviewerGroups.map(terminalSafe).join(' or ')}` : ''}`,
  ];
  return lines.join('\n') + '\n';
}

export async function requestsCommand(command: string, args: string[], io: Out = stdio, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  if (command === 'reviewer-token') {
    const { token, hash } = newReviewerToken();
    io.out(`token (give it to the reviewer; it is not stored anywhere): ${token}\n`);
    io.out(`config entry:\n  approval:\n    reviewers:\n      - name: <reviewer name>\n        tokenHash: ${hash}\n        groups: []\n        actsAs: []\n`);
    return 0;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        config: { type: 'string' },
        url: { type: 'string' },
        status: { type: 'string', default: 'pending' },
        json: { type: 'boolean', default: false },
        reason: { type: 'string' },
        'grant-minutes': { type: 'string' },
      },
    });
  } catch (err) {
    io.err(`pgwarden ${command}: ${(err as Error).message}\n${REQUESTS_USAGE}`);
    return 2;
  }
  const v = parsed.values;
  const token = env.PGWARDEN_REVIEWER_TOKEN;
  if (!token) {
    io.err(`pgwarden ${command}: set PGWARDEN_REVIEWER_TOKEN to your reviewer token\n`);
    return 2;
  }
  let base: string;
  try {
    base = (v.url ?? env.PGWARDEN_APPROVAL_URL ?? pageUrl(loadConfig({ file: v.config, env }))).replace(/\/$/, '');
  } catch (err) {
    io.err(`pgwarden ${command}: ${err instanceof ConfigError ? err.message : (err as Error).message}\n`);
    return 2;
  }
  const call = async (method: 'GET' | 'POST', route: string, body?: unknown): Promise<{ status: number; json: any }> => {
    const res = await fetch(base + route, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    try {
      return { status: res.status, json: JSON.parse(text) };
    } catch {
      return { status: res.status, json: { error: text } };
    }
  };
  try {
    if (command === 'requests') {
      if (v.status !== 'pending' && v.status !== 'recent') {
        io.err('pgwarden requests: --status must be pending or recent\n');
        return 2;
      }
      const r = await call('GET', `/api/requests?status=${v.status}`);
      if (r.status !== 200) return failed(io, command, r);
      const list = r.json.requests as ApprovalRequest[];
      if (v.json) io.out(JSON.stringify(list, null, 2) + '\n');
      else if (list.length === 0) io.out(v.status === 'pending' ? 'no statements are waiting for review\n' : 'no recent decisions\n');
      else for (const req of list) io.out(describe(req, r.json.now as number));
      return 0;
    }
    const id = parsed.positionals[0];
    if (!id || parsed.positionals.length > 1) {
      io.err(`pgwarden ${command}: give exactly one request id\n${REQUESTS_USAGE}`);
      return 2;
    }
    if (command === 'deny' && !v.reason) {
      io.err('pgwarden deny: --reason is required (the agent sees it in its error)\n');
      return 2;
    }
    const grant = v['grant-minutes'];
    if (grant !== undefined && !/^\d+$/.test(grant)) {
      io.err('pgwarden approve: --grant-minutes must be a whole number\n');
      return 2;
    }
    const body = { ...(v.reason ? { reason: v.reason } : {}), ...(grant ? { grant_minutes: Number(grant) } : {}) };
    const r = await call('POST', `/api/requests/${encodeURIComponent(id)}/${command}`, body);
    if (r.status !== 200) return failed(io, command, r);
    const rec = r.json as ApprovalRequest;
    if (command === 'approve' && rec.state === 'pending') io.out(`${id}: approval recorded (${rec.approvals.length} of ${rec.required}); still pending\n`);
    else io.out(`${id}: ${rec.state}${rec.verdict?.grantMinutes ? ` (grant for ${rec.verdict.grantMinutes} min)` : ''}\n`);
    return 0;
  } catch (err) {
    io.err(`pgwarden ${command}: cannot reach the approval API at ${base}: ${(err as Error).message}\n`);
    return 1;
  }
}

function failed(io: Out, command: string, r: { status: number; json: { error?: string } }): number {
  io.err(`pgwarden ${command}: ${r.status}: ${terminalSafe(r.json.error ?? 'request failed')}\n`);
  return 1;
}
