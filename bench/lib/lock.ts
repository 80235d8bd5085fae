// One benchmark at a time on this machine: two at once measure each other. Every bench script calls runUnderBenchLock()
// first; it re-runs the script under `flock /tmp/bench.lock` unless the caller already holds that lock (an outer
// `flock /tmp/bench.lock npm run bench:…`, where taking it again would wait for ever). Trusts its caller's argv.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { readStat } from './procstat.js';

export const BENCH_LOCK = '/tmp/bench.lock';

/** Is one of this process's ancestors `flock /tmp/bench.lock …` (the caller already holds the lock)? */
function insideLock(): boolean {
  let pid = process.ppid;
  for (let depth = 0; pid > 1 && depth < 16; depth++) {
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      return false;
    }
    if (path.basename(argv[0]) === 'flock' && argv.includes(BENCH_LOCK)) return true;
    const st = readStat(pid);
    if (!st) return false;
    pid = st.ppid;
  }
  return false;
}

/** Returns when this process holds the lock; otherwise runs `script` again under flock and exits with its status. */
export function runUnderBenchLock(script: string, argv: string[]): void {
  if (process.env.FACTEUR_BENCH_LOCKED || insideLock()) return;
  process.stderr.write(`waiting for ${BENCH_LOCK}…\n`);
  const r = spawnSync('flock', [BENCH_LOCK, process.execPath, '--import', 'tsx', script, ...argv], {
    stdio: 'inherit',
    env: { ...process.env, FACTEUR_BENCH_LOCKED: '1' },
  });
  process.exit(r.status ?? 1);
}
