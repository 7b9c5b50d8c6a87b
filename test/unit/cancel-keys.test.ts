import { describe, expect, it } from 'vitest';
import { CancelKeys, workerOfProcessId, type CancelTarget } from '../../src/session/cancel-keys.js';

const target = (): CancelTarget & { cancelled: number } => {
  const t = {
    cancelled: 0,
    cancel(): void {
      t.cancelled++;
    },
  };
  return t;
};

const isPositiveInt32 = (n: number): boolean => Number.isInteger(n) && n > 0 && n <= 0x7fffffff && (n | 0) === n;

describe('CancelKeys', () => {
  it('finds the session for its own process id and secret', () => {
    const keys = new CancelKeys(0);
    const session = target();
    const { processId, secretKey } = keys.issue(session);
    expect(keys.lookup(processId, secretKey)).toBe(session);
  });

  it('issues a 4-byte secret by default and a longer one when asked (protocol 3.2)', () => {
    const keys = new CancelKeys(0);
    expect(keys.issue(target()).secretKey.length).toBe(4);
    const long = keys.issue(target(), 32);
    expect(long.secretKey.length).toBe(32);
    expect(keys.lookup(long.processId, long.secretKey)).toBeDefined();
  });

  it('refuses a wrong secret', () => {
    const keys = new CancelKeys(0);
    const { processId, secretKey } = keys.issue(target());
    const wrong = Buffer.from(secretKey);
    wrong[0] = (wrong[0] ?? 0) ^ 0xff;
    expect(keys.lookup(processId, wrong)).toBeUndefined();
  });

  it('refuses a secret of the wrong length, including a prefix or extension of the right one', () => {
    const keys = new CancelKeys(0);
    const { processId, secretKey } = keys.issue(target());
    expect(keys.lookup(processId, secretKey.subarray(0, 3))).toBeUndefined();
    expect(keys.lookup(processId, Buffer.concat([secretKey, Buffer.from([0])]))).toBeUndefined();
    expect(keys.lookup(processId, Buffer.alloc(0))).toBeUndefined();
    const long = keys.issue(target(), 32);
    expect(keys.lookup(long.processId, long.secretKey.subarray(0, 4))).toBeUndefined();
  });

  it("refuses another session's secret and an unknown process id", () => {
    const keys = new CancelKeys(3);
    const a = keys.issue(target());
    const b = keys.issue(target());
    expect(keys.lookup(a.processId, b.secretKey)).toBeUndefined();
    expect(keys.lookup(a.processId + 1000, a.secretKey)).toBeUndefined();
  });

  it('forgets a session after release, and release of an unknown id is harmless', () => {
    const keys = new CancelKeys(0);
    const a = keys.issue(target());
    const b = keys.issue(target());
    keys.release(a.processId);
    keys.release(123456789);
    expect(keys.lookup(a.processId, a.secretKey)).toBeUndefined();
    expect(keys.lookup(b.processId, b.secretKey)).toBeDefined();
  });

  it('issues distinct process ids and distinct random secrets', () => {
    const keys = new CancelKeys(1);
    const issued = Array.from({ length: 1000 }, () => keys.issue(target(), 16));
    expect(new Set(issued.map((k) => k.processId)).size).toBe(1000);
    expect(new Set(issued.map((k) => k.secretKey.toString('hex'))).size).toBe(1000);
  });

  for (const workerId of [0, 1, 2, 63, 64, 126, 127]) {
    it(`encodes worker ${workerId} in positive int32 process ids that workerOfProcessId decodes`, () => {
      const keys = new CancelKeys(workerId);
      for (let i = 0; i < 50; i++) {
        const { processId } = keys.issue(target());
        expect(isPositiveInt32(processId)).toBe(true);
        expect(workerOfProcessId(processId)).toBe(workerId);
      }
    });
  }

  it('keeps process ids of different workers apart', () => {
    const a = new CancelKeys(5).issue(target());
    const b = new CancelKeys(6).issue(target());
    expect(a.processId).not.toBe(b.processId);
    expect(workerOfProcessId(a.processId)).toBe(5);
    expect(workerOfProcessId(b.processId)).toBe(6);
  });

  it('rejects worker ids outside 0..127', () => {
    expect(() => new CancelKeys(-1)).toThrow(RangeError);
    expect(() => new CancelKeys(128)).toThrow(RangeError);
  });

  it('after the session counter wraps, skips 0 and ids still in use and stays positive', () => {
    const keys = new CancelKeys(127);
    const first = keys.issue(target());
    // Jump the private counter to its last value instead of issuing 16 million keys.
    (keys as unknown as { counter: number }).counter = (1 << 24) - 2;
    const last = keys.issue(target());
    expect(last.processId & 0xffffff).toBe((1 << 24) - 1);
    const wrapped = keys.issue(target());
    expect(wrapped.processId).not.toBe(first.processId);
    expect(wrapped.processId & 0xffffff).toBe(2);
    for (const { processId } of [first, last, wrapped]) {
      expect(isPositiveInt32(processId)).toBe(true);
      expect(workerOfProcessId(processId)).toBe(127);
    }
    expect(keys.lookup(first.processId, first.secretKey)).toBeDefined();
  });
});

describe('workerOfProcessId', () => {
  it('reads bits 24..30 and ignores the session bits', () => {
    expect(workerOfProcessId((9 << 24) | 0xffffff)).toBe(9);
    expect(workerOfProcessId(1)).toBe(0);
    expect(workerOfProcessId(0x7fffffff)).toBe(127);
  });

  it('maps any int32, even one no worker issued, to a valid worker number', () => {
    for (const pid of [-1, -2147483648, 0, 12345, 2147483647]) {
      const w = workerOfProcessId(pid);
      expect(w).toBeGreaterThanOrEqual(0);
      expect(w).toBeLessThanOrEqual(127);
    }
  });
});
