// Structured logging for every facteur part: pino, one JSON object per line, secrets redacted by path.
// Trusts callers to pass secrets only under the redacted keys; never logs AUTH payloads.
import { pino, type Logger } from 'pino';

export type { Logger };

export const REDACT_PATHS = ['password', '*.password', 'pass', '*.pass', 'bindPw', '*.bindPw', 'authPayload', '*.authPayload'];

export function createLogger(opts: { name: string; level?: string; file?: string }): Logger {
  const dest = opts.file ? pino.destination({ dest: opts.file, append: true, mkdir: true, sync: false }) : pino.destination({ fd: 2, sync: false });
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
