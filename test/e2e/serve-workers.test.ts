// `bin/facteur serve` with [server] workers = 2: two SMTP worker processes under one primary, sharing the listeners
// through node:cluster's round-robin (reuse_port = false: the fallback without the native/net addon; the default,
// SO_REUSEPORT, is serve-reuseport.test.ts). Round-robin alternates the workers, which the tests below rely on to send
// connections to both. Proves the work is shared (both workers answer), that the limits hold over all workers
// (connections, rate, brute-force penalties), that the primary delivers and serves aggregated /metrics, and that a dead worker is replaced and SIGTERM stops all.
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import path from 'node:path';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { freePort, tempDir, waitForSocket } from '../helpers/net.js';
import { RawSmtp, b64, runProgram, eventually, listenersToml, serveWorkerPids } from '../helpers/serve.js';
import { FACTEUR, facteur } from '../helpers/authd.js';

let dir: string;
let proc: ChildProcess;
let stderr = '';
let exited: Promise<number | null>;
const ports = { inbound: 0, submission: 0, submissions: 0 };
let metricsPort = 0;

interface LogLine {
  msg: string;
  worker?: number;
  pid: number;
  delayMs?: number;
  [k: string]: unknown;
}
const logLines = (): LogLine[] =>
  stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);

/** A self-signed EC certificate for CN=cn into dir/cert.pem and dir/key.pem; returns its SHA-256 fingerprint. */
function makeCert(d: string, cn: string): string {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${cn}`, '-keyout', path.join(d, 'key.pem'), '-out', path.join(d, 'cert.pem')], { stdio: 'ignore' });
  return new X509Certificate(readFileSync(path.join(d, 'cert.pem'))).fingerprint256;
}

/** The fingerprint of the certificate the implicit-TLS listener presents to a new connection. */
function presented(): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ port: ports.submissions, host: '127.0.0.1', rejectUnauthorized: false }, () => {
      resolve(s.getPeerX509Certificate()!.fingerprint256);
      s.destroy();
    });
    s.once('error', reject);
  });
}

let firstCert = '';

function configText(data: string, p: typeof ports, extra = ''): string {
  return `[server]
tls_cert = ${JSON.stringify(path.join(dir, 'cert.pem'))}
tls_key = ${JSON.stringify(path.join(dir, 'key.pem'))}
data_dir = ${JSON.stringify(data)}
hostname = "mx.test"
local_domains = ["localhost"]
workers = 2
reuse_port = false
max_connections_per_ip = 3
[auth]
backend = "file"
[ratelimit]
messages_per_user_per_hour = 3
connections_per_ip_per_minute = 0
${extra}
${listenersToml(p)}`;
}

before(async () => {
  dir = await tempDir('facteur-workers-');
  for (const k of Object.keys(ports) as (keyof typeof ports)[]) ports[k] = await freePort();
  metricsPort = await freePort();
  const data = path.join(dir, 'data');
  await fs.mkdir(data, { recursive: true });
  const add = await facteur(['user', 'add', '--file', path.join(data, 'users'), 'alice@localhost'], 'alice pass\nalice pass\n');
  assert.equal(add.code, 0, add.stderr);
  firstCert = makeCert(dir, 'first.test');
  await fs.writeFile(path.join(dir, 'facteur.toml'), configText(data, ports, `[metrics]\nlisten = "127.0.0.1:${metricsPort}"`));
  proc = spawn(FACTEUR, ['serve', '--config', path.join(dir, 'facteur.toml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr!.on('data', (d) => (stderr += d));
  exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
  await Promise.race([waitForSocket(ports.submissions, 30_000), exited.then((c) => Promise.reject(new Error(`facteur exited ${c}: ${stderr}`)))]);
  await eventually(async () => (logLines().some((l) => l.msg === 'smtp workers ready') ? true : undefined), 'workers ready', 20_000);
});

after(async () => {
  if (proc.exitCode === null) proc.kill('SIGKILL');
  await fs.rm(dir, { recursive: true, force: true });
});

/** AUTH PLAIN over implicit TLS; returns the session after the AUTH reply (and the reply). */
async function authSession(login: string, password: string): Promise<{ s: RawSmtp; reply: string }> {
  const s = await RawSmtp.connect(ports.submissions, { tls: true });
  assert.match(await s.reply(), /^220 /);
  assert.match(await s.cmd('EHLO client.test'), /^250/);
  const reply = await s.cmd(`AUTH PLAIN ${b64(`\0${login}\0${password}`)}`);
  return { s, reply };
}

const workerPids = () => serveWorkerPids(proc.pid!);

test('two worker processes under the primary, and connections are spread over both', async () => {
  assert.equal(workerPids().length, 2);
  for (let i = 0; i < 4; i++) {
    const s = await RawSmtp.connect(ports.inbound);
    assert.match(await s.reply(), /^220 /);
    assert.match(await s.cmd('QUIT'), /^221/);
    s.close();
  }
  // Round robin hands each new connection to a free worker: a few sessions reach both (logs are written asynchronously).
  for (let i = 0; i < 6; i++) {
    const { s, reply } = await authSession('alice@localhost', 'alice pass');
    assert.match(reply, /^235 /);
    s.close();
  }
  const workers = await eventually(async () => {
    const w = new Set(logLines().filter((l) => l.msg === 'auth ok').map((l) => l.worker));
    return w.size === 2 ? w : undefined;
  }, 'AUTH answered by both workers');
  assert.deepEqual([...workers].sort(), [1, 2]);
});

test('wrong passwords seen by different workers add up: the brute-force delay starts as for one process', async () => {
  // 8 failures from 127.0.0.1, alternating between the workers: each saw 4, so only shared counting reaches the
  // 6th failure that the built-in policy (delay after 5) holds back.
  for (let i = 0; i < 8; i++) {
    const { s, reply } = await authSession('mallory@localhost', `wrong ${i}`);
    assert.match(reply, /^535 5\.7\.8/);
    s.close();
  }
  const failures = await eventually(async () => {
    const f = logLines().filter((l) => l.msg === 'auth failed' && l.user === 'mallory@localhost');
    // Two processes write the log: order by their timestamps (each failure is a new TLS session, milliseconds apart).
    return f.length === 8 ? f.sort((a, b) => (a.time as number) - (b.time as number)) : undefined;
  }, 'eight failure log lines');
  assert.deepEqual(new Set(failures.map((l) => l.worker)).size, 2, 'the failures went to both workers');
  assert.deepEqual(
    failures.map((l) => (l.delayMs ?? 0) > 0),
    [false, false, false, false, false, true, true, true],
  );
  // A success forgives the address everywhere (as in one process), so the next tests start clean.
  const { s, reply } = await authSession('alice@localhost', 'alice pass');
  assert.match(reply, /^235 /);
  s.close();
});

test('the per-user message rate limit counts over both workers', async () => {
  const replies: string[] = [];
  for (let i = 0; i < 4; i++) {
    const { s, reply } = await authSession('alice@localhost', 'alice pass');
    assert.match(reply, /^235 /);
    replies.push(await s.cmd('MAIL FROM:<alice@localhost>'));
    s.close();
  }
  // The earlier tests sent no MAIL: exactly 3 of 4 pass (each worker alone would have let its 2 through).
  assert.deepEqual(
    replies.map((r) => r.slice(0, 3)),
    ['250', '250', '250', '450'],
  );
  assert.match(replies[3], /^450 4\.7\.1 Message rate limit exceeded/);
});

test('max_connections_per_ip holds over both workers, and a closed connection frees its place', async () => {
  const open: RawSmtp[] = [];
  for (let i = 0; i < 3; i++) {
    const s = await RawSmtp.connect(ports.inbound);
    assert.match(await s.reply(), /^220 /);
    open.push(s);
  }
  const fourth = await RawSmtp.connect(ports.inbound);
  assert.match(await fourth.reply(), /^421 4\.7\.0 Too many connections/);
  fourth.close();
  open.pop()!.close();
  await eventually(async () => {
    const s = await RawSmtp.connect(ports.inbound);
    const r = await s.reply();
    s.close();
    return r.startsWith('220 ') ? true : undefined;
  }, 'a place freed by the closed connection');
  for (const s of open) s.close();
});

test('mail taken by the workers is delivered by the primary, and /metrics adds up both workers', async () => {
  const before = await metricValue('facteur_messages_total', 'listener="inbound",result="accepted"');
  for (let i = 0; i < 4; i++) {
    const r = await runProgram('swaks', ['--server', `127.0.0.1:${ports.inbound}`, '--from', 'someone@example.net', '--to', 'bob@localhost', '--header', `Subject: m${i}`, '--hide-all']);
    assert.equal(r.code, 0, r.stdout);
  }
  const files = await eventually(async () => {
    const f = await fs.readdir(path.join(dir, 'data', 'mail', 'localhost', 'bob', 'new')).catch(() => []);
    return f.length === 4 ? f : undefined;
  }, 'four messages in bob’s Maildir');
  assert.equal(files.length, 4);
  // Log lines are written asynchronously by each process: wait for them rather than read them at once.
  const queued = await eventually(async () => {
    const q = logLines().filter((l) => l.msg === 'queued' && l.listener === 'inbound');
    return q.length >= 4 ? q : undefined;
  }, 'four queued log lines');
  assert.equal(new Set(queued.map((l) => l.worker)).size, 2, 'both workers queued mail');
  const delivered = await eventually(async () => {
    const d = logLines().filter((l) => l.msg === 'delivery delivered');
    return d.length >= 4 ? d : undefined;
  }, 'four delivery log lines');
  assert.ok(delivered.every((l) => l.worker === undefined && l.pid === proc.pid), 'the primary delivers');
  assert.equal((await metricValue('facteur_messages_total', 'listener="inbound",result="accepted"')) - before, 4);
  // The queue and delivery series are the primary's own, exposed once beside the workers' (which leave them out).
  await eventually(async () => ((await metricValue('facteur_deliveries_total', 'result="sent"')) >= 4 ? true : undefined), 'four deliveries counted by the primary');
  const text = (await runProgram('curl', ['-sf', `http://127.0.0.1:${metricsPort}/metrics`])).stdout;
  assert.match(text, /^facteur_queue_messages\{state="active"\} \d+$/m);
  for (const family of ['facteur_deliveries_total', 'facteur_queue_messages', 'facteur_messages_total']) assert.equal(text.split('\n').filter((l) => l.startsWith(`# TYPE ${family} `)).length, 1, family);
  const health = await runProgram('curl', ['-s', `http://127.0.0.1:${metricsPort}/health`]);
  assert.match(health.stdout, /"status":"ok"/);
});

async function metricValue(name: string, labels: string): Promise<number> {
  const r = await runProgram('curl', ['-sf', `http://127.0.0.1:${metricsPort}/metrics`]);
  assert.equal(r.code, 0, r.stderr);
  const line = r.stdout.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

test('SIGHUP to the primary gives every worker the new certificate for new sessions', async () => {
  for (let i = 0; i < 2; i++) assert.equal(await presented(), firstCert);
  const second = makeCert(dir, 'second.test');
  assert.notEqual(second, firstCert);
  proc.kill('SIGHUP');
  await eventually(async () => {
    const seen = [await presented(), await presented(), await presented(), await presented()];
    return seen.every((f) => f === second) ? true : undefined;
  }, 'the new certificate on four connections in a row (both workers)');
  await eventually(async () => (logLines().filter((l) => l.msg === 'tls certificate reloaded for new sessions').length === 2 ? true : undefined), 'both workers log the reload');
});

test('a killed worker is replaced and service goes on', async () => {
  const [victim] = workerPids();
  process.kill(victim, 'SIGKILL');
  await eventually(async () => (logLines().some((l) => l.msg === 'smtp worker died; starting another') ? true : undefined), 'the primary notices');
  await eventually(async () => {
    const pids = workerPids();
    return pids.length === 2 && !pids.includes(victim) ? true : undefined;
  }, 'a replacement worker', 20_000);
  for (let i = 0; i < 4; i++) {
    const s = await RawSmtp.connect(ports.inbound);
    assert.match(await s.reply(), /^220 /);
    s.close();
  }
});

test('a second server whose ports are taken exits 1 with the listener named, leaving no process behind', async () => {
  const data2 = path.join(dir, 'data2');
  const file = path.join(dir, 'second.toml');
  await fs.writeFile(file, configText(data2, ports));
  const r = await runProgram(FACTEUR, ['serve', '--config', file]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /cannot listen on 127\.0\.0\.1:\d+: the address is already in use/);
  await assert.rejects(fs.access(path.join(data2, 'queue', 'lock')), 'the queue lock is released');
});

test('SIGTERM stops the workers and the primary, and releases the queue lock', async () => {
  const pids = workerPids();
  proc.kill('SIGTERM');
  assert.equal(await exited, 0);
  for (const pid of pids) assert.throws(() => process.kill(pid, 0), /ESRCH/, `worker ${pid} is gone`);
  await assert.rejects(fs.access(path.join(dir, 'data', 'queue', 'lock')));
});
