// The Node SMTP load generator (bench/smtp/loadgen-child.ts) driven from the benchmark process over IPC, plus the small
// process helpers both SMTP-side benchmarks (bench/smtp.ts, bench/queue.ts) use. Trusts the child it starts.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { SessionResult, SessionSpec } from './client.js';
import type { JobBody } from './loadgen-child.js';

export function exited(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((r) => p.once('exit', () => r()));
}

/** CPU our own reaped children used (smtp-source), from /proc/self/stat cutime + cstime. */
export function reapedChildrenMs(): number {
  const rest = fs.readFileSync('/proc/self/stat', 'utf8');
  const f = rest.slice(rest.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[13]) + Number(f[14])) * 1000) / 100;
}

/** argv wrapped in `sh -c 'ulimit -n N; exec …'`: raises the descriptor limit of the child only. */
export function withNofile(nofile: number, cmd: string, args: string[]): [string, string[]] {
  return ['sh', ['-c', `ulimit -n ${nofile} 2>/dev/null || ulimit -n $(ulimit -Hn); exec "$0" "$@"`, cmd, ...args]];
}

/** The Node load generator, one process for the whole run, so its CPU is apart from ours and measurable. */
export class Generator {
  private seq = 0;
  private pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private constructor(readonly proc: ChildProcess) {
    proc.on('message', (m: { id?: number; result?: unknown; error?: string }) => {
      if (m.id === undefined) return;
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.error !== undefined) p?.reject(new Error(`load generator: ${m.error}`));
      else p?.resolve(m.result);
    });
    proc.on('exit', (code) => {
      for (const p of this.pending.values()) p.reject(new Error(`load generator exited ${code}`));
      this.pending.clear();
    });
  }

  /** Start the child; with `nofile`, its descriptor limit is raised first (idle-connection tests). */
  static async start(o: { nofile?: number } = {}): Promise<Generator> {
    const argv = ['--import', 'tsx', path.join(import.meta.dirname, 'loadgen-child.ts')];
    const [cmd, args] = o.nofile ? withNofile(o.nofile, process.execPath, argv) : [process.execPath, argv];
    const proc = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    await new Promise<void>((resolve, reject) => {
      proc.once('message', () => resolve());
      proc.once('exit', (code) => reject(new Error(`load generator exited ${code} before it was ready`)));
    });
    return new Generator(proc);
  }

  call<T>(job: JobBody): Promise<T> {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.proc.send({ ...job, id });
    });
  }

  sessions(spec: SessionSpec): Promise<SessionResult> {
    return this.call<SessionResult>({ kind: 'sessions', spec });
  }

  async stop(): Promise<void> {
    this.proc.disconnect();
    await exited(this.proc);
  }
}
