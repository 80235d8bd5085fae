// Error classes with a stable code and a `temporary` flag: callers map them to replies, logs keep the cause.
// Trusts nothing; pure.

export class FacteurError extends Error {
  readonly code: string;
  readonly temporary: boolean;
  constructor(code: string, message: string, opts: { temporary?: boolean; cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.temporary = opts.temporary ?? false;
  }
}

/** A configuration problem: the message names the option and says how to fix it. */
export class ConfigError extends FacteurError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super('ECONFIG', message, opts);
  }
}

/** A backend (directory, IMAP server...) could not be reached or did not answer in time. */
export class BackendUnavailableError extends FacteurError {
  constructor(backend: string, message: string, opts: { cause?: unknown } = {}) {
    super('EUNAVAILABLE', `${backend}: ${message}`, { temporary: true, cause: opts.cause });
  }
}

/** Command-line usage error: printed with the usage text, exit status 1 (unless the command says otherwise). */
export class UsageError extends FacteurError {
  constructor(message: string) {
    super('EUSAGE', message);
  }
}
