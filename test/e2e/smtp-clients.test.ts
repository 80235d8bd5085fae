// Real mail clients against facteur serve() with the real users-file backend: swaks (STARTTLS, implicit TLS, PLAIN,
// LOGIN), Python smtplib, curl (smtp:// --ssl-reqd, smtps://) and nodemailer. Messages are checked as queued.
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import nodemailer from 'nodemailer';
import { startTestSmtp, MemoryQueue, runProgram, type TestServer } from '../helpers/serve.js';
import { tempDir } from '../helpers/net.js';

const queue = new MemoryQueue();
let srv: TestServer;
let usersDir: string;
const PASS = 'correct horse battery';
const BOB_PASS = 'b0b:with:colons';

before(async () => {
  usersDir = await tempDir('facteur-users-');
  const users = path.join(usersDir, 'users');
  const hash = (p: string) => execFileSync('openssl', ['passwd', '-6', p], { encoding: 'utf8' }).trim();
  await fs.writeFile(users, `# test users\nalice@example.org:${hash(PASS)}:alice.smith@example.org\nbob:${hash(BOB_PASS)}:bob@example.org\n`, { mode: 0o600 });
  srv = await startTestSmtp({
    queue,
    toml: `[server]\nhostname = "mx.test"\nlocal_domains = ["example.org"]\n[auth]\nbackend = "file"\noption = ${JSON.stringify(users)}\n`,
  });
});
after(async () => {
  await srv.stop();
  await fs.rm(usersDir, { recursive: true, force: true });
});

const swaks = (args: string[]) => runProgram('swaks', ['--server', '127.0.0.1', '--hide-all', ...args]);

test('port 25: an outsider may not use an address of the users file as sender (before any AUTH)', async () => {
  const r = await runProgram('swaks', ['--server', '127.0.0.1', '--port', String(srv.ports.inbound), '--from', 'alice.smith@example.org', '--to', 'bob@example.org']);
  assert.notEqual(r.code, 0);
  assert.match(r.stdout, /<\*\* 553 5\.7\.1 Sender address rejected: this address belongs to a member/);
});

test('swaks: STARTTLS + AUTH PLAIN on 587', async () => {
  const r = await swaks(['--port', String(srv.ports.submission), '--tls', '--auth', 'PLAIN', '--auth-user', 'alice@example.org', '--auth-password', PASS, '--from', 'alice@example.org', '--to', 'friend@elsewhere.test', '--header', 'From: alice@example.org', '--header', 'Subject: swaks plain']);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const m = queue.last();
  assert.equal(m.envelope.authUser, 'alice@example.org');
  assert.deepEqual(m.envelope.rcptTo.map((x) => x.address), ['friend@elsewhere.test']);
  assert.match(m.data.toString(), /Subject: swaks plain/);
});

test('swaks: implicit TLS + AUTH LOGIN on 465, a login without a domain and a password with colons', async () => {
  const r = await swaks(['--port', String(srv.ports.submissions), '--tls-on-connect', '--auth', 'LOGIN', '--auth-user', 'bob', '--auth-password', BOB_PASS, '--from', 'bob@example.org', '--to', 'friend@elsewhere.test', '--header', 'From: Bob <bob@example.org>']);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.equal(queue.last().envelope.authUser, 'bob');
});

test('swaks: AUTH without TLS on 587 fails (AUTH not offered), wrong password fails, another user\'s sender fails', async () => {
  const count = queue.messages.length;
  const plain = await swaks(['--port', String(srv.ports.submission), '--auth', 'PLAIN', '--auth-user', 'alice@example.org', '--auth-password', PASS, '--from', 'alice@example.org', '--to', 'friend@elsewhere.test']);
  assert.notEqual(plain.code, 0);
  const wrong = await swaks(['--port', String(srv.ports.submission), '--tls', '--auth', 'PLAIN', '--auth-user', 'alice@example.org', '--auth-password', 'nope', '--from', 'alice@example.org', '--to', 'friend@elsewhere.test']);
  assert.notEqual(wrong.code, 0);
  const spoof = await runProgram('swaks', ['--server', '127.0.0.1', '--port', String(srv.ports.submission), '--tls', '--auth', 'PLAIN', '--auth-user', 'alice@example.org', '--auth-password', PASS, '--from', 'bob@example.org', '--to', 'friend@elsewhere.test']);
  assert.notEqual(spoof.code, 0);
  assert.match(spoof.stdout, /<~\* 553 5\.7\.1 Sender address rejected/);
  assert.equal(queue.messages.length, count);
});

test('swaks: inbound on 25 without AUTH delivers to a local address only', async () => {
  const ok = await swaks(['--port', String(srv.ports.inbound), '--from', 'someone@outside.test', '--to', 'bob@example.org']);
  assert.equal(ok.code, 0, ok.stdout);
  const relay = await runProgram('swaks', ['--server', '127.0.0.1', '--port', String(srv.ports.inbound), '--from', 'someone@outside.test', '--to', 'victim@elsewhere.test']);
  assert.notEqual(relay.code, 0);
  assert.match(relay.stdout, /<\*\* 554 5\.7\.1 Relay access denied/);
});

const PY = `
import smtplib, ssl, sys
from email.message import EmailMessage
port, mode, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
msg = EmailMessage(); msg['From'] = user if '@' in user else 'bob@example.org'; msg['To'] = 'friend@elsewhere.test'; msg['Subject'] = 'smtplib ' + mode
msg.set_content('Bonjour, ça marche.\\n')
if mode == 'ssl':
    s = smtplib.SMTP_SSL('127.0.0.1', port, context=ctx)
else:
    s = smtplib.SMTP('127.0.0.1', port); s.ehlo()
    if mode == 'plain-auth':
        try:
            s.login(user, pw)
        except smtplib.SMTPNotSupportedError:
            print('AUTH-NOT-OFFERED'); sys.exit(0)
    s.starttls(context=ctx); s.ehlo()
s.login(user, pw)
print(s.send_message(msg) == {} and 'SENT')
s.quit()
`;

test('Python smtplib: STARTTLS and SMTP_SSL with login(); no login offered before STARTTLS', async () => {
  const a = await runProgram('python3', ['-c', PY, String(srv.ports.submission), 'starttls', 'alice@example.org', PASS]);
  assert.equal(a.stdout.trim(), 'SENT', a.stderr);
  assert.match(queue.last().data.toString(), /Subject: smtplib starttls/);
  const b = await runProgram('python3', ['-c', PY, String(srv.ports.submissions), 'ssl', 'bob', BOB_PASS]);
  assert.equal(b.stdout.trim(), 'SENT', b.stderr);
  const c = await runProgram('python3', ['-c', PY, String(srv.ports.submission), 'plain-auth', 'bob', BOB_PASS]);
  assert.equal(c.stdout.trim(), 'AUTH-NOT-OFFERED', c.stderr);
});

test('curl: smtp:// with --ssl-reqd (STARTTLS) and smtps://', async () => {
  const body = 'From: alice@example.org\r\nTo: friend@elsewhere.test\r\nSubject: curl\r\n\r\nhello from curl\r\n';
  for (const url of [`smtp://127.0.0.1:${srv.ports.submission}`, `smtps://127.0.0.1:${srv.ports.submissions}`]) {
    const r = await runProgram('curl', ['-sS', '--ssl-reqd', '-k', url, '--mail-from', 'alice@example.org', '--mail-rcpt', 'friend@elsewhere.test', '--user', `alice@example.org:${PASS}`, '-T', '-'], body);
    assert.equal(r.code, 0, `${url}: ${r.stderr}`);
    assert.match(queue.last().data.toString(), /hello from curl/);
  }
  const bad = await runProgram('curl', ['-sS', '--ssl-reqd', '-k', `smtp://127.0.0.1:${srv.ports.submission}`, '--mail-from', 'alice@example.org', '--mail-rcpt', 'friend@elsewhere.test', '--user', 'alice@example.org:wrong', '-T', '-'], body);
  assert.equal(bad.code, 67, 'curl: login denied');
});

test('nodemailer: STARTTLS with PLAIN and LOGIN, implicit TLS; 250 carries the queue id', async () => {
  const cases = [
    { port: srv.ports.submission, secure: false, requireTLS: true, authMethod: 'PLAIN' },
    { port: srv.ports.submission, secure: false, requireTLS: true, authMethod: 'LOGIN' },
    { port: srv.ports.submissions, secure: true, requireTLS: false, authMethod: 'PLAIN' },
  ];
  for (const c of cases) {
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: c.port, secure: c.secure, requireTLS: c.requireTLS, authMethod: c.authMethod, auth: { user: 'alice@example.org', pass: PASS }, tls: { rejectUnauthorized: false } });
    const info = await t.sendMail({ from: 'Alice <alice.smith@example.org>', to: 'friend@elsewhere.test', subject: `nodemailer ${c.authMethod}`, text: 'hi' });
    const m = /^250 2\.0\.0 Ok: queued as (TEST\d+)$/.exec(info.response);
    assert.ok(m, info.response);
    assert.equal(queue.last().id, m[1]);
    assert.equal(queue.last().envelope.mailFrom, 'alice.smith@example.org');
    t.close();
  }
  const t = nodemailer.createTransport({ host: '127.0.0.1', port: srv.ports.submission, requireTLS: true, auth: { user: 'alice@example.org', pass: PASS }, tls: { rejectUnauthorized: false } });
  await assert.rejects(t.sendMail({ from: 'boss@example.org', to: 'friend@elsewhere.test', text: 'x' }), (e: Error & { responseCode?: number }) => e.responseCode === 553);
  t.close();
});
