// The seed's LDAP setup end to end with real programs: slapd holds the members (test/helpers/slapd.ts), the real Cyrus
// saslauthd (-a ldap, the seed's saslauthd.conf with ldap_filter cn=%u and its read-only bind account) checks passwords,
// `bin/facteur serve` asks it over its socket.
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { freePort, tempDir } from '../helpers/net.js';
import { startCyrusSaslauthd, type Daemon } from '../helpers/authd.js';
import { startSlapd, type Slapd, type LdapUser } from '../helpers/slapd.js';
import { spawnServe, RawSmtp, b64, runProgram, type ServeProcess, listenersToml } from '../helpers/serve.js';

let dir: string;
let slapd: Slapd;
let saslauthd: Daemon;
let proc: ServeProcess;
let ports: { inbound: number; submission: number; submissions: number };
/** Two members: one with an ASCII login, one with a non-ASCII login and an address that differs from it. */
let alice: LdapUser;
let jose: LdapUser;

before(async () => {
  dir = await tempDir('facteur-smtp-ldap-');
  slapd = await startSlapd();
  alice = slapd.users.find((u) => u.login === 'alice')!;
  jose = slapd.users.find((u) => u.login === 'josé')!;
  // /etc/saslauthd.conf as the seed writes it
  await fs.writeFile(path.join(dir, 'saslauthd.conf'), `ldap_servers: ${slapd.url}\nldap_bind_dn: ${slapd.bindDn}\nldap_bind_pw: ${slapd.bindPw}\nldap_search_base: ${slapd.baseDn}\nldap_filter: cn=%u\n`);
  await fs.mkdir(path.join(dir, 'run'));
  saslauthd = await startCyrusSaslauthd(path.join(dir, 'run'), ['-a', 'ldap', '-O', path.join(dir, 'saslauthd.conf')]);
  await fs.writeFile(path.join(dir, 'senders'), [alice, jose].map((m) => `${m.mail[0]} ${m.login}`).join('\n') + '\n');
  ports = { inbound: await freePort(), submission: await freePort(), submissions: await freePort() };
  await fs.writeFile(
    path.join(dir, 'facteur.toml'),
    `[server]
hostname = "mail.picasoft.net"
data_dir = ${JSON.stringify(path.join(dir, 'data'))}
local_domains = ["picasoft.net"]
log_level = "warn"
[auth]
backend = "saslauthd"
saslauthd_path = ${JSON.stringify(saslauthd.socket)}
[policy]
sender_map = ${JSON.stringify(path.join(dir, 'senders'))}
[metrics]
listen = ""
${listenersToml(ports)}`,
  );
  proc = await spawnServe(['--config', path.join(dir, 'facteur.toml')], {}, ports.submissions);
});
after(async () => {
  await proc?.stop();
  await saslauthd?.stop();
  await slapd?.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

test('members in slapd submit with PLAIN (swaks) and LOGIN (nodemailer) through Cyrus saslauthd', async () => {
  const r = await runProgram('swaks', ['--server', `127.0.0.1:${ports.submission}`, '--tls', '--auth', 'PLAIN', '--auth-user', 'alice', '--auth-password', alice.password, '--from', alice.mail[0], '--to', 'friend@elsewhere.test', '--hide-all']);
  assert.equal(r.code, 0, r.stdout);
  const t = nodemailer.createTransport({ host: '127.0.0.1', port: ports.submissions, secure: true, authMethod: 'LOGIN', auth: { user: jose.login, pass: jose.password }, tls: { rejectUnauthorized: false } });
  const info = await t.sendMail({ from: jose.mail[0], to: 'friend@elsewhere.test', subject: 'ldap', text: 'hi' });
  assert.match(info.response, /^250 2\.0\.0 Ok: queued as /);
  t.close();
});

test('wrong LDAP password: 535 5.7.8; another member\'s address: 553 5.7.1', async () => {
  const c = await RawSmtp.connect(ports.submissions, { tls: true });
  await c.reply();
  await c.cmd('EHLO client.test');
  assert.equal(await c.cmd(`AUTH PLAIN ${b64('\0alice\0not her password')}`), '535 5.7.8 Authentication credentials invalid');
  assert.match(await c.cmd(`AUTH PLAIN ${b64(`\0alice\0${alice.password}`)}`), /^235 /);
  assert.equal(await c.cmd(`MAIL FROM:<${jose.mail[0]}>`), `553 5.7.1 Sender address rejected: not owned by user (${jose.mail[0]})`);
  c.close();
});

test('port 25: no AUTH, members\' addresses refused from outsiders, local mail accepted', async () => {
  const c = await RawSmtp.connect(ports.inbound);
  await c.reply();
  assert.doesNotMatch(await c.cmd('EHLO outside.test'), /AUTH/);
  assert.match(await c.cmd(`MAIL FROM:<${alice.mail[0]}>`), /^553 5\.7\.1 /);
  assert.match(await c.cmd('MAIL FROM:<someone@outside.test>'), /^250 /);
  assert.match(await c.cmd(`RCPT TO:<${alice.mail[0]}>`), /^250 /);
  assert.equal(await c.cmd('RCPT TO:<victim@elsewhere.test>'), '554 5.7.1 Relay access denied');
  c.close();
});

test('slapd down behind Cyrus saslauthd: 535, because Cyrus answers a plain NO (facteur authd answers [UNAVAILABLE] → 454)', async () => {
  await slapd.halt();
  const c = await RawSmtp.connect(ports.submissions, { tls: true });
  await c.reply();
  await c.cmd('EHLO client.test');
  assert.equal(await c.cmd(`AUTH PLAIN ${b64(`\0${jose.login}\0${jose.password}`)}`), '535 5.7.8 Authentication credentials invalid');
  c.close();
});
