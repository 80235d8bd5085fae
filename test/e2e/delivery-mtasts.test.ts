// MTA-STS end to end: policies served over real HTTPS (127.0.0.1:443, test CA) and found through a DNS stub; an enforcing
// policy delivers only to listed MX hosts over verified STARTTLS (smtp-server), a mismatch keeps the mail queued, testing
// mode delivers anyway.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { SMTPServer } from 'smtp-server';
import { Spool } from '../../src/queue/spool.js';
import { startDelivery, type DeliveryHandle } from '../../src/delivery/scheduler.js';
import { defaultDeliveryOptions } from '../../src/delivery/options.js';
import type { MxResolver } from '../../src/delivery/mx.js';
import { createLogger } from '../../src/observability/log.js';
import { freePort, tempDir } from '../helpers/net.js';
import { recordingSmtpServer, type Received } from '../helpers/smtp-recorder.js';

let dir: string;
let web: https.Server;
let smtp: SMTPServer;
let spool: Spool;
let handle: DeliveryHandle;
const got: Received[] = [];
const dnsQueries: string[] = [];

const POLICIES: Record<string, string> = {
  'mta-sts.good.test': 'version: STSv1\r\nmode: enforce\r\nmx: 127.0.0.1\r\nmax_age: 86400\r\n',
  'mta-sts.bad.test': 'version: STSv1\r\nmode: enforce\r\nmx: mx.elsewhere.test\r\nmax_age: 86400\r\n',
  'mta-sts.soft.test': 'version: STSv1\r\nmode: testing\r\nmx: mx.elsewhere.test\r\nmax_age: 86400\r\n',
};

const resolver: MxResolver = {
  async resolveMx(d) {
    dnsQueries.push(`MX ${d}`);
    return [{ exchange: '127.0.0.1', priority: 10 }];
  },
  async resolve(name, type) {
    dnsQueries.push(`${type} ${name}`);
    const m = /^_mta-sts\.(good|bad|soft)\.test$/.exec(name);
    if (type === 'TXT' && m) return [[`v=STSv1; id=2026${m[1]}`]];
    if (type === 'A' && POLICIES[name]) return ['127.0.0.1'];
    throw Object.assign(new Error(`ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
  },
};

function sh(args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
}

before(async () => {
  dir = await tempDir('facteur-mtasts-');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  sh(['req', '-x509', ...ec, '-subj', '/CN=facteur MTA-STS test CA', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  sh(['req', '-new', ...ec, '-subj', '/CN=127.0.0.1', '-keyout', 'srv.key', '-out', 'srv.csr']);
  await fs.writeFile(path.join(dir, 'ext.cnf'), `subjectAltName=IP:127.0.0.1,${Object.keys(POLICIES).map((h) => `DNS:${h}`).join(',')}\nextendedKeyUsage=serverAuth\n`);
  sh(['x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'srv.pem', '-days', '2', '-extfile', 'ext.cnf']);
  const [ca, key, cert] = await Promise.all(['ca.pem', 'srv.key', 'srv.pem'].map((f) => fs.readFile(path.join(dir, f), 'utf8')));
  // mailauth fetches policies with the default HTTPS agent: trust the test CA there (only in this test process).
  https.globalAgent.options.ca = [ca];
  web = https.createServer({ key, cert }, (req, res) => {
    const body = POLICIES[String(req.headers.host)];
    if (req.url !== '/.well-known/mta-sts.txt' || !body) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain' }).end(body);
  });
  await new Promise<void>((resolve, reject) => {
    web.once('error', reject);
    web.listen(443, '127.0.0.1', () => resolve());
  });
  const port = await freePort();
  smtp = recordingSmtpServer(got, { key, cert });
  await new Promise<void>((r) => smtp.listen(port, '127.0.0.1', r));
  const data = await tempDir('facteur-mtasts-data-');
  spool = await Spool.open(path.join(data, 'queue'));
  const options = defaultDeliveryOptions(data, { hostname: 'mx.facteur.test', smtpPort: port, tlsCa: ca, scanIntervalMs: 3_600_000 });
  handle = startDelivery({ spool, options, log: createLogger({ name: 'test', level: 'silent' }), resolver });
});

after(async () => {
  await handle?.stop();
  await new Promise<void>((r) => (smtp ? smtp.close(() => r()) : r()));
  await new Promise<void>((r) => (web ? web.close(() => r()) : r()));
});

async function send(to: string): Promise<string> {
  return spool.commit({ mailFrom: 'a@sender.test', rcptTo: [{ address: to }], receivedAt: Date.now() }, Readable.from([Buffer.from(`Subject: to ${to}\r\n\r\nx\r\n`)]));
}

test('enforce, MX listed: delivered over verified STARTTLS', async () => {
  const id = await send('u@good.test');
  await handle.tick();
  assert.ok(dnsQueries.includes('TXT _mta-sts.good.test'));
  assert.equal(await spool.locate(id), undefined);
  assert.deepEqual(got.find((g) => g.to === 'u@good.test'), { to: 'u@good.test', secure: true });
});

test('enforce, MX not listed: nothing sent, the mail stays queued with 4.7.5', async () => {
  const id = await send('u@bad.test');
  await handle.tick();
  assert.equal(got.some((g) => g.to === 'u@bad.test'), false);
  const e = await spool.get(id);
  assert.equal(e?.state, 'deferred');
  assert.equal(e?.status.recipients[0].status, '4.7.5');
  assert.match(e?.status.recipients[0].lastError ?? '', /MTA-STS/);
});

test('testing mode with a mismatch still delivers; a domain without a policy too', async () => {
  await send('u@soft.test');
  await send('u@nopolicy.test');
  await handle.tick();
  assert.ok(got.some((g) => g.to === 'u@soft.test'));
  assert.ok(got.some((g) => g.to === 'u@nopolicy.test'));
});

test('enforce: a certificate the sender cannot verify means no delivery (the mail stays queued)', async () => {
  const data = await tempDir('facteur-mtasts-noca-');
  const s2 = await Spool.open(path.join(data, 'queue'));
  const port = (smtp.server.address() as { port: number }).port;
  const options = defaultDeliveryOptions(data, { hostname: 'mx.facteur.test', smtpPort: port, scanIntervalMs: 3_600_000 });
  const h2 = startDelivery({ spool: s2, options, log: createLogger({ name: 'test', level: 'silent' }), resolver });
  try {
    const id = await s2.commit({ mailFrom: 'a@sender.test', rcptTo: [{ address: 'v@good.test' }], receivedAt: Date.now() }, Readable.from([Buffer.from('Subject: untrusted\r\n\r\nx\r\n')]));
    await h2.tick();
    assert.equal(got.some((g) => g.to === 'v@good.test'), false);
    const e = await s2.get(id);
    assert.equal(e?.state, 'deferred');
    assert.match(e?.status.recipients[0].lastError ?? '', /certificate|TLS/i);
  } finally {
    await h2.stop();
  }
});
