// The seed's setup done with facteur: Postfix's Cyrus SASL file smtpd.conf read as is (pwcheck_method saslauthd,
// mech_list PLAIN LOGIN, saslauthd_path), the password checked by `facteur authd` over its socket, `bin/facteur serve
// --config` with a TOML file. Also the config validation a user sees at start.
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { freePort, tempDir } from '../helpers/net.js';
import { startFacteurAuthd, facteur, type Daemon } from '../helpers/authd.js';
import { spawnServe, RawSmtp, b64, runProgram, eventually, type ServeProcess } from '../helpers/serve.js';

let dir: string;
let authd: Daemon;
let proc: ServeProcess;
let inbound: number;
let submission: number;
let submissions: number;

before(async () => {
  dir = await tempDir('facteur-seed-');
  const users = path.join(dir, 'users');
  const hash = execFileSync('openssl', ['passwd', '-6', 'seed-secret'], { encoding: 'utf8' }).trim();
  await fs.writeFile(users, `alice@picasoft.test:${hash}\n`, { mode: 0o600 });
  // The saslauthd protocol carries only OK/NO: addresses besides the login come from a sender map.
  await fs.writeFile(path.join(dir, 'senders'), '# address  login\nalias@picasoft.test  alice@picasoft.test\n');
  const run = path.join(dir, 'run');
  await fs.mkdir(run);
  authd = await startFacteurAuthd(run, ['-a', 'file', '-O', users, '-r']);
  await fs.writeFile(path.join(dir, 'smtpd.conf'), `# /etc/postfix/sasl/smtpd.conf, as in the seed\npwcheck_method: saslauthd\nmech_list: PLAIN LOGIN\nsaslauthd_path: ${authd.socket}\n`);
  [inbound, submission, submissions] = [await freePort(), await freePort(), await freePort()];
  await fs.writeFile(
    path.join(dir, 'facteur.toml'),
    `[server]
hostname = "mail.picasoft.test"
data_dir = ${JSON.stringify(path.join(dir, 'data'))}
local_domains = ["picasoft.test"]
received_auth_user = true
log_level = "warn"
[policy]
sender_map = ${JSON.stringify(path.join(dir, 'senders'))}
[auth]
cyrus_config = ${JSON.stringify(path.join(dir, 'smtpd.conf'))}
[inbound]
listen = ["127.0.0.1:${inbound}"]
[submission]
listen = ["127.0.0.1:${submission}"]
[submissions]
listen = ["127.0.0.1:${submissions}"]
`,
  );
  proc = await spawnServe(['--config', path.join(dir, 'facteur.toml')], {}, submissions);
});
after(async () => {
  await proc?.stop();
  await authd?.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

test('submission through facteur authd: PLAIN and LOGIN with the full address (authd -r joins the realm)', async () => {
  for (const mech of ['PLAIN', 'LOGIN']) {
    const r = await runProgram('swaks', ['--server', `127.0.0.1:${submission}`, '--tls', '--auth', mech, '--auth-user', 'alice@picasoft.test', '--auth-password', 'seed-secret', '--from', 'alias@picasoft.test', '--to', 'alice@picasoft.test', '--hide-all']);
    assert.equal(r.code, 0, `${mech}: ${r.stdout}`);
  }
  const other = await runProgram('swaks', ['--server', `127.0.0.1:${submission}`, '--tls', '--auth', 'PLAIN', '--auth-user', 'alice@picasoft.test', '--auth-password', 'seed-secret', '--from', 'bob@picasoft.test', '--to', 'friend@elsewhere.test']);
  assert.match(other.stdout, /553 5\.7\.1 Sender address rejected/);
});

test('wrong password through authd: 535 5.7.8; no AUTH before STARTTLS', async () => {
  const c = await RawSmtp.connect(submission);
  await c.reply();
  assert.doesNotMatch(await c.cmd('EHLO client.test'), /AUTH/);
  assert.equal(await c.cmd(`AUTH PLAIN ${b64('\0alice@picasoft.test\0seed-secret')}`), '538 5.7.11 Must issue a STARTTLS command first');
  await c.cmd('STARTTLS');
  await c.upgrade();
  assert.match(await c.cmd('EHLO client.test'), /AUTH PLAIN LOGIN/);
  assert.equal(await c.cmd(`AUTH PLAIN ${b64('\0alice@picasoft.test\0wrong')}`), '535 5.7.8 Authentication credentials invalid');
  c.close();
});

test('SIGHUP re-reads the sender map', async () => {
  const c = await RawSmtp.connect(submissions, { tls: true });
  await c.reply();
  await c.cmd('EHLO client.test');
  assert.match(await c.cmd(`AUTH PLAIN ${b64('\0alice@picasoft.test\0seed-secret')}`), /^235 /);
  assert.match(await c.cmd('MAIL FROM:<new-alias@picasoft.test>'), /^553 5\.7\.1 /);
  await fs.appendFile(path.join(dir, 'senders'), 'new-alias@picasoft.test  alice@picasoft.test\n');
  proc.signal('SIGHUP');
  await eventually(async () => ((await c.cmd('MAIL FROM:<new-alias@picasoft.test>')).startsWith('250') ? true : undefined), 'the new alias accepted');
  c.close();
});

test('authd down: 454 4.7.0, so clients retry instead of asking for a new password', async () => {
  await authd.stop();
  const c = await RawSmtp.connect(submissions, { tls: true });
  await c.reply();
  await c.cmd('EHLO client.test');
  assert.equal(await c.cmd(`AUTH PLAIN ${b64('\0alice@picasoft.test\0seed-secret')}`), '454 4.7.0 Temporary authentication failure, try again later');
  c.close();
});

test('delivered mail names the authenticated user in Received: (received_auth_user = true)', async () => {
  const box = path.join(dir, 'data', 'mail', 'picasoft.test', 'alice', 'new');
  const files = await eventually(async () => {
    const f = await fs.readdir(box).catch(() => [] as string[]);
    return f.length >= 2 ? f : undefined;
  }, 'two deliveries to alice');
  const text = await fs.readFile(path.join(box, files[0]), 'utf8');
  assert.match(text, /\(Authenticated sender: alice@picasoft\.test\)\r?\n\tby mail\.picasoft\.test \(facteur\) with ESMTPSA/);
});

test('config errors name the key and suggest the fix', async () => {
  const bad = path.join(dir, 'bad.toml');
  await fs.writeFile(bad, '[server]\nlocal_domain = ["x.test"]\n');
  const r = await facteur(['serve', '--config', bad]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /unknown key 'local_domain' in \[server\] \(did you mean 'local_domains'\?\)/);
  await fs.writeFile(bad, '[submision]\nenabled = false\n');
  assert.match((await facteur(['config', '--check', bad])).stderr, /unknown section \[submision\] \(did you mean 'submission'\?\)/);
  await fs.writeFile(bad, '[policy]\nsender_check = "rejct"\n');
  assert.match((await facteur(['config', '--check', bad])).stderr, /\[policy\] sender_check: must be one of "reject", "allow", got "rejct" \(did you mean 'reject'\?\)/);
});

test('a listen address already in use is named in one sentence, and the second server exits 1', async () => {
  const other = path.join(dir, 'other.toml');
  const text = await fs.readFile(path.join(dir, 'facteur.toml'), 'utf8');
  await fs.writeFile(other, text.replace(/^data_dir = .*$/m, `data_dir = ${JSON.stringify(path.join(dir, 'other-data'))}`));
  const r = await facteur(['serve', '--config', other]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`\\[inbound\\] cannot listen on 127\\.0\\.0\\.1:${inbound}: the address is already in use`));
  assert.doesNotMatch(r.stderr, /unexpected error|\n\s+at /, 'no stack trace');
});

test('facteur config --defaults lists every key of every section with its doc', async () => {
  const r = await facteur(['config', '--defaults']);
  assert.equal(r.code, 0);
  for (const s of ['[server]', '[inbound]', '[submission]', '[submissions]', '[auth]', '[policy]', '[queue]', '[delivery]']) assert.ok(r.stdout.includes(s), s);
  assert.match(r.stdout, /# Largest message accepted.*\nmax_message_size = 26214400\n/);
  assert.match(r.stdout, /\[submission\]\n(#.*\n\w+ = .*\n)*#.*\nlisten = \["0\.0\.0\.0:587"\]/);
});
