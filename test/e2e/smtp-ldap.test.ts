// The seed's LDAP setup end to end with real programs: slapd holds the members, the real Cyrus saslauthd (-a ldap,
// the seed's saslauthd.conf with ldap_filter cn=%u) checks passwords, `bin/facteur serve` asks it over its socket.
// (The slapd here is started by this file; test/helpers/slapd.ts, being written, will replace the local starter.)
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import nodemailer from 'nodemailer';
import { freePort, tempDir, waitForSocket } from '../helpers/net.js';
import { startCyrusSaslauthd, type Daemon } from '../helpers/authd.js';
import { spawnServe, RawSmtp, b64, runProgram, type ServeProcess, listenersToml } from '../helpers/serve.js';

const BASE = 'dc=picasoft,dc=test';
const ADMIN = `cn=admin,${BASE}`;
const ADMIN_PW = 'admin-secret';
const MEMBERS = { alice: 'mot de passe "alice" é', bob: 'b0b-LDAP' };

let dir: string;
let slapd: ChildProcess;
let saslauthd: Daemon;
let proc: ServeProcess;
let ports: { inbound: number; submission: number; submissions: number };

async function startSlapdHere(): Promise<string> {
  const port = await freePort();
  await fs.mkdir(path.join(dir, 'db'));
  await fs.writeFile(
    path.join(dir, 'slapd.conf'),
    `include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile ${dir}/slapd.pid
database mdb
suffix "${BASE}"
rootdn "${ADMIN}"
rootpw ${ADMIN_PW}
directory ${dir}/db
`,
  );
  const url = `ldap://127.0.0.1:${port}/`;
  slapd = spawn('/usr/sbin/slapd', ['-f', path.join(dir, 'slapd.conf'), '-h', url, '-d', '0'], { stdio: 'ignore' });
  await waitForSocket(port, 15_000);
  const hash = (p: string) => execFileSync('slappasswd', ['-s', p], { encoding: 'utf8' }).trim();
  const ldif = [
    `dn: ${BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: picasoft\no: Picasoft\n`,
    `dn: ou=people,${BASE}\nobjectClass: organizationalUnit\nou: people\n`,
    ...Object.entries(MEMBERS).map(([cn, pw]) => `dn: cn=${cn},ou=people,${BASE}\nobjectClass: inetOrgPerson\ncn: ${cn}\nsn: ${cn}\nmail: ${cn}@picasoft.test\nuserPassword: ${hash(pw)}\n`),
  ].join('\n');
  execFileSync('ldapadd', ['-x', '-H', url, '-D', ADMIN, '-w', ADMIN_PW], { input: ldif, stdio: ['pipe', 'ignore', 'pipe'] });
  return url;
}

before(async () => {
  dir = await tempDir('facteur-smtp-ldap-');
  const url = await startSlapdHere();
  // /etc/saslauthd.conf as the seed writes it
  await fs.writeFile(path.join(dir, 'saslauthd.conf'), `ldap_servers: ${url}\nldap_bind_dn: ${ADMIN}\nldap_bind_pw: ${ADMIN_PW}\nldap_search_base: ${BASE}\nldap_filter: cn=%u\n`);
  await fs.mkdir(path.join(dir, 'run'));
  saslauthd = await startCyrusSaslauthd(path.join(dir, 'run'), ['-a', 'ldap', '-O', path.join(dir, 'saslauthd.conf')]);
  await fs.writeFile(path.join(dir, 'senders'), Object.keys(MEMBERS).map((m) => `${m}@picasoft.test ${m}`).join('\n') + '\n');
  ports = { inbound: await freePort(), submission: await freePort(), submissions: await freePort() };
  await fs.writeFile(
    path.join(dir, 'facteur.toml'),
    `[server]
hostname = "mail.picasoft.test"
data_dir = ${JSON.stringify(path.join(dir, 'data'))}
local_domains = ["picasoft.test"]
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
  slapd?.kill('SIGTERM');
  await new Promise((r) => (slapd && slapd.exitCode === null ? slapd.once('exit', r) : r(undefined)));
  await fs.rm(dir, { recursive: true, force: true });
});

test('members in slapd submit with PLAIN (swaks) and LOGIN (nodemailer) through Cyrus saslauthd', async () => {
  const r = await runProgram('swaks', ['--server', `127.0.0.1:${ports.submission}`, '--tls', '--auth', 'PLAIN', '--auth-user', 'alice', '--auth-password', MEMBERS.alice, '--from', 'alice@picasoft.test', '--to', 'friend@elsewhere.test', '--hide-all']);
  assert.equal(r.code, 0, r.stdout);
  const t = nodemailer.createTransport({ host: '127.0.0.1', port: ports.submissions, secure: true, authMethod: 'LOGIN', auth: { user: 'bob', pass: MEMBERS.bob }, tls: { rejectUnauthorized: false } });
  const info = await t.sendMail({ from: 'bob@picasoft.test', to: 'friend@elsewhere.test', subject: 'ldap', text: 'hi' });
  assert.match(info.response, /^250 2\.0\.0 Ok: queued as /);
  t.close();
});

test('wrong LDAP password: 535 5.7.8; another member\'s address: 553 5.7.1', async () => {
  const c = await RawSmtp.connect(ports.submissions, { tls: true });
  await c.reply();
  await c.cmd('EHLO client.test');
  assert.equal(await c.cmd(`AUTH PLAIN ${b64('\0alice\0not her password')}`), '535 5.7.8 Authentication credentials invalid');
  assert.match(await c.cmd(`AUTH PLAIN ${b64(`\0alice\0${MEMBERS.alice}`)}`), /^235 /);
  assert.equal(await c.cmd('MAIL FROM:<bob@picasoft.test>'), '553 5.7.1 Sender address rejected: not owned by user (bob@picasoft.test)');
  c.close();
});

test('port 25: no AUTH, members\' addresses refused from outsiders, local mail accepted', async () => {
  const c = await RawSmtp.connect(ports.inbound);
  await c.reply();
  assert.doesNotMatch(await c.cmd('EHLO outside.test'), /AUTH/);
  assert.match(await c.cmd('MAIL FROM:<alice@picasoft.test>'), /^553 5\.7\.1 /);
  assert.match(await c.cmd('MAIL FROM:<someone@outside.test>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<alice@picasoft.test>'), /^250 /);
  assert.equal(await c.cmd('RCPT TO:<victim@elsewhere.test>'), '554 5.7.1 Relay access denied');
  c.close();
});

test('slapd down behind Cyrus saslauthd: 535, because Cyrus answers a plain NO (facteur authd answers [UNAVAILABLE] → 454)', async () => {
  slapd.kill('SIGTERM');
  await new Promise((r) => (slapd.exitCode === null ? slapd.once('exit', r) : r(undefined)));
  const c = await RawSmtp.connect(ports.submissions, { tls: true });
  await c.reply();
  await c.cmd('EHLO client.test');
  assert.equal(await c.cmd(`AUTH PLAIN ${b64(`\0bob\0${MEMBERS.bob}`)}`), '535 5.7.8 Authentication credentials invalid');
  c.close();
});
