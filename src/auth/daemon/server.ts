// The saslauthd-compatible UNIX-socket server: one request per connection, answered byte for byte as cyrus-sasl's ipc_unix.c does.
// Trusts nothing from the socket (lengths bounded, fields decoded strictly); trusts its backend and its options.
import net from 'node:net';
import { parseRequest, fieldToString, BASE_FIELDS, encodeFields } from '../protocol/frame.js';
import { replyText, type AuthBackend, type AuthResult, type Credentials } from '../types.js';
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

/** Bounded concurrency without blocking the event loop: callers beyond the limit wait in FIFO order. */
class Semaphore {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly limit: number) {}
  async acquire(): Promise<() => void> {
    if (this.active >= this.limit) await new Promise<void>((r) => this.waiting.push(r));
    this.active++;
    return () => {
      this.active--;
      this.waiting.shift()?.();
    };
  }
}

/**
 * One coarse timer for every deadline of the daemon (read timeouts, drains, backend calls) instead of a timer and an
 * AbortSignal.timeout() per request: measured, the per-request timers were about a quarter of the daemon's CPU.
 * Deadlines fire up to one tick late, which is nothing next to timeouts counted in seconds.
 */
export class Deadlines {
  private readonly entries = new Set<{ at: number; fire: () => void }>();
  private timer: NodeJS.Timeout | undefined;
  constructor(private readonly tickMs = 250) {}

  /** Call `fire` once `ms` have passed, unless the returned cancel function is called first. */
  add(ms: number, fire: () => void): () => void {
    const e = { at: Date.now() + ms, fire };
    this.entries.add(e);
    if (!this.timer) {
      this.timer = setInterval(() => this.sweep(), this.tickMs);
      this.timer.unref();
    }
    return () => void this.entries.delete(e);
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

/** Grace for the optional 5th field when only part of it has arrived (4-field clients never wait). */
const FIFTH_FIELD_GRACE_MS = 200;
/** Time a client gets to close after our reply before we close on it (upstream waits forever). */
const DRAIN_TIMEOUT_MS = 5_000;

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
    if (!c.login) return { verdict: 'fail', reason: 'NULL login received' };
    if (!c.password) return { verdict: 'fail', reason: 'NULL password received' };
    const creds = this.o.realmJoin && c.realm ? { ...c, login: `${c.login}@${c.realm}` } : c;
    const key = { login: creds.login, realm: creds.realm, service: creds.service };
    const logCtx = { user: creds.login, service: creds.service, realm: creds.realm, mech: this.backend.name, remote: creds.clientAddr || undefined };
    const admission = this.o.penalty?.admit(creds.clientAddr) ?? { allowed: true };
    const m = this.o.metrics;
    if (!admission.allowed) {
      m?.penaltyRefusals.inc({ where: 'authd' });
      m?.authAttempts.inc({ backend: this.backend.name, result: 'refused' });
      this.o.log.warn({ ...logCtx, retryAfterMs: admission.retryAfterMs }, 'auth refused: too many failures from this address');
      return { verdict: 'tempfail', reason: '[UNAVAILABLE] too many authentication failures from this address, try again later' };
    }
    const hit = this.o.cache?.lookup(key, creds.password);
    if (this.o.cache) m?.cacheLookups.inc({ result: hit ? 'hit' : 'miss' });
    if (hit) {
      m?.authAttempts.inc({ backend: this.backend.name, result: 'ok' });
      this.o.penalty?.success(creds.clientAddr);
      if (this.o.verbose) this.o.log.info(logCtx, 'auth success (cached)');
      return { verdict: 'ok', reason: '' };
    }
    const release = await this.sem.acquire();
    this.inflight++;
    let result: AuthResult;
    const endTimer = m?.backendLatency.startTimer({ backend: this.backend.name });
    const ac = new AbortController();
    const cancelDeadline = deadlines.add(this.o.backendTimeoutMs, () => ac.abort(new Error('backend did not answer in time')));
    try {
      result = await this.backend.verify(creds, { signal: ac.signal });
    } catch (err) {
      this.o.log.error({ ...logCtx, err: { message: (err as Error).message, code: (err as { code?: string }).code } }, 'mechanism failed');
      result = { verdict: 'tempfail', reason: '[UNAVAILABLE] internal mechanism failure' };
    } finally {
      cancelDeadline();
      endTimer?.();
      this.inflight--;
      release();
    }
    m?.authAttempts.inc({ backend: this.backend.name, result: result.verdict });
    if (result.verdict === 'ok') {
      this.o.penalty?.success(creds.clientAddr);
      this.o.cache?.store(key, creds.password);
      if (this.o.verbose) this.o.log.info(logCtx, 'auth success');
    } else {
      this.o.log.warn({ ...logCtx, reason: result.reason || 'Unknown', temporary: result.verdict === 'tempfail' }, 'auth failure');
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

/** Serve the saslauthd protocol on a listening socket (created by the caller, so tests can use any path). */
export function serveConnections(server: net.Server, service: AuthService, o: Pick<AuthServiceOptions, 'readTimeoutMs' | 'log'>): void {
  server.on('connection', (sock) => {
    service.metrics?.connections.inc({ listener: 'authd' });
    handleConnection(sock, service, o);
  });
}

function handleConnection(sock: net.Socket, service: AuthService, o: Pick<AuthServiceOptions, 'readTimeoutMs' | 'log'>): void {
  let buf = Buffer.alloc(0);
  let state: 'reading' | 'working' | 'draining' = 'reading';
  let graceTimer: NodeJS.Timeout | undefined;
  let cancelTimer = deadlines.add(o.readTimeoutMs, () => sock.destroy());

  // Upstream's ending: reply, shutdown(SHUT_WR), read and discard until the client closes, close.
  const finish = (reply?: Buffer) => {
    state = 'draining';
    cancelTimer();
    clearTimeout(graceTimer);
    if (reply) sock.end(reply);
    else sock.end();
    cancelTimer = deadlines.add(DRAIN_TIMEOUT_MS, () => sock.destroy());
  };

  const answer = async (fields: Buffer[]) => {
    state = 'working';
    cancelTimer();
    clearTimeout(graceTimer);
    const [login, password, svc, realm, addr] = fields.map(fieldToString);
    let result: AuthResult;
    if (login === null || password === null || svc === null || realm === null || addr === null) {
      result = { verdict: 'fail', reason: 'invalid UTF-8 in request' };
    } else {
      result = await service.handle({ login: login!, password: password!, service: svc!, realm: realm!, clientAddr: addr ?? '' });
    }
    if (!sock.destroyed) finish(encodeFields([replyText(result)]));
  };

  const onBytes = () => {
    if (state !== 'reading') return;
    const r = parseRequest(buf);
    if (r.kind === 'oversize') {
      finish(encodeFields(['NO ']));
    } else if (r.kind === 'request') {
      void answer(r.fields);
    } else if (r.fields === BASE_FIELDS && !graceTimer) {
      // Part of a 5th field: give it a moment, then answer with the 4 we have.
      graceTimer = setTimeout(() => {
        const four = parseRequest(buf, true);
        if (state === 'reading' && four.kind === 'request') void answer(four.fields);
      }, FIFTH_FIELD_GRACE_MS);
    }
  };

  sock.on('data', (chunk) => {
    if (state !== 'reading') return; // drained and discarded
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    onBytes();
  });
  sock.on('end', () => {
    if (state === 'reading') {
      // EOF: a complete 4-field request followed by a half-close is fine; anything shorter gets no reply (upstream).
      const r = parseRequest(buf, true);
      if (r.kind === 'request') void answer(r.fields);
      else finish();
    } else if (state === 'draining') {
      sock.destroy();
    }
  });
  sock.on('error', () => sock.destroy());
  sock.on('close', () => {
    cancelTimer();
    clearTimeout(graceTimer);
  });
}
