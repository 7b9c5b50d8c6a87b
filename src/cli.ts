#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { ConfigError, FLAGS, loadConfig } from './config/load.js';
import { createLogger } from './logger.js';
import { runProxy } from './server/run.js';

/** Command-line entry point: `pgwarden <command> [options]`. */
const USAGE = `Usage: pgwarden <command> [options]

Commands:
  start            run the proxy

Options for start (each also settable as PGWARDEN_* env var or in the config file):
  --config FILE                 YAML config file (env PGWARDEN_CONFIG)
  --listen HOST:PORT            where agents connect (default 127.0.0.1:6432)
  --upstream URL                postgres://host:port of the real server (default postgres://127.0.0.1:5432)
  --upstream-sslmode MODE       disable | prefer | require | verify-ca | verify-full (default prefer)
  --upstream-sslrootcert FILE   CA bundle for verify-ca / verify-full
  --tls-cert FILE --tls-key FILE   terminate TLS for clients
  --workers N                   worker processes (default: number of cores)
  --health-listen HOST:PORT     serve GET /healthz
  --log-level LEVEL             fatal | error | warn | info | debug | trace | silent
  --max-message-bytes N         largest accepted client message (default 64 MiB)
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  if (command !== 'start') {
    process.stderr.write(`pgwarden: unknown command "${command}"\n\n${USAGE}`);
    return 2;
  }
  const optionSpec: Record<string, { type: 'string' }> = { config: { type: 'string' } };
  for (const name of Object.keys(FLAGS)) optionSpec[name] = { type: 'string' };
  let values: Record<string, string | undefined>;
  try {
    values = parseArgs({ args: rest, options: optionSpec, strict: true, allowPositionals: false }).values as Record<
      string,
      string | undefined
    >;
  } catch (err) {
    process.stderr.write(`pgwarden: ${(err as Error).message}\n`);
    return 2;
  }
  const { config: file, ...flagValues } = values;
  const flags = Object.fromEntries(Object.entries(flagValues).filter((e): e is [string, string] => e[1] !== undefined));
  try {
    const config = loadConfig({ file, env: process.env, flags });
    const log = createLogger(config.logLevel);
    await runProxy(config, log);
    return -1; // keep running
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`pgwarden: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`pgwarden: ${(err as Error).message}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then((code) => {
  if (code >= 0) process.exit(code);
});
