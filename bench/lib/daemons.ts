// Start and stop the two daemons under test, each as it runs in production (no per-request debug logging):
// facteur authd in the foreground (-f), and the real Cyrus saslauthd detached as Debian starts it (pid file in the run directory).
// Trusts the binaries it runs; reads their pid and socket from the run directory.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { waitForSocket } from '../../test/helpers/net.js';

export const FACTEUR = path.resolve(import.meta.dirname, '../../bin/facteur');

/**
 * The Node flags bin/facteur's shebang gives facteur in production (`#!/usr/bin/env -S node FLAGS`), for benchmarks that
 * start facteur's code another way (a bench entry point, or node with --cpu-prof): they must run it with the same flags.
 */
export function facteurNodeFlags(bin = FACTEUR): string[] {
  const first = readFileSync(bin, 'utf8').split('\n', 1)[0];
  const m = /^#!\S*env(?: -S)? node(?:\s+(.*))?$/.exec(first.trim());
  if (!m) throw new Error(`${bin}: cannot read the Node flags of its first line: ${first}`);
  return m[1] ? m[1].trim().split(/\s+/) : [];
}

export const SASLAUTHD = '/usr/sbin/saslauthd';

export interface RunningDaemon {
  label: string;
  pid: number;
  socket: string;
  /** What the daemon wrote on stderr (facteur only; Cyrus logs to syslog once detached). */
  stderr(): string;
  stop(): Promise<void>;
}

function exitOf(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((r) => proc.once('exit', () => r()));
}

/** Spawn a daemon of ours that serves `socket`; resolves once it accepts, rejects (with its stderr) if it exits first. */
async function startSocketDaemon(label: string, what: string, socket: string, cmd: string, args: string[], env?: Record<string, string>): Promise<RunningDaemon> {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: env ? { ...process.env, ...env } : process.env });
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  await Promise.race([
    waitForSocket(socket, 20_000),
    exitOf(proc).then(() => {
      throw new Error(`${what} exited ${proc.exitCode}: ${err}`);
    }),
  ]);
  return {
    label,
    pid: proc.pid!,
    socket,
    stderr: () => err,
    async stop() {
      const exited = exitOf(proc);
      proc.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** `facteur authd -f -m DIR ARGS` with the brute-force penalty off (the benchmark sends no client address anyway). */
export async function startFacteur(label: string, runDir: string, args: string[], nodeArgs: string[] = [], env?: Record<string, string>): Promise<RunningDaemon> {
  await fs.mkdir(runDir, { recursive: true });
  // Started as installed (bin/facteur runs through its shebang, with its Node flags); with extra Node flags (profiling),
  // through node with the shebang's flags and those.
  const argv = ['authd', '-f', '-m', runDir, ...args];
  const [cmd, cmdArgs] = nodeArgs.length ? [process.execPath, [...facteurNodeFlags(), ...nodeArgs, FACTEUR, ...argv]] : [FACTEUR, argv];
  return startSocketDaemon(label, 'facteur authd', path.join(runDir, 'mux'), cmd, cmdArgs, env);
}

/** The real Cyrus saslauthd, detached (its own session and process group); stopped with SIGTERM to its master. */
export async function startCyrus(label: string, runDir: string, args: string[]): Promise<RunningDaemon> {
  await fs.mkdir(runDir, { recursive: true });
  const starter = spawn(SASLAUTHD, ['-m', runDir, ...args], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let err = '';
  starter.stderr!.on('data', (d) => (err += d));
  await exitOf(starter);
  if (starter.exitCode !== 0) throw new Error(`saslauthd exited ${starter.exitCode}: ${err}`);
  const socket = path.join(runDir, 'mux');
  await waitForSocket(socket, 20_000);
  const pidFile = path.join(runDir, 'saslauthd.pid');
  let pid = 0;
  for (let i = 0; i < 100 && !pid; i++) {
    pid = Number((await fs.readFile(pidFile, 'utf8').catch(() => '')).trim());
    if (!pid) await new Promise((r) => setTimeout(r, 50));
  }
  if (!pid) throw new Error(`saslauthd wrote no pid file in ${runDir}`);
  return {
    label,
    pid,
    socket,
    stderr: () => err,
    async stop() {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        return;
      }
      for (let i = 0; i < 100; i++) {
        try {
          process.kill(pid, 0);
        } catch {
          return;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      process.kill(-pid, 'SIGKILL');
    },
  };
}

/** The calibration daemon (bench/lib/null-daemon.ts): facteur's socket server with an instant in-memory backend. */
export async function startNull(label: string, runDir: string, users: number, env?: Record<string, string>): Promise<RunningDaemon> {
  await fs.mkdir(runDir, { recursive: true });
  const socket = path.join(runDir, 'mux');
  return startSocketDaemon(label, 'null daemon', socket, process.execPath, [...facteurNodeFlags(), '--import', 'tsx', path.join(import.meta.dirname, 'null-daemon.ts'), socket, String(users)], env);
}
