/** Helpers shared by the pgbench-driven benchmarks. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const run = promisify(execFile);
/** The repository root (this file runs from dist/bench). */
export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`port ${port} did not open`);
}

export async function pgbench(port: number, db: string, args: string[]): Promise<string> {
  const { stdout } = await run('pgbench', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', ...args, db], {
    maxBuffer: 16 * 1024 * 1024,
  });
  return stdout;
}

export function parseTps(out: string): number {
  const m = /tps = ([\d.]+)/.exec(out);
  if (!m) throw new Error(`no tps in pgbench output:\n${out}`);
  return Number(m[1]);
}

export function parseLatencyMs(out: string): number {
  const m = /latency average = ([\d.]+) ms/.exec(out);
  if (!m) throw new Error(`no latency in pgbench output:\n${out}`);
  return Number(m[1]);
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 5000).unref();
  });
}


/** (Re)creates `db` on the upstream and fills it with `pgbench -i -s 10`. */
export async function initPgbenchDatabase(upstream: URL, db: string): Promise<void> {
  const conn = ['-h', upstream.hostname, '-p', upstream.port || '5432', '-U', 'postgres'];
  await run('psql', [...conn, '-d', 'postgres', '-qc', `DROP DATABASE IF EXISTS ${db}`]);
  await run('psql', [...conn, '-d', 'postgres', '-qc', `CREATE DATABASE ${db}`]);
  await run('pgbench', [...conn, '-i', '-q', '-s', '10', db]);
}

/**
 * `pgwarden start` from dist on `port` in front of `upstream`, its audit journal in a scratch
 * directory that stop() removes (a bench run writes a journal entry per statement).
 */
export async function startPgwardenCli(
  port: number,
  upstream: URL,
  opts: { args?: string[]; env?: NodeJS.ProcessEnv; logLevel?: string } = {},
): Promise<{ port: number; stop: () => Promise<void> }> {
  const journal = mkdtempSync(path.join(os.tmpdir(), 'pgw-bench-journal-'));
  const child = spawn(
    process.execPath,
    [path.join(root, 'dist/src/cli.js'), 'start', '--listen', `127.0.0.1:${port}`, '--upstream', `postgres://${upstream.host}`,
      '--upstream-sslmode', 'disable', '--log-level', opts.logLevel ?? 'warn', '--audit-journal', journal, ...(opts.args ?? [])],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, ...opts.env } },
  );
  await waitForPort(port);
  return {
    port,
    stop: async () => {
      await stopChild(child);
      rmSync(journal, { recursive: true, force: true });
    },
  };
}
