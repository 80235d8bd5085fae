// The vocabulary shared by every password check: credentials in, a verdict out.
// Trusts nothing: this module only declares types and small constructors.

/** One verification request, as carried by the saslauthd protocol. */
export interface Credentials {
  /** Login exactly as received (after `-r` realm joining, when enabled). */
  login: string;
  password: string;
  /** SASL service name, e.g. `smtp` (Postfix) or `imap` (testsaslauthd default). */
  service: string;
  /** Realm, possibly empty. */
  realm: string;
  /** Client address `IP;port` from a 5-field request, or empty. */
  clientAddr?: string;
}

/**
 * The outcome of one verification.
 * - `ok`: the password is right.
 * - `fail`: the password (or user) is wrong; callers answer 535.
 * - `tempfail`: the backend could not decide (down, timeout); callers answer 454 and must not count it as a wrong password.
 */
export type Verdict = 'ok' | 'fail' | 'tempfail';

export interface AuthResult {
  verdict: Verdict;
  /** Reason text sent after `OK`/`NO` on the wire (may be empty). Never contains a secret. */
  reason: string;
  /** Addresses this user may send from, when the backend knows them (users file, LDAP mail attributes). */
  addresses?: string[];
}

/** Receives one line per step of a verification, for `facteur testauth --explain` and debug logs. Never given a password. */
export type Explain = (step: string) => void;

/**
 * What a backend needs of an abort signal: the flag and `abort` listeners. An AbortSignal is one; the daemon passes a
 * lighter object per request (an AbortController costs ~3 µs to create, a twentieth of a whole cached login).
 */
export interface AbortLike {
  readonly aborted: boolean;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

export interface VerifyOptions {
  signal: AbortLike;
  explain?: Explain;
}

/** A source of truth for passwords (LDAP, PAM, IMAP, users file, shadow). */
export interface AuthBackend {
  readonly name: string;
  verify(creds: Credentials, opts: VerifyOptions): Promise<AuthResult>;
  /** Re-read configuration (SIGHUP). Optional. */
  reload?(): Promise<void>;
  close?(): Promise<void>;
}

/** Creates a backend from the mechanism option (`-O`). Throws `ConfigError` with a clear message on bad configuration. */
export type BackendFactory = (option: string | undefined, ctx: BackendContext) => Promise<AuthBackend>;

export interface BackendContext {
  log: (msg: string) => void;
}

export const ok = (reason = '', addresses?: string[]): AuthResult => ({ verdict: 'ok', reason, addresses });
export const fail = (reason = ''): AuthResult => ({ verdict: 'fail', reason });
/** Temporary failures carry the RFC 5530 `[UNAVAILABLE]` code so that clients can tell them from a wrong password. */
export const tempfail = (reason: string): AuthResult => ({ verdict: 'tempfail', reason: `[UNAVAILABLE] ${reason}` });

/** Wire reply text for a result: `OK`/`NO` plus optional reason. */
export function replyText(r: AuthResult): string {
  const head = r.verdict === 'ok' ? 'OK' : 'NO';
  return r.reason ? `${head} ${r.reason}` : head;
}

/** Classify a reply text received from any saslauthd-compatible daemon. */
export function parseReply(text: string): AuthResult {
  if (text.startsWith('OK')) return { verdict: 'ok', reason: text.slice(3) };
  const reason = text.startsWith('NO') ? text.slice(3) : text;
  // Our own daemon marks temporary failures with [UNAVAILABLE]; Cyrus rimap says it could not contact the server.
  const temporary = /^\[UNAVAILABLE\]/.test(reason) || /Couldn't contact remote authentication server|currently unavailable/.test(reason);
  return { verdict: temporary ? 'tempfail' : 'fail', reason };
}
