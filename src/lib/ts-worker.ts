// Start a worker_thread on one of facteur's TypeScript modules. The main thread runs the sources through tsx, but a
// worker thread starts with no module hooks (Node 20 does not pass on those of tsx's register()), so the worker's first
// module is a two-line bootstrap that registers tsx in that thread, then imports the entry. Trusts its caller's entry.
import { Worker, type WorkerOptions } from 'node:worker_threads';

/** A worker thread running the TypeScript module `entry` (a file: URL), with tsx registered in it. */
export function startTsWorker(entry: URL, options: WorkerOptions = {}): Worker {
  const tsx = import.meta.resolve('tsx/esm/api');
  const boot = `import { register } from ${JSON.stringify(tsx)};\nregister();\nawait import(${JSON.stringify(entry.href)});\n`;
  return new Worker(new URL(`data:text/javascript,${encodeURIComponent(boot)}`), options);
}
