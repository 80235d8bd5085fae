// Delivery on its own thread: the scheduler, its SMTP/LMTP/Maildir sessions and the DSNs run in a worker_thread beside
// the SMTP event loop, so that taking mail in and sending it out use two cores in one process. This side starts the
// thread, tells it of every commit, restarts it if it dies, and stops it. Trusts the thread (same program, own spool).
import type { Worker } from 'node:worker_threads';
import type { Logger } from '../observability/log.js';
import type { Spool } from '../queue/spool.js';
import { startTsWorker } from '../lib/ts-worker.js';
import type { DeliveryOptions } from './options.js';
import type { DeliveryHandle, DeliveryResult } from './scheduler.js';

/** What the thread gets at start (structured-cloned). */
export interface DeliveryThreadData {
  queueDir: string;
  options: DeliveryOptions;
  logName: string;
  logLevel: string;
  sourceMaps: boolean;
}

/** Main thread → delivery thread. */
export type ToDeliveryThread = { t: 'commit'; ids: string[]; bytes: (Uint8Array | null)[] } | { t: 'flush'; req: number; id?: string } | { t: 'tick'; req: number } | { t: 'stop' };

/** Delivery thread → main thread. */
export type FromDeliveryThread = { t: 'ready' } | { t: 'results'; counts: DeliveryCounts } | { t: 'done'; req: number; error?: string } | { t: 'fatal'; message: string } | { t: 'stopped' };

/** Recipients' results since the last report, by result (the thread reports them at most once a second, and at stop). */
export type DeliveryCounts = Partial<Record<DeliveryResult, number>>;

/** Wait before starting a thread again after it died (a crash loop must not eat the SMTP side's core). */
const RESTART_DELAY_MS = 1_000;
/** Longest wait between two attempts to start a thread that keeps failing. */
const RESTART_MAX_DELAY_MS = 60_000;
/** How long stop() waits for deliveries in progress before it ends the thread (as serve gives SMTP sessions 30 s). */
const STOP_TIMEOUT_MS = 30_000;

export interface DeliveryThreadArgs {
  /** The main thread's spool: its commits are announced to the thread. The thread opens its own object on the same dir. */
  spool: Spool;
  options: DeliveryOptions;
  log: Logger;
  logLevel: string;
  /** Recipients' results counted by the thread (for the metrics), reported at most once a second. */
  onResults?: (counts: DeliveryCounts) => void;
}

export interface DeliveryThreadHandle extends DeliveryHandle {
  /** The running thread (started and ready), if any (for tools and tests: terminating it makes this side start another after 1 s). */
  thread(): Worker | undefined;
}

/**
 * Start delivery on a worker thread; resolves once the thread's scheduler runs (rejects if it cannot start).
 * Commits made meanwhile are found by the thread's first scan of the spool.
 */
export async function startDeliveryThread(a: DeliveryThreadArgs): Promise<DeliveryThreadHandle> {
  const data: DeliveryThreadData = { queueDir: a.spool.dir, options: a.options, logName: 'facteur-smtp', logLevel: a.logLevel, sourceMaps: process.sourceMapsEnabled };
  const log = a.log;
  let worker: Worker | undefined;
  /** `worker` once it said it is ready (a thread still starting, or one that will fail to, is not running yet). */
  let live: Worker | undefined;
  let stopping = false;
  /** The first start succeeded: from then on a thread that exits is replaced. */
  let running = false;
  let failedRestarts = 0;
  let restartTimer: NodeJS.Timeout | undefined;
  let nextReq = 1;
  const pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  /** Ids committed this event-loop turn, sent as one message, with the bytes the spool wrote when it kept them. */
  let batch: string[] = [];
  let batchBytes: (Uint8Array | null)[] = [];
  let exited: Promise<void> = Promise.resolve();

  const post = (m: ToDeliveryThread, transfer?: ArrayBuffer[]) => worker?.postMessage(m, transfer);
  // The bytes of a small message, just written, go to the thread with its id, so that its first attempt reads no file
  // (the thread's spool checks with a stat that nothing moved it meanwhile). A buffer that is a whole ArrayBuffer of
  // its own (a commit's, over 4 KB) is moved, not copied; the spool has let go of it.
  a.spool.keepCommitted(true);
  const unsubscribe = a.spool.onCommit((id) => {
    batch.push(id);
    batchBytes.push(a.spool.takeCommitted(id) ?? null);
    if (batch.length > 1) return;
    setImmediate(() => {
      const ids = batch;
      const bytes = batchBytes;
      batch = [];
      batchBytes = [];
      const transfer: ArrayBuffer[] = [];
      for (const b of bytes) if (b && b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer) transfer.push(b.buffer);
      post({ t: 'commit', ids, bytes }, transfer); // a thread being restarted finds these by its first scan
    });
  });

  function spawn(): Promise<void> {
    const w = startTsWorker(new URL('./thread-entry.ts', import.meta.url), { workerData: data, name: 'facteur-delivery' });
    worker = w;
    let up = false;
    const started = new Promise<void>((resolve, reject) => {
      w.on('message', (m: FromDeliveryThread) => {
        if (m.t === 'ready') {
          up = true;
          if (worker === w) live = w;
          resolve();
        } else if (m.t === 'results') a.onResults?.(m.counts);
        else if (m.t === 'fatal') reject(new Error(m.message));
        else if (m.t === 'done') {
          const p = pending.get(m.req);
          pending.delete(m.req);
          if (m.error) p?.reject(new Error(m.error));
          else p?.resolve();
        }
      });
      w.on('error', (err) => {
        if (!up) reject(err);
        else log.error({ err }, 'delivery thread failed');
      });
    });
    exited = new Promise<void>((resolve) => {
      w.on('exit', (code) => {
        if (worker === w) worker = undefined;
        if (live === w) live = undefined;
        for (const p of pending.values()) p.reject(new Error('the delivery thread stopped'));
        pending.clear();
        resolve();
        // Before the first start succeeded, start() reports the failure; after it, delivery must come back whatever
        // happens: a restart that fails (spool unreadable for a while) is tried again, less and less often.
        if (stopping || !running) return;
        if (!up) failedRestarts++;
        const delay = Math.min(RESTART_MAX_DELAY_MS, RESTART_DELAY_MS * 2 ** Math.min(failedRestarts, 10));
        if (up) log.error({ code, restartInMs: delay }, 'delivery thread exited; restarting it (queued mail stays in the spool)');
        restartTimer = setTimeout(() => {
          spawn().then(
            () => {
              failedRestarts = 0;
              log.info('delivery thread restarted');
            },
            (err: unknown) => log.error({ err }, 'delivery thread could not restart; trying again'),
          );
        }, delay);
      });
    });
    return started;
  }

  const ask = (make: (req: number) => ToDeliveryThread) =>
    new Promise<void>((resolve, reject) => {
      if (!worker) return reject(new Error('the delivery thread is not running'));
      const req = nextReq++;
      pending.set(req, { resolve, reject });
      post(make(req));
    });

  try {
    await spawn();
    running = true;
  } catch (err) {
    unsubscribe();
    a.spool.keepCommitted(false);
    await worker?.terminate();
    throw err;
  }
  return {
    async stop() {
      stopping = true;
      unsubscribe();
      a.spool.keepCommitted(false);
      if (restartTimer) clearTimeout(restartTimer);
      post({ t: 'stop' }); // the thread finishes its deliveries in progress, closes its spool and exits
      let timer: NodeJS.Timeout | undefined;
      const late = await Promise.race([exited.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), STOP_TIMEOUT_MS)))]);
      clearTimeout(timer);
      if (late && worker) {
        // A delivery still in progress is attempted again at the next start (its message is still queued).
        log.warn({ waitedMs: STOP_TIMEOUT_MS }, 'delivery thread did not finish in time; stopping it');
        await worker.terminate();
        await exited;
      }
    },
    flush: (id?: string) => ask((req) => ({ t: 'flush', req, id })),
    tick: () => ask((req) => ({ t: 'tick', req })),
    thread: () => live,
  };
}
