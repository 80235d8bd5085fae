// facteur's SMTP service as `facteur serve --config FILE` runs it (same serve() wiring: spool with fsync, verifier,
// policy, rate limiter), minus the delivery scheduler, so that it only accepts and queues, like the Postfix it is
// compared with (which puts every message on hold). Trusts its config file (written by bench/smtp.ts).
import { loadConfigFile } from '../../src/config/load.js';
import { serve } from '../../src/cli/commands/serve.js';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: facteur-serve.ts CONFIG\n');
  process.exit(2);
}
const served = await serve({ config: await loadConfigFile(file), delivery: false });
process.send?.({ ready: true });
await new Promise<void>((resolve) => {
  process.once('SIGTERM', () => resolve());
  process.once('SIGINT', () => resolve());
});
await served.stopAll();
process.exit(0);
