// End to end: the /metrics and /health endpoint scraped with curl after a scripted series of events; hostile requests.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import net from 'node:net';
import { promisify } from 'node:util';
import { createMetrics, type FacteurMetrics } from '../../src/observability/metrics.js';
import { startObservabilityServer, parseListen, metricsSection, type ObservabilityServer } from '../../src/observability/http.js';
import { MemoryRateStore, RateLimiter } from '../../src/policy/ratelimit.js';
import { loadConfig } from '../../src/config/load.js';

const run = promisify(execFile);
let metrics: FacteurMetrics;
let srv: ObservabilityServer;
const warnings: string[] = [];

interface Reply {
  status: number;
  headers: Record<string, string>;
  body: string;
}

async function curl(path: string, ...extra: string[]): Promise<Reply> {
  const { stdout } = await run('curl', ['-sS', '-i', '--max-time', '10', ...extra, `http://127.0.0.1:${srv.port}${path}`], { maxBuffer: 16 << 20 });
  const cut = stdout.indexOf('\r\n\r\n');
  const head = cut < 0 ? stdout : stdout.slice(0, cut);
  const [statusLine, ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body: cut < 0 ? '' : stdout.slice(cut + 4) };
}

/** Raw bytes in, raw reply out (for requests curl refuses to send). */
async function raw(bytes: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(srv.port, '127.0.0.1');
    let out = '';
    s.on('data', (d) => (out += d.toString('latin1')));
    s.on('end', () => resolve(out));
    s.on('close', () => resolve(out));
    s.on('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNRESET' ? resolve(out) : reject(e)));
    s.setTimeout(10_000, () => s.destroy());
    s.end(bytes);
  });
}

/** Parse the Prometheus text exposition into `name{k="v",...}` (labels sorted) → value, plus the TYPE of each family. */
function parseExposition(text: string): { samples: Map<string, number>; types: Map<string, string> } {
  const samples = new Map<string, number>();
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (!line) continue;
    const t = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (t) {
      types.set(t[1], t[2]);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `malformed exposition line: ${line}`);
    const labels = [...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((x) => `${x[1]}="${x[2]}"`).sort();
    samples.set(labels.length ? `${m[1]}{${labels.join(',')}}` : m[1], Number(m[3]));
  }
  return { samples, types };
}

before(async () => {
  metrics = createMetrics({ queueTimeoutMs: 200 });
  srv = await startObservabilityServer({
    registry: metrics.registry,
    port: 0,
    checkTimeoutMs: 300,
    checks: { queue: async () => true, config: () => undefined },
    log: { warn: (o: unknown, msg: string) => warnings.push(`${msg} ${JSON.stringify(o)}`), info: () => undefined } as never,
  });
});

after(async () => {
  await srv.close();
});

describe('/metrics', () => {
  it('listens on 127.0.0.1 by default', () => {
    assert.equal(srv.host, '127.0.0.1');
    assert.equal((srv.server.address() as net.AddressInfo).address, '127.0.0.1');
  });

  it('exposes every facteur counter after a scripted session, in valid Prometheus text', async () => {
    // What one SMTP session plus a delivery run would record.
    metrics.connections.inc({ listener: 'submission' });
    metrics.connections.inc({ listener: 'submission' });
    metrics.connections.inc({ listener: 'inbound' });
    metrics.connectionsActive.inc({ listener: 'submission' });
    metrics.tlsSessions.inc({ listener: 'submission', version: 'TLSv1.3' });
    metrics.authAttempts.inc({ backend: 'ldap', result: 'fail' });
    metrics.authAttempts.inc({ backend: 'ldap', result: 'ok' });
    metrics.authAttempts.inc({ backend: 'ldap', result: 'ok' });
    metrics.authAttempts.inc({ backend: 'ldap', result: 'tempfail' });
    metrics.authAttempts.inc({ backend: 'saslauthd', result: 'refused' });
    metrics.backendLatency.observe({ backend: 'ldap' }, 0.042);
    const end = metrics.backendLatency.startTimer({ backend: 'ldap' });
    end();
    metrics.cacheLookups.inc({ result: 'miss' });
    metrics.cacheLookups.inc({ result: 'hit' }, 3);
    metrics.penaltyDelays.inc({ where: 'smtp' });
    metrics.penaltyRefusals.inc({ where: 'authd' });
    const limiter = new RateLimiter(new MemoryRateStore(), { messagesPerUserPerHour: 1 }, { metrics });
    await limiter.message('alice');
    await limiter.message('alice');
    metrics.messages.inc({ listener: 'submission', result: 'accepted' });
    metrics.messages.inc({ listener: 'submission', result: 'rejected' });
    metrics.deliveries.inc({ result: 'sent' }, 2);
    metrics.deliveries.inc({ result: 'deferred' });
    metrics.setQueueSource(async () => ({ active: 1, deferred: 4, hold: 0 }));

    const r = await curl('/metrics');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    assert.equal(r.headers['cache-control'], 'no-store');
    const { samples, types } = parseExposition(r.body);
    const expect: Record<string, number> = {
      'facteur_connections_total{listener="submission"}': 2,
      'facteur_connections_total{listener="inbound"}': 1,
      'facteur_connections_active{listener="submission"}': 1,
      'facteur_tls_sessions_total{listener="submission",version="TLSv1.3"}': 1,
      'facteur_auth_attempts_total{backend="ldap",result="ok"}': 2,
      'facteur_auth_attempts_total{backend="ldap",result="fail"}': 1,
      'facteur_auth_attempts_total{backend="ldap",result="tempfail"}': 1,
      'facteur_auth_attempts_total{backend="saslauthd",result="refused"}': 1,
      'facteur_auth_backend_latency_seconds_count{backend="ldap"}': 2,
      'facteur_auth_backend_latency_seconds_bucket{backend="ldap",le="+Inf"}': 2,
      'facteur_auth_backend_latency_seconds_bucket{backend="ldap",le="0.05"}': 2,
      'facteur_auth_cache_lookups_total{result="hit"}': 3,
      'facteur_auth_cache_lookups_total{result="miss"}': 1,
      'facteur_penalty_delays_total{where="smtp"}': 1,
      'facteur_penalty_refusals_total{where="authd"}': 1,
      'facteur_ratelimit_refusals_total{limit="messages"}': 1,
      'facteur_ratelimit_store_errors_total': 0,
      'facteur_messages_total{listener="submission",result="accepted"}': 1,
      'facteur_messages_total{listener="submission",result="rejected"}': 1,
      'facteur_deliveries_total{result="sent"}': 2,
      'facteur_deliveries_total{result="deferred"}': 1,
      'facteur_queue_messages{state="active"}': 1,
      'facteur_queue_messages{state="deferred"}': 4,
      'facteur_queue_messages{state="hold"}': 0,
      'facteur_queue_scan_errors_total': 0,
    };
    for (const [k, v] of Object.entries(expect)) assert.equal(samples.get(k), v, k);
    assert.equal(types.get('facteur_auth_backend_latency_seconds'), 'histogram');
    assert.equal(types.get('facteur_queue_messages'), 'gauge');
    assert.equal(types.get('facteur_auth_attempts_total'), 'counter');
    // Node's own process metrics come along (default metrics, unprefixed as dashboards expect).
    assert.ok(samples.has('process_cpu_user_seconds_total'));
    // Every series is ours or a standard process/nodejs one: nothing leaked from prom-client's global registry.
    for (const k of samples.keys()) assert.match(k, /^(facteur_|process_|nodejs_)/);
  });

  it('a queue that cannot be read empties the gauge and counts the error, but the scrape still succeeds', async () => {
    metrics.setQueueSource(() => {
      throw new Error('EACCES /var/lib/facteur/queue');
    });
    let r = await curl('/metrics');
    assert.equal(r.status, 200);
    let s = parseExposition(r.body).samples;
    assert.equal(s.get('facteur_queue_scan_errors_total'), 1);
    assert.ok(![...s.keys()].some((k) => k.startsWith('facteur_queue_messages{')));
    metrics.setQueueSource(() => new Promise(() => undefined)); // never answers
    r = await curl('/metrics');
    assert.equal(r.status, 200);
    s = parseExposition(r.body).samples;
    assert.equal(s.get('facteur_queue_scan_errors_total'), 2);
    metrics.setQueueSource(undefined);
  });

  it('HEAD gives the headers without a body; a query string is ignored', async () => {
    const h = await curl('/metrics', '-I');
    assert.equal(h.status, 200);
    assert.equal(h.body, '');
    assert.equal((await curl('/metrics?name[]=x')).status, 200);
  });
});

describe('/health', () => {
  it('200 with {"status":"ok"} and each check, as JSON', async () => {
    const r = await curl('/health');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/json');
    assert.deepEqual(JSON.parse(r.body), { status: 'ok', checks: { queue: 'ok', config: 'ok' } });
  });

  it('503 when a check fails, times out or says false; the failure reason is logged, never served', async () => {
    srv.setChecks({
      queue: () => true,
      ldap: async () => {
        throw new Error('bind as cn=nss failed with password hunter2');
      },
      redis: () => new Promise(() => undefined),
      disk: () => false,
    });
    const r = await curl('/health');
    assert.equal(r.status, 503);
    assert.deepEqual(JSON.parse(r.body), { status: 'fail', checks: { queue: 'ok', ldap: 'fail', redis: 'timeout', disk: 'fail' } });
    assert.doesNotMatch(r.body, /hunter2|cn=nss/);
    assert.ok(warnings.some((w) => w.includes('health check failed') && w.includes('"check":"ldap"')));
    srv.setChecks({ ok: () => true });
    assert.equal((await curl('/health')).status, 200);
  });

  it('concurrent probes share one run of the checks (a probe flood cannot flood LDAP)', async () => {
    let calls = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    srv.setChecks({
      ldap: async () => {
        calls++;
        await gate;
      },
    });
    let seen = 0;
    const counted = new Promise<void>((resolve) => {
      const onReq = (req: { url?: string }): void => {
        if (req.url === '/health' && ++seen === 20) {
          srv.server.off('request', onReq);
          resolve();
        }
      };
      srv.server.on('request', onReq);
    });
    const replies = Promise.all(Array.from({ length: 20 }, () => curl('/health')));
    await counted;
    release();
    const all = await replies;
    assert.ok(all.every((r) => r.status === 200));
    assert.equal(calls, 1);
    srv.setChecks({ ok: () => true });
  });
});

describe('hostile requests', () => {
  it('unknown paths are 404, including path tricks', async () => {
    for (const p of ['/', '/metricsx', '/metrics/', '//metrics', '/health/../metrics', '/%6detrics', '/.env']) {
      const r = await curl(p, '--path-as-is');
      assert.equal(r.status, 404, p);
      assert.doesNotMatch(r.body, /facteur_/);
    }
  });

  it('methods other than GET and HEAD get 405 with Allow', async () => {
    for (const m of ['POST', 'PUT', 'DELETE', 'OPTIONS', 'TRACE', 'PATCH']) {
      const r = await curl('/metrics', '-X', m, ...(m === 'POST' || m === 'PUT' ? ['--data-binary', 'x'.repeat(100_000)] : []));
      assert.equal(r.status, 405, m);
      assert.equal(r.headers.allow, 'GET, HEAD');
    }
  });

  it('a long URL gets 414, a huge one (over the header limit) 431, and the server keeps serving', async () => {
    assert.equal((await curl(`/metrics?${'a'.repeat(3_000)}`)).status, 414);
    const huge = await raw(`GET /metrics?${'a'.repeat(100_000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.match(huge, /^HTTP\/1\.1 431 /);
    const manyHeaders = await raw(`GET /metrics HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 500 }, (_, i) => `X-${i}: ${'v'.repeat(30)}`).join('\r\n')}\r\n\r\n`);
    assert.match(manyHeaders, /^HTTP\/1\.1 431 /);
    assert.equal((await curl('/metrics')).status, 200);
  });

  it('garbage, NUL bytes and a bad method token get 400 and a closed connection', async () => {
    for (const bytes of ['\x00\x01\x02GARBAGE\r\n\r\n', 'G\x00T /metrics HTTP/1.1\r\n\r\n', 'GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n', 'GET /met rics HTTP/1.1\r\n\r\n']) {
      const r = await raw(bytes);
      assert.match(r, /^HTTP\/1\.1 (400|505) /, JSON.stringify(bytes));
    }
    assert.equal((await curl('/health')).status, 200);
  });
});

describe('configuration', () => {
  it('parseListen reads host:port and [v6]:port, and refuses the rest', () => {
    assert.deepEqual(parseListen('127.0.0.1:9725'), { host: '127.0.0.1', port: 9725 });
    assert.deepEqual(parseListen('[::1]:9725'), { host: '::1', port: 9725 });
    for (const bad of ['9725', '127.0.0.1', ':9725', '127.0.0.1:70000', '[::1]9725', 'a b:1']) assert.equal(parseListen(bad), undefined, bad);
  });

  it('[metrics] listen defaults to loopback and explains a malformed value', async () => {
    const c = await loadConfig({ sections: [metricsSection], env: {} });
    assert.equal(c.metrics.listen, '127.0.0.1:9725');
    await assert.rejects(loadConfig({ sections: [metricsSection], text: '[metrics]\nlisten = "9725"\n', env: {} }), /listen: "9725" is not "host:port"/);
    const off = await loadConfig({ sections: [metricsSection], env: { FACTEUR_METRICS_LISTEN: '' } });
    assert.equal(off.metrics.listen, '');
  });
});
