// facteur serve checking passwords in-process against a real slapd over LDAPS (CA verified), with no saslauthd hop:
// the addresses a member may send from come from the directory's `mail` attribute (aliases included), and a
// directory outage is a temporary failure (454), never a wrong password (535).
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { freePort, tempDir } from '../helpers/net.js';
import { startSlapd, type Slapd } from '../helpers/slapd.js';
import { spawnServe, RawSmtp, b64, runProgram, listenersToml, type ServeProcess } from '../helpers/serve.js';

let dir: string;
let slapd: Slapd;
let proc: ServeProcess;
let ports: { inbound: number; submission: number; submissions: number };

before(async () => {
  dir = await tempDir('facteur-smtp-ldap-inproc-');
  slapd = await startSlapd();
  await fs.writeFile(
    path.join(dir, 'saslauthd.conf'),
    [
      `ldap_servers: ${slapd.ldapsUrl}`,
      `ldap_tls_cacert_file: ${slapd.caFile}`,
      `ldap_bind_dn: ${slapd.bindDn}`,
      `ldap_bind_pw: ${slapd.bindPw}`,
      `ldap_search_base: ${slapd.peopleDn}`,
      'ldap_filter: (uid=%u)',
      'ldap_timeout: 2',
    ].join('\n') + '\n',
  );
  ports = { inbound: await freePort(), submission: await freePort(), submissions: await freePort() };
  await fs.writeFile(
    path.join(dir, 'facteur.toml'),
    `[server]
hostname = "mail.picasoft.net"
data_dir = ${JSON.stringify(path.join(dir, 'data'))}
local_domains = ["picasoft.net"]
log_level = "warn"
[auth]
backend = "ldap"
option = ${JSON.stringify(path.join(dir, 'saslauthd.conf'))}
[metrics]
listen = ""
${listenersToml(ports)}`,
  );
  proc = await spawnServe(['--config', path.join(dir, 'facteur.toml')], { FACTEUR_RATELIMIT_CONNECTIONS_PER_IP_PER_MINUTE: '0' }, ports.submissions);
});

after(async () => {
  await proc?.stop();
  await slapd?.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

const alice = () => slapd.users.find((u) => u.login === 'alice')!;

test('a member sends from each address the directory lists for them (swaks, STARTTLS + PLAIN)', async () => {
  for (const from of alice().mail) {
    const r = await runProgram('swaks', ['--server', `127.0.0.1:${ports.submission}`, '--tls', '--auth', 'PLAIN', '--auth-user', 'alice', '--auth-password', alice().password, '--from', from, '--to', 'friend@elsewhere.test', '--hide-all']);
    assert.equal(r.code, 0, `${from}: ${r.stdout}${r.stderr}`);
  }
});

test("another member's address is refused (553 5.7.1); a wrong password is 535 5.7.8", async () => {
  const c = await RawSmtp.connect(ports.submissions, { tls: true });
  await c.reply();
  await c.cmd('EHLO client.test');
  assert.equal(await c.cmd(`AUTH PLAIN ${b64(`\0alice\0${alice().password}x`)}`), '535 5.7.8 Authentication credentials invalid');
  assert.match(await c.cmd(`AUTH PLAIN ${b64(`\0alice\0${alice().password}`)}`), /^235 /);
  assert.match(await c.cmd('MAIL FROM:<bob@picasoft.net>'), /^553 5\.7\.1 /);
  assert.match(await c.cmd(`MAIL FROM:<${alice().mail[1]}>`), /^250 /);
  c.close();
});

test('the directory down is a temporary failure: 454 4.7.0, and logins work again once it is back', async () => {
  await slapd.halt();
  try {
    const c = await RawSmtp.connect(ports.submissions, { tls: true });
    await c.reply();
    await c.cmd('EHLO client.test');
    assert.match(await c.cmd(`AUTH PLAIN ${b64(`\0alice\0${alice().password}`)}`), /^454 4\.7\.0 /);
    c.close();
  } finally {
    await slapd.restart();
  }
  const c = await RawSmtp.connect(ports.submissions, { tls: true });
  await c.reply();
  await c.cmd('EHLO client.test');
  let reply = '';
  for (let i = 0; i < 20; i++) {
    reply = await c.cmd(`AUTH PLAIN ${b64(`\0alice\0${alice().password}`)}`);
    if (/^235 /.test(reply)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.match(reply, /^235 /);
  c.close();
});
