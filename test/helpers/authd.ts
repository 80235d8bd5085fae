// Test helpers: start facteur authd (the built CLI, as a user would) or the real Cyrus saslauthd, on a temporary run directory.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { waitForSocket } from './net.js';

export const FACTEUR = path.resolve(import.meta.dirname, '../../bin/facteur');
const run = promisify(execFile);

export interface Daemon {
  proc: ChildProcess;
  socket: string;
  stderr: () => string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

function track(proc: ChildProcess, socket: string): Daemon {
  let err = '';
  proc.stderr?.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return {
    proc,
    socket,
    stderr: () => err,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      // Cyrus saslauthd has been seen to hang in its own shutdown (a worker left defunct): after 5 s, kill its whole
      // process group (it runs in its own session), so a teardown can never hang the test file.
      const t = setTimeout(() => {
        try {
          process.kill(-proc.pid!, 'SIGKILL');
        } catch {
          proc.kill('SIGKILL');
        }
      }, 5000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

/** Start `facteur authd ARGS -d` in the foreground; resolves when `<runDir>/mux` accepts connections. */
export async function startFacteurAuthd(runDir: string, args: string[]): Promise<Daemon> {
  const proc = spawn(FACTEUR, ['authd', '-d', '-m', runDir, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  const d = track(proc, path.join(runDir, 'mux'));
  await Promise.race([
    waitForSocket(d.socket, 15_000),
    new Promise((_, reject) => proc.once('exit', (code) => reject(new Error(`facteur authd exited ${code}: ${d.stderr()}`)))),
  ]);
  return d;
}

/** Start the real Cyrus saslauthd in its own session (with -d it signals its whole process group on SIGTERM). */
export async function startCyrusSaslauthd(runDir: string, args: string[]): Promise<Daemon> {
  const proc = spawn('/usr/sbin/saslauthd', ['-d', '-m', runDir, ...args], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  const d = track(proc, path.join(runDir, 'mux'));
  await Promise.race([
    waitForSocket(d.socket, 15_000),
    new Promise((_, reject) => proc.once('exit', (code) => reject(new Error(`saslauthd exited ${code}: ${d.stderr()}`)))),
  ]);
  return d;
}

/** Run the real Cyrus `testsaslauthd`; returns its exit status and output. */
export async function testsaslauthd(socket: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('/usr/sbin/testsaslauthd', ['-f', socket, ...args]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** Run `bin/facteur ARGS` to completion. */
export async function facteur(args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(FACTEUR, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.stdin.end(input ?? '');
    p.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}
