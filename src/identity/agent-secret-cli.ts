import { randomBytes } from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import { parseArgs } from 'node:util';
import { AGENT_NAME } from '../policy/rules-schema.js';
import { SCRAM_DEFAULT_ITERATIONS, formatScramVerifier, makeScramVerifier, saslprep } from './scram-verifier.js';

/**
 * `pgwarden agent-secret`: turns an agent's secret into the SCRAM-SHA-256 verifier that goes in
 * the rules (`agents: [{ name, scram, role }]`). pgwarden stores only the verifier; the secret
 * is given to the agent as its password and is not kept anywhere.
 *
 * The secret is read from standard input (a no-echo prompt, typed twice, on a terminal), never
 * from an argument, which would show in `ps` and shell history; or `--generate` makes a random
 * one and prints it once.
 */
export const AGENT_SECRET_USAGE = `Usage: pgwarden agent-secret [--generate] [--name NAME] [--iterations N] [--json]
Prints the SCRAM-SHA-256 verifier of an agent's secret, for its entry under agents: in the rules.
  (default)        read the secret from standard input (one trailing newline is dropped);
                   on a terminal it is asked for twice, without echo
  --generate       make a random secret (256 bits, base64url) and print it once
  --name NAME      the agent's name in the printed rules entry
  --iterations N   PBKDF2 iterations, ${SCRAM_DEFAULT_ITERATIONS} (default) to 100000
  --json           print {"verifier": ..., "secret": ... (with --generate)} instead
`;

export interface AgentSecretIo {
  out: (s: string) => void;
  err: (s: string) => void;
  /** The secret's bytes: all of standard input, or what was typed at the prompt. */
  readSecret: () => Promise<Buffer>;
}

/** node-postgres refuses more iterations by default (scramMaxIterations); RFC 7677 asks for at least 4096. */
const MAX_ITERATIONS = 100_000;
/** Longer input is more likely a wrong file than a secret. */
const MAX_SECRET_BYTES = 1024;
/** Below this, warn: a leaked verifier or a captured exchange allows an offline guessing attack. */
const SHORT_SECRET_CHARS = 16;

export const processIo: AgentSecretIo = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  readSecret: async () => {
    if (!process.stdin.isTTY) return readAll(process.stdin);
    const first = await promptHidden('agent secret: ');
    const again = await promptHidden('again: ');
    if (!first.equals(again)) throw new Error('the two entries differ');
    return first;
  },
};

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    size += b.length;
    if (size > MAX_SECRET_BYTES * 4) break; // enough to know it is too long
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

/** Reads one line from the terminal in raw mode, echoing nothing. */
function promptHidden(prompt: string): Promise<Buffer> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  return new Promise((resolve, reject) => {
    let typed = '';
    const finish = (err?: Error): void => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(Buffer.from(typed, 'utf8'));
    };
    const onData = (chunk: Buffer): void => {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return finish();
        if (ch === '\u0003') return finish(new Error('interrupted'));
        if (ch === '\u007f' || ch === '\b') typed = [...typed].slice(0, -1).join('');
        else typed += ch;
      }
    };
    stdin.setRawMode(true);
    stdin.resume();
    stdin.on('data', onData);
  });
}

/** Checks the secret read; returns it as a string, or a reason it cannot be used. */
function secretFromInput(input: Buffer): { secret: string } | { problem: string } {
  let bytes = input;
  // `echo secret | pgwarden agent-secret` and files end with a newline that is not part of it.
  if (bytes.length > 0 && bytes[bytes.length - 1] === 0x0a) bytes = bytes.subarray(0, bytes.length - 1);
  if (bytes.length > 0 && bytes[bytes.length - 1] === 0x0d) bytes = bytes.subarray(0, bytes.length - 1);
  if (bytes.length === 0) return { problem: 'no secret on standard input (or use --generate)' };
  if (bytes.length > MAX_SECRET_BYTES) return { problem: `the secret is longer than ${MAX_SECRET_BYTES} bytes` };
  if (!isUtf8(bytes)) return { problem: 'the secret is not valid UTF-8' };
  if (bytes.includes(0)) return { problem: 'the secret contains a NUL character, which a password cannot carry' };
  const secret = bytes.toString('utf8');
  if (/[\r\n]/.test(secret)) return { problem: 'the secret contains a line break (give one line)' };
  // Clients differ in how they normalize a secret SASLprep would change (libpq follows
  // PostgreSQL, falling back to the raw secret for prohibited characters; node-postgres always
  // normalizes), so such a secret could work from one client and fail from another.
  if (saslprep(secret) !== secret) {
    return {
      problem:
        'the secret is not in SASLprep normal form (Unicode NFKC, no mapped spaces or ignorable characters), so SCRAM clients could derive different keys from it: type its normalized form, or use --generate',
    };
  }
  return { secret };
}

/**
 * The command. Exit codes: 0 printed, 1 the secret cannot be used, 2 usage error.
 * Only the generated secret (with --generate) and the verifier are ever printed.
 */
export async function agentSecretCommand(args: string[], io: AgentSecretIo = processIo): Promise<number> {
  let values: { generate?: boolean; name?: string; iterations?: string; json?: boolean; help?: boolean };
  try {
    values = parseArgs({
      args,
      allowPositionals: false,
      strict: true,
      options: {
        generate: { type: 'boolean' },
        name: { type: 'string' },
        iterations: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (err) {
    io.err(`pgwarden agent-secret: ${(err as Error).message}\n${AGENT_SECRET_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.out(AGENT_SECRET_USAGE);
    return 0;
  }
  let iterations = SCRAM_DEFAULT_ITERATIONS;
  if (values.iterations !== undefined) {
    iterations = /^[0-9]{1,7}$/.test(values.iterations) ? Number(values.iterations) : NaN;
    if (!(iterations >= SCRAM_DEFAULT_ITERATIONS && iterations <= MAX_ITERATIONS)) {
      io.err(`pgwarden agent-secret: --iterations must be an integer from ${SCRAM_DEFAULT_ITERATIONS} to ${MAX_ITERATIONS}\n`);
      return 2;
    }
  }
  const name = values.name ?? '<agent name>';
  if (values.name !== undefined && !AGENT_NAME.test(values.name)) {
    io.err('pgwarden agent-secret: --name takes letters, digits, "_", ".", "@" or "-" (at most 63)\n');
    return 2;
  }

  let secret: string;
  if (values.generate) {
    // base64url: no character that needs quoting in a connection URI, a shell or YAML.
    secret = randomBytes(32).toString('base64url');
  } else {
    let input: Buffer;
    try {
      input = await io.readSecret();
    } catch (err) {
      io.err(`pgwarden agent-secret: could not read the secret: ${(err as Error).message}\n`);
      return 1;
    }
    const checked = secretFromInput(input);
    if ('problem' in checked) {
      io.err(`pgwarden agent-secret: ${checked.problem}\n`);
      return 1;
    }
    secret = checked.secret;
    if ([...secret].length < SHORT_SECRET_CHARS) {
      io.err(
        `pgwarden agent-secret: warning: the secret is shorter than ${SHORT_SECRET_CHARS} characters; a leaked verifier or a recorded login lets anyone guess it offline (--generate makes a strong one)\n`,
      );
    }
  }

  const verifier = formatScramVerifier(makeScramVerifier(secret, iterations));
  if (values.json) {
    io.out(`${JSON.stringify(values.generate ? { verifier, secret } : { verifier })}\n`);
    return 0;
  }
  if (values.generate) {
    io.out(`secret (the agent's password; shown only now, pgwarden does not store it):\n  ${secret}\n`);
  }
  io.out(
    `rules entry (the verifier cannot be turned back into the secret):\n` +
      `agents:\n  - name: ${name}\n    scram: '${verifier}'\n    role: <upstream role>\n`,
  );
  return 0;
}
