// facteur's SMTP service as `facteur serve --config FILE` runs it (same serve() wiring: spool with fsync, verifier,
// policy, rate limiter), minus the delivery scheduler, so that it only accepts and queues, like the Postfix it is
// compared with (which puts every message on hold). With [server] workers > 1, the same primary/worker processes as
// `facteur serve` (node:cluster re-runs this file in each worker). Trusts its config file (written by bench/smtp.ts).
import cluster from 'node:cluster';
import { loadConfigFile } from '../../src/config/load.js';
import { serve } from '../../src/cli/commands/serve.js';
import { startPrimary, workerCount } from '../../src/cli/cluster/primary.js';
import { runWorker } from '../../src/cli/cluster/worker.js';
import { createLogger, daemonStackTraces } from '../../src/observability/log.js';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: facteur-serve.ts CONFIG\n');
  process.exit(2);
}
daemonStackTraces(); // as bin/facteur serve does
const config = await loadConfigFile(file);
const reread = async () => config;
if (cluster.isWorker) {
  process.exitCode = await runWorker({ config, reread, shutdownTimeoutMs: 2000 });
} else {
  const workers = workerCount(config);
  const served =
    workers > 1
      ? await startPrimary({ config, workers, reread, delivery: false, shutdownTimeoutMs: 2000, log: createLogger({ name: 'facteur-smtp', level: config.server.log_level as string }) })
      : await serve({ config, delivery: false });
  process.send?.({ ready: true });
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  await served.stopAll();
  process.exit(0);
}
