import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * JSON logs (pino); pretty when stdout is a terminal. Log calls never carry SQL text, parameter
 * values, row data, passwords or tokens; `redact` is a second line of defence for fields that
 * could be added by mistake.
 */
export function createLogger(level: string, pretty = process.stdout.isTTY === true): Logger {
  return pino({
    level,
    base: { pid: process.pid },
    redact: {
      paths: ['password', '*.password', 'sql', '*.sql', 'params', '*.params', 'token', '*.token', 'secret', '*.secret'],
      censor: '[redacted]',
    },
    ...(pretty ? { transport: { target: 'pino-pretty', options: { destination: 1 } } } : {}),
  });
}

/** A logger that drops everything (tests, library use). */
export const silentLogger: Logger = pino({ level: 'silent' });
