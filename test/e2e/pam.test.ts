// PAM end to end: a temporary /etc/pam.d service using pam_pwdfile (hashes from `openssl passwd -6`), in process,
// through `facteur authd -a pam` with the real testsaslauthd, and side by side with the real Cyrus `saslauthd -a pam`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { createPamBackend, pamReply, pamConcurrency } from '../../src/auth/backends/pam.js';
import { startFacteurAuthd, startCyrusSaslauthd, testsaslauthd, type Daemon } from '../helpers/authd.js';
import { tempDir } from '../helpers/net.js';
import { saslauthdRequest } from '../../src/auth/client/saslauthd.js';
import type { AuthBackend } from '../../src/auth/types.js';

const USERS: Record<string, string> = {
  'pam-alice': 'correct horse battery staple',
  'pam-bob@example.org': 'pa"ss\\wd {x}',
  'pam-carol': 'mot de passe é ü 密码',
};
const id = randomBytes(4).toString('hex');
const SERVICE = `facteur-test-${id}`;
const DENY_ACCT = `facteur-test-${id}-acct`;
const DENY_ALL = `facteur-test-${id}-deny`;
const DELAYED = `facteur-test-${id}-delay`;
const NO_FILE = `facteur-test-${id}-nofile`;
let dir: string;
let backend: AuthBackend;
const daemons: Daemon[] = [];
let ours: Daemon, cyrus: Daemon;

const verify = (login: string, password: string, service = SERVICE) =>
  backend.verify({ login, password, service, realm: '' }, { signal: AbortSignal.timeout(20_000) });
const ask = async (d: Daemon, login: string, password: string, service = SERVICE) =>
  (await saslauthdRequest(d.socket, [login, password, service, ''], AbortSignal.timeout(30_000))).text;

before(async () => {
  dir = await tempDir('facteur-pam-');
  const lines = Object.entries(USERS).map(([u, p]) => `${u}:${execFileSync('openssl', ['passwd', '-6', '-stdin'], { input: p, encoding: 'utf8' }).trim()}\n`);
  const pwdfile = path.join(dir, 'passwd');
  await fs.writeFile(pwdfile, lines.join(''), { mode: 0o600 });
  // nodelay: pam_pwdfile would otherwise ask for a 2 s failure delay on every wrong password.
  await fs.writeFile(`/etc/pam.d/${SERVICE}`, `auth required pam_pwdfile.so pwdfile=${pwdfile} nodelay\naccount required pam_permit.so\n`);
  // pam_localuser refuses the account (PAM_PERM_DENIED: these users are not in /etc/passwd) once the password is right.
  await fs.writeFile(`/etc/pam.d/${DENY_ACCT}`, `auth required pam_pwdfile.so pwdfile=${pwdfile} nodelay\naccount required pam_localuser.so\n`);
  // Without nodelay: libpam sleeps about 2 s after a wrong password (pam_fail_delay), inside the PAM call.
  await fs.writeFile(`/etc/pam.d/${DELAYED}`, `auth required pam_pwdfile.so pwdfile=${pwdfile}\naccount required pam_permit.so\n`);
  // pam_deny answers PAM_AUTH_ERR in the account stack too: see the known difference below.
  await fs.writeFile(`/etc/pam.d/${DENY_ALL}`, `auth required pam_pwdfile.so pwdfile=${pwdfile} nodelay\naccount required pam_deny.so\n`);
  backend = await createPamBackend(undefined, { log: () => {} });
  const runA = path.join(dir, 'run-facteur');
  const runB = path.join(dir, 'run-cyrus');
  await Promise.all([fs.mkdir(runA), fs.mkdir(runB)]);
  [ours, cyrus] = await Promise.all([startFacteurAuthd(runA, ['-a', 'pam']), startCyrusSaslauthd(runB, ['-a', 'pam', '-n', '3'])]);
  daemons.push(ours, cyrus);
});

after(async () => {
  await Promise.all(daemons.map((d) => d.stop()));
  await fs.rm(`/etc/pam.d/${SERVICE}`, { force: true });
  await fs.rm(`/etc/pam.d/${DENY_ACCT}`, { force: true });
  await fs.rm(`/etc/pam.d/${DENY_ALL}`, { force: true });
  await fs.rm(`/etc/pam.d/${DELAYED}`, { force: true });
  await fs.rm(dir, { recursive: true, force: true });
});

test('right password OK, wrong password NO PAM auth error, unknown user NO PAM auth error', async () => {
  for (const [u, p] of Object.entries(USERS)) {
    assert.deepEqual(await verify(u, p), { verdict: 'ok', reason: '', addresses: undefined }, u);
    assert.deepEqual(await verify(u, `${p}x`), { verdict: 'fail', reason: 'PAM auth error' }, u);
    assert.deepEqual(await verify(u, p.slice(1)), { verdict: 'fail', reason: 'PAM auth error' }, u);
  }
  assert.deepEqual(await verify('pam-nobody', 'x'), { verdict: 'fail', reason: 'PAM auth error' });
  assert.deepEqual(await verify('pam-alice', 'x\0correct horse battery staple'), { verdict: 'fail', reason: 'PAM auth error' });
});

test('account management runs after authentication: pam_localuser refusing the account gives NO PAM acct error', async () => {
  assert.deepEqual(await verify('pam-alice', USERS['pam-alice']!, DENY_ACCT), { verdict: 'fail', reason: 'PAM acct error' });
  assert.deepEqual(await verify('pam-alice', 'wrong', DENY_ACCT), { verdict: 'fail', reason: 'PAM auth error' });
});

test('a service without a file falls back to /etc/pam.d/other, which denies these users', async () => {
  await assert.rejects(fs.stat(`/etc/pam.d/${NO_FILE}`));
  assert.deepEqual(await verify('pam-alice', USERS['pam-alice']!, NO_FILE), { verdict: 'fail', reason: 'PAM auth error' });
});

test('concurrent requests (more than the slot count) all get their own right answer', async () => {
  const n = pamConcurrency() * 4;
  const jobs = Array.from({ length: n }, (_, i) => {
    const [u, p] = Object.entries(USERS)[i % 3]!;
    return verify(u, i % 2 ? p : `${p}!`).then((r) => [i, r.verdict] as const);
  });
  for (const [i, v] of await Promise.all(jobs)) assert.equal(v, i % 2 ? 'ok' : 'fail', String(i));
});

test("PAM runs off the event loop: during a wrong password's fail delay, timers fire and another user gets in", async () => {
  const order: string[] = [];
  const slow = verify('pam-alice', 'wrong', DELAYED).then((r) => order.push(`slow:${r.verdict}`));
  await new Promise((r) => setTimeout(r, 100));
  order.push('timer');
  await verify('pam-carol', USERS['pam-carol']!, DELAYED).then((r) => order.push(`fast:${r.verdict}`));
  await slow;
  assert.deepEqual(order, ['timer', 'fast:ok', 'slow:fail']);
});

test('reply mapping and slot count', () => {
  assert.deepEqual(pamReply(0), { verdict: 'ok', reason: '' });
  assert.equal(pamReply(7).reason, 'PAM auth error');
  assert.equal(pamReply(10).reason, 'PAM auth error');
  assert.equal(pamReply(13).reason, 'PAM acct error');
  assert.equal(pamReply(12).reason, 'PAM acct error');
  assert.equal(pamReply(6).reason, 'PAM acct error');
  assert.equal(pamReply(26).reason, 'PAM start error');
  assert.equal(pamConcurrency({}), 3);
  assert.equal(pamConcurrency({ UV_THREADPOOL_SIZE: '16' }), 15);
  assert.equal(pamConcurrency({ UV_THREADPOOL_SIZE: '1' }), 1);
});

test('facteur authd -a pam and Cyrus saslauthd -a pam: same replies, byte for byte; testsaslauthd agrees', async () => {
  const requests: Array<[string, string, string]> = [];
  for (const [u, p] of Object.entries(USERS)) requests.push([u, p, SERVICE], [u, `${p} `, SERVICE], [u, p, DENY_ACCT], [u, p, NO_FILE]);
  requests.push(['pam-nobody', 'x', SERVICE]);
  for (const [u, p, s] of requests) {
    const [a, b] = await Promise.all([ask(ours, u, p, s), ask(cyrus, u, p, s)]);
    assert.equal(a, b, `${u} ${s}`);
    assert.match(a, /^(OK|NO PAM auth error|NO PAM acct error)$/);
  }
  // Known difference: node-linux-pam reports only the last PAM code, not the step. pam_deny in the account stack returns
  // PAM_AUTH_ERR, which Cyrus (knowing the step) calls an acct error and facteur an auth error. Both refuse.
  const [a, b] = await Promise.all([ask(ours, 'pam-alice', USERS['pam-alice']!, DENY_ALL), ask(cyrus, 'pam-alice', USERS['pam-alice']!, DENY_ALL)]);
  assert.deepEqual([a, b], ['NO PAM auth error', 'NO PAM acct error']);
  const good = await testsaslauthd(ours.socket, ['-u', 'pam-carol', '-p', USERS['pam-carol']!, '-s', SERVICE]);
  assert.deepEqual([good.code, good.stdout], [0, '0: OK "Success."\n']);
  const bad = await testsaslauthd(ours.socket, ['-u', 'pam-carol', '-p', 'nope', '-s', SERVICE]);
  assert.deepEqual([bad.code, bad.stdout], [255, '0: NO "authentication failed"\n']);
});
