// Test helper: a real redis-server (Debian package redis-server) on 127.0.0.1, a free port, a temp dir, no persistence.
// Trusts the local redis-server binary.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { freePort, tempDir, waitForSocket } from './net.js';

export interface RedisInstance {
  port: number;
  url: string;
  dir: string;
  proc: ChildProcess;
  /** SIGKILL, as a crash would (no clean shutdown). */
  kill(): Promise<void>;
  /** Start again on the same port (empty: nothing was persisted). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

function launch(port: number, dir: string): ChildProcess {
  const proc = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--protected-mode', 'yes', '--loglevel', 'warning'],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  return proc;
}

async function exited(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  await new Promise<void>((resolve) => proc.once('exit', () => resolve()));
}

export async function startRedis(): Promise<RedisInstance> {
  const port = await freePort();
  const dir = await tempDir('facteur-redis-');
  const inst: RedisInstance = {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    dir,
    proc: launch(port, dir),
    async kill() {
      inst.proc.kill('SIGKILL');
      await exited(inst.proc);
    },
    async restart() {
      inst.proc = launch(port, dir);
      await waitForSocket(port);
    },
    async stop() {
      inst.proc.kill('SIGTERM');
      await exited(inst.proc);
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
  await waitForSocket(port);
  return inst;
}
