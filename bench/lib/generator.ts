// Parent side of the load generator: runs each cell in one or more generator processes, splits its clients among them
// and merges their results. Two kinds: `c` (default) runs bench/lib/loadgen.c, one process per cell; `node` forks
// bench/lib/loadgen-child.ts, kept for the whole run. Trusts the children's results (our own code).
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { mergeResults, type LoadResult, type LoadSpec } from './loadgen.js';
import { buildCGenerator, runCLoad } from './cgen.js';

export type GeneratorKind = 'c' | 'node';

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
  private constructor(
    private readonly children: Child[],
    private readonly cBinary: string | undefined,
    readonly processes: number,
  ) {}

  /** Start `processes` generator processes (each single-threaded, so two can load two cores). */
  static async start(processes = 1, kind: GeneratorKind = 'c'): Promise<Generator> {
    if (kind === 'c') return new Generator([], buildCGenerator(), processes);
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
    return new Generator(children, undefined, processes);
  }

  get kind(): GeneratorKind {
    return this.cBinary ? 'c' : 'node';
  }

  /** Run one cell: the clients are dealt out among the processes (never a process with none). */
  async run(spec: LoadSpec): Promise<LoadResult> {
    if (spec.rate && !this.cBinary) throw new Error('a fixed request rate needs the C generator (--generator c)');
    const used = Math.min(this.processes, spec.concurrency);
    const parts = await Promise.all(
      Array.from({ length: used }, (_, i) => {
        const share = Math.floor(spec.concurrency / used) + (i < spec.concurrency % used ? 1 : 0);
        const part = { ...spec, concurrency: share, firstUser: Math.floor((i * spec.users.length) / used), rate: spec.rate && (spec.rate * share) / spec.concurrency };
        return this.cBinary ? runCLoad(this.cBinary, part) : this.children[i].run(part);
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
