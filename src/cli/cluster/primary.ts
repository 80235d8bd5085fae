// The primary of a multi-process `facteur serve` ([server] workers > 1): prepares what must happen once (certificate,
// spool lock and recovery), forks the SMTP workers, delivers what they queue, serves /metrics and /health for all of
// them, and keeps the counters that must hold over all workers (connections, rate limits, brute-force penalties).
// Trusts its workers (forked from this program) and its configuration.
import cluster, { type Worker } from 'node:cluster';
import os from 'node:os';
import path from 'node:path';
import { AggregatorRegistry, Registry } from 'prom-client';
import type { ConfigValues } from '../../config/load.js';
import { ConfigError } from '../../lib/errors.js';
import type { Logger } from '../../observability/log.js';
import { startObservabilityServer, parseListen, type ObservabilityServer } from '../../observability/http.js';
import { queueMetrics } from '../../observability/metrics.js';
import { LeaseLedger, lendOrRecall } from '../../policy/connlimit.js';
import { MemoryRateStore } from '../../policy/ratelimit.js';
import { startDelivery, deliveryOptionsFromConfig, type DeliveryHandle } from '../../delivery/index.js';
import { listenError, listenersFromConfig, type ListenerKind } from '../../smtp/server.js';
import { reserveListen, reusePortUnavailable, SHARED_LISTEN_ENV, type SharedListen } from '../../smtp/reuseport.js';
import { openQueue, tlsFiles } from '../commands/serve.js';
import { isFacteurMessage, type PrimaryMessage, type WorkerMessage } from './messages.js';

/** The number of SMTP worker processes a configuration asks for (0: one per CPU core). */
export function workerCount(cfg: ConfigValues): number {
  const n = Number(cfg.server.workers ?? 1);
  return n === 0 ? Math.max(1, os.availableParallelism()) : n;
}

export interface PrimaryOptions {
  config: ConfigValues;
  workers: number;
  log: Logger;
  reread: () => Promise<ConfigValues>;
  /** Start the delivery scheduler (default true; the SMTP benchmark turns it off). */
  delivery?: boolean;
  /** How long workers may take to finish their sessions when stopping. */
  shutdownTimeoutMs: number;
}

export interface RunningPrimary {
  dataDir: string;
  bound: { kind: ListenerKind; host: string; port: number }[];
  observability?: ObservabilityServer;
  /** SIGHUP: check the new configuration and certificate here, then have every worker reload. */
  reload(): Promise<void>;
  /** Stop the workers (their sessions get shutdownTimeoutMs to finish), then delivery and the spool. */
  stopAll(): Promise<void>;
}

/**
 * [server] reuse_port with the native/net addon: check and reserve every listener's address (see reserveListen), in
 * serve()'s listener order. Undefined when the workers are to share the listeners through node:cluster's round-robin.
 */
async function reserveListeners(cfg: ConfigValues, log: Logger): Promise<(SharedListen & { release(): void })[] | undefined> {
  if (!cfg.server.reuse_port) return undefined;
  const missing = reusePortUnavailable();
  if (missing) {
    log.warn({ reason: missing }, 'SO_REUSEPORT unavailable: the primary will hand each connection to a worker');
    return undefined;
  }
  const out: (SharedListen & { release(): void })[] = [];
  try {
    for (const l of listenersFromConfig(cfg)) out.push(await reserveListen(l.kind, l.host, l.port).catch((err: NodeJS.ErrnoException) => Promise.reject(listenError(l, err))));
  } catch (err) {
    for (const r of out) r.release();
    throw err;
  }
  return out;
}

/** Longest wait for every worker to report ready at start (a worker that fails says why, and start stops at once). */
const START_TIMEOUT_MS = 60_000;
const RESPAWN_DELAY_MS = 1_000;

export async function startPrimary(o: PrimaryOptions): Promise<RunningPrimary> {
  const cfg = o.config;
  const s = cfg.server;
  const log = o.log;
  const dataDir = path.resolve(s.data_dir as string);
  // Once, before forking: N workers must not race to generate the certificate, and only one process may own the queue.
  await tlsFiles(cfg, dataDir, (s.hostname as string) || os.hostname(), log);
  // With SO_REUSEPORT each worker listens on its own socket; the primary checks the addresses and holds them meanwhile.
  const reserved = await reserveListeners(cfg, log);
  let spool: Awaited<ReturnType<typeof openQueue>>;
  try {
    spool = await openQueue(cfg, log);
  } catch (err) {
    for (const r of reserved ?? []) r.release();
    throw err;
  }
  const workerEnv = reserved ? { [SHARED_LISTEN_ENV]: JSON.stringify(reserved.map(({ kind, host, port }) => ({ kind, host, port }))) } : {};
  let delivery: DeliveryHandle | undefined;
  // Connection places lent to the workers (see LeaseLedger); a dead worker's come back at once.
  const ledger = new LeaseLedger(s.max_connections as number, s.max_connections_per_ip as number, o.workers);
  const rates = new MemoryRateStore();
  /** Recalls waiting for a worker's answer, by number. */
  const recalls = new Map<number, () => void>();
  let nextRecall = 1;
  const ready = new Map<number, RunningPrimary['bound']>();
  let stopping = false;
  /** While starting: settle the start (an error, or none once every worker is ready). */
  let settleStart: ((err?: Error) => void) | undefined;

  // A worker that is exiting may close its channel between the check and the write: that is not an error here.
  const sendTo = (w: Worker, m: PrimaryMessage) => {
    if (w.isConnected()) w.send(m, undefined, () => undefined);
  };
  const liveWorkers = () => Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && !w.isDead());

  const onMessage = (w: Worker, raw: unknown) => {
    if (!isFacteurMessage(raw)) return;
    const m = raw as WorkerMessage;
    switch (m.t) {
      case 'facteur:ready':
        ready.set(w.id, m.bound);
        if (ready.size === o.workers) settleStart?.();
        break;
      case 'facteur:fatal':
        settleStart?.(new ConfigError(m.message));
        log.error({ worker: w.id, error: m.message }, 'smtp worker could not start');
        break;
      case 'facteur:commit':
        for (const id of m.ids) spool.announce(id);
        break;
      case 'facteur:conn-acquire':
        void lend(w, m.req, m.ip);
        break;
      case 'facteur:conn-return':
        for (const [ip, n] of m.returns) ledger.giveBack(w.id, ip, n);
        if (m.recall !== undefined) recalls.get(m.recall)?.();
        break;
      case 'facteur:rate':
        rates.hit(m.key, m.cost, m.windowMs, m.limit).then(
          (result) => sendTo(w, { t: 'facteur:rate-answer', req: m.req, result }),
          (err: unknown) => sendTo(w, { t: 'facteur:rate-answer', req: m.req, error: (err as Error).message }),
        );
        break;
      case 'facteur:penalty':
      case 'facteur:learn':
        for (const x of liveWorkers()) if (x !== w) sendTo(x, m);
        break;
    }
  };

  /** Ask a worker for its free places (for `ip`, or all); settles on its answer, its exit, or after a second. */
  const recallFrom = (id: number, ip: string | undefined) =>
    new Promise<void>((resolve) => {
      const x = cluster.workers?.[id];
      if (!x || !x.isConnected()) return resolve();
      const n = nextRecall++;
      const done = () => {
        clearTimeout(timer);
        recalls.delete(n);
        x.off('exit', done);
        resolve();
      };
      const timer = setTimeout(done, 1_000);
      recalls.set(n, done);
      x.once('exit', done);
      sendTo(x, { t: 'facteur:conn-recall', recall: n, ip });
    });

  /** Lend places to a worker for a connection from `ip`; at a ceiling, first take back what the others hold free. */
  const lend = async (w: Worker, req: number, ip: string) => {
    const lent = await lendOrRecall(ledger, w.id, ip, recallFrom);
    // Exited while its recall was pending: what was just lent must come back (its exit already dropped the rest).
    if (lent > 0 && w.isDead()) return ledger.giveBack(w.id, ip, lent);
    sendTo(w, { t: 'facteur:conn-answer', req, lent });
  };

  const fork = () => {
    const w = cluster.fork(workerEnv);
    w.on('message', (m: unknown) => onMessage(w, m));
    w.on('error', (err: Error) => log.debug({ worker: w.id, err: err.message }, 'smtp worker channel error'));
    w.on('exit', (code, signal) => {
      const wasReady = ready.delete(w.id);
      ledger.dropWorker(w.id);
      if (stopping) return;
      if (!wasReady && settleStart) {
        settleStart(new Error(`an SMTP worker exited before it was ready (code ${code}, signal ${signal})`));
        return;
      }
      log.error({ worker: w.id, code, signal }, 'smtp worker died; starting another');
      // A replacement that cannot start either (it reports why) is retried less often.
      setTimeout(() => {
        if (!stopping) fork();
      }, wasReady ? RESPAWN_DELAY_MS : 5 * RESPAWN_DELAY_MS);
    });
    return w;
  };

  const stopWorkers = async () => {
    stopping = true;
    await Promise.all(
      liveWorkers().map(
        (w) =>
          new Promise<void>((resolve) => {
            const kill = setTimeout(() => w.process.kill('SIGKILL'), o.shutdownTimeoutMs + 5_000);
            w.once('exit', () => {
              clearTimeout(kill);
              resolve();
            });
            sendTo(w, { t: 'facteur:stop' });
          }),
      ),
    );
  };

  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => settleStart?.(new Error(`the SMTP workers were not ready within ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS);
      settleStart = (err) => {
        settleStart = undefined;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      for (let i = 0; i < o.workers; i++) fork();
    });
  } catch (err) {
    await stopWorkers();
    await spool.close();
    for (const r of reserved ?? []) r.release();
    throw err;
  }

  // The queue's size and the delivery results are the primary's own series, exposed beside its workers' (which omit them).
  const own = new Registry();
  const queue = queueMetrics([own]);
  queue.setQueueSource(() => spool.sizes());
  if (o.delivery !== false) delivery = startDelivery({ spool, options: deliveryOptionsFromConfig(cfg as Record<string, Record<string, unknown>>), log, onResult: (r) => queue.deliveries.inc({ result: r }) });
  const bound = [...ready.values()][0];
  let observability: ObservabilityServer | undefined;
  const listen = cfg.metrics?.listen as string | undefined;
  if (listen) {
    const agg = new AggregatorRegistry();
    const hp = parseListen(listen)!;
    observability = await startObservabilityServer({
      registry: { contentType: agg.contentType, metrics: async () => `${await agg.clusterMetrics()}\n${await own.metrics()}` },
      host: hp.host,
      port: hp.port,
      log,
      checks: { smtp: () => ready.size === o.workers },
    });
  }
  log.info({ workers: o.workers, listeners: bound }, 'smtp workers ready');
  return {
    dataDir,
    bound,
    observability,
    async reload() {
      const next = await o.reread();
      // Checked here first: a bad certificate or file is reported once and no worker switches.
      await tlsFiles(next, dataDir, (next.server.hostname as string) || os.hostname(), log);
      for (const w of liveWorkers()) sendTo(w, { t: 'facteur:reload' });
      log.info({ workers: ready.size }, 'reload sent to the smtp workers');
    },
    async stopAll() {
      await observability?.close();
      await stopWorkers();
      await delivery?.stop();
      await spool.close();
      for (const r of reserved ?? []) r.release();
    },
  };
}
