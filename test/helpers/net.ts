// Test helpers: free loopback ports, temporary directories, waiting for a socket to accept.
import net from 'node:net';
import fs from 'node:fs/promises';
import { rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Ports this process has handed out: the kernel may offer a just-closed port again, and two servers of one test (a Dovecot
 * with IMAP, IMAPS and LMTP listeners) must not be given the same one. */
const handedOut = new Set<number>();

/** Ask the kernel for a free TCP port on 127.0.0.1, never one this process already handed out. */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = net.createServer();
      srv.unref();
      srv.on('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const { port } = srv.address() as net.AddressInfo;
        srv.close(() => resolve(port));
      });
    });
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    return port;
  }
}

/** Directories made by tempDir() in this process, removed when it exits (each test file runs in its own process). */
const madeDirs = new Set<string>();
let cleanupHooked = false;

/**
 * A new empty directory under the system's temporary directory, removed with its contents when the process exits,
 * whatever the tests' outcome (before: every run of the suite left ~200 directories behind, gigabytes in a day).
 * Keep one for a post-mortem with FACTEUR_KEEP_TEMP=1.
 */
export async function tempDir(prefix = 'facteur-test-'): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  madeDirs.add(dir);
  if (!cleanupHooked && !process.env.FACTEUR_KEEP_TEMP) {
    cleanupHooked = true;
    process.on('exit', () => {
      for (const d of madeDirs) {
        try {
          rmSync(d, { recursive: true, force: true, maxRetries: 2 });
        } catch {
          // A daemon still writing there (killed after us): leave what is left.
        }
      }
    });
  }
  return dir;
}

/** Wait until a TCP port or UNIX socket path accepts connections. */
export async function waitForSocket(target: number | string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const okConn = await new Promise<boolean>((resolve) => {
      const s = typeof target === 'number' ? net.connect(target, '127.0.0.1') : net.connect(target);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (okConn) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${target}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The processes that hold IPv4 TCP sockets with local port `port` in a state (`listen`, or `established`), read from
 * /proc/net/tcp and each process's descriptors (as `ss -tnp` does, without needing iproute2): one pid per socket.
 */
export async function socketOwners(port: number, state: 'listen' | 'established', pids: number[]): Promise<number[]> {
  const code = state === 'listen' ? '0A' : '01';
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const inodes = new Set<string>();
  for (const line of (await fs.readFile('/proc/net/tcp', 'utf8')).split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length > 9 && f[1].endsWith(`:${hexPort}`) && f[3] === code) inodes.add(f[9]);
  }
  const owners: number[] = [];
  for (const pid of pids) {
    const fds = await fs.readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const link = await fs.readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      const m = /^socket:\[(\d+)\]$/.exec(link);
      if (m && inodes.has(m[1])) owners.push(pid);
    }
  }
  return owners.sort((a, b) => a - b);
}
