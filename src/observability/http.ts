// The operations HTTP endpoint: GET /metrics (Prometheus text) and GET /health (JSON, 503 when a check fails).
// Trusts nothing from the request but its method and path; binds to 127.0.0.1 unless told otherwise; serves no secret.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from './log.js';
import { defineSection } from '../config/schema.js';

/**
 * One health check: resolve (or return true / a short status word) when healthy; reject or return false when not.
 * The exception's message is logged, never served: only the check's name and "fail"/"timeout" reach the client.
 */
export type HealthCheck = () => Promise<boolean | void> | boolean | void;

export interface ObservabilityServerOptions {
  /** A prom-client Registry, or anything that renders the exposition text (the primary aggregates its workers'). */
  registry: { metrics(): Promise<string>; readonly contentType: string };
  /** Default 127.0.0.1: metrics describe the service, keep them off the public network. */
  host?: string;
  /** 0 picks a free port (tests). */
  port: number;
  checks?: Record<string, HealthCheck>;
  /** Longest wait for one check, ms. */
  checkTimeoutMs?: number;
  log?: Pick<Logger, 'warn' | 'info'>;
}

export interface ObservabilityServer {
  readonly server: http.Server;
  readonly host: string;
  readonly port: number;
  /** Replace the health checks (SIGHUP, or a part that starts later). */
  setChecks(checks: Record<string, HealthCheck>): void;
  close(): Promise<void>;
}

export interface HealthReport {
  status: 'ok' | 'fail';
  checks: Record<string, 'ok' | 'fail' | 'timeout'>;
}

/** Run every check at once, each bounded by `timeoutMs`. */
export async function runChecks(checks: Record<string, HealthCheck>, timeoutMs: number, log?: Pick<Logger, 'warn'>): Promise<HealthReport> {
  const names = Object.keys(checks);
  const results = await Promise.all(
    names.map(async (name): Promise<'ok' | 'fail' | 'timeout'> => {
      let timer: NodeJS.Timeout | undefined;
      try {
        const r = await Promise.race([
          Promise.resolve().then(() => checks[name]()),
          new Promise<'timeout'>((resolve) => {
            timer = setTimeout(() => resolve('timeout'), timeoutMs);
          }),
        ]);
        if (r === 'timeout') {
          log?.warn({ check: name, timeoutMs }, 'health check timed out');
          return 'timeout';
        }
        return r === false ? 'fail' : 'ok';
      } catch (err) {
        log?.warn({ check: name, error: err instanceof Error ? err.message : String(err) }, 'health check failed');
        return 'fail';
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  const out: HealthReport = { status: 'ok', checks: {} };
  names.forEach((n, i) => {
    out.checks[n] = results[i];
    if (results[i] !== 'ok') out.status = 'fail';
  });
  return out;
}

const SECURITY_HEADERS = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' };

function send(res: http.ServerResponse, status: number, type: string, body: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...SECURITY_HEADERS, ...extra });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

export async function startObservabilityServer(o: ObservabilityServerOptions): Promise<ObservabilityServer> {
  const host = o.host ?? '127.0.0.1';
  let checks = o.checks ?? {};
  const timeoutMs = o.checkTimeoutMs ?? 2_000;
  // Concurrent /health requests share one run of the checks, so a flood of probes cannot flood LDAP or Redis.
  let running: Promise<HealthReport> | undefined;

  const server = http.createServer(
    { maxHeaderSize: 8 * 1024, requestTimeout: 10_000, headersTimeout: 5_000, keepAliveTimeout: 5_000 },
    (req, res) => {
      req.resume(); // no endpoint reads a body; drain and ignore it
      const method = req.method ?? '';
      const rawUrl = req.url ?? '';
      if (rawUrl.length > 2048) return send(res, 414, 'text/plain; charset=utf-8', 'URI too long\n');
      const path = rawUrl.split('?')[0];
      if (path !== '/metrics' && path !== '/health') return send(res, 404, 'text/plain; charset=utf-8', 'not found: try /metrics or /health\n');
      if (method !== 'GET' && method !== 'HEAD') return send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', { allow: 'GET, HEAD' });
      if (path === '/metrics') {
        o.registry.metrics().then(
          (text) => send(res, 200, o.registry.contentType, text),
          (err: unknown) => {
            o.log?.warn({ error: err instanceof Error ? err.message : String(err) }, 'metrics collection failed');
            send(res, 500, 'text/plain; charset=utf-8', 'metrics collection failed\n');
          },
        );
        return;
      }
      running ??= runChecks(checks, timeoutMs, o.log).finally(() => {
        running = undefined;
      });
      running.then(
        (report) => send(res, report.status === 'ok' ? 200 : 503, 'application/json', `${JSON.stringify(report)}\n`),
        () => send(res, 503, 'application/json', '{"status":"fail","checks":{}}\n'),
      );
    },
  );
  server.maxHeadersCount = 50;
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    // Malformed requests, oversized headers, timeouts: answer if the socket is still writable, then drop it.
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    else socket.destroy();
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  if (!/^(127\.|::1$|localhost$)/.test(host)) o.log?.warn({ host, port: addr.port }, 'metrics endpoint listens beyond loopback; restrict access with a firewall');
  else o.log?.info({ host, port: addr.port }, 'metrics endpoint listening');

  return {
    server,
    host,
    port: addr.port,
    setChecks(c) {
      checks = c;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Configuration of the endpoint (a file in src/config/sections/ re-exports it). */
export const metricsSection = defineSection('metrics', 'Prometheus metrics and health endpoint', {
  listen: {
    type: 'string',
    default: '127.0.0.1:9725',
    doc: 'host:port serving /metrics and /health over HTTP ("[::1]:9725" for IPv6); empty: no endpoint. Keep it on loopback or firewall it',
    check: (v: unknown) => (v === '' || parseListen(v as string) ? undefined : `"${String(v)}" is not "host:port" (e.g. "127.0.0.1:9725")`),
  },
});

/** "127.0.0.1:9725" or "[::1]:9725" → { host, port }; undefined when malformed. */
export function parseListen(s: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(s.trim());
  if (!m || Number(m[3]) > 65535) return undefined;
  return { host: m[1] ?? m[2], port: Number(m[3]) };
}
