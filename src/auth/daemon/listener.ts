// The saslauthd socket (`mux`): served by the C layer in native/authd when it is built, else by node:net.
// Both give the same bytes on the wire and are tested by the same files; the C layer costs a fraction of net.Socket's
// CPU per connection (see docs/design.md). Trusts the socket path and options from its caller.
import net from 'node:net';
import { nativeAddon } from '../../lib/native.js';
import type { AuthResult } from '../types.js';
import type { Logger } from '../../observability/log.js';
import { answerFields, encodeReply, serveConnections, DRAIN_TIMEOUT_MS, FIFTH_FIELD_GRACE_MS, type AuthService } from './server.js';

export type SocketLayer = 'native' | 'node';

export interface SaslauthdListener {
  readonly layer: SocketLayer;
  readonly path: string;
  /** Stop accepting; resolves once the connections already accepted are answered and closed. */
  close(): Promise<void>;
}

/** An opaque listening socket of the C layer. */
interface NativeServer {
  readonly __nativeSaslauthdSocket: unique symbol;
}

interface NativeBinding {
  listen(
    path: string,
    backlog: number,
    /** Fields cut at their first NUL; null when not valid UTF-8; clientAddr undefined in a 4-field request. */
    onRequest: (token: number, login: string | null, password: string | null, service: string | null, realm: string | null, clientAddr: string | null | undefined, accepted: number) => void,
    readTimeoutMs: number,
    graceMs: number,
    drainMs: number,
  ): NativeServer;
  /** False when the connection is gone (closed by the client, timed out) or already answered. */
  reply(server: NativeServer, token: number, reply: Buffer): boolean;
  close(server: NativeServer, onClosed: () => void): void;
}

/** Node's own default for listen() on a path; a full queue makes the client's connect() fail (EAGAIN). */
const BACKLOG = 511;

/** The C layer, or why it cannot be used (not built: `npm run build:native` builds it). */
export function nativeSocketLayer(): { binding: NativeBinding } | { error: string } {
  return nativeAddon<NativeBinding>('saslauthd_socket');
}

/** The layer asked for by FACTEUR_AUTHD_SOCKET_LAYER (native, node; default auto: native when built). */
export function socketLayerFromEnv(env: NodeJS.ProcessEnv = process.env): SocketLayer | 'auto' {
  const v = env.FACTEUR_AUTHD_SOCKET_LAYER;
  if (v === undefined || v === '' || v === 'auto') return 'auto';
  if (v === 'native' || v === 'node') return v;
  throw new Error(`FACTEUR_AUTHD_SOCKET_LAYER=${v}: expected native, node or auto`);
}

export interface ListenOptions {
  readTimeoutMs: number;
  log: Logger;
  /** `auto` (default): native when built, else node. `native` fails when it is not built. */
  layer?: SocketLayer | 'auto';
}

/** Bind `path` (which must not exist) and serve the saslauthd protocol on it with `service`. */
export async function listenSaslauthd(path: string, service: AuthService, o: ListenOptions): Promise<SaslauthdListener> {
  const want = o.layer ?? 'auto';
  if (want !== 'node') {
    const n = nativeSocketLayer();
    if ('binding' in n) return listenNative(n.binding, path, service, o);
    if (want === 'native') throw new Error(n.error);
    o.log.warn({ reason: n.error }, 'the C socket layer is not built: serving the socket with node:net, which costs about twice the CPU per request');
  }
  return listenNode(path, service, o);
}

function listenNative(b: NativeBinding, path: string, service: AuthService, o: ListenOptions): SaslauthdListener {
  const metrics = service.metrics;
  let counted = 0;
  const reply = (token: number, r: AuthResult) => {
    b.reply(server, token, encodeReply(r));
  };
  const server = b.listen(
    path,
    BACKLOG,
    (token, login, password, svc, realm, clientAddr, accepted) => {
      if (metrics && accepted > counted) {
        metrics.connections.inc({ listener: 'authd' }, accepted - counted);
        counted = accepted;
      }
      // The C layer hands over exactly one request (4 or 5 complete fields), framed and decoded by the rules of frame.ts.
      const r = answerFields(service, login, password, svc, realm, clientAddr);
      if ('then' in r) void r.then((res) => reply(token, res));
      else reply(token, r);
    },
    o.readTimeoutMs,
    FIFTH_FIELD_GRACE_MS,
    DRAIN_TIMEOUT_MS,
  );
  let closing: Promise<void> | undefined;
  return {
    layer: 'native',
    path,
    close: () => (closing ??= new Promise<void>((resolve) => b.close(server, resolve))),
  };
}

async function listenNode(path: string, service: AuthService, o: ListenOptions): Promise<SaslauthdListener> {
  // Half-open allowed: a client may shut down its side after the request and still read the answer (upstream answers it).
  const server = net.createServer({ allowHalfOpen: true });
  serveConnections(server, service, { readTimeoutMs: o.readTimeoutMs, log: o.log });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ path, backlog: BACKLOG }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  let closing: Promise<void> | undefined;
  return {
    layer: 'node',
    path,
    close: () => (closing ??= new Promise<void>((resolve) => server.close(() => resolve()))),
  };
}
