// -a shadow end to end against the real system files: temporary system users (useradd/chage/chpasswd), `facteur authd -a shadow`
// and the real Cyrus `saslauthd -a shadow` side by side give the same replies, yescrypt hashes (Debian 12's default) included.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { startFacteurAuthd, startCyrusSaslauthd, testsaslauthd, type Daemon } from '../helpers/authd.js';
import { tempDir } from '../helpers/net.js';
import { saslauthdRequest } from '../../src/auth/client/saslauthd.js';

const tag = `fct${randomBytes(3).toString('hex')}`;
const U = { good: `${tag}a`, acct: `${tag}b`, pwexp: `${tag}c`, yes: `${tag}d`, locked: `${tag}e` };
const PW = 'pa"ss\\wd é {x}';
let dir: string;
const daemons: Daemon[] = [];
let ours: Daemon, cyrus: Daemon;
const created: string[] = [];

const sh = (cmd: string, args: string[], input?: string) => execFileSync(cmd, args, { input, stdio: ['pipe', 'ignore', 'pipe'] });
const ask = async (d: Daemon, login: string, password: string) => (await saslauthdRequest(d.socket, [login, password, 'imap', ''], AbortSignal.timeout(20_000))).text;

before(async () => {
  dir = await tempDir('facteur-shadow-e2e-');
  const hash = execFileSync('openssl', ['passwd', '-6', '-stdin'], { input: PW, encoding: 'utf8' }).trim();
  for (const name of Object.values(U)) {
    sh('useradd', ['-M', '-N', '-s', '/usr/sbin/nologin', '-p', hash, name]);
    created.push(name);
  }
  sh('chage', ['-E', '1', U.acct]);
  sh('chage', ['-d', '2000-01-01', '-M', '10', U.pwexp]);
  sh('chpasswd', ['-c', 'YESCRYPT'], `${U.yes}:${PW}\n`);
  sh('usermod', ['-L', U.locked]);
  const a = path.join(dir, 'facteur');
  const b = path.join(dir, 'cyrus');
  await Promise.all([fs.mkdir(a), fs.mkdir(b)]);
  [ours, cyrus] = await Promise.all([startFacteurAuthd(a, ['-a', 'shadow']), startCyrusSaslauthd(b, ['-a', 'shadow', '-n', '2'])]);
  daemons.push(ours, cyrus);
});

after(async () => {
  await Promise.all(daemons.map((d) => d.stop()));
  for (const name of created) sh('userdel', [name]);
  await fs.rm(dir, { recursive: true, force: true });
});

test('the same replies as Cyrus saslauthd -a shadow, byte for byte', async () => {
  const cases: Array<[string, string, string]> = [
    [U.good, PW, 'OK'],
    [U.good, `${PW}!`, 'NO Incorrect password'],
    [`${tag}zz`, PW, 'NO Invalid username'],
    [U.acct, PW, 'NO Account expired'],
    [U.acct, 'wrong', 'NO Incorrect password'],
    [U.pwexp, PW, 'NO Password expired'],
    [U.locked, PW, 'NO Incorrect password'],
    ['daemon', 'x', 'NO Incorrect password'],
  ];
  for (const [login, pw, want] of cases) {
    const [a, b] = await Promise.all([ask(ours, login, pw), ask(cyrus, login, pw)]);
    assert.equal(b, want, `cyrus ${login}`);
    assert.equal(a, b, login);
  }
  const t = await testsaslauthd(ours.socket, ['-u', U.good, '-p', PW]);
  assert.deepEqual([t.code, t.stdout], [0, '0: OK "Success."\n']);
});

test('a yescrypt hash written by chpasswd (Debian 12 default): accepted by both, wrong password refused by both', async () => {
  const [a, b] = await Promise.all([ask(ours, U.yes, PW), ask(cyrus, U.yes, PW)]);
  assert.deepEqual([a, b], ['OK', 'OK']);
  const [c, d] = await Promise.all([ask(ours, U.yes, 'wrong'), ask(cyrus, U.yes, 'wrong')]);
  assert.deepEqual([c, d], ['NO Incorrect password', 'NO Incorrect password']);
});
