// `facteur serve` as an operator runs it: SIGHUP swaps the TLS certificate (and re-reads the configuration) without dropping
// sessions; SIGTERM stops accepting, lets a message in DATA finish with its 250 (and land in the spool), then exits 0.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type tls from 'node:tls';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { freePort, tempDir, waitForSocket } from '../helpers/net.js';
import { RawSmtp, eventually, listenersToml } from '../helpers/serve.js';
import { FACTEUR, facteur } from '../helpers/authd.js';

let dir: string;
const procs: ChildProcess[] = [];

/** A self-signed certificate for mx.test with a chosen serial number (hex). */
function cert(name: string, serial: string): { cert: string; key: string } {
  const c = path.join(dir, `${name}.crt`);
  const k = path.join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '30', '-set_serial', `0x${serial}`, '-subj', '/CN=mx.test', '-addext', 'subjectAltName=DNS:mx.test', '-keyout', k, '-out', c], { stdio: 'ignore' });
  return { cert: c, key: k };
}

interface Serve {
  file: string;
  ports: { inbound: number; submission: number; submissions: number };
  stderr: () => string;
  proc: ChildProcess;
  exited: Promise<number | null>;
  configText(tlsCert: string, tlsKey: string): string;
}

async function startServe(name: string, tlsCert: string, tlsKey: string): Promise<Serve> {
  const data = path.join(dir, name);
  const ports = { inbound: await freePort(), submission: await freePort(), submissions: await freePort() };
  const dead = await freePort();
  // Local mail goes to an LMTP server that is not there: delivery defers, so accepted messages stay in the spool.
  const configText = (c: string, k: string) => `[server]
hostname = "mx.test"
data_dir = ${JSON.stringify(data)}
local_domains = ["example.org"]
tls_cert = ${JSON.stringify(c)}
tls_key = ${JSON.stringify(k)}
${listenersToml(ports)}[delivery]
local_transport = "lmtp"
lmtp_target = "127.0.0.1:${dead}"
[metrics]
listen = ""
`;
  const file = path.join(dir, `${name}.toml`);
  await fs.writeFile(file, configText(tlsCert, tlsKey));
  const proc = spawn(FACTEUR, ['serve', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, FACTEUR_RATELIMIT_CONNECTIONS_PER_IP_PER_MINUTE: '0' } });
  procs.push(proc);
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  await Promise.race([waitForSocket(ports.submissions, 20_000), exited.then((c) => Promise.reject(new Error(`serve exited ${c}: ${err}`)))]);
  return { file, ports, stderr: () => err, proc, exited, configText };
}

/** Serial number of the certificate the server presented on this (TLS) session. */
function serialOf(c: RawSmtp): string {
  return (c as unknown as { sock: tls.TLSSocket }).sock.getPeerCertificate().serialNumber.toUpperCase();
}

async function startTls(port: number): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port);
  assert.match(await c.reply(), /^220 /);
  assert.match(await c.cmd('EHLO client.test'), /STARTTLS/);
  assert.match(await c.cmd('STARTTLS'), /^220 /);
  await c.upgrade();
  assert.match(await c.cmd('EHLO client.test'), /^250/);
  return c;
}

async function implicitTls(port: number): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port, { tls: true });
  assert.match(await c.reply(), /^220 /);
  return c;
}

/** Sessions in the middle of a transaction to a local recipient. */
async function openTransaction(c: RawSmtp): Promise<void> {
  assert.match(await c.cmd('MAIL FROM:<someone@remote.test>'), /^250/);
  assert.match(await c.cmd('RCPT TO:<bob@example.org>'), /^250/);
}

async function queued(s: Serve): Promise<string> {
  const r = await facteur(['queue', 'list', '--config', s.file]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

before(async () => {
  dir = await tempDir('facteur-reload-');
});

after(async () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  await fs.rm(dir, { recursive: true, force: true });
});

test('SIGHUP: new sessions get the renewed certificate, sessions open across the reload finish on the old one', async () => {
  const a = cert('a', 'A1A1');
  const b = cert('b', 'B2B2');
  const c3 = cert('c', 'C3C3');
  const live = { cert: path.join(dir, 'live.crt'), key: path.join(dir, 'live.key') };
  await fs.copyFile(a.cert, live.cert);
  await fs.copyFile(a.key, live.key);
  const s = await startServe('hup', live.cert, live.key);

  const inFlight = await startTls(s.ports.inbound);
  assert.equal(serialOf(inFlight), 'A1A1');
  await openTransaction(inFlight);
  const idle465 = await implicitTls(s.ports.submissions);
  assert.equal(serialOf(idle465), 'A1A1');

  // Renewed in place, as certbot does, then reloaded.
  await fs.copyFile(b.cert, live.cert);
  await fs.copyFile(b.key, live.key);
  s.proc.kill('SIGHUP');
  await eventually(async () => (s.stderr().includes('reloaded the configuration') ? true : undefined), 'the reload log line');

  const fresh = await startTls(s.ports.inbound);
  assert.equal(serialOf(fresh), 'B2B2', 'STARTTLS after the reload');
  const fresh465 = await implicitTls(s.ports.submissions);
  assert.equal(serialOf(fresh465), 'B2B2', 'implicit TLS after the reload');

  // The session opened before the reload completes its message, still on the old certificate.
  assert.match(await inFlight.cmd('DATA'), /^354/);
  const done = await inFlight.cmd('From: someone@remote.test\r\nSubject: across the reload\r\n\r\nhello\r\n.');
  assert.match(done, /^250 2\.0\.0 Ok: queued as (\S+)/);
  assert.equal(serialOf(inFlight), 'A1A1');
  assert.match(await inFlight.cmd('QUIT'), /^221/);
  assert.match(await idle465.cmd('NOOP'), /^250/, 'an idle implicit-TLS session survives the reload');
  assert.match(await queued(s), new RegExp(/queued as (\S+)/.exec(done)![1]));

  // A key that does not match: the reload fails and everything stays as it was.
  await fs.copyFile(c3.key, live.key);
  s.proc.kill('SIGHUP');
  await eventually(async () => (s.stderr().includes('reload failed, keeping the previous configuration and certificate') ? true : undefined), 'the failed reload message');
  const still = await startTls(s.ports.inbound);
  assert.equal(serialOf(still), 'B2B2', 'a bad key keeps the previous certificate');

  // The configuration file itself is re-read: point it at another certificate.
  await fs.writeFile(s.file, s.configText(c3.cert, c3.key));
  const before = s.stderr().split('reloaded the configuration').length;
  s.proc.kill('SIGHUP');
  await eventually(async () => (s.stderr().split('reloaded the configuration').length > before ? true : undefined), 'the second reload');
  const third = await implicitTls(s.ports.submissions);
  assert.equal(serialOf(third), 'C3C3', 'tls_cert changed in the configuration file');

  for (const c of [fresh, fresh465, still, third, idle465]) c.close();
  s.proc.kill('SIGTERM');
  assert.equal(await s.exited, 0);
});

test('SIGTERM: stop accepting, idle sessions get 421, a message in DATA still gets its 250 and is in the spool, exit 0', async () => {
  const a = cert('t', 'D4D4');
  const s = await startServe('term', a.cert, a.key);

  const idle = await RawSmtp.connect(s.ports.inbound);
  assert.match(await idle.reply(), /^220 /);
  assert.match(await idle.cmd('EHLO idle.test'), /^250/);

  const mid = await RawSmtp.connect(s.ports.inbound);
  assert.match(await mid.reply(), /^220 /);
  assert.match(await mid.cmd('EHLO client.test'), /^250/);
  await openTransaction(mid);
  assert.match(await mid.cmd('DATA'), /^354/);
  mid.send('From: someone@remote.test\r\nSubject: caught by SIGTERM\r\n\r\nfirst half\r\n');

  s.proc.kill('SIGTERM');
  assert.match(await idle.reply(), /^421 4\.3\.2 Service shutting down/);

  // New connections are refused once the listeners are closed.
  await eventually(
    () =>
      new Promise<true | undefined>((resolve) => {
        const sock = net.connect(s.ports.inbound, '127.0.0.1');
        sock.once('connect', () => {
          sock.destroy();
          resolve(undefined);
        });
        sock.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED' ? true : undefined));
      }),
    'connections refused after SIGTERM',
  );
  assert.equal(s.proc.exitCode, null, 'still running while a message is in DATA');

  mid.send('second half\r\n.\r\n');
  const done = await mid.reply();
  assert.match(done, /^250 2\.0\.0 Ok: queued as (\S+)/);
  assert.match(await mid.cmd('QUIT'), /^221/);
  assert.equal(await s.exited, 0);

  const id = /queued as (\S+)/.exec(done)![1];
  const list = await queued(s);
  assert.match(list, new RegExp(id), list);
  const show = await facteur(['queue', 'show', id, '--raw', '--config', s.file]);
  assert.match(show.stdout, /first half\r?\nsecond half/);
});
