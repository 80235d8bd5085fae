// One SMTP worker of a multi-process `facteur serve`: runs the listeners (its own SO_REUSEPORT sockets on the addresses
// its primary reserved, or node:cluster's round-robin as the fallback) and commits into the shared spool; asks its
// primary for everything that must hold over all workers.
// Trusts its primary (a facteur process that forked it); everything from the network is handled by serve() as usual.
import cluster from 'node:cluster';
import { AggregatorRegistry } from 'prom-client';
import type { ConfigValues } from '../../config/load.js';
import { Spool } from '../../queue/spool.js';
import { queueDirFromConfig } from '../../delivery/index.js';
import { PenaltyBox } from '../../policy/penalty.js';
import { LeasedAdmission } from '../../policy/connlimit.js';
import type { RateResult, RateStore } from '../../policy/ratelimit.js';
import type { SenderPolicy } from '../../policy/sender.js';
import { createLogger } from '../../observability/log.js';
import { createMetrics } from '../../observability/metrics.js';
import { serve, type SharedState } from '../commands/serve.js';
import { SHARED_LISTEN_ENV, type SharedListen } from '../../smtp/reuseport.js';
import { isFacteurMessage, type PenaltyEvent, type PrimaryMessage, type WorkerMessage } from './messages.js';

/** How long a worker gathers committed ids before telling its primary (one IPC message for all of them). */
const COMMIT_BATCH_MS = 10;

/** How long a worker waits for its primary's answer (connection admission, rate counters) before failing closed. */
const ASK_TIMEOUT_MS = 5_000;

/** Send to the primary; a channel closing meanwhile (the primary is stopping) is not an error here, as in the primary. */
function send(m: WorkerMessage): void {
  if (process.connected) process.send!(m, undefined, {}, () => undefined);
}

/** The brute-force counters, fed by this worker's AUTH results and by the other workers' (relayed by the primary). */
class SharedPenaltyBox extends PenaltyBox {
  override failure(address: string | undefined, login: string): number {
    send({ t: 'facteur:penalty', op: 'failure', address, login });
    return super.failure(address, login);
  }

  override success(address: string | undefined): void {
    send({ t: 'facteur:penalty', op: 'success', address, login: '' });
    super.success(address);
  }

  /** Another worker's event: counted here without being sent back. */
  apply(e: PenaltyEvent): void {
    if (e.op === 'failure') super.failure(e.address, e.login);
    else super.success(e.address);
  }
}

/** Requests to the primary that expect an answer, matched by number. */
class Asker {
  private next = 1;
  private readonly pending = new Map<number, { resolve: (m: PrimaryMessage) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();

  ask(make: (req: number) => WorkerMessage): Promise<PrimaryMessage> {
    const req = this.next++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(req);
        reject(new Error('the primary process did not answer'));
      }, ASK_TIMEOUT_MS);
      this.pending.set(req, { resolve, reject, timer });
      if (!process.connected) return this.answer(req, undefined);
      send(make(req));
    });
  }

  answer(req: number, m: PrimaryMessage | undefined): void {
    const p = this.pending.get(req);
    if (!p) return;
    this.pending.delete(req);
    clearTimeout(p.timer);
    if (m) p.resolve(m);
    else p.reject(new Error('the primary process is gone'));
  }
}

/** The listeners' addresses the primary reserved for SO_REUSEPORT (see primary.ts), or undefined for round-robin. */
function sharedListenFromEnv(): SharedListen[] | undefined {
  const raw = process.env[SHARED_LISTEN_ENV];
  return raw ? (JSON.parse(raw) as SharedListen[]) : undefined;
}

export interface WorkerOptions {
  config: ConfigValues;
  reread: () => Promise<ConfigValues>;
  shutdownTimeoutMs: number;
}

/** Send, then resolve once the message has left (so that a disconnect right after does not drop it). */
function sendAndWait(m: WorkerMessage): Promise<void> {
  if (!process.connected) return Promise.resolve();
  return new Promise((resolve) => process.send!(m, undefined, {}, () => resolve()));
}

/** Run this process as an SMTP worker until the primary (or a signal) stops it; returns the exit code. */
export async function runWorker(o: WorkerOptions): Promise<number> {
  const id = cluster.worker?.id ?? 0;
  const log = createLogger({ name: 'facteur-smtp', level: o.config.server.log_level as string }).child({ worker: id });
  const asker = new Asker();
  const penalty = new SharedPenaltyBox();
  let sender: SenderPolicy | undefined;
  let stop: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  let served: Awaited<ReturnType<typeof serve>> | undefined;

  process.on('message', (m: unknown) => {
    if (!isFacteurMessage(m)) return;
    const msg = m as PrimaryMessage;
    switch (msg.t) {
      case 'facteur:conn-answer':
      case 'facteur:rate-answer':
        asker.answer(msg.req, msg);
        break;
      case 'facteur:conn-recall':
        send({ t: 'facteur:conn-return', returns: admission.recall(msg.ip), recall: msg.recall });
        break;
      case 'facteur:penalty':
        penalty.apply(msg);
        break;
      case 'facteur:learn':
        sender?.learn(msg.login, msg.addresses, { share: false });
        break;
      case 'facteur:reload':
        served?.reload().catch((err: unknown) => log.error({ err: (err as Error).message }, 'reload failed; keeping the previous configuration and certificate'));
        break;
      case 'facteur:stop':
        stop();
        break;
    }
  });
  // The primary gone (killed): stop taking mail, since nothing would deliver it or count the limits.
  process.on('disconnect', () => stop());
  process.once('SIGTERM', () => stop());
  process.once('SIGINT', () => stop());
  process.on('SIGHUP', () => undefined); // the primary tells its workers to reload

  // Connection places lent by the primary (see LeasedAdmission): most connections are admitted without asking it.
  const admission = new LeasedAdmission({
    async borrow(ip) {
      const a = await asker.ask((req) => ({ t: 'facteur:conn-acquire', req, ip }));
      return a.t === 'facteur:conn-answer' ? a.lent : 0;
    },
    giveBack: (returns) => send({ t: 'facteur:conn-return', returns }),
  });
  const shared: SharedState = {
    admission,
    memoryRateStore: {
      async hit(key: string, cost: number, windowMs: number, limit: number): Promise<RateResult> {
        const a = await asker.ask((req) => ({ t: 'facteur:rate', req, key, cost, windowMs, limit }));
        if (a.t !== 'facteur:rate-answer' || !a.result) throw new Error(a.t === 'facteur:rate-answer' && a.error ? a.error : 'no rate answer');
        return a.result;
      },
    } satisfies RateStore,
    onLearn: (login, addresses) => send({ t: 'facteur:learn', login, addresses: [...addresses] }),
    attachSender: (s) => void (sender = s),
    listen: sharedListenFromEnv(),
  };

  try {
    // The primary opened the spool (lock, recovery); a worker only adds new messages, announced to the primary's scheduler.
    const spool = await Spool.open(queueDirFromConfig(o.config as Record<string, Record<string, unknown>>), { recover: false });
    // Announced to the primary's scheduler in one message per COMMIT_BATCH_MS: each IPC message costs the primary ~80 µs
    // of CPU to receive, and commits rarely finish in the same event-loop turn (bench/smtp: 7,441 messages for 8,000
    // commits when sent once per turn). A few milliseconds more before delivery starts is not seen by anyone.
    let committed: string[] = [];
    spool.onCommit((queueId) => {
      if (committed.push(queueId) > 1) return;
      setTimeout(() => {
        send({ t: 'facteur:commit', ids: committed });
        committed = [];
      }, COMMIT_BATCH_MS);
    });
    const metrics = createMetrics({ queueAndDelivery: false }); // the primary owns the queue and delivers: it exposes those
    new AggregatorRegistry(); // answers the primary's requests for this worker's metrics
    AggregatorRegistry.setRegistries([metrics.registry]);
    served = await serve({ config: o.config, reread: o.reread, queue: spool, delivery: false, observability: false, shared, penalty, metrics, log, shutdownTimeoutMs: o.shutdownTimeoutMs });
  } catch (err) {
    await sendAndWait({ t: 'facteur:fatal', message: (err as Error).message });
    if (process.connected) process.disconnect();
    return 1;
  }
  send({ t: 'facteur:ready', bound: served.bound });
  await stopped;
  await served.stopAll();
  if (process.connected) process.disconnect(); // the IPC channel would keep this process alive
  return 0;
}
