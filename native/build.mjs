// Builds facteur's C addons (npm runs this on install, or `npm run build:native`): native/authd (authd's socket layer
// and cache HMAC), native/spool (the queue's commit job) and native/net (the SMTP workers' SO_REUSEPORT sockets), each with node-gyp in its own folder. Without a C compiler
// or Node's headers it says so and exits 0: facteur then uses its JavaScript paths for them, correct but slower.
// `--strict` (used by `npm run build:native`) fails instead.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const here = import.meta.dirname;
const strict = process.argv.includes('--strict');
const PARTS = [
  { dir: 'authd', what: 'the C socket layer of facteur authd', fallback: 'authd will use node:net (slower)' },
  { dir: 'spool', what: "the queue's C commit job", fallback: 'queue commits will use node:fs calls on the event loop (slower)' },
  { dir: 'net', what: 'the SO_REUSEPORT socket of the SMTP workers', fallback: 'with [server] workers > 1 the primary will hand each connection to a worker (slower)' },
];
const args = ['rebuild'];
// npm passes its `nodedir` setting to node-gyp; without one, use the system's headers when present rather than download.
if (!process.env.npm_config_nodedir) {
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (fs.existsSync(path.join(prefix, 'include/node/node_api.h'))) args.push(`--nodedir=${prefix}`);
}
// node-gyp: the one npm puts on PATH for scripts, else the one bundled with npm beside this node.
const bundled = path.resolve(path.dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js');
let failed = false;
for (const part of PARTS) {
  const cwd = path.join(here, part.dir);
  let r = spawnSync('node-gyp', args, { cwd, stdio: 'inherit' });
  if (r.error && fs.existsSync(bundled)) r = spawnSync(process.execPath, [bundled, ...args], { cwd, stdio: 'inherit' });
  if (r.status !== 0) {
    const why = r.error ? r.error.message : `node-gyp exited with ${r.status}`;
    process.stderr.write(`facteur: ${part.what} was not built (${why}); ${part.fallback}.\n`);
    failed = true;
  }
}
process.exit(failed && strict ? 1 : 0);
