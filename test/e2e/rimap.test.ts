// rimap end to end: `facteur authd -a rimap` against a real Dovecot (plain, STARTTLS, IMAPS), side by side with the real Cyrus saslauthd,
// then against a misbehaving fake IMAP server through both daemons; a stopped Dovecot is a temporary failure, not a wrong password.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { startDovecot, type Dovecot } from '../helpers/dovecot.js';
import { startFacteurAuthd, startCyrusSaslauthd, testsaslauthd, type Daemon } from '../helpers/authd.js';
import { tempDir } from '../helpers/net.js';
import { saslauthdRequest } from '../../src/auth/client/saslauthd.js';
import { parseReply } from '../../src/auth/types.js';

let dv: Dovecot;
let dir: string;
const daemons: Daemon[] = [];
let plain: Daemon, starttls: Daemon, imaps: Daemon, wrongCa: Daemon, systemCa: Daemon, cyrus: Daemon;
let fakeFacteur: Daemon, fakeCyrus: Daemon;
let fake: net.Server;
let fakeReply: { greeting: string; reply: string } = { greeting: '* OK hi\r\n', reply: 'saslauthd OK\r\n' };

const ask = async (d: Daemon, login: string, password: string): Promise<string> =>
  (await saslauthdRequest(d.socket, [login, password, 'imap', ''], AbortSignal.timeout(40_000))).text;

async function daemon(start: Promise<Daemon>): Promise<Daemon> {
  const d = await start;
  daemons.push(d);
  return d;
}

before(async () => {
  dir = await tempDir('facteur-rimap-e2e-');
  // Dovecot's own failure delay, kept (its default, 2 s) to show that a slow NO does not hold up other requests.
  dv = await startDovecot({ authFailureDelay: '2s' });
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=other CA', '-keyout', 'other.key', '-out', 'other.pem', '-days', '2'], { cwd: dir, stdio: 'ignore' });
  fake = net.createServer((sock) => {
    sock.on('error', () => undefined);
    const { greeting, reply } = fakeReply;
    sock.write(greeting);
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      if (buf.includes('LOGIN') && buf.endsWith('\r\n') && !buf.includes('LOGOUT')) sock.write(reply);
      if (buf.includes('LOGOUT')) sock.end();
    });
  });
  await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
  const fakePort = (fake.address() as net.AddressInfo).port;
  const run = async (name: string) => {
    const p = path.join(dir, name);
    await fs.mkdir(p);
    return p;
  };
  [plain, starttls, imaps, wrongCa, systemCa, cyrus, fakeFacteur, fakeCyrus] = await Promise.all([
    daemon(startFacteurAuthd(await run('plain'), ['-a', 'rimap', '-O', `127.0.0.1/${dv.imapPort}`])),
    daemon(startFacteurAuthd(await run('starttls'), ['-a', 'rimap', '-O', `imap+starttls://localhost:${dv.imapPort}?ca=${dv.caFile}`])),
    daemon(startFacteurAuthd(await run('imaps'), ['-a', 'rimap', '-O', `imaps://127.0.0.1:${dv.imapsPort}?ca=${dv.caFile}`])),
    daemon(startFacteurAuthd(await run('wrongca'), ['-a', 'rimap', '-O', `imaps://localhost:${dv.imapsPort}?ca=${path.join(dir, 'other.pem')}`])),
    daemon(startFacteurAuthd(await run('systemca'), ['-a', 'rimap', '-O', `imap+starttls://127.0.0.1:${dv.imapPort}`])),
    daemon(startCyrusSaslauthd(await run('cyrus'), ['-a', 'rimap', '-O', `127.0.0.1/${dv.imapPort}`, '-n', '5'])),
    daemon(startFacteurAuthd(await run('fake-facteur'), ['-a', 'rimap', '-O', `127.0.0.1/${fakePort}`])),
    daemon(startCyrusSaslauthd(await run('fake-cyrus'), ['-a', 'rimap', '-O', `127.0.0.1/${fakePort}`, '-n', '1'])),
  ]);
});

after(async () => {
  await Promise.all(daemons.map((d) => d.stop()));
  await new Promise((r) => fake?.close(r));
  await dv?.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

test('every hostile user: right password OK, wrong password NO, over plain, STARTTLS and implicit TLS', async () => {
  const checks: Array<Promise<void>> = [];
  for (const [name, d] of [['plain', plain], ['starttls', starttls], ['imaps', imaps]] as const) {
    for (const [login, pw] of Object.entries(dv.users)) {
      checks.push(ask(d, login, pw).then((t) => assert.equal(t, 'OK remote authentication successful', `${name} ${login}`)));
      checks.push(ask(d, login, `${pw} `).then((t) => assert.equal(t, 'NO remote server rejected your credentials', `${name} ${login}`)));
      checks.push(ask(d, login, pw.slice(0, -1)).then((t) => assert.equal(t, 'NO remote server rejected your credentials', `${name} ${login}`)));
    }
    checks.push(ask(d, 'nobody@example.org', 'x').then((t) => assert.equal(t, 'NO remote server rejected your credentials')));
  }
  await Promise.all(checks);
});

test('the real testsaslauthd sees the same through facteur authd', async () => {
  for (const d of [plain, starttls, imaps]) {
    const good = await testsaslauthd(d.socket, ['-u', 'bob@example.org', '-p', dv.users['bob@example.org']!]);
    assert.deepEqual([good.code, good.stdout], [0, '0: OK "Success."\n']);
    const bad = await testsaslauthd(d.socket, ['-u', 'bob@example.org', '-p', 'pa"ss\\wd2']);
    assert.deepEqual([bad.code, bad.stdout], [255, '0: NO "authentication failed"\n']);
  }
});

test('Cyrus saslauthd -a rimap and facteur authd -a rimap give byte-identical replies for the same requests', async () => {
  const requests: Array<[string, string]> = [];
  for (const [login, pw] of Object.entries(dv.users)) requests.push([login, pw], [login, `x${pw}`]);
  requests.push(['nobody@example.org', 'x'], ['bob@example.org', '"'], ['bob@example.org', '\\']);
  await Promise.all(
    requests.map(async ([login, pw]) => {
      const [ours, theirs] = await Promise.all([ask(plain, login, pw), ask(cyrus, login, pw)]);
      assert.equal(ours, theirs, `${login}`);
      assert.match(ours, /^(OK remote authentication successful|NO remote server rejected your credentials)$/);
      const [t1, t2] = await Promise.all([testsaslauthd(plain.socket, ['-u', login, '-p', pw]), testsaslauthd(cyrus.socket, ['-u', login, '-p', pw])]);
      assert.deepEqual(t1, t2);
    }),
  );
});

test('a certificate from another CA, or not trusted by the system, is refused as a temporary failure', async () => {
  for (const d of [wrongCa, systemCa]) {
    const t = await ask(d, 'alice@example.org', dv.users['alice@example.org']!);
    assert.match(t, /^NO \[UNAVAILABLE\] TLS with the remote authentication server failed/);
    assert.equal(parseReply(t).verdict, 'tempfail');
  }
});

test("Dovecot's failure delay does not hold up other requests: a good password answered during a wrong one's delay", async () => {
  const order: string[] = [];
  const bad = ask(plain, 'carol@example.org', 'wrong').then((t) => order.push(`bad:${t}`));
  // Let the wrong password reach Dovecot first.
  await new Promise((r) => setTimeout(r, 200));
  const good = ask(plain, 'alice@example.org', dv.users['alice@example.org']!).then((t) => order.push(`good:${t}`));
  await Promise.all([bad, good]);
  assert.deepEqual(order, ['good:OK remote authentication successful', 'bad:NO remote server rejected your credentials']);
});

const fakeCases: Array<[string, { greeting: string; reply: string }]> = [
  ['* PREAUTH greeting', { greeting: '* PREAUTH hello\r\n', reply: 'saslauthd OK\r\n' }],
  ['garbage greeting', { greeting: 'SSH-2.0-OpenSSH * x\r\n', reply: 'saslauthd OK\r\n' }],
  ['1000-byte greeting', { greeting: `* OK ${'g'.repeat(1100)}\r\n`, reply: 'saslauthd OK\r\n' }],
  ['BAD reply', { greeting: '* OK hi\r\n', reply: 'saslauthd BAD parse error\r\n' }],
  ['untagged line before OK', { greeting: '* OK hi\r\n', reply: '* OK [ALERT] hi\r\nsaslauthd OK\r\n' }],
  ['CAPABILITY then OK', { greeting: '* OK hi\r\n', reply: '* CAPABILITY IMAP4rev1\r\nsaslauthd OK Logged in\r\n' }],
  ['1000-byte reply', { greeting: '* OK hi\r\n', reply: `saslauthd OK ${'r'.repeat(1100)}\r\n` }],
  ['NO reply', { greeting: '* OK hi\r\n', reply: 'saslauthd NO [AUTHENTICATIONFAILED] nope\r\n' }],
];

test('a misbehaving IMAP server: facteur gives exactly the Cyrus texts', async () => {
  for (const [name, c] of fakeCases) {
    fakeReply = c;
    const theirs = await ask(fakeCyrus, 'alice', 'pw');
    const ours = await ask(fakeFacteur, 'alice', 'pw');
    assert.equal(ours, theirs, name);
    if (name === 'CAPABILITY then OK') assert.equal(ours, 'OK remote authentication successful');
    else assert.match(ours, /^NO /, name);
  }
});

test('greeting * BYE / * NO: Cyrus says NO [ALERT] ... unavailable, facteur the same words as a temporary failure', async () => {
  for (const greeting of ['* BYE shutting down\r\n', '* NO overloaded\r\n']) {
    fakeReply = { greeting, reply: 'saslauthd OK\r\n' };
    const theirs = await ask(fakeCyrus, 'alice', 'pw');
    const ours = await ask(fakeFacteur, 'alice', 'pw');
    assert.equal(theirs, 'NO [ALERT] The remote authentication server is currently unavailable');
    assert.equal(ours, 'NO [UNAVAILABLE] The remote authentication server is currently unavailable');
    assert.equal(parseReply(theirs).verdict, 'tempfail');
    assert.equal(parseReply(ours).verdict, 'tempfail');
  }
});

test('Dovecot stopped mid-test: a temporary failure (not a wrong password) until it is back, with no restart of authd', async () => {
  const alice = dv.users['alice@example.org']!;
  assert.equal(await ask(plain, 'alice@example.org', alice), 'OK remote authentication successful');
  await dv.stop(true);
  for (const d of [plain, starttls, imaps]) {
    const t = await ask(d, 'alice@example.org', alice);
    assert.equal(t, "NO [UNAVAILABLE] Couldn't contact remote authentication server");
    assert.equal(parseReply(t).verdict, 'tempfail');
  }
  const theirs = await ask(cyrus, 'alice@example.org', alice);
  assert.equal(theirs, "NO [ALERT] Couldn't contact remote authentication server");
  assert.equal(parseReply(theirs).verdict, 'tempfail');
  await dv.restart();
  for (const d of [plain, starttls, imaps]) assert.equal(await ask(d, 'alice@example.org', alice), 'OK remote authentication successful');
});
