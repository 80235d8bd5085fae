// `facteur authd`: the saslauthd-compatible daemon's command line (flags in src/auth/daemon/options.ts).
// Trusts argv only through parseAuthdArgs.
import { parseAuthdArgs, USAGE } from '../../auth/daemon/options.js';
import { runDaemon, VERSION } from '../../auth/daemon/run.js';
import { mechanismNames } from '../../auth/backends/index.js';
import { UsageError } from '../../lib/errors.js';

export async function run(argv: string[]): Promise<number> {
  let o;
  try {
    o = parseAuthdArgs(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`facteur authd: ${err.message}\n\n${USAGE}`);
      return 1;
    }
    throw err;
  }
  if (o.showHelp) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (o.showVersion) {
    process.stderr.write(`facteur authd ${VERSION} (saslauthd 2.1.28 protocol)\nauthentication mechanisms: ${mechanismNames.join(' ')}\n`);
    return 0;
  }
  return runDaemon(o);
}
