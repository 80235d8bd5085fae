// Prometheus metrics for every facteur part: one private prom-client Registry holding the facteur_* series, with typed handles.
// Trusts callers to pass bounded label values (listener and backend names from the configuration, results from fixed lists).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Outcome of one AUTH attempt: refused = turned away by the brute-force defence without checking the password. */
export type AuthResultLabel = 'ok' | 'fail' | 'tempfail' | 'refused';
export type DeliveryResultLabel = 'sent' | 'deferred' | 'bounced';
export type MessageResultLabel = 'accepted' | 'rejected';
export type CacheResultLabel = 'hit' | 'miss';
/** Where a brute-force penalty was applied. */
export type PenaltyWhereLabel = 'smtp' | 'authd';

/** Messages in the queue by state, e.g. { active: 3, deferred: 12, hold: 0 }. */
export type QueueSizes = Record<string, number>;
export type QueueSource = () => QueueSizes | Promise<QueueSizes>;

export interface MetricsOptions {
  /** Also register Node's process_* and nodejs_* metrics (CPU, memory, event loop lag). Default true. */
  defaultMetrics?: boolean;
  /** Longest wait for the queue size callback during a scrape, ms. */
  queueTimeoutMs?: number;
  /** Labels added to every series, e.g. { node: 'mx1' } when several nodes feed one Prometheus. */
  defaultLabels?: Record<string, string>;
  /**
   * Expose the queue and delivery series (default true). An SMTP worker of the multi-process mode says false: its
   * primary owns the queue and delivers, and exposes those series itself (see queueMetrics).
   */
  queueAndDelivery?: boolean;
}

/** The series of whoever owns the queue and delivers: per-recipient results, and the queue's size read at each scrape. */
export interface QueueMetrics {
  readonly deliveries: Counter<'result'>;
  readonly queueMessages: Gauge<'state'>;
  setQueueSource(fn: QueueSource | undefined): void;
}

export interface FacteurMetrics {
  readonly registry: Registry;
  /** Connections accepted, by listener (inbound, submission, submissions, authd). */
  readonly connections: Counter<'listener'>;
  /** Connections open now, by listener. */
  readonly connectionsActive: Gauge<'listener'>;
  /** `authAttempts.inc({ backend: 'ldap', result: 'ok' })`; result is an AuthResultLabel. */
  readonly authAttempts: Counter<'backend' | 'result'>;
  /** Seconds a backend took to answer: `const end = backendLatency.startTimer({ backend }); ...; end()`. */
  readonly backendLatency: Histogram<'backend'>;
  /** Credential cache lookups: `cacheLookups.inc({ result: 'hit' })`. */
  readonly cacheLookups: Counter<'result'>;
  /** Failure replies held back by the brute-force defence, and addresses refused outright. */
  readonly penaltyDelays: Counter<'where'>;
  readonly penaltyRefusals: Counter<'where'>;
  /** Hits refused by a rate limit (messages, recipients, connections). */
  readonly rateLimitRefusals: Counter<'limit'>;
  /** Rate-limit store (Redis) errors; the fail policy decided those hits. */
  readonly rateLimitStoreErrors: Counter;
  /** Per-recipient delivery outcomes: sent, deferred, bounced. */
  readonly deliveries: Counter<'result'>;
  /** TLS sessions established, by protocol version (TLSv1.2, TLSv1.3) and listener. */
  readonly tlsSessions: Counter<'listener' | 'version'>;
  /** Messages at end of DATA: accepted (queued) or rejected, by listener. */
  readonly messages: Counter<'listener' | 'result'>;
  /** Messages in the queue by state; read from the callback given to `setQueueSource` at each scrape. */
  readonly queueMessages: Gauge<'state'>;
  /** Plug the queue's counting function in (the queue owner calls this once). */
  setQueueSource(fn: QueueSource | undefined): void;
  /** The exposition text, as /metrics serves it. */
  text(): Promise<string>;
}

export const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** A fresh registry with facteur's metrics. Each process (or test) makes its own; nothing goes into prom-client's global registry. */
export function createMetrics(o: MetricsOptions = {}): FacteurMetrics {
  const registry = new Registry();
  if (o.defaultLabels) registry.setDefaultLabels(o.defaultLabels);
  const registers = [registry];
  const q = queueMetrics(o.queueAndDelivery === false ? [] : registers, o.queueTimeoutMs);

  const m: FacteurMetrics = {
    registry,
    connections: new Counter({ name: 'facteur_connections_total', help: 'Connections accepted, by listener', labelNames: ['listener'], registers }),
    connectionsActive: new Gauge({ name: 'facteur_connections_active', help: 'Connections open now, by listener', labelNames: ['listener'], registers }),
    authAttempts: new Counter({ name: 'facteur_auth_attempts_total', help: 'Authentication attempts by backend and result (ok, fail, tempfail, refused)', labelNames: ['backend', 'result'], registers }),
    backendLatency: new Histogram({ name: 'facteur_auth_backend_latency_seconds', help: 'Time a password backend took to answer', labelNames: ['backend'], buckets: LATENCY_BUCKETS, registers }),
    cacheLookups: new Counter({ name: 'facteur_auth_cache_lookups_total', help: 'Credential cache lookups, by result (hit, miss)', labelNames: ['result'], registers }),
    penaltyDelays: new Counter({ name: 'facteur_penalty_delays_total', help: 'Failure replies delayed by the brute-force defence', labelNames: ['where'], registers }),
    penaltyRefusals: new Counter({ name: 'facteur_penalty_refusals_total', help: 'Attempts refused by the brute-force defence without checking a password', labelNames: ['where'], registers }),
    rateLimitRefusals: new Counter({ name: 'facteur_ratelimit_refusals_total', help: 'Hits refused by a rate limit, by limit (messages, recipients, connections)', labelNames: ['limit'], registers }),
    rateLimitStoreErrors: new Counter({ name: 'facteur_ratelimit_store_errors_total', help: 'Rate limit checks the store (Redis) could not answer; the fail policy decided them', registers }),
    deliveries: q.deliveries,
    tlsSessions: new Counter({ name: 'facteur_tls_sessions_total', help: 'TLS sessions established, by listener and protocol version', labelNames: ['listener', 'version'], registers }),
    messages: new Counter({ name: 'facteur_messages_total', help: 'Messages at end of DATA, by listener and result (accepted, rejected)', labelNames: ['listener', 'result'], registers }),
    queueMessages: q.queueMessages,
    setQueueSource: (fn) => q.setQueueSource(fn),
    text: () => registry.metrics(),
  };
  if (o.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  return m;
}

/**
 * The queue and delivery series, in `registers` (none: built but not exposed). createMetrics includes them; the primary
 * of the multi-process mode, which owns the queue, exposes them from a registry of its own beside its workers' series.
 */
export function queueMetrics(registers: Registry[], timeoutMs?: number): QueueMetrics {
  let queueSource: QueueSource | undefined;
  const queueTimeoutMs = timeoutMs ?? 5_000;

  // prom-client collects every metric of a scrape concurrently: the gauge and the error counter share one reading.
  let scan: Promise<QueueSizes | undefined> | undefined;
  const queueErrors = new Counter({
    name: 'facteur_queue_scan_errors_total',
    help: 'Scrapes where the queue size could not be read (the gauge is then empty)',
    registers,
    async collect() {
      await readQueue();
    },
  });
  function readQueue(): Promise<QueueSizes | undefined> {
    if (!queueSource) return Promise.resolve(undefined);
    const source = queueSource;
    scan ??= (async () => {
      let timer: NodeJS.Timeout | undefined;
      try {
        return await Promise.race([
          Promise.resolve().then(() => source()),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error('queue size timeout')), queueTimeoutMs);
          }),
        ]);
      } catch {
        queueErrors.inc();
        return undefined;
      } finally {
        clearTimeout(timer);
        setImmediate(() => (scan = undefined));
      }
    })();
    return scan;
  }
  const queueMessages = new Gauge<'state'>({
    name: 'facteur_queue_messages',
    help: 'Messages in the queue, by state',
    labelNames: ['state'],
    registers,
    async collect() {
      const sizes = await readQueue();
      // No reading (no source, error, timeout): report no value rather than a stale one; a scrape never fails for it.
      this.reset();
      if (sizes) for (const [state, n] of Object.entries(sizes)) if (Number.isFinite(n)) this.set({ state }, n);
    },
  });

  const deliveries = new Counter<'result'>({ name: 'facteur_deliveries_total', help: 'Per-recipient delivery attempts by result (sent, deferred, bounced)', labelNames: ['result'], registers });
  return {
    deliveries,
    queueMessages,
    setQueueSource(fn) {
      queueSource = fn;
    },
  };
}
