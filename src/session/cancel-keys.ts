import { randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * The BackendKeyData pgwarden issues to clients. Each session gets its own process id and random
 * secret; the upstream's real key never leaves the proxy, so a client can only cancel its own
 * statements, through the proxy, which can also withdraw a held request.
 *
 * The process id carries the worker number in bits 24..30 so that a CancelRequest that lands on
 * another worker process can be routed to the owning one (like pgbouncer's peering).
 */
export interface CancelTarget {
  cancel(): void;
}

const SESSION_BITS = 24;
const SESSION_MASK = (1 << SESSION_BITS) - 1;

export function workerOfProcessId(processId: number): number {
  return (processId >>> SESSION_BITS) & 0x7f;
}

export class CancelKeys {
  private readonly byPid = new Map<number, { secret: Buffer; target: CancelTarget }>();
  private counter = 0;

  constructor(private readonly workerId: number) {
    if (workerId < 0 || workerId > 0x7f) throw new RangeError('worker id must be 0..127');
  }

  issue(target: CancelTarget, secretLength = 4): { processId: number; secretKey: Buffer } {
    let processId: number;
    do {
      this.counter = (this.counter + 1) & SESSION_MASK || 1;
      processId = (this.workerId << SESSION_BITS) | this.counter;
    } while (this.byPid.has(processId));
    const secretKey = randomBytes(secretLength);
    this.byPid.set(processId, { secret: secretKey, target });
    return { processId, secretKey };
  }

  release(processId: number): void {
    this.byPid.delete(processId);
  }

  /** Finds the session for a CancelRequest; the secret is compared in constant time. */
  lookup(processId: number, secretKey: Buffer): CancelTarget | undefined {
    const entry = this.byPid.get(processId);
    if (!entry || entry.secret.length !== secretKey.length) return undefined;
    return timingSafeEqual(entry.secret, secretKey) ? entry.target : undefined;
  }
}
