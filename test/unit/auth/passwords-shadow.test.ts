// The shadow backend on temporary passwd/shadow files: every upstream reply, in upstream's order, with hashes made by openssl/doveadm.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createShadowBackend, parseShadowOption, shadowVerify, shadowEntry, today, type ShadowPaths } from '../../../src/auth/backends/shadow.js';
import { ConfigError } from '../../../src/lib/errors.js';
import { tempDir } from '../../helpers/net.js';

let dir: string;
let paths: ShadowPaths;
const six = (pw: string) => execFileSync('openssl', ['passwd', '-6', '-stdin'], { input: pw, encoding: 'utf8' }).trim();
const five = (pw: string) => execFileSync('openssl', ['passwd', '-5', '-stdin'], { input: pw, encoding: 'utf8' }).trim();
const PW = 'pa"ss\\wd é {x}';
const logs: string[] = [];

before(async () => {
  dir = await tempDir('facteur-shadow-');
  paths = { passwd: path.join(dir, 'passwd'), shadow: path.join(dir, 'shadow') };
  const d = today();
  // libxcrypt's crypt(3), as chpasswd/passwd write it on Debian 12 (a cheaper cost than the default j9T, to keep the test short).
  const yescrypt = execFileSync('python3', ['-W', 'ignore', '-c', 'import crypt,sys; print(crypt.crypt(sys.stdin.read(), "$y$j75$F5Jx5fExrKuPp53xLKQ..1$"))'], { input: PW, encoding: 'utf8' }).trim();
  const users: Array<[string, string]> = [
    ['good', `${six(PW)}:${d - 10}:0:99999:7:::`],
    ['good5', `${five(PW)}:${d - 10}:0:99999:7:::`],
    ['nofields', `${six(PW)}:::::::`],
    ['acctexp', `${six(PW)}:${d - 10}:0:99999:7::${d - 1}:`],
    ['acctzero', `${six(PW)}:${d - 10}:0:99999:7::0:`],
    ['accttoday', `${six(PW)}:${d - 10}:0:99999:7::${d}:`],
    ['pwexp', `${six(PW)}:${d - 40}:0:30:7:::`],
    ['pwedge', `${six(PW)}:${d - 30}:0:30:7:::`],
    ['mustchange', `${six(PW)}:0:0:30:7:::`],
    ['locked', `!${six(PW)}:${d}:0:99999:7:::`],
    ['star', `*:${d}:0:99999:7:::`],
    ['empty', `:${d}:0:99999:7:::`],
    ['np', `*NP*:${d}:0:99999:7:::`],
    ['yes', `${yescrypt}:${d}:0:99999:7:::`],
    ['yesworm', `$y$/75$F5Jx5fExrKuPp53xLKQ..1$6z8bJ9aRId.8ArLYSYDplRF69XwusC3CguNEDPO713.:${d}:0:99999:7:::`],
    ['dove', `${execFileSync('doveadm', ['pw', '-s', 'SHA512-CRYPT', '-p', PW], { encoding: 'utf8' }).trim().replace('{SHA512-CRYPT}', '')}:${d}:0:99999:7:::`],
  ];
  await fs.writeFile(paths.passwd, [...users.map(([u]) => `${u}:x:2000:2000::/nonexistent:/usr/sbin/nologin`), 'onlypasswd:x:2001:2001::/:/bin/false', ''].join('\n'));
  await fs.writeFile(paths.shadow, [...users.map(([u, rest]) => `${u}:${rest}`), 'onlyshadow:' + six(PW) + ':::::::', ''].join('\n'), { mode: 0o600 });
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const check = (login: string, password = PW) => shadowVerify(paths, login, password, { log: (m) => logs.push(m) });

test('-O forms', () => {
  assert.deepEqual(parseShadowOption(undefined), { passwd: '/etc/passwd', shadow: '/etc/shadow' });
  assert.deepEqual(parseShadowOption('/x/shadow'), { passwd: '/etc/passwd', shadow: '/x/shadow' });
  assert.deepEqual(parseShadowOption('shadow=/x/s,passwd=/x/p'), { passwd: '/x/p', shadow: '/x/s' });
  assert.throws(() => parseShadowOption('shadow=/x/s,foo=1'), ConfigError);
  assert.deepEqual(shadowEntry('a:h:1:2:3:4:5:6:\n', 'a'), { name: 'a', hash: 'h', lastChange: 1, maxDays: 3, expire: 6 });
  assert.deepEqual(shadowEntry('a:h:::::::\n', 'a'), { name: 'a', hash: 'h', lastChange: -1, maxDays: -1, expire: -1 });
  assert.equal(shadowEntry('ab:h:::::::\n', 'a'), undefined);
});

test('every reply, in upstream order', async () => {
  const expect: Array<[string, string, string]> = [
    ['good', PW, 'ok:'],
    ['good5', PW, 'ok:'],
    ['dove', PW, 'ok:'],
    ['nofields', PW, 'ok:'],
    ['accttoday', PW, 'ok:'],
    ['pwedge', PW, 'ok:'],
    ['good', `${PW} `, 'fail:Incorrect password'],
    ['good', '', 'fail:Incorrect password'],
    ['nobody', PW, 'fail:Invalid username'],
    ['onlyshadow', PW, 'fail:Invalid username'],
    ['onlypasswd', PW, 'fail:Invalid shadow username'],
    ['acctexp', PW, 'fail:Account expired'],
    ['acctzero', PW, 'fail:Account expired'],
    ['pwexp', PW, 'fail:Password expired'],
    ['mustchange', PW, 'fail:Password expired'],
    // Expiry is only revealed after the right password.
    ['acctexp', 'wrong', 'fail:Incorrect password'],
    ['pwexp', 'wrong', 'fail:Incorrect password'],
    ['locked', PW, 'fail:Incorrect password'],
    ['star', PW, 'fail:Incorrect password'],
    ['empty', '', 'fail:Incorrect password'],
    ['empty', 'x', 'fail:Incorrect password'],
    ['np', PW, 'fail:Insufficient permission to access NIS authentication database (saslauthd)'],
    ['yes', PW, 'ok:'],
    ['yes', `${PW}.`, 'fail:Incorrect password'],
    ['yesworm', 'pw', 'fail:Incorrect password'],
    ['good:x', PW, 'fail:Invalid username'],
    ['good\n', PW, 'fail:Invalid username'],
    ['', PW, 'fail:Invalid username'],
  ];
  for (const [login, pw, want] of expect) {
    const r = await check(login, pw);
    assert.equal(`${r.verdict}:${r.reason}`, want, JSON.stringify(login));
  }
  assert.ok(logs.some((l) => /user yesworm: this yescrypt flavour or cost is not supported/.test(l)), JSON.stringify(logs));
  assert.ok(!logs.some((l) => /locked|star/.test(l)), JSON.stringify(logs));
  for (const l of logs) assert.doesNotMatch(l, /pa"ss/);
});

test('unreadable files: a temporary failure with upstream words; the factory refuses to start without access', async () => {
  let r = await shadowVerify({ passwd: path.join(dir, 'missing'), shadow: paths.shadow }, 'good', PW);
  assert.deepEqual(r, { verdict: 'tempfail', reason: '[UNAVAILABLE] Username lookup failure: No such file or directory' });
  r = await shadowVerify({ passwd: paths.passwd, shadow: path.join(dir, 'missing') }, 'good', PW);
  assert.deepEqual(r, { verdict: 'tempfail', reason: '[UNAVAILABLE] Username shadow lookup failure: No such file or directory' });
  await assert.rejects(createShadowBackend(path.join(dir, 'missing'), { log: () => {} }), (e: Error) => e instanceof ConfigError && /must run as root/.test(e.message));
  const b = await createShadowBackend(`shadow=${paths.shadow},passwd=${paths.passwd}`, { log: () => {} });
  const steps: string[] = [];
  r = await b.verify({ login: 'pwexp', password: PW, service: 'smtp', realm: '' }, { signal: AbortSignal.timeout(5000), explain: (s) => steps.push(s) });
  assert.equal(r.reason, 'Password expired');
  assert.ok(steps.some((s) => /password expired: changed on day/.test(s)), JSON.stringify(steps));
});
