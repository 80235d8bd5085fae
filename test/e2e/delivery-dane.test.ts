// DANE end to end (RFC 7672): a zone signed with ldns-signzone, served and validated by a real unbound (trust anchor:
// the zone's DS), which is the system resolver of this test process (dns.setServers), so facteur's default "auto" mode
// finds a local validating resolver. The MX host is smtp-server with STARTTLS and a test CA. TLSA records that match
// (DANE-EE, DANE-TA) deliver; a mismatch, a bogus signature or a host without STARTTLS keep the mail queued (4.7.5);
// an unsigned zone and a secure zone without TLSA deliver with opportunistic TLS.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import dns from 'node:dns';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { SMTPServer } from 'smtp-server';
import { Spool } from '../../src/queue/spool.js';
import { startDelivery, type DeliveryHandle } from '../../src/delivery/scheduler.js';
import { defaultDeliveryOptions } from '../../src/delivery/options.js';
import { UdpSecureResolver } from '../../src/delivery/dnssec.js';
import { createLogger } from '../../src/observability/log.js';
import { freePort, tempDir } from '../helpers/net.js';
import { recordingSmtpServer, type Received } from '../helpers/smtp-recorder.js';

let dir: string;
let unbound: ChildProcess | undefined;
let tlsServer: SMTPServer;
let plainServer: SMTPServer;
let spool: Spool;
let handle: DeliveryHandle;
let plainHandle: DeliveryHandle;
let plainSpool: Spool;
let dnsPort: number;
const got: Received[] = [];
const savedServers = dns.getServers();

function sh(args: string[], cmd = 'openssl'): string {
  return execFileSync(cmd, args, { cwd: dir, encoding: 'utf8' });
}

before(async () => {
  dir = await tempDir('facteur-dane-');
  // A CA and a leaf certificate naming every MX host of the test; the server presents leaf + CA.
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  sh(['req', '-x509', ...ec, '-subj', '/CN=facteur DANE test CA', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  sh(['req', '-new', ...ec, '-subj', '/CN=mx-good.dane.test', '-keyout', 'srv.key', '-out', 'srv.csr']);
  const hosts = ['good', 'bad', 'ta', 'none', 'bogus', 'notls'].map((h) => `DNS:mx-${h}.dane.test`);
  await fs.writeFile(path.join(dir, 'ext.cnf'), `subjectAltName=${[...hosts, 'DNS:mx.plain.test'].join(',')}\nextendedKeyUsage=serverAuth\n`);
  sh(['x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'srv.pem', '-days', '2', '-extfile', 'ext.cnf']);
  const [caPem, key, leafPem] = await Promise.all(['ca.pem', 'srv.key', 'srv.pem'].map((f) => fs.readFile(path.join(dir, f), 'utf8')));
  const leaf = new crypto.X509Certificate(leafPem);
  const ca = new crypto.X509Certificate(caPem);
  const spkiSha256 = crypto.createHash('sha256').update(leaf.publicKey.export({ type: 'spki', format: 'der' }) as Buffer).digest('hex');
  const caSha256 = crypto.createHash('sha256').update(ca.raw).digest('hex');

  const port = await freePort();
  const plainPort = await freePort();
  dnsPort = await freePort();
  const tlsa = (h: string, rr: string, p = port) => `_${p}._tcp.mx-${h} IN TLSA ${rr}`;
  const wrong = '00'.repeat(32);
  await fs.writeFile(
    path.join(dir, 'dane.test.zone'),
    [
      '$ORIGIN dane.test.',
      '$TTL 300',
      '@ IN SOA ns.dane.test. admin.dane.test. 1 3600 900 604800 300',
      '@ IN NS ns',
      'ns IN A 127.0.0.1',
      ...['good', 'bad', 'ta', 'none', 'bogus', 'notls'].flatMap((h) => [`${h} IN MX 10 mx-${h}`, `mx-${h} IN A 127.0.0.1`]),
      tlsa('good', `3 1 1 ${spkiSha256}`),
      tlsa('bad', `3 1 1 ${wrong}`),
      tlsa('ta', `2 0 1 ${caSha256}`),
      tlsa('bogus', `3 1 1 ${spkiSha256}`),
      tlsa('notls', `3 1 1 ${spkiSha256}`, plainPort),
      '',
    ].join('\n'),
  );
  const ksk = sh(['-a', 'ECDSAP256SHA256', '-k', 'dane.test'], 'ldns-keygen').trim();
  const zsk = sh(['-a', 'ECDSAP256SHA256', 'dane.test'], 'ldns-keygen').trim();
  sh(['-n', 'dane.test.zone', ksk, zsk], 'ldns-signzone');
  // Bogus: the signed TLSA record of mx-bogus is altered after signing, so its RRSIG no longer matches.
  const signedFile = path.join(dir, 'dane.test.zone.signed');
  const signed = await fs.readFile(signedFile, 'utf8');
  const tampered = signed.replace(new RegExp(`(_${port}\\._tcp\\.mx-bogus\\.dane\\.test\\.\\s+\\d+\\s+IN\\s+TLSA\\s+3 1 1 )[0-9a-f]{2}`, 'i'), '$1ff');
  assert.notEqual(tampered, signed, 'the bogus record was found in the signed zone');
  await fs.writeFile(signedFile, tampered);
  // An unsigned zone (insecure: no trust anchor covers it): its TLSA record, however wrong, is ignored.
  await fs.writeFile(
    path.join(dir, 'plain.test.zone'),
    ['$ORIGIN plain.test.', '$TTL 300', '@ IN SOA ns.plain.test. admin.plain.test. 1 3600 900 604800 300', '@ IN NS ns', 'ns IN A 127.0.0.1', '@ IN MX 10 mx', 'mx IN A 127.0.0.1', `_${port}._tcp.mx IN TLSA 3 1 1 ${wrong}`, ''].join('\n'),
  );
  await fs.writeFile(
    path.join(dir, 'unbound.conf'),
    `server:
  interface: 127.0.0.1
  port: ${dnsPort}
  do-daemonize: no
  chroot: ""
  username: ""
  directory: "${dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  do-ip6: no
  module-config: "validator iterator"
  trust-anchor-file: "${path.join(dir, `${ksk}.ds`)}"
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  local-zone: "test." nodefault
${[
  ['dane.test.', signedFile],
  ['plain.test.', path.join(dir, 'plain.test.zone')],
]
  .map(([name, file]) => `auth-zone:\n  name: "${name}"\n  zonefile: "${file}"\n  for-upstream: yes\n  for-downstream: no\n  fallback-enabled: no\n`)
  .join('')}`,
  );
  unbound = spawn('unbound', ['-d', '-c', path.join(dir, 'unbound.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  unbound.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  // Ready when it answers, and validates, a query for the signed zone.
  const probe = new UdpSecureResolver({ host: '127.0.0.1', port: dnsPort }, 500);
  for (let i = 0; ; i++) {
    const ok = await probe.query('good.dane.test', 'MX').then((a) => a.secure, () => false);
    if (ok) break;
    if (i > 40 || unbound.exitCode !== null) throw new Error(`unbound did not start: ${err}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  // This process's resolver is the local validating unbound: node:dns (MX, A) and facteur's DANE resolver ("auto").
  dns.setServers([`127.0.0.1:${dnsPort}`]);

  tlsServer = recordingSmtpServer(got, { key, cert: leafPem + caPem });
  await new Promise<void>((r) => tlsServer.listen(port, '127.0.0.1', r));
  plainServer = recordingSmtpServer(got, { starttls: false });
  await new Promise<void>((r) => plainServer.listen(plainPort, '127.0.0.1', r));
  const log = createLogger({ name: 'test', level: 'silent' });
  const data = await tempDir('facteur-dane-data-');
  spool = await Spool.open(path.join(data, 'queue'));
  handle = startDelivery({ spool, options: defaultDeliveryOptions(data, { hostname: 'mx.facteur.test', smtpPort: port, mtaSts: false, dkimSign: false, scanIntervalMs: 3_600_000 }), log });
  const data2 = await tempDir('facteur-dane-plain-');
  plainSpool = await Spool.open(path.join(data2, 'queue'));
  plainHandle = startDelivery({ spool: plainSpool, options: defaultDeliveryOptions(data2, { hostname: 'mx.facteur.test', smtpPort: plainPort, mtaSts: false, dkimSign: false, scanIntervalMs: 3_600_000 }), log });
});

after(async () => {
  dns.setServers(savedServers);
  await handle?.stop();
  await plainHandle?.stop();
  await new Promise<void>((r) => (tlsServer ? tlsServer.close(() => r()) : r()));
  await new Promise<void>((r) => (plainServer ? plainServer.close(() => r()) : r()));
  unbound?.kill();
});

async function send(s: Spool, to: string): Promise<string> {
  return s.commit({ mailFrom: 'a@sender.test', rcptTo: [{ address: to }], receivedAt: Date.now() }, Readable.from([Buffer.from(`Subject: to ${to}\r\n\r\nx\r\n`)]));
}

test('the DNSSEC client sees what unbound validated: secure answers, secure NXDOMAIN, insecure zone, bogus = SERVFAIL', async () => {
  const r = new UdpSecureResolver({ host: '127.0.0.1', port: dnsPort });
  assert.ok(r.local);
  const mx = await r.query('good.dane.test', 'MX');
  assert.deepEqual([mx.secure, mx.status, mx.records.length], [true, 'ok', 1]);
  const nx = await r.query('nothing.dane.test', 'MX');
  assert.deepEqual([nx.secure, nx.status], [true, 'nxdomain']);
  const insecure = await r.query('plain.test', 'MX');
  assert.deepEqual([insecure.secure, insecure.status], [false, 'ok']);
  const port = (tlsServer.server.address() as { port: number }).port;
  await assert.rejects(r.query(`_${port}._tcp.mx-bogus.dane.test`, 'TLSA'), /SERVFAIL/);
});

test('DANE-EE and DANE-TA records that match: delivered over STARTTLS', async () => {
  const ids = [await send(spool, 'u@good.dane.test'), await send(spool, 'u@ta.dane.test')];
  await handle.tick();
  for (const id of ids) assert.equal(await spool.locate(id), undefined, 'delivered and removed');
  assert.deepEqual(got.find((g) => g.to === 'u@good.dane.test'), { to: 'u@good.dane.test', secure: true });
  assert.deepEqual(got.find((g) => g.to === 'u@ta.dane.test'), { to: 'u@ta.dane.test', secure: true });
});

test('a certificate that matches no TLSA record, or a bogus TLSA answer: nothing sent, queued with 4.7.5', async () => {
  const bad = await send(spool, 'u@bad.dane.test');
  const bogus = await send(spool, 'u@bogus.dane.test');
  await handle.tick();
  assert.equal(got.some((g) => g.to === 'u@bad.dane.test' || g.to === 'u@bogus.dane.test'), false);
  const b = await spool.get(bad);
  assert.equal(b?.state, 'deferred');
  assert.equal(b?.status.recipients[0].status, '4.7.5');
  assert.match(b?.status.recipients[0].lastError ?? '', /DANE: certificate of mx-bad\.dane\.test matches none of its 1 TLSA records/);
  const g = await spool.get(bogus);
  assert.equal(g?.state, 'deferred');
  assert.equal(g?.status.recipients[0].status, '4.7.5');
  assert.match(g?.status.recipients[0].lastError ?? '', /TLSA lookup for mx-bogus\.dane\.test failed \(DNS lookup failed: SERVFAIL\)/);
});

test('no TLSA record in a signed zone, or a wrong one in an unsigned zone: delivered (opportunistic TLS)', async () => {
  const ids = [await send(spool, 'u@none.dane.test'), await send(spool, 'u@plain.test')];
  await handle.tick();
  for (const id of ids) assert.equal(await spool.locate(id), undefined);
  assert.ok(got.some((g) => g.to === 'u@none.dane.test'));
  assert.ok(got.some((g) => g.to === 'u@plain.test'));
});

test('TLSA records for a host that offers no STARTTLS: nothing sent in clear, queued with 4.7.5', async () => {
  const id = await send(plainSpool, 'u@notls.dane.test');
  await plainHandle.tick();
  assert.equal(got.some((g) => g.to === 'u@notls.dane.test'), false);
  const e = await plainSpool.get(id);
  assert.equal(e?.state, 'deferred');
  assert.equal(e?.status.recipients[0].status, '4.7.5', e?.status.recipients[0].lastError);
  assert.match(e?.status.recipients[0].lastError ?? '', /mx-notls\.dane\.test\[\d+\]: DANE requires STARTTLS \(the host publishes TLSA records\), which failed: 500/);
});
