// Structured logging for every facteur part: pino, one JSON object per line, secrets redacted by path.
// Trusts callers to pass secrets only under the redacted keys; never logs AUTH payloads.
import { pino, type Logger } from 'pino';

export type { Logger };

export const REDACT_PATHS = ['password', '*.password', 'pass', '*.pass', 'bindPw', '*.bindPw', 'authPayload', '*.authPayload'];

/**
 * Lines are written synchronously, one write(2) each, from the thread that logs (as Postfix's syslog calls are). The
 * asynchronous mode sends each write to libuv's thread pool: a thread wake-up and a completion per line, about one per
 * accepted message, which on this VM cost the SMTP loop more than the write itself; and lines still buffered when the
 * process dies are lost. The price: a log destination that blocks (a full pipe to a stalled reader) stalls the thread.
 */
export function createLogger(opts: { name: string; level?: string; file?: string }): Logger {
  const dest = opts.file ? pino.destination({ dest: opts.file, append: true, mkdir: true, sync: true }) : pino.destination({ fd: 2, sync: true });
  return pino(
    {
      name: opts.name,
      level: opts.level ?? 'info',
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { pid: process.pid },
    },
    dest,
  );
}

/**
 * For the long-running daemons (serve, authd): error stacks without source maps unless FACTEUR_SOURCE_MAPS=1. tsx turns
 * source maps on, and then every error's stack, when read, is mapped frame by frame in JavaScript (~40 µs an error).
 * Node reads the stack of every socket error (streams' destroy does, on purpose), so each client that resets its
 * connection (smtp-source does it on every one, as do many bots) cost the SMTP event loop ~5 % of a one-message
 * session. Without the maps, stacks name the functions with positions in the transpiled code.
 */
export function daemonStackTraces(env: NodeJS.ProcessEnv = process.env): boolean {
  const mapped = env.FACTEUR_SOURCE_MAPS === '1';
  process.setSourceMapsEnabled(mapped);
  return mapped;
}
