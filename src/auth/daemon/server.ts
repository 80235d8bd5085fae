// The saslauthd-compatible UNIX-socket server: one request per connection, answered byte for byte as cyrus-sasl's ipc_unix.c does.
// Trusts nothing from the socket (lengths bounded, fields decoded strictly); trusts its backend and its options.
import net from 'node:net';
import { parseRequest, fieldToString, BASE_FIELDS, encodeFields } from '../protocol/frame.js';
import { replyText, type AbortLike, type AuthBackend, type AuthResult, type Credentials } from '../types.js';
import { CredentialCache } from './cache.js';
import type { Logger } from '../../observability/log.js';
import type { PenaltyBox } from '../../policy/penalty.js';
import type { FacteurMetrics } from '../../observability/metrics.js';

export interface AuthServiceOptions {
  backend: AuthBackend;
  cache?: CredentialCache;
  realmJoin: boolean;
  maxInflight: number;
  readTimeoutMs: number;
  backendTimeoutMs: number;
  verbose: boolean;
  log: Logger;
  /** Brute-force defence, applied when the request carries the client address (5th field). */
  penalty?: PenaltyBox;
  metrics?: FacteurMetrics;
}

/**
 * Bounded concurrency without blocking the event loop: callers beyond the limit wait in FIFO order.
 * `enter()` returns undefined when a slot was free (no promise on the common path); a release hands its slot to the first waiter.
 */
class Semaphore {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly limit: number) {}
  enter(): Promise<void> | undefined {
    if (this.active < this.limit) {
      this.active++;
      return undefined;
    }
    return new Promise<void>((r) => this.waiting.push(r));
  }
  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.active--;
  }
}

/** Something with a deadline: `fire()` is called once `at` (ms since the epoch) has passed, unless it is untracked first. */
export interface Deadline {
  at: number;
  fire(): void;
}

/**
 * One coarse timer for every deadline of the daemon (read timeouts, drains, backend calls) instead of a timer and an
 * AbortSignal.timeout() per request: measured, the per-request timers were about a quarter of the daemon's CPU.
 * Deadlines fire up to one tick late, which is nothing next to timeouts counted in seconds.
 */
export class Deadlines {
  private readonly entries = new Set<Deadline>();
  private timer: NodeJS.Timeout | undefined;
  constructor(private readonly tickMs = 250) {}

  /** Watch `e` until it fires or is untracked; `e.at` may be moved meanwhile (no allocation per deadline). */
  track(e: Deadline): void {
    this.entries.add(e);
    if (!this.timer) {
      this.timer = setInterval(() => this.sweep(), this.tickMs);
      this.timer.unref();
    }
  }

  untrack(e: Deadline): void {
    this.entries.delete(e);
  }

  private sweep(): void {
    const now = Date.now();
    for (const e of this.entries) {
      if (e.at > now) continue;
      this.entries.delete(e);
      e.fire();
    }
    if (this.entries.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}

const deadlines = new Deadlines();

/**
 * The abort signal of one backend call, which is also its deadline entry: no AbortController (~3 µs to create), timer or
 * closure per request. Fires once, when the backend timeout has passed.
 */
class BackendCall implements Deadline, AbortLike {
  aborted = false;
  private listeners: (() => void)[] | undefined;
  constructor(public at: number) {}

  addEventListener(_type: 'abort', listener: () => void): void {
    if (!this.aborted) (this.listeners ??= []).push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const l = this.listeners;
    const i = l ? l.indexOf(listener) : -1;
    if (i >= 0) l!.splice(i, 1);
  }

  fire(): void {
    if (this.aborted) return;
    this.aborted = true;
    const l = this.listeners;
    this.listeners = undefined;
    if (!l) return;
    for (const listener of l) {
      try {
        listener();
      } catch {
        // A listener's failure must not stop the others, nor the sweep of other deadlines.
      }
    }
  }
}

/** Grace for the optional 5th field when only part of it has arrived (4-field clients never wait). */
export const FIFTH_FIELD_GRACE_MS = 200;
/** Time a client gets to close after our reply before we close on it (upstream waits forever). */
export const DRAIN_TIMEOUT_MS = 5_000;

/** Log fields of a request, built only when a line is written. */
function logCtx(creds: Credentials, mech: string) {
  return { user: creds.login, service: creds.service, realm: creds.realm, mech, remote: creds.clientAddr || undefined };
}

/**
 * The request handler shared by the socket server and in-process callers: validation, `-r`, cache, backend, logging.
 * Never throws: backend exceptions become temporary failures (fail closed).
 */
export class AuthService {
  backend: AuthBackend;
  private readonly sem: Semaphore;
  inflight = 0;

  readonly metrics?: FacteurMetrics;

  constructor(private readonly o: AuthServiceOptions) {
    this.backend = o.backend;
    this.metrics = o.metrics;
    this.sem = new Semaphore(o.maxInflight);
  }

  async handle(c: Credentials): Promise<AuthResult> {
    return this.check(c);
  }

  /**
   * The same as `handle`, but answers synchronously when no backend call is needed (empty fields, refusal, cache hit):
   * the socket server then replies without a promise or a microtask turn per request.
   */
  check(c: Credentials): AuthResult | Promise<AuthResult> {
    if (!c.login) return { verdict: 'fail', reason: 'NULL login received' };
    if (!c.password) return { verdict: 'fail', reason: 'NULL password received' };
    const creds = this.o.realmJoin && c.realm ? { ...c, login: `${c.login}@${c.realm}` } : c;
    const m = this.o.metrics;
    const penalty = this.o.penalty;
    if (penalty) {
      const admission = penalty.admit(creds.clientAddr);
      if (!admission.allowed) {
        m?.penaltyRefusals.inc({ where: 'authd' });
        m?.authAttempts.inc({ backend: this.backend.name, result: 'refused' });
        this.o.log.warn({ ...logCtx(creds, this.backend.name), retryAfterMs: admission.retryAfterMs }, 'auth refused: too many failures from this address');
        return { verdict: 'tempfail', reason: '[UNAVAILABLE] too many authentication failures from this address, try again later' };
      }
    }
    const cache = this.o.cache;
    if (cache) {
      // The cache is keyed by exactly (login, realm, service); creds carries those fields.
      const hit = cache.lookup(creds, creds.password);
      m?.cacheLookups.inc({ result: hit ? 'hit' : 'miss' });
      if (hit) {
        m?.authAttempts.inc({ backend: this.backend.name, result: 'ok' });
        penalty?.success(creds.clientAddr);
        if (this.o.verbose) this.o.log.info(logCtx(creds, this.backend.name), 'auth success (cached)');
        return { verdict: 'ok', reason: '' };
      }
    }
    return this.verify(creds);
  }

  private async verify(creds: Credentials): Promise<AuthResult> {
    const m = this.o.metrics;
    const backend = this.backend;
    const waited = this.sem.enter();
    if (waited) await waited;
    this.inflight++;
    let result: AuthResult;
    const endTimer = m?.backendLatency.startTimer({ backend: backend.name });
    const call = new BackendCall(Date.now() + this.o.backendTimeoutMs);
    deadlines.track(call);
    try {
      result = await backend.verify(creds, { signal: call });
    } catch (err) {
      this.o.log.error({ ...logCtx(creds, backend.name), err: { message: (err as Error).message, code: (err as { code?: string }).code } }, 'mechanism failed');
      result = { verdict: 'tempfail', reason: '[UNAVAILABLE] internal mechanism failure' };
    } finally {
      deadlines.untrack(call);
      endTimer?.();
      this.inflight--;
      this.sem.release();
    }
    m?.authAttempts.inc({ backend: backend.name, result: result.verdict });
    if (result.verdict === 'ok') {
      this.o.penalty?.success(creds.clientAddr);
      this.o.cache?.store(creds, creds.password);
      if (this.o.verbose) this.o.log.info(logCtx(creds, backend.name), 'auth success');
    } else {
      this.o.log.warn({ ...logCtx(creds, backend.name), reason: result.reason || 'Unknown', temporary: result.verdict === 'tempfail' }, 'auth failure');
      // A wrong password (not a backend outage) costs the sender time: the reply is held back, growing with repeated failures.
      const delay = result.verdict === 'fail' ? (this.o.penalty?.failure(creds.clientAddr, creds.login) ?? 0) : 0;
      if (delay > 0) {
        m?.penaltyDelays.inc({ where: 'authd' });
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    return result;
  }
}

/** Encoded replies by text: a few distinct texts cover nearly every reply, so most replies cost no encoding. */
const replyCache = new Map<string, Buffer>();
const REPLY_CACHE_MAX = 64;
export function encodeReply(r: AuthResult): Buffer {
  const text = replyText(r);
  let b = replyCache.get(text);
  if (!b) {
    b = encodeFields([text]);
    if (replyCache.size < REPLY_CACHE_MAX) replyCache.set(text, b);
  }
  return b;
}
const NO_OVERSIZE = encodeFields(['NO ']);
const EMPTY = Buffer.alloc(0);
const INVALID_UTF8: AuthResult = { verdict: 'fail', reason: 'invalid UTF-8 in request' };

/**
 * The answer to one complete request (4 or 5 fields, as parseRequest() returned them): fields decoded as upstream reads
 * them, then the service's verdict. The node:net layer's entry; the C layer (./listener.ts) decodes in C and calls answerFields.
 */
export function answerRequest(service: AuthService, fields: Buffer[]): AuthResult | Promise<AuthResult> {
  const addr = fields.length > 4 ? fieldToString(fields[4]!) : undefined;
  return answerFields(service, fieldToString(fields[0]!), fieldToString(fields[1]!), fieldToString(fields[2]!), fieldToString(fields[3]!), addr);
}

/** The answer to decoded fields (null: not UTF-8, refused; clientAddr undefined: a 4-field request). */
export function answerFields(
  service: AuthService,
  login: string | null,
  password: string | null,
  svc: string | null,
  realm: string | null,
  clientAddr: string | null | undefined,
): AuthResult | Promise<AuthResult> {
  if (login === null || password === null || svc === null || realm === null || clientAddr === null) return INVALID_UTF8;
  return service.check({ login, password, service: svc, realm, clientAddr: clientAddr ?? '' });
}

/** Serve the saslauthd protocol on a listening socket (created by listener.ts with `allowHalfOpen`). */
export function serveConnections(server: net.Server, service: AuthService, o: Pick<AuthServiceOptions, 'readTimeoutMs' | 'log'>): void {
  server.on('connection', (sock) => {
    service.metrics?.connections.inc({ listener: 'authd' });
    new Connection(sock, service, o.readTimeoutMs).start();
  });
}

/**
 * One client connection. It is its own deadline entry (read timeout, then drain timeout), tracked from accept to close:
 * no timer, closure or cancel function per phase.
 */
class Connection implements Deadline {
  private buf: Buffer = EMPTY;
  private state: 'reading' | 'working' | 'draining' = 'reading';
  private graceTimer: NodeJS.Timeout | undefined;
  at: number;

  constructor(
    private readonly sock: net.Socket,
    private readonly service: AuthService,
    readTimeoutMs: number,
  ) {
    this.at = Date.now() + readTimeoutMs;
  }

  start(): void {
    const sock = this.sock;
    deadlines.track(this);
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('end', () => this.onEnd());
    sock.on('error', () => sock.destroy());
    sock.on('close', () => {
      deadlines.untrack(this);
      if (this.graceTimer) clearTimeout(this.graceTimer);
    });
  }

  /** The deadline of the current phase passed (read or drain): drop the connection. */
  fire(): void {
    this.sock.destroy();
  }

  // Upstream's ending: reply, shutdown(SHUT_WR), read and discard until the client closes, close.
  private finish(reply?: Buffer): void {
    this.state = 'draining';
    if (this.graceTimer) clearTimeout(this.graceTimer);
    const sock = this.sock;
    if (reply) sock.end(reply);
    else sock.end();
    this.at = Date.now() + DRAIN_TIMEOUT_MS;
    // A deadline already swept (the work outlived the read timeout) is watched again for the drain.
    if (!sock.destroyed) deadlines.track(this);
  }

  private answer(fields: Buffer[]): void {
    this.state = 'working';
    // Work is not bounded by the read deadline (the backend has its own); the drain deadline is set when the reply goes out.
    deadlines.untrack(this);
    if (this.graceTimer) clearTimeout(this.graceTimer);
    const r = answerRequest(this.service, fields);
    if ('then' in r) void r.then((res) => this.reply(res));
    else this.reply(r);
  }

  private reply(r: AuthResult): void {
    if (!this.sock.destroyed) this.finish(encodeReply(r));
  }

  private onBytes(): void {
    const r = parseRequest(this.buf);
    if (r.kind === 'oversize') {
      this.finish(NO_OVERSIZE);
    } else if (r.kind === 'request') {
      this.answer(r.fields);
    } else if (r.fields === BASE_FIELDS && !this.graceTimer) {
      // Part of a 5th field: give it a moment, then answer with the 4 we have.
      this.graceTimer = setTimeout(() => {
        const four = parseRequest(this.buf, true);
        if (this.state === 'reading' && four.kind === 'request') this.answer(four.fields);
      }, FIFTH_FIELD_GRACE_MS);
    }
  }

  private onData(chunk: Buffer): void {
    if (this.state !== 'reading') return; // drained and discarded
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    this.onBytes();
  }

  private onEnd(): void {
    if (this.state === 'reading') {
      // EOF: a complete 4-field request followed by a half-close is fine; anything shorter gets no reply (upstream).
      const r = parseRequest(this.buf, true);
      if (r.kind === 'request') this.answer(r.fields);
      else this.finish();
    } else if (this.state === 'draining') {
      this.sock.destroy();
    }
  }
}
