// Listening sockets shared by the SMTP workers of a multi-process `facteur serve` through SO_REUSEPORT: every worker
// binds its own socket to the listener's address and the kernel spreads new connections over them (by a hash of the
// client's address and port), so the primary no longer accepts each connection and passes it over its IPC channel
// (node:cluster's round-robin: ~160 µs of the primary's CPU per connection here, see docs/benchmarks-smtp.md).
// Node 20 cannot set SO_REUSEPORT (net's reusePort came in Node 22.12): the socket is made by native/net/reuseport.c
// and Node listens on it through a tcp_wrap handle opened on its descriptor, the documented `server.listen(handle)`.
// Without the addon, the workers fall back to round-robin. Trusts its callers (serve and the cluster primary).
import dns from 'node:dns/promises';
import net from 'node:net';
import os from 'node:os';
import { nativeAddon } from '../lib/native.js';
import { unbracketed } from '../lib/host.js';

interface Binding {
  /** A non-blocking socket with SO_REUSEADDR (and SO_REUSEPORT when reusePort), bound to host:port; not listening. */
  bind(host: string, port: number, reusePort: boolean): number;
  boundPort(fd: number): number;
  close(fd: number): void;
}

/** The environment variable through which the primary gives each worker its listeners' addresses (JSON, SharedListen[]). */
export const SHARED_LISTEN_ENV = 'FACTEUR_SHARED_LISTEN';

/** A listener's address as the primary hands it to its workers: numeric host, fixed port. */
export interface SharedListen {
  kind: string;
  host: string;
  port: number;
}

/** Why the workers cannot listen with SO_REUSEPORT here (the addon was not built), or undefined when they can. */
export function reusePortUnavailable(): string | undefined {
  const a = nativeAddon<Binding>('reuseport_socket');
  return 'error' in a ? a.error : undefined;
}

function binding(): Binding {
  const a = nativeAddon<Binding>('reuseport_socket');
  if ('error' in a) throw new Error(a.error);
  return a.binding;
}

/** An errno from the addon as Node names it (EADDRINUSE...), so callers report it as they report net's errors. */
function asNodeError(err: unknown, host: string, port: number): NodeJS.ErrnoException {
  const e = err as Error & { errno?: number };
  const out = new Error(`${e.message} (${host}:${port})`) as NodeJS.ErrnoException;
  const code = Object.entries(os.constants.errno).find(([, n]) => n === e.errno)?.[0];
  if (code) out.code = code;
  return out;
}

/** The listener's host as a numeric address (a name is resolved once, to its first address, as net.Server does). */
async function numericHost(host: string): Promise<string> {
  const h = unbracketed(host);
  if (net.isIP(h)) return h;
  return (await dns.lookup(h)).address;
}

/**
 * In the primary, before forking: check that nothing listens on the address (a second server would otherwise join the
 * group silently when it runs as the same user), fix the port when it is 0, and keep a bound, non-listening socket on it
 * until `release()`, so that the port stays ours while workers start and restart. A bound socket that does not listen
 * receives no connection.
 */
export async function reserveListen(kind: string, host: string, port: number): Promise<SharedListen & { release(): void }> {
  const b = binding();
  const numeric = await numericHost(host);
  let probe: number;
  try {
    probe = b.bind(numeric, port, false);
  } catch (err) {
    throw asNodeError(err, host, port);
  }
  let fixed: number;
  try {
    fixed = b.boundPort(probe);
  } finally {
    b.close(probe);
  }
  let fd: number;
  try {
    fd = b.bind(numeric, fixed, true);
  } catch (err) {
    throw asNodeError(err, host, fixed);
  }
  let open = true;
  return {
    kind,
    host: numeric,
    port: fixed,
    release() {
      if (open) b.close(fd);
      open = false;
    },
  };
}

interface TcpHandle {
  open(fd: number): number;
  close(): void;
}

/** In a worker: this worker's own socket on the shared address, as a handle for `server.listen(handle)`. */
export function reusePortHandle(l: SharedListen): object {
  const b = binding();
  let fd: number;
  try {
    fd = b.bind(l.host, l.port, true);
  } catch (err) {
    throw asNodeError(err, l.host, l.port);
  }
  // tcp_wrap is Node's own TCP handle (what net.Server creates for itself); listen() accepts one and calls its listen().
  const { TCP, constants } = (process as unknown as { binding(name: string): { TCP: new (type: number) => TcpHandle; constants: { SERVER: number } } }).binding('tcp_wrap');
  const handle = new TCP(constants.SERVER);
  const rc = handle.open(fd);
  if (rc !== 0) {
    b.close(fd);
    throw new Error(`cannot open the listening socket for ${l.host}:${l.port} (libuv error ${rc})`);
  }
  return handle;
}
