/**
 * `npm run bench`: pgbench -S (select-only) through each target, interleaved so that machine
 * noise hits every target alike. Targets: direct PostgreSQL, a bare Node.js socket pipe (the
 * floor any Node proxy pays), pgwarden (as `pgwarden start`, default workers), and pgbouncer in
 * session mode when it is installed. Prints tps per mode, ratios, and 1-client latency.
 *
 * Environment: BENCH_SECONDS (default 5), BENCH_ROUNDS (default 3), BENCH_CLIENTS (default 8),
 * PGWARDEN_BENCH_UPSTREAM (default postgres://127.0.0.1:5432).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync, chmodSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort, initPgbenchDatabase, median, parseLatencyMs, parseTps, pgbench as pgbenchOn, startPgwardenCli, stopChild, waitForPort } from './bench-lib.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 8);
const upstream = new URL(process.env.PGWARDEN_BENCH_UPSTREAM ?? 'postgres://127.0.0.1:5432');
const UP_HOST = upstream.hostname;
const UP_PORT = Number(upstream.port || 5432);
const DB = 'pgwarden_bench';
const pgbench = (port: number, args: string[]) => pgbenchOn(port, DB, args);

type Mode = 'simple' | 'extended' | 'prepared';
const MODES: Mode[] = ['simple', 'extended', 'prepared'];

interface Target {
  name: string;
  port: number;
  stop(): Promise<void>;
}

function bareNodePipe(port: number): Target {
  const server = net.createServer((client) => {
    const up = net.connect(UP_PORT, UP_HOST);
    client.setNoDelay(true);
    up.setNoDelay(true);
    client.pipe(up).pipe(client);
    const close = () => {
      client.destroy();
      up.destroy();
    };
    client.on('error', close);
    up.on('error', close);
    client.on('close', close);
    up.on('close', close);
  });
  server.listen(port, '127.0.0.1');
  return { name: 'node-pipe', port, stop: () => new Promise((r) => server.close(() => r())) };
}

async function startPgwarden(port: number): Promise<Target> {
  // Default settings: audit on, recorded to the embedded journal (here in a scratch directory).
  const pgw = await startPgwardenCli(port, upstream);
  return { name: 'pgwarden', ...pgw };
}

async function startPgbouncer(port: number): Promise<Target | null> {
  const bin = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => existsSync(p));
  if (!bin) return null;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pgw-bouncer-'));
  chmodSync(dir, 0o777);
  writeFileSync(path.join(dir, 'userlist.txt'), '"postgres" ""\n');
  writeFileSync(
    path.join(dir, 'pgbouncer.ini'),
    [
      '[databases]',
      `* = host=${UP_HOST} port=${UP_PORT}`,
      '[pgbouncer]',
      `listen_addr = 127.0.0.1`,
      `listen_port = ${port}`,
      'auth_type = trust',
      `auth_file = ${dir}/userlist.txt`,
      'pool_mode = session',
      'max_client_conn = 200',
      'default_pool_size = 50',
      `unix_socket_dir = ${dir}`,
      `pidfile = ${dir}/pgbouncer.pid`,
      `logfile = ${dir}/pgbouncer.log`,
      'ignore_startup_parameters = extra_float_digits,options',
      '',
    ].join('\n'),
  );
  const asRoot = process.getuid?.() === 0;
  const child = asRoot
    ? spawn('runuser', ['-u', 'postgres', '--', bin, `${dir}/pgbouncer.ini`], { stdio: 'ignore' })
    : spawn(bin, [`${dir}/pgbouncer.ini`], { stdio: 'ignore' });
  await waitForPort(port);
  return {
    name: 'pgbouncer',
    port,
    stop: async () => {
      await stopChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function main(): Promise<void> {
  await initPgbenchDatabase(upstream, DB);

  const targets: Target[] = [
    { name: 'direct', port: UP_PORT, stop: async () => {} },
    bareNodePipe(await freePort()),
    await startPgwarden(await freePort()),
  ];
  const bouncer = await startPgbouncer(await freePort());
  if (bouncer) targets.push(bouncer);
  else process.stdout.write('pgbouncer not installed: skipped (apt-get install pgbouncer)\n');

  const tps = new Map<string, number[]>();
  const lat = new Map<string, number[]>();
  for (let round = 1; round <= ROUNDS; round++) {
    for (const mode of MODES) {
      for (const t of targets) {
        const out = await pgbench(t.port, ['-S', '-M', mode, '-c', String(CLIENTS), '-j', '2', '-T', String(SECONDS), '-n']);
        const key = `${t.name}/${mode}`;
        tps.set(key, [...(tps.get(key) ?? []), parseTps(out)]);
        process.stdout.write(`round ${round} ${key}: ${parseTps(out).toFixed(0)} tps\n`);
      }
    }
    for (const t of targets) {
      const out = await pgbench(t.port, ['-S', '-M', 'prepared', '-c', '1', '-j', '1', '-T', String(SECONDS), '-n']);
      lat.set(t.name, [...(lat.get(t.name) ?? []), parseLatencyMs(out)]);
    }
  }
  for (const t of targets) await t.stop();

  const names = targets.map((t) => t.name);
  process.stdout.write(`\npgbench -S, ${CLIENTS} clients, ${SECONDS}s x ${ROUNDS} rounds (median tps)\n`);
  process.stdout.write(`mode      ${names.map((n) => n.padStart(11)).join('')}  pgw/direct  pgw/pipe  pgw/bouncer\n`);
  for (const mode of MODES) {
    const m = (n: string) => median(tps.get(`${n}/${mode}`) ?? [NaN]);
    const ratio = (a: number, b: number) => (Number.isFinite(b) ? (a / b).toFixed(2) : 'n/a');
    process.stdout.write(
      `${mode.padEnd(10)}${names.map((n) => m(n).toFixed(0).padStart(11)).join('')}` +
        `  ${ratio(m('pgwarden'), m('direct')).padStart(10)}  ${ratio(m('pgwarden'), m('node-pipe')).padStart(8)}  ${ratio(m('pgwarden'), bouncer ? m('pgbouncer') : NaN).padStart(11)}\n`,
    );
  }
  process.stdout.write('\n1 client, prepared: median latency per transaction and added over direct\n');
  const direct = median(lat.get('direct')!);
  for (const n of names) {
    const l = median(lat.get(n)!);
    process.stdout.write(`${n.padEnd(10)} ${(l * 1000).toFixed(1)} µs  (+${((l - direct) * 1000).toFixed(1)} µs)\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${(err as Error).message}\n`);
  process.exit(1);
});
