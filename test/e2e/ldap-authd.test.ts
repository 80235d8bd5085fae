// `facteur authd -a ldap` end to end: the real Cyrus testsaslauthd and raw saslauthd-protocol requests against facteur authd with the LDAP
// backend on a real slapd, side by side with the real Cyrus `saslauthd -a ldap` on the same saslauthd.conf; realms; outages; --explain.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startSlapd, type Slapd, type LdapUser } from '../helpers/slapd.js';
import { startFacteurAuthd, startCyrusSaslauthd, testsaslauthd, facteur, type Daemon } from '../helpers/authd.js';
import { freePort, tempDir } from '../helpers/net.js';
import { saslauthdRequest } from '../../src/auth/client/saslauthd.js';
import { parseReply } from '../../src/auth/types.js';

let slapd: Slapd;
let dir: string;
const daemons: Daemon[] = [];
let ours: Daemon, cyrus: Daemon, realmOurs: Daemon, realmCyrus: Daemon, down: Daemon, tlsOurs: Daemon, seedOurs: Daemon, seedCyrus: Daemon;
let confFile: string;

const ask = async (d: Daemon, login: string, password: string, realm = '', service = 'smtp'): Promise<string> =>
  (await saslauthdRequest(d.socket, [login, password, service, realm], AbortSignal.timeout(20_000))).text;

async function conf(name: string, body: string): Promise<string> {
  const f = path.join(dir, name);
  await fs.writeFile(f, body);
  return f;
}

async function runDir(name: string): Promise<string> {
  const p = path.join(dir, name);
  await fs.mkdir(p);
  return p;
}

async function daemon(start: Promise<Daemon>): Promise<Daemon> {
  const d = await start;
  daemons.push(d);
  return d;
}

const u = (login: string): LdapUser => slapd.users.find((x) => x.login === login)!;

before(async () => {
  slapd = await startSlapd();
  dir = await tempDir('facteur-ldap-authd-');
  const common = `ldap_servers: ${slapd.url}/
ldap_bind_dn: ${slapd.bindDn}
ldap_bind_pw: ${slapd.bindPw}
ldap_search_base: ${slapd.peopleDn}
ldap_timeout: 5
`;
  confFile = await conf('saslauthd.conf', `${common}ldap_filter: (uid=%u)\n`);
  const realmConf = await conf('realm.conf', `${common}ldap_filter: (mail=%U@%r)\n`);
  const downConf = await conf('down.conf', `ldap_servers: ldap://127.0.0.1:${await freePort()}/\nldap_timeout: 2\n`);
  const tlsConf = await conf('tls.conf', `${common}ldap_start_tls: yes\nldap_tls_cacert_file: ${slapd.caFile}\nldap_filter: (uid=%u)\n`);
  // The seed how-to's saslauthd.conf, unchanged but for the server address (bare filter `cn=%u`, search from the root).
  const seedText = await fs.readFile(path.join(import.meta.dirname, '../fixtures/ldap/seed-saslauthd.conf'), 'utf8');
  const seedConf = await conf('seed.conf', seedText.replace(/^ldap_servers: .*$/m, `ldap_servers: ${slapd.url}`));
  [ours, cyrus, realmOurs, realmCyrus, down, tlsOurs, seedOurs, seedCyrus] = await Promise.all([
    daemon(startFacteurAuthd(await runDir('ours'), ['-a', 'ldap', '-O', confFile, '--no-penalty'])),
    daemon(startCyrusSaslauthd(await runDir('cyrus'), ['-a', 'ldap', '-O', confFile])),
    daemon(startFacteurAuthd(await runDir('realm-ours'), ['-a', 'ldap', '-O', realmConf, '--no-penalty'])),
    daemon(startCyrusSaslauthd(await runDir('realm-cyrus'), ['-a', 'ldap', '-O', realmConf])),
    daemon(startFacteurAuthd(await runDir('down'), ['-a', 'ldap', '-O', downConf, '--no-penalty'])),
    daemon(startFacteurAuthd(await runDir('tls'), ['-a', 'ldap', '-O', tlsConf, '--no-penalty'])),
    daemon(startFacteurAuthd(await runDir('seed-ours'), ['-a', 'ldap', '-O', seedConf, '--no-penalty'])),
    daemon(startCyrusSaslauthd(await runDir('seed-cyrus'), ['-a', 'ldap', '-O', seedConf])),
  ]);
});

after(async () => {
  for (const d of daemons) await d.stop();
  await slapd?.stop();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

test('testsaslauthd through facteur authd: every hostile user, right and wrong password, unknown user', async () => {
  for (const user of slapd.users) {
    const good = await testsaslauthd(ours.socket, ['-u', user.login, '-p', user.password, '-s', 'smtp']);
    assert.equal(good.code, 0, `${user.login}: ${good.stdout}`);
    assert.match(good.stdout, /^0: OK "Success\."/);
    const bad = await testsaslauthd(ours.socket, ['-u', user.login, '-p', `${user.password}!`, '-s', 'smtp']);
    assert.notEqual(bad.code, 0, user.login);
    assert.match(bad.stdout, /^0: NO "authentication failed"/);
  }
  const none = await testsaslauthd(ours.socket, ['-u', 'nobody', '-p', 'x', '-s', 'smtp']);
  assert.match(none.stdout, /^0: NO "authentication failed"/);
});

test('facteur authd and Cyrus saslauthd -a ldap give identical replies on the same saslauthd.conf', async () => {
  const requests: Array<[string, string]> = [];
  for (const user of slapd.users) requests.push([user.login, user.password], [user.login, `x${user.password}`]);
  for (const x of slapd.bulkUsers.slice(0, 10)) requests.push([x.login, x.password], [x.login, 'pass']);
  requests.push(['nobody', 'x'], ['*', u('alice').password], ['alice)(uid=*', u('alice').password], ['al*', u('alice').password]);
  for (const [login, pw] of requests) {
    const [a, b] = await Promise.all([ask(ours, login, pw), ask(cyrus, login, pw)]);
    assert.equal(a, b, JSON.stringify(login));
    assert.match(a, /^(OK|NO)$/);
    const [t1, t2] = await Promise.all([testsaslauthd(ours.socket, ['-u', login, '-p', pw]), testsaslauthd(cyrus.socket, ['-u', login, '-p', pw])]);
    assert.deepEqual(t1, t2, login);
  }
});

test('user@realm split: login alice + realm picasoft.net with (mail=%U@%r), as Cyrus does', async () => {
  const alice = u('alice');
  for (const d of [realmOurs, realmCyrus]) {
    const ok = await testsaslauthd(d.socket, ['-u', 'alice', '-r', 'picasoft.net', '-p', alice.password, '-s', 'smtp']);
    assert.match(ok.stdout, /^0: OK/, ok.stdout);
    const wrongRealm = await testsaslauthd(d.socket, ['-u', 'alice', '-r', 'example.org', '-p', alice.password, '-s', 'smtp']);
    assert.match(wrongRealm.stdout, /^0: NO/);
    const wrongPw = await testsaslauthd(d.socket, ['-u', 'alice', '-r', 'picasoft.net', '-p', 'nope', '-s', 'smtp']);
    assert.match(wrongPw.stdout, /^0: NO/);
  }
  const carol = u('carol@picasoft.net');
  assert.equal(await ask(realmOurs, 'carol', carol.password, 'picasoft.net'), 'OK');
  assert.equal(await ask(realmOurs, 'carol', carol.password, 'picasoft.net'), await ask(realmCyrus, 'carol', carol.password, 'picasoft.net'));
});

test('StartTLS with the test CA through the daemon', async () => {
  const r = await testsaslauthd(tlsOurs.socket, ['-u', 'josé', '-p', u('josé').password, '-s', 'smtp']);
  assert.match(r.stdout, /^0: OK/);
  assert.equal(await ask(tlsOurs, 'josé', 'bad'), 'NO');
});

test('directory down: NO [UNAVAILABLE] (tempfail), never a plain NO', async () => {
  const t = await ask(down, 'alice', 'whatever');
  assert.match(t, /^NO \[UNAVAILABLE\]/);
  assert.equal(parseReply(t).verdict, 'tempfail');
  const r = await testsaslauthd(down.socket, ['-u', 'alice', '-p', 'x']);
  assert.match(r.stdout, /^0: NO/);
});

test('empty password: NO from both daemons, same text', async () => {
  const [a, b] = await Promise.all([ask(ours, 'alice', ''), ask(cyrus, 'alice', '')]);
  assert.match(a, /^NO/);
  assert.equal(a, b);
});

test('hostile requests: NUL-free oversized login, control characters', async () => {
  for (const login of ['a'.repeat(5000), 'alice\n', 'alice\r', 'alice\u0001', '\u007f']) {
    const t = await ask(ours, login, u('alice').password);
    assert.equal(parseReply(t).verdict, 'fail', `${JSON.stringify(login.slice(0, 10))}: ${t}`);
  }
  assert.equal(await ask(ours, 'alice', u('alice').password), 'OK');
});

test('concurrent requests from many clients all get the right answer', async () => {
  const jobs = slapd.bulkUsers.flatMap((x) => [ask(ours, x.login, x.password).then((t) => assert.equal(t, 'OK', x.login)), ask(ours, x.login, 'no').then((t) => assert.equal(t, 'NO'))]);
  await Promise.all(jobs);
});

test('facteur testauth --explain -a ldap shows the LDAP steps and never the password', async () => {
  const alice = u('alice');
  const r = await facteur(['testauth', '--explain', '-u', 'alice', '-p', '-', '-s', 'smtp', '-f', ours.socket, '-a', 'ldap', '-O', confFile], `${alice.password}\n`);
  const out = r.stdout + r.stderr;
  assert.match(out, /search base "ou=people,dc=picasoft,dc=net" scope sub filter \(uid=alice\)/, out);
  assert.match(out, /found DN uid=alice,ou=people,dc=picasoft,dc=net/);
  assert.match(out, /bind as uid=alice,ou=people,dc=picasoft,dc=net: success/);
  assert.ok(!out.includes(alice.password));
});

test('facteur authd refuses to start on a bad saslauthd.conf, naming the key and line', async () => {
  const bad = await conf('bad.conf', `ldap_servers: ${slapd.url}\nldap_tls_check_peer: no\n`);
  const r = await facteur(['authd', '-d', '-m', await runDir('bad'), '-a', 'ldap', '-O', bad]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /line 2: ldap_tls_check_peer/);
  const unknown = await conf('unknown.conf', 'ldap_use_sasl: yes\n');
  const r2 = await facteur(['authd', '-d', '-m', await runDir('unknown'), '-a', 'ldap', '-O', unknown]);
  assert.notEqual(r2.code, 0);
  assert.match(r2.stderr, /ldap_use_sasl/);
});

test('passwords longer than 127 bytes: Cyrus truncates them (and refuses the right one), facteur checks all of it', async () => {
  const user = slapd.bulkUsers[99]!;
  const long = 'é'.repeat(70) + ' and the end';
  await slapd.modify(`dn: ${user.dn}\nchangetype: modify\nreplace: userPassword\nuserPassword:: ${Buffer.from(long).toString('base64')}\n`);
  assert.equal(await ask(ours, user.login, long), 'OK');
  assert.equal(await ask(cyrus, user.login, long), 'NO');
  assert.equal(await ask(ours, user.login, long.slice(0, -1)), 'NO');
  assert.equal(await ask(ours, user.login, long.slice(0, 63)), 'NO');
});

test("the seed how-to's saslauthd.conf (ldap_filter: cn=%u) works unchanged, with the same replies as Cyrus", async () => {
  const requests: Array<[string, string]> = [];
  for (const user of slapd.users) requests.push([user.login, user.password], [user.login, 'wrong']);
  requests.push(['user5', 'pass5'], ['nobody', 'x'], ['*', u('alice').password]);
  for (const [login, pw] of requests) {
    const [a, b] = await Promise.all([ask(seedOurs, login, pw), ask(seedCyrus, login, pw)]);
    assert.equal(a, b, JSON.stringify(login));
  }
  assert.equal(await ask(seedOurs, 'alice', u('alice').password), 'OK');
});
