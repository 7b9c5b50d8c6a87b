/**
 * Approval metrics for `GET /metrics` (docs/approvals-api.md "Other endpoints"), in the
 * Prometheus text exposition format 0.0.4, written by hand (three metric families):
 *
 *   pgwarden_approval_requests_total{outcome}  counter, every outcome always present
 *   pgwarden_approval_pending                  gauge, omitted when unknown (Redis down)
 *   pgwarden_approval_wait_seconds             histogram of the time from hold to verdict
 *
 * Each worker process keeps its own ApprovalMetrics; the process serving /metrics gathers
 * their snapshot()s (plain JSON, sent over IPC), adds them with sumSnapshots() and renders.
 */
export type ApprovalOutcome = 'held' | 'approved' | 'denied' | 'expired' | 'withdrawn' | 'granted' | 'refused';

export const APPROVAL_OUTCOMES: readonly ApprovalOutcome[] = ['held', 'approved', 'denied', 'expired', 'withdrawn', 'granted', 'refused'];

/** Upper bounds (seconds) of the wait histogram's buckets; +Inf is implied. */
export const WAIT_BUCKETS: readonly number[] = [0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600];

/** The Content-Type of renderMetrics() output. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export interface MetricsSnapshot {
  counts: Record<ApprovalOutcome, number>;
  /**
   * `counts[i]` is the number of observations ≤ `buckets[i]` (cumulative, as Prometheus wants
   * them); observations above the last bound are only in `count`.
   */
  wait: { buckets: number[]; counts: number[]; sum: number; count: number };
}

function zeroCounts(): Record<ApprovalOutcome, number> {
  return Object.fromEntries(APPROVAL_OUTCOMES.map((o) => [o, 0])) as Record<ApprovalOutcome, number>;
}

function emptySnapshot(buckets: readonly number[] = WAIT_BUCKETS): MetricsSnapshot {
  return { counts: zeroCounts(), wait: { buckets: [...buckets], counts: buckets.map(() => 0), sum: 0, count: 0 } };
}

export class ApprovalMetrics {
  private readonly counts = zeroCounts();
  private readonly bucketCounts = WAIT_BUCKETS.map(() => 0);
  private waitSum = 0;
  private waitCount = 0;

  /** Adds `n` (default 1) to an outcome's counter; counters never go down. */
  count(outcome: ApprovalOutcome, n = 1): void {
    if (!Object.hasOwn(this.counts, outcome) || !Number.isFinite(n) || n <= 0) return;
    this.counts[outcome] += n;
  }

  /** Records a wait from hold to verdict. A negative wait (clocks of two hosts) counts as 0. */
  observeWait(seconds: number): void {
    if (!Number.isFinite(seconds)) return;
    const v = Math.max(0, seconds);
    for (let i = 0; i < WAIT_BUCKETS.length; i++) if (v <= WAIT_BUCKETS[i]!) this.bucketCounts[i]!++;
    this.waitSum += v;
    this.waitCount++;
  }

  /** A copy of the current values, as plain JSON. */
  snapshot(): MetricsSnapshot {
    return {
      counts: { ...this.counts },
      wait: { buckets: [...WAIT_BUCKETS], counts: [...this.bucketCounts], sum: this.waitSum, count: this.waitCount },
    };
  }
}

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

/**
 * Adds snapshots (from several processes). Missing or malformed values count as 0; histograms
 * with different bucket bounds cannot be added and throw.
 */
export function sumSnapshots(list: MetricsSnapshot[]): MetricsSnapshot {
  const out = emptySnapshot(list[0]?.wait?.buckets ?? WAIT_BUCKETS);
  for (const s of list) {
    for (const o of APPROVAL_OUTCOMES) out.counts[o] += num(s.counts?.[o]);
    const w = s.wait;
    if (!w) continue;
    const buckets = w.buckets ?? [];
    if (buckets.length !== out.wait.buckets.length || buckets.some((b, i) => b !== out.wait.buckets[i])) {
      throw new Error('cannot add wait histograms with different buckets');
    }
    for (let i = 0; i < out.wait.counts.length; i++) out.wait.counts[i]! += num(w.counts?.[i]);
    out.wait.sum += num(w.sum);
    out.wait.count += num(w.count);
  }
  return out;
}

/** A sample value or `le` bound as Prometheus parses it (Go ParseFloat; +Inf, -Inf, NaN). */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** The exposition text, ending with a newline. `pending: null` (unknown) omits that sample. */
export function renderMetrics(s: MetricsSnapshot, gauges: { pending: number | null }): string {
  const lines: string[] = [];
  const family = (name: string, type: string, help: string) => lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);

  family(
    'pgwarden_approval_requests_total',
    'counter',
    'Approval requests by outcome (held, approved, denied, expired, withdrawn), statements let through by a grant (granted) and holds refused (refused).',
  );
  for (const o of APPROVAL_OUTCOMES) lines.push(`pgwarden_approval_requests_total{outcome="${o}"} ${formatValue(num(s.counts?.[o]))}`);

  family('pgwarden_approval_pending', 'gauge', 'Approval requests waiting for a verdict.');
  if (gauges.pending !== null) lines.push(`pgwarden_approval_pending ${formatValue(gauges.pending)}`);

  const w = s.wait;
  family('pgwarden_approval_wait_seconds', 'histogram', 'Time from hold to verdict, in seconds.');
  w.buckets.forEach((b, i) => lines.push(`pgwarden_approval_wait_seconds_bucket{le="${formatValue(b)}"} ${formatValue(num(w.counts[i]))}`));
  lines.push(`pgwarden_approval_wait_seconds_bucket{le="+Inf"} ${formatValue(num(w.count))}`);
  lines.push(`pgwarden_approval_wait_seconds_sum ${formatValue(num(w.sum))}`);
  lines.push(`pgwarden_approval_wait_seconds_count ${formatValue(num(w.count))}`);
  return lines.join('\n') + '\n';
}
