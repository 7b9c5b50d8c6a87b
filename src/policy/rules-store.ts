import { watch, type FSWatcher } from 'node:fs';
import type { Logger } from '../logger.js';
import { emptyPolicy, type Policy } from './policy.js';
import { RulesInvalid, loadRules } from './rules-loader.js';

/**
 * Holds the rules snapshot in force. Reloads on file change (debounced) and on SIGHUP; a reload
 * that fails validation is logged with every problem and the previous snapshot stays in force.
 * Swapping is one assignment, and each request reads `current` once, so a request is always
 * judged against exactly one snapshot.
 */
export interface RulesChange {
  /** What caused the reload: 'file-change', 'SIGHUP', ... */
  trigger: string;
  previous: string;
}

export interface RulesRejection {
  trigger: string;
  problems: number;
  /** The version that stays in force. */
  inForce: string;
}

export class RulesStore {
  private snapshot: Policy;
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly listeners = new Set<(p: Policy, change: RulesChange) => void>();
  private readonly rejectListeners = new Set<(rejection: RulesRejection) => void>();

  /** Throws RulesInvalid when the initial rules are invalid: the proxy must not start without rules. */
  constructor(
    private readonly dir: string | undefined,
    private readonly log: Logger,
  ) {
    this.snapshot = dir ? loadRules(dir) : emptyPolicy();
  }

  get current(): Policy {
    return this.snapshot;
  }

  onChange(fn: (p: Policy, change: RulesChange) => void): void {
    this.listeners.add(fn);
  }

  /** Called when a reload fails validation (the previous rules stay in force). */
  onReject(fn: (rejection: RulesRejection) => void): void {
    this.rejectListeners.add(fn);
  }

  /** Re-reads the directory; returns true when a new snapshot is in force. */
  reload(trigger: string): boolean {
    if (!this.dir) return false;
    try {
      const next = loadRules(this.dir);
      if (next.version === this.snapshot.version) {
        // An operator who sends SIGHUP wants to see that it arrived; editors' extra writes do not.
        const level = trigger === 'SIGHUP' ? 'info' : 'debug';
        this.log[level]({ event: 'rules-unchanged', trigger, version: next.version }, 'rules unchanged');
        return false;
      }
      const previous = this.snapshot.version;
      this.snapshot = next;
      this.log.info({ event: 'rules-reloaded', trigger, version: next.version, previous, files: next.files, rules: next.rules.length }, 'rules reloaded');
      for (const fn of this.listeners) fn(next, { trigger, previous });
      return true;
    } catch (err) {
      const problems = err instanceof RulesInvalid ? err.problems.length : 1;
      for (const fn of this.rejectListeners) fn({ trigger, problems, inForce: this.snapshot.version });
      if (err instanceof RulesInvalid) {
        this.log.error(
          { event: 'rules-rejected', trigger, problems: err.problems, version: this.snapshot.version },
          'rules change rejected; the previous rules stay in force',
        );
      } else {
        this.log.error({ event: 'rules-rejected', trigger, message: (err as Error).message }, 'rules reload failed; the previous rules stay in force');
      }
      return false;
    }
  }

  /** Watches the directory (debounced, editors write files in several steps) and SIGHUP. */
  watch(debounceMs = 200): void {
    if (!this.dir || this.watcher) return;
    this.watcher = watch(this.dir, () => {
      if (this.timer) clearTimeout(this.timer);
      this.timer = setTimeout(() => this.reload('file-change'), debounceMs);
    });
    this.watcher.on('error', (err) => this.log.error({ message: err.message }, 'rules directory watch failed'));
    process.on('SIGHUP', this.onSighup);
  }

  private readonly onSighup = (): void => {
    this.reload('SIGHUP');
  };

  close(): void {
    this.watcher?.close();
    this.watcher = null;
    if (this.timer) clearTimeout(this.timer);
    process.off('SIGHUP', this.onSighup);
  }
}
