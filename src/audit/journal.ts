import { mkdirSync, readdirSync } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';

/**
 * A local append-only file of audit entries, one JSON line each. Used as the audit log itself
 * when no Redis is configured, and as the spool that keeps entries while Redis is unreachable.
 *
 * Each append is one write() of whole lines followed by fdatasync(), so an entry counts as
 * recorded only once it is on disk; concurrent events share one fsync (the sink batches them).
 * A line cut short by a crash was never acknowledged: it is removed when the file is reopened.
 */
export function chainFileName(chain: string): string {
  return `${encodeURIComponent(chain)}.jsonl`;
}

export function chainOfFileName(file: string): string {
  return decodeURIComponent(file.replace(/\.jsonl$/, ''));
}

export class Journal {
  private constructor(
    readonly file: string,
    private handle: FileHandle,
  ) {}

  static async open(file: string): Promise<Journal> {
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const handle = await open(file, 'a+', 0o600);
    const size = (await handle.stat()).size;
    if (size > 0) {
      // Drop a torn last line (written, never fsync'd, so never acknowledged).
      const end = Buffer.alloc(Math.min(size, 64 * 1024));
      await handle.read(end, 0, end.length, size - end.length);
      if (end[end.length - 1] !== 0x0a) {
        const whole = await readFile(file);
        const keep = whole.lastIndexOf(0x0a) + 1;
        await handle.truncate(keep);
      }
    }
    return new Journal(file, handle);
  }

  /** Appends the lines and waits until they are on disk. */
  async append(lines: readonly string[]): Promise<void> {
    const buf = Buffer.from(lines.join('\n') + '\n');
    await this.handle.write(buf, 0, buf.length, null);
    await this.handle.datasync();
  }

  /** Every complete line, in order. */
  async lines(): Promise<string[]> {
    return readLines(this.file);
  }

  /** Empties the file (a spool whose entries reached Redis). */
  async clear(): Promise<void> {
    await this.handle.truncate(0);
    await this.handle.datasync();
  }

  async close(): Promise<void> {
    await this.handle.close();
  }

}

/** Complete lines of a journal file (a torn last line is skipped). */
export async function readLines(file: string): Promise<string[]> {
  const text = await readFile(file, 'utf8');
  const lines = text.split('\n');
  lines.pop(); // '' after the final newline, or a torn line
  return lines;
}

/** Journal files in a directory (not descending into the spool). */
export function journalFiles(dir: string): string[] {
  try {
    return readdirSync(dir)
      .filter((f) => f.endsWith('.jsonl'))
      .sort()
      .map((f) => path.join(dir, f));
  } catch (err) {
    // No such directory (yet), or the path is not one: there are no journal files there.
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw err;
  }
}
