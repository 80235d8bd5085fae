// Parent side of the load generator: forks bench/lib/loadgen-child.ts (one or more processes, kept for the whole run),
// splits each cell's clients among them and merges their results. Trusts the children's results (our own code).
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { mergeResults, type LoadResult, type LoadSpec } from './loadgen.js';

type Reply = { id: number; result?: LoadResult; error?: string } | { ready: true };

class Child {
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (r: LoadResult) => void; reject: (e: Error) => void }>();
  constructor(readonly proc: ChildProcess) {
    proc.on('message', (m: Reply) => {
      if ('ready' in m) return;
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.result) p.resolve(m.result);
      else p.reject(new Error(`load generator: ${m.error}`));
    });
    proc.on('exit', (code) => {
      for (const p of this.pending.values()) p.reject(new Error(`load generator exited with ${code}`));
      this.pending.clear();
    });
  }

  run(spec: LoadSpec): Promise<LoadResult> {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.proc.send({ id, spec });
    });
  }
}

export class Generator {
  private constructor(private readonly children: Child[]) {}

  /** Start `processes` generator processes (each single-threaded, so two can load two cores). */
  static async start(processes = 1): Promise<Generator> {
    const children = await Promise.all(
      Array.from({ length: processes }, async () => {
        const proc = fork(path.join(import.meta.dirname, 'loadgen-child.ts'), [], {
          execArgv: ['--import', 'tsx'],
          stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
          serialization: 'advanced',
        });
        await new Promise<void>((resolve, reject) => {
          proc.once('message', () => resolve());
          proc.once('exit', (code) => reject(new Error(`load generator exited with ${code} before it was ready`)));
        });
        return new Child(proc);
      }),
    );
    return new Generator(children);
  }

  get processes(): number {
    return this.children.length;
  }

  /** Run one cell: the clients are dealt out among the processes (never a process with none). */
  async run(spec: LoadSpec): Promise<LoadResult> {
    const used = this.children.slice(0, Math.min(this.children.length, spec.concurrency));
    const parts = await Promise.all(
      used.map((child, i) => {
        const share = Math.floor(spec.concurrency / used.length) + (i < spec.concurrency % used.length ? 1 : 0);
        return child.run({ ...spec, concurrency: share, firstUser: Math.floor((i * spec.users.length) / used.length) });
      }),
    );
    return parts.length === 1 ? parts[0] : mergeResults(parts, spec.concurrency);
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.children.map(async ({ proc }) => {
        if (proc.exitCode !== null) return;
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await exited;
      }),
    );
  }
}
