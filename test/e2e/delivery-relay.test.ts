// Relayhost delivery against a real SMTP server (the smtp-server library): opportunistic STARTTLS, AUTH to the relay,
// SMTPUTF8 and DSN parameters passed on, a refused login keeps the mail queued, `starttls = "require"` never sends in clear.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { SMTPServer, type SMTPServerSession } from 'smtp-server';
import { Spool } from '../../src/queue/spool.js';
import { startDelivery } from '../../src/delivery/scheduler.js';
import { defaultDeliveryOptions, type DeliveryOptions } from '../../src/delivery/options.js';
import { createLogger } from '../../src/observability/log.js';
import { freePort, tempDir } from '../helpers/net.js';

interface Got {
  session: string;
  secure: boolean;
  user?: string;
  from: string;
  mailArgs: Record<string, unknown>;
  to: { address: string; args: Record<string, unknown> }[];
  body: string;
}

let dir: string;
let key: Buffer;
let cert: Buffer;
const got: Got[] = [];
const servers: SMTPServer[] = [];

const live = { now: 0, max: 0 };

async function relay(o: { tls: boolean; smtputf8?: boolean; slowMs?: number }): Promise<number> {
  const port = await freePort();
  const srv = new SMTPServer({
    onConnect(_session, cb) {
      live.now++;
      live.max = Math.max(live.max, live.now);
      cb();
    },
    onClose() {
      live.now--;
    },
    key,
    cert,
    hideSTARTTLS: !o.tls,
    disabledCommands: o.tls ? [] : ['STARTTLS'],
    hideSMTPUTF8: !o.smtputf8,
    hideDSN: false,
    authMethods: ['PLAIN', 'LOGIN'],
    authOptional: true,
    logger: false,
    onAuth(auth, _session, cb) {
      if (auth.username === 'relayuser' && auth.password === 'relay pass') cb(null, { user: auth.username });
      else cb(Object.assign(new Error('Invalid username or password'), { responseCode: 535 }));
    },
    onData(stream, session: SMTPServerSession, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', async () => {
        if (o.slowMs) await new Promise((r) => setTimeout(r, o.slowMs));
        got.push({
          session: session.id,
          secure: session.secure,
          user: session.user as string | undefined,
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          mailArgs: (session.envelope.mailFrom ? session.envelope.mailFrom.args : {}) as Record<string, unknown>,
          to: session.envelope.rcptTo.map((r) => ({ address: r.address, args: (r.args ?? {}) as Record<string, unknown> })),
          body: Buffer.concat(chunks).toString('utf8'),
        });
        cb();
      });
    },
  });
  srv.on('error', () => undefined);
  await new Promise<void>((r) => srv.listen(port, '127.0.0.1', r));
  servers.push(srv);
  return port;
}

async function runOnce(over: Partial<DeliveryOptions>, env: { mailFrom: string; rcpt: string; notify?: string[]; smtputf8?: boolean; dsn?: { ret?: 'FULL' | 'HDRS'; envid?: string } }) {
  const data = await tempDir('facteur-relay-');
  const spool = await Spool.open(path.join(data, 'queue'));
  const options = defaultDeliveryOptions(data, { hostname: 'mx.facteur.test', scanIntervalMs: 3_600_000, ...over });
  const h = startDelivery({ spool, options, log: createLogger({ name: 'test', level: 'silent' }) });
  const id = await spool.commit(
    { mailFrom: env.mailFrom, rcptTo: [{ address: env.rcpt, notify: env.notify }], receivedAt: Date.now(), smtputf8: env.smtputf8, dsn: env.dsn },
    Readable.from([Buffer.from(`From: <${env.mailFrom}>\r\nSubject: relay test\r\n\r\nvia relay\r\n`)]),
  );
  await h.tick();
  const entry = await spool.get(id);
  await h.stop();
  return { entry, spool, data };
}

before(async () => {
  dir = await tempDir('facteur-relay-tls-');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=relay.test', '-keyout', 'k.pem', '-out', 'c.pem', '-days', '2'], { cwd: dir, stdio: 'ignore' });
  key = await fs.readFile(path.join(dir, 'k.pem'));
  cert = await fs.readFile(path.join(dir, 'c.pem'));
});

after(async () => {
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
});

test('relayhost with AUTH over opportunistic STARTTLS; SMTPUTF8 and DSN parameters passed on', async () => {
  const port = await relay({ tls: true, smtputf8: true });
  const n = got.length;
  const { entry } = await runOnce(
    { relayhost: `[127.0.0.1]:${port}`, relayAuth: { user: 'relayuser', pass: 'relay pass' } },
    { mailFrom: 'andr\u00e9@sender.test', rcpt: 'zo\u00e9@gmail.example', notify: ['SUCCESS', 'FAILURE'], smtputf8: true, dsn: { ret: 'HDRS', envid: 'ENV1' } },
  );
  assert.equal(entry, undefined, 'delivered and removed');
  assert.equal(got.length, n + 1, 'the relay announced DSN: NOTIFY=SUCCESS is passed on, no "relayed" notice from us');
  const g = got[got.length - 1];
  assert.equal(g.secure, true, 'STARTTLS was used');
  assert.equal(g.user, 'relayuser');
  assert.equal(g.from, 'andr\u00e9@sender.test');
  assert.equal(g.to[0].address, 'zo\u00e9@gmail.example');
  assert.equal(g.mailArgs.SMTPUTF8, true);
  assert.equal(g.mailArgs.RET, 'HDRS');
  assert.equal(g.mailArgs.ENVID, 'ENV1');
  assert.equal(g.to[0].args.NOTIFY, 'SUCCESS,FAILURE');
  assert.match(g.body, /via relay/);
});

test('a refused relay login keeps the mail queued (deferred, no bounce)', async () => {
  const port = await relay({ tls: true });
  const n = got.length;
  const { entry } = await runOnce({ relayhost: `[127.0.0.1]:${port}`, relayAuth: { user: 'relayuser', pass: 'wrong' } }, { mailFrom: 'a@sender.test', rcpt: 'b@gmail.example' });
  assert.equal(got.length, n);
  assert.equal(entry?.state, 'deferred');
  assert.equal(entry?.status.recipients[0].status, '4.4.1');
  assert.match(entry?.status.recipients[0].lastError ?? '', /authentication failed/);
  assert.doesNotMatch(entry?.status.recipients[0].lastError ?? '', /wrong/, 'the password never appears in status or logs');
});

test('starttls = "require" never sends in clear to a server without STARTTLS; "opportunistic" does', async () => {
  const port = await relay({ tls: false });
  const n = got.length;
  const req = await runOnce({ relayhost: `[127.0.0.1]:${port}`, starttls: 'require' }, { mailFrom: 'a@sender.test', rcpt: 'b@gmail.example' });
  assert.equal(got.length, n);
  assert.equal(req.entry?.state, 'deferred');
  const opp = await runOnce({ relayhost: `[127.0.0.1]:${port}` }, { mailFrom: 'a@sender.test', rcpt: 'b@gmail.example' });
  assert.equal(opp.entry, undefined);
  assert.equal(got.length, n + 1);
  assert.equal(got[got.length - 1].secure, false);
});

test('connection reuse: messages to the same next hop share one session (RSET between them)', async () => {
  const port = await relay({ tls: true });
  const n = got.length;
  const data = await tempDir('facteur-relay-reuse-');
  const spool = await Spool.open(path.join(data, 'queue'));
  const options = defaultDeliveryOptions(data, { hostname: 'mx.facteur.test', scanIntervalMs: 3_600_000, relayhost: `[127.0.0.1]:${port}`, destinationConcurrency: 1 });
  const h = startDelivery({ spool, options, log: createLogger({ name: 'test', level: 'silent' }) });
  try {
    for (let i = 0; i < 4; i++) {
      await spool.commit({ mailFrom: 'a@sender.test', rcptTo: [{ address: `r${i}@gmail.example` }], receivedAt: Date.now() }, Readable.from([Buffer.from(`Subject: reuse ${i}\r\n\r\nx\r\n`)]));
    }
    await h.tick();
  } finally {
    await h.stop();
  }
  const mine = got.slice(n);
  assert.equal(mine.length, 4);
  assert.deepEqual(mine.map((g) => g.to[0].address).sort(), ['r0@gmail.example', 'r1@gmail.example', 'r2@gmail.example', 'r3@gmail.example']);
  assert.equal(new Set(mine.map((g) => g.session)).size, 1, 'one SMTP session for the four messages');
});

test('per-destination concurrency: never more simultaneous sessions to one next hop than destination_concurrency', async () => {
  const port = await relay({ tls: false, slowMs: 150 });
  const n = got.length;
  live.max = 0;
  const data = await tempDir('facteur-relay-conc-');
  const spool = await Spool.open(path.join(data, 'queue'));
  const options = defaultDeliveryOptions(data, { hostname: 'mx.facteur.test', scanIntervalMs: 3_600_000, relayhost: `[127.0.0.1]:${port}`, destinationConcurrency: 2, concurrency: 20 });
  const h = startDelivery({ spool, options, log: createLogger({ name: 'test', level: 'silent' }) });
  try {
    await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        spool.commit({ mailFrom: 'a@sender.test', rcptTo: [{ address: `c${i}@gmail.example` }], receivedAt: Date.now() }, Readable.from([Buffer.from(`Subject: conc ${i}\r\n\r\nx\r\n`)])),
      ),
    );
    await h.tick();
  } finally {
    await h.stop();
  }
  assert.equal(got.length - n, 8);
  assert.equal(live.max, 2, `at most 2 sessions at once (saw ${live.max})`);
});
