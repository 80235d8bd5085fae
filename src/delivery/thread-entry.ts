// The delivery thread's own program (see thread.ts): opens the spool the main thread opened (no recovery, no lock: the
// main thread did both), runs the scheduler and answers the main thread's messages. Trusts the main thread.
import { parentPort, workerData } from 'node:worker_threads';
import { Spool } from '../queue/spool.js';
import { createLogger } from '../observability/log.js';
import { startDelivery, type DeliveryResult } from './scheduler.js';
import type { DeliveryCounts, DeliveryThreadData, FromDeliveryThread, ToDeliveryThread } from './thread.js';

const port = parentPort!;
const data = workerData as DeliveryThreadData;
const send = (m: FromDeliveryThread) => port.postMessage(m);
process.setSourceMapsEnabled(data.sourceMaps); // as the main thread has them (see daemonStackTraces)

try {
  const log = createLogger({ name: data.logName, level: data.logLevel }).child({ thread: 'delivery' });
  const spool = await Spool.open(data.queueDir, { recover: false });
  // Results for the main thread's metrics: counted here, sent at most once a second (and at stop).
  let counts: DeliveryCounts = {};
  let reportTimer: NodeJS.Timeout | undefined;
  const report = () => {
    reportTimer = undefined;
    if (Object.keys(counts).length) send({ t: 'results', counts });
    counts = {};
  };
  const onResult = (r: DeliveryResult) => {
    counts[r] = (counts[r] ?? 0) + 1;
    reportTimer ??= setTimeout(report, 1000);
  };
  const delivery = startDelivery({ spool, options: data.options, log, onResult });
  const answer = (req: number, p: Promise<void>) =>
    p.then(
      () => send({ t: 'done', req }),
      (err: unknown) => send({ t: 'done', req, error: (err as Error).message }),
    );
  port.on('message', (m: ToDeliveryThread) => {
    switch (m.t) {
      case 'commit':
        m.ids.forEach((id, i) => {
          const b = m.bytes[i];
          if (b) spool.adoptCommitted(id, Buffer.from(b.buffer, b.byteOffset, b.byteLength));
          spool.announce(id);
        });
        break;
      case 'flush':
        answer(m.req, delivery.flush(m.id));
        break;
      case 'tick':
        answer(m.req, delivery.tick());
        break;
      case 'stop':
        void delivery
          .stop()
          .then(() => spool.close())
          .catch((err: unknown) => log.error({ err }, 'delivery thread: stop failed'))
          .finally(() => {
            clearTimeout(reportTimer);
            report();
            send({ t: 'stopped' });
            port.close();
            log.flush();
          });
        break;
    }
  });
  send({ t: 'ready' });
} catch (err) {
  send({ t: 'fatal', message: (err as Error).message });
  port.close();
}
