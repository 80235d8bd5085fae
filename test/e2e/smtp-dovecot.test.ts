// The seed's IMAP variant end to end: `bin/facteur serve` checks passwords against a real Dovecot (rimap backend,
// STARTTLS, verified CA) with passwords hostile to quoting, and delivers local mail to that Dovecot over LMTP.
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { freePort, tempDir } from '../helpers/net.js';
import { startDovecot, HOSTILE_USERS, type Dovecot } from '../helpers/dovecot.js';
import { spawnServe, runProgram, eventually, RawSmtp, b64, type ServeProcess, listenersToml } from '../helpers/serve.js';

let dir: string;
let dovecot: Dovecot;
let proc: ServeProcess;
let ports: { inbound: number; submission: number; submissions: number };

before(async () => {
  dir = await tempDir('facteur-smtp-dovecot-');
  dovecot = await startDovecot();
  ports = { inbound: await freePort(), submission: await freePort(), submissions: await freePort() };
  const cfg = path.join(dir, 'facteur.toml');
  await fs.writeFile(
    cfg,
    `[server]
hostname = "mx.example.org"
data_dir = ${JSON.stringify(path.join(dir, 'data'))}
local_domains = ["example.org", "example.net"]
log_level = "warn"
[auth]
backend = "rimap"
option = ${JSON.stringify(`imap+starttls://127.0.0.1:${dovecot.imapPort}?ca=${dovecot.caFile}`)}
[delivery]
local_transport = "lmtp"
lmtp_target = "[127.0.0.1]:${dovecot.lmtpPort}"
${listenersToml(ports)}`,
  );
  proc = await spawnServe(['--config', cfg], {}, ports.submissions);
});
after(async () => {
  await proc?.stop();
  await dovecot?.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

test('every hostile password authenticates through Dovecot (PLAIN and LOGIN); the mail lands in Dovecot', async () => {
  for (const [login, pass] of Object.entries(HOSTILE_USERS)) {
    for (const authMethod of ['PLAIN', 'LOGIN']) {
      const t = nodemailer.createTransport({ host: '127.0.0.1', port: ports.submission, requireTLS: true, authMethod, auth: { user: login, pass }, tls: { rejectUnauthorized: false } });
      const info = await t.sendMail({ from: login, to: 'alice@example.org', subject: `from ${login} ${authMethod}`, text: 'hi' });
      assert.match(info.response, /^250 2\.0\.0 Ok: queued as /, `${login} ${authMethod}`);
      t.close();
    }
  }
  const n = Object.keys(HOSTILE_USERS).length * 2;
  const files = await eventually(async () => {
    const m = await dovecot.messages('alice@example.org');
    return m.length >= n ? m : undefined;
  }, `LMTP deliveries to alice: ${proc.stderr()}`);
  assert.equal(files.length, n);
  const text = await fs.readFile(files[0], 'utf8');
  assert.match(text, /^Received: from \S+ \(unknown \[127\.0\.0\.1\]\)\r?\n(\t.*\r?\n)*\tby mx\.example\.org \(facteur\) with ESMTPSA/m);
});

test('a wrong password is 535 5.7.8; Dovecot stopped is 454 4.7.0', async () => {
  const c = await RawSmtp.connect(ports.submissions, { tls: true });
  await c.reply();
  await c.cmd('EHLO client.test');
  assert.equal(await c.cmd(`AUTH PLAIN ${b64('\0alice@example.org\0wrong')}`), '535 5.7.8 Authentication credentials invalid');
  c.close();
  const r = await runProgram('swaks', ['--server', `127.0.0.1:${ports.inbound}`, '--from', 'someone@outside.test', '--to', 'dave@example.net', '--hide-all']);
  assert.equal(r.code, 0, r.stdout);
  await eventually(async () => ((await dovecot.messages('dave@example.net')).length ? true : undefined), 'inbound LMTP delivery to dave');
  await dovecot.stop();
  const d = await RawSmtp.connect(ports.submissions, { tls: true });
  await d.reply();
  await d.cmd('EHLO client.test');
  assert.equal(await d.cmd(`AUTH PLAIN ${b64(`\0alice@example.org\0${HOSTILE_USERS['alice@example.org']}`)}`), '454 4.7.0 Temporary authentication failure, try again later');
  d.close();
});
