import { describe, expect, it } from 'vitest';
import {
  APPROVAL_OUTCOMES,
  ApprovalMetrics,
  formatValue,
  renderMetrics,
  sumSnapshots,
  WAIT_BUCKETS,
  type MetricsSnapshot,
} from '../../src/approval/metrics.js';

/** One sample line of the text format 0.0.4: name, optional labels, value, optional timestamp. */
const SAMPLE =
  /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*,?\})? ([-+]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?|Inf|NaN))(?: -?[0-9]+)?$/;
const HELP = /^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* \S.*$/;
const TYPE = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/;

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the exposition text, failing on any line that is not HELP, TYPE or a valid sample. */
function parse(text: string): { samples: Sample[]; types: Map<string, string>; helps: Set<string> } {
  expect(text.endsWith('\n')).toBe(true);
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const helps = new Set<string>();
  for (const line of text.slice(0, -1).split('\n')) {
    if (line.startsWith('# HELP ')) {
      expect(line).toMatch(HELP);
      helps.add(line.split(' ')[2]!);
      continue;
    }
    if (line.startsWith('# TYPE ')) {
      const m = TYPE.exec(line);
      expect(m, line).not.toBeNull();
      expect(types.has(m![1]!), `duplicate TYPE for ${m![1]}`).toBe(false);
      types.set(m![1]!, m![2]!);
      continue;
    }
    const m = SAMPLE.exec(line);
    expect(m, `not a valid sample line: ${JSON.stringify(line)}`).not.toBeNull();
    const labels: Record<string, string> = {};
    for (const l of (m![2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    const raw = m![3]!;
    const value = raw === '+Inf' || raw === 'Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw);
    samples.push({ name: m![1]!, labels, value });
  }
  return { samples, types, helps };
}

const find = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
  samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));

function filled(): MetricsSnapshot {
  const m = new ApprovalMetrics();
  m.count('held', 4);
  m.count('approved');
  m.count('denied', 2);
  m.count('refused');
  for (const s of [0.05, 0.3, 2, 2, 45, 700, 5000]) m.observeWait(s);
  return m.snapshot();
}

describe('ApprovalMetrics', () => {
  it('counts outcomes, by one or by n', () => {
    const s = filled();
    expect(s.counts).toEqual({ held: 4, approved: 1, denied: 2, expired: 0, withdrawn: 0, granted: 0, refused: 1 });
  });

  it('ignores counts that would make a counter go down or become NaN', () => {
    const m = new ApprovalMetrics();
    m.count('held', 3);
    m.count('held', -1);
    m.count('held', Number.NaN);
    m.count('nonsense' as 'held');
    expect(m.snapshot().counts.held).toBe(3);
    expect(Object.keys(m.snapshot().counts).sort()).toEqual([...APPROVAL_OUTCOMES].sort());
  });

  it('keeps the wait histogram cumulative, with sum and count', () => {
    const { wait } = filled();
    expect(wait.buckets).toEqual([0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600]);
    //                  0.1 0.5 1  5  15 30 60 120 300 600 1800 3600
    expect(wait.counts).toEqual([1, 2, 2, 4, 4, 4, 5, 5, 5, 5, 6, 6]);
    expect(wait.count).toBe(7);
    expect(wait.sum).toBeCloseTo(0.05 + 0.3 + 2 + 2 + 45 + 700 + 5000, 9);
  });

  it('puts a value equal to a bound in that bucket and a negative wait in the first', () => {
    const m = new ApprovalMetrics();
    m.observeWait(5);
    m.observeWait(-3);
    m.observeWait(Number.NaN);
    const { wait } = m.snapshot();
    expect(wait.counts.slice(0, 4)).toEqual([1, 1, 1, 2]);
    expect(wait.count).toBe(2);
    expect(wait.sum).toBe(5);
  });

  it('gives a plain JSON snapshot that later counts do not change', () => {
    const m = new ApprovalMetrics();
    m.count('expired');
    const before = m.snapshot();
    expect(JSON.parse(JSON.stringify(before))).toEqual(before);
    m.count('expired');
    m.observeWait(1);
    expect(before.counts.expired).toBe(1);
    expect(before.wait.count).toBe(0);
  });
});

describe('sumSnapshots', () => {
  it('adds counters, bucket counts, sums and counts', () => {
    const a = filled();
    const m = new ApprovalMetrics();
    m.count('held');
    m.count('granted', 5);
    m.observeWait(0.5);
    const b = m.snapshot();
    const total = sumSnapshots([a, b]);
    expect(total.counts).toEqual({ held: 5, approved: 1, denied: 2, expired: 0, withdrawn: 0, granted: 5, refused: 1 });
    expect(total.wait.counts).toEqual([1, 3, 3, 5, 5, 5, 6, 6, 6, 6, 7, 7]);
    expect(total.wait.count).toBe(8);
    expect(total.wait.sum).toBeCloseTo(a.wait.sum + 0.5, 9);
    // The inputs are left alone.
    expect(a.counts.held).toBe(4);
  });

  it('of nothing is all zeros with the standard buckets', () => {
    const s = sumSnapshots([]);
    expect(Object.values(s.counts)).toEqual(APPROVAL_OUTCOMES.map(() => 0));
    expect(s.wait).toEqual({ buckets: [...WAIT_BUCKETS], counts: WAIT_BUCKETS.map(() => 0), sum: 0, count: 0 });
  });

  it('treats missing outcomes (an older worker) as zero and refuses different buckets', () => {
    const old = filled() as { counts: Partial<Record<string, number>> } & Omit<MetricsSnapshot, 'counts'>;
    delete old.counts.refused;
    expect(sumSnapshots([old as MetricsSnapshot, filled()]).counts.refused).toBe(1);
    const other = filled();
    other.wait.buckets = [1, 2, 3];
    other.wait.counts = [0, 0, 0];
    expect(() => sumSnapshots([filled(), other])).toThrow(/buckets/);
  });
});

describe('renderMetrics', () => {
  it('writes only HELP, TYPE and valid sample lines, one HELP and TYPE per family', () => {
    const { samples, types, helps } = parse(renderMetrics(filled(), { pending: 3 }));
    expect(Object.fromEntries(types)).toEqual({
      pgwarden_approval_requests_total: 'counter',
      pgwarden_approval_pending: 'gauge',
      pgwarden_approval_wait_seconds: 'histogram',
    });
    expect([...helps].sort()).toEqual([...types.keys()].sort());
    // Every sample belongs to a declared family.
    for (const s of samples) expect(types.has(s.name.replace(/_(bucket|sum|count)$/, '')) || types.has(s.name), s.name).toBe(true);
  });

  it('lists every outcome, zeros included', () => {
    const { samples } = parse(renderMetrics(new ApprovalMetrics().snapshot(), { pending: 0 }));
    const counters = find(samples, 'pgwarden_approval_requests_total');
    expect(counters.map((s) => s.labels.outcome)).toEqual(['held', 'approved', 'denied', 'expired', 'withdrawn', 'granted', 'refused']);
    expect(counters.every((s) => s.value === 0)).toBe(true);
  });

  it('renders the counter values', () => {
    const { samples } = parse(renderMetrics(filled(), { pending: 0 }));
    expect(find(samples, 'pgwarden_approval_requests_total', { outcome: 'held' })[0]!.value).toBe(4);
    expect(find(samples, 'pgwarden_approval_requests_total', { outcome: 'denied' })[0]!.value).toBe(2);
  });

  it('writes a cumulative histogram whose +Inf bucket equals the count', () => {
    const snap = filled();
    const { samples } = parse(renderMetrics(snap, { pending: 1 }));
    const buckets = find(samples, 'pgwarden_approval_wait_seconds_bucket');
    expect(buckets.map((b) => b.labels.le)).toEqual(['0.1', '0.5', '1', '5', '15', '30', '60', '120', '300', '600', '1800', '3600', '+Inf']);
    for (let i = 1; i < buckets.length; i++) expect(buckets[i]!.value).toBeGreaterThanOrEqual(buckets[i - 1]!.value);
    expect(buckets.map((b) => b.value)).toEqual([1, 2, 2, 4, 4, 4, 5, 5, 5, 5, 6, 6, 7]);
    const count = find(samples, 'pgwarden_approval_wait_seconds_count')[0]!.value;
    expect(buckets.at(-1)!.value).toBe(count);
    expect(count).toBe(7);
    expect(find(samples, 'pgwarden_approval_wait_seconds_sum')[0]!.value).toBeCloseTo(snap.wait.sum, 9);
  });

  it('renders the pending gauge, and omits its sample when unknown', () => {
    const known = parse(renderMetrics(filled(), { pending: 12 }));
    expect(find(known.samples, 'pgwarden_approval_pending').map((s) => s.value)).toEqual([12]);
    const text = renderMetrics(filled(), { pending: null });
    const unknown = parse(text);
    expect(find(unknown.samples, 'pgwarden_approval_pending')).toEqual([]);
    expect(text).not.toMatch(/^pgwarden_approval_pending /m);
    // The other families are still there.
    expect(find(unknown.samples, 'pgwarden_approval_requests_total')).toHaveLength(7);
  });

  it('renders a sum of snapshots', () => {
    const { samples } = parse(renderMetrics(sumSnapshots([filled(), filled()]), { pending: null }));
    expect(find(samples, 'pgwarden_approval_requests_total', { outcome: 'held' })[0]!.value).toBe(8);
    expect(find(samples, 'pgwarden_approval_wait_seconds_bucket', { le: '+Inf' })[0]!.value).toBe(14);
  });
});

describe('formatValue', () => {
  it('writes numbers the way Prometheus parses them', () => {
    expect(formatValue(0)).toBe('0');
    expect(formatValue(42)).toBe('42');
    expect(formatValue(0.1)).toBe('0.1');
    expect(formatValue(1e21)).toBe('1e+21');
    expect(formatValue(Infinity)).toBe('+Inf');
    expect(formatValue(-Infinity)).toBe('-Inf');
    expect(formatValue(Number.NaN)).toBe('NaN');
    for (const v of [0, 42, 0.1, 1e21, 1.5e-7, Infinity, -Infinity, Number.NaN]) expect(`x ${formatValue(v)}`).toMatch(SAMPLE);
  });
});
