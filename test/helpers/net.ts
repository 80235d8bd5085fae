// Test helpers: free loopback ports, temporary directories, waiting for a socket to accept.
import net from 'node:net';
import fs from 'node:fs/promises';
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

export async function tempDir(prefix = 'facteur-test-'): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
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
