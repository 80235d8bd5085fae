// Closed-loop load generator for saslauthd-compatible sockets: C clients, one request per connection, every reply checked.
// Trusts nothing from the daemon: a reply that is not exactly a counted string starting "OK" is an error, never a success.
import net from 'node:net';
import { encodeFields, parseReply } from '../../src/auth/protocol/frame.js';

export interface LoadUser {
  login: string;
  password: string;
}

export interface LoadSpec {
  socket: string;
  concurrency: number;
  /** Measured phase length; requests started before the deadline are completed and counted. */
  durationMs: number;
  users: LoadUser[];
  service: string;
  realm: string;
  /** Per-request deadline: a reply later than this is a timeout error. */
  timeoutMs: number;
  /** Index of the first user, so that several generator processes do not walk the users in step. */
  firstUser?: number;
  /**
   * Open loop (C generator only): requests per second, all clients together, on a fixed schedule; a request's latency
   * counts from when it was due. Absent: closed loop (each client sends its next request when the last is answered).
   */
  rate?: number;
}

export interface LoadResult {
  concurrency: number;
  elapsedMs: number;
  ok: number;
  /** Replies that were not OK, by first 40 characters of the reply text (or transport error). */
  errors: Record<string, number>;
  errorCount: number;
  /** Connects refused with EAGAIN (listen backlog full) and retried, as a blocking connect() would wait. */
  connectRetries: number;
  /** Latency percentiles of successful requests, in milliseconds (connect to reply, retries included). */
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** Successful authentications per second. */
  rate: number;
  /** CPU used by the generator process(es) during the run, in ms (user+system). */
  generatorCpuMs: number;
  /** Latencies (ms) of the successful requests, unsorted, for merging results of several generator processes. */
  latencies: Float64Array;
}

const MAX_REPLY = 1023;

/**
 * Emulates the blocking connect() of a C client (Postfix's libsasl) on a UNIX socket whose listen queue is full.
 * Node's connect is non-blocking and fails with EAGAIN there; instead of spinning, the client waits in a FIFO queue and
 * is let through when one of our requests completes (the daemon accepted a connection, so the queue has room again).
 * While anyone waits, new requests queue behind them, so waiting is fair. A short timer is the fallback.
 */
export class ConnectGate {
  private readonly queue: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** Connect attempts refused with EAGAIN. */
  retries = 0;

  get waiting(): boolean {
    return this.queue.length > 0;
  }

  /** Wait behind the clients already waiting. */
  enqueue(go: () => void): void {
    this.queue.push(go);
    this.arm();
  }

  /** A connect was refused: this client goes first when room appears (it was at the head, or nobody waited). */
  refused(go: () => void): void {
    this.retries++;
    this.queue.unshift(go);
    this.arm();
  }

  /** A request finished: let the longest-waiting client try. */
  release(): void {
    this.queue.shift()?.();
  }

  private arm(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.release();
      if (this.queue.length) this.arm();
    }, 5);
  }
}

/** One saslauthd request on a fresh connection. Resolves with the reply text or rejects with a short error label. */
export function oneRequest(socket: string, payload: Buffer, timeoutMs: number, gate?: ConnectGate): Promise<string> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const attempt = () => {
      const sock = net.connect(socket);
      let buf: Buffer | null = null;
      let done = false;
      const timer = setTimeout(() => finish(new Error('timeout')), Math.max(1, timeoutMs - (Date.now() - started)));
      const finish = (err: Error | null, text?: string) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        sock.destroy();
        gate?.release();
        if (err) reject(err);
        else resolve(text!);
      };
      sock.once('connect', () => sock.write(payload));
      sock.on('data', (chunk) => {
        buf = buf ? Buffer.concat([buf, chunk]) : chunk;
        // A reply longer than MAX_REPLY is refused even when complete, as a C client's fixed buffer refuses it.
        const frame = parseReply(buf);
        if (frame && frame.text.length <= MAX_REPLY) finish(null, frame.text.toString('utf8'));
        else if (buf.length > MAX_REPLY + 2) finish(new Error('oversized reply'));
      });
      sock.once('error', (err: NodeJS.ErrnoException) => {
        if (done) return;
        // A UNIX socket whose listen queue is full refuses a non-blocking connect with EAGAIN; a C client would block.
        if (err.code === 'EAGAIN' && gate && !buf && Date.now() - started < timeoutMs) {
          done = true;
          clearTimeout(timer);
          sock.destroy();
          gate.refused(attempt);
          return;
        }
        finish(new Error(err.code ?? 'socket error'));
      });
      sock.once('end', () => finish(new Error(buf ? 'truncated reply' : 'closed without reply')));
    };
    if (gate?.waiting) gate.enqueue(attempt);
    else attempt();
  });
}

/** Percentile (nearest rank) of a sorted array. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

/** Percentiles and rate from sorted latencies. */
export function summarize(sorted: Float64Array, ok: number, elapsedMs: number): Pick<LoadResult, 'p50' | 'p90' | 'p99' | 'max' | 'rate'> {
  return {
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1] : NaN,
    rate: ok / (elapsedMs / 1000),
  };
}

/**
 * Merge results: of generator processes that ran the same cell side by side (`parallel`), or of rounds of the same
 * cell run one after the other (the elapsed times add up).
 */
export function mergeResults(parts: LoadResult[], concurrency: number, how: 'parallel' | 'sequential' = 'parallel'): LoadResult {
  const total = parts.reduce((a, p) => a + p.latencies.length, 0);
  const all = new Float64Array(total);
  let off = 0;
  const errors: Record<string, number> = {};
  for (const p of parts) {
    all.set(p.latencies, off);
    off += p.latencies.length;
    for (const [k, v] of Object.entries(p.errors)) errors[k] = (errors[k] ?? 0) + v;
  }
  all.sort();
  const ok = parts.reduce((a, p) => a + p.ok, 0);
  const elapsedMs = how === 'parallel' ? Math.max(...parts.map((p) => p.elapsedMs)) : parts.reduce((a, p) => a + p.elapsedMs, 0);
  return {
    concurrency,
    elapsedMs,
    ok,
    errors,
    errorCount: parts.reduce((a, p) => a + p.errorCount, 0),
    connectRetries: parts.reduce((a, p) => a + p.connectRetries, 0),
    generatorCpuMs: parts.reduce((a, p) => a + p.generatorCpuMs, 0),
    latencies: all,
    ...summarize(all, ok, elapsedMs),
  };
}

/** The requests of a cell, one per user in order, as saslauthd clients send them (login, password, service, realm). */
export function requestPayloads(spec: Pick<LoadSpec, 'users' | 'service' | 'realm'>): Buffer[] {
  return spec.users.map((u) => encodeFields([u.login, u.password, spec.service, spec.realm]));
}

/**
 * Keep `concurrency` clients busy for `durationMs`, each sending one request per connection, users taken in turn.
 * Only replies starting with "OK" count as successes; everything else is counted as an error by kind.
 */
export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  const payloads = requestPayloads(spec);
  let next = spec.firstUser ?? 0;
  let ok = 0;
  let errorCount = 0;
  const errors: Record<string, number> = {};
  let lat = new Float64Array(1 << 16);
  let n = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const deadline = t0 + spec.durationMs;
  const gate = new ConnectGate();

  const client = async () => {
    while (performance.now() < deadline) {
      const payload = payloads[next++ % payloads.length];
      const s = performance.now();
      try {
        const text = await oneRequest(spec.socket, payload, spec.timeoutMs, gate);
        if (text.startsWith('OK')) {
          ok++;
          if (n === lat.length) {
            const bigger = new Float64Array(lat.length * 2);
            bigger.set(lat);
            lat = bigger;
          }
          lat[n++] = performance.now() - s;
        } else {
          errorCount++;
          const k = `reply: ${text.slice(0, 40)}`;
          errors[k] = (errors[k] ?? 0) + 1;
        }
      } catch (err) {
        errorCount++;
        const k = `transport: ${(err as Error).message}`;
        errors[k] = (errors[k] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: spec.concurrency }, client));
  const elapsedMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const sorted = lat.slice(0, n).sort();
  return {
    concurrency: spec.concurrency,
    elapsedMs,
    ok,
    errors,
    errorCount,
    connectRetries: gate.retries,
    ...summarize(sorted, ok, elapsedMs),
    generatorCpuMs: (cpu.user + cpu.system) / 1000,
    latencies: sorted,
  };
}
