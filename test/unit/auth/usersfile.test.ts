// Users file: format parsing (hostile lines), and the file backend (verify, addresses, re-read on change, unknown users, unreadable file).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { parseUsersFile, formatLine, userAddresses, loginKey } from '../../../src/auth/backends/usersfile/format.js';
import { createFileBackend } from '../../../src/auth/backends/file.js';
import { hashPassword } from '../../../src/auth/passwords.js';
import { ConfigError } from '../../../src/lib/errors.js';
import type { AuthBackend, Credentials } from '../../../src/auth/types.js';
import { tempDir } from '../../helpers/net.js';

const creds = (login: string, password: string): Credentials => ({ login, password, service: 'smtp', realm: '' });
const verify = (b: AuthBackend, login: string, password: string) => b.verify(creds(login, password), { signal: AbortSignal.timeout(10_000) });

let dir: string;
before(async () => {
  dir = await tempDir('facteur-usersfile-');
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

test('format: hash between the first and the last colon, addresses optional, comments and CRLF', () => {
  const p = parseUsersFile(
    [
      '# comment',
      '',
      '   # indented comment',
      'alice@Example.ORG:$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA:alias@Example.org, other@example.net ',
      'bob:{SSHA}abc',
      'carol:{PLAIN}a:b:c:',
      'dave:{PLAIN}x:\r',
    ].join('\n'),
  );
  assert.deepEqual(p.problems, []);
  assert.equal(p.users.size, 4);
  const alice = p.users.get(loginKey('alice@example.org'))!;
  assert.equal(alice.login, 'alice@Example.ORG');
  assert.deepEqual(alice.addresses, ['alias@example.org', 'other@example.net']);
  assert.deepEqual(userAddresses(alice), ['alice@example.org', 'alias@example.org', 'other@example.net']);
  assert.equal(p.users.get('bob')!.hash, '{SSHA}abc');
  assert.deepEqual(userAddresses(p.users.get('bob')!), []);
  assert.equal(p.users.get('carol')!.hash, '{PLAIN}a:b:c');
  assert.equal(p.users.get('dave')!.hash, '{PLAIN}x');
  assert.deepEqual(p.users.get('dave')!.addresses, []);
  assert.equal(p.users.get('dave')!.line, 7);
  // The local part stays case-sensitive.
  assert.equal(p.users.get(loginKey('ALICE@example.org')), undefined);
});

test('format: hostile lines are reported by number, without their content, and skipped', () => {
  const p = parseUsersFile(
    [
      'no separator here secret',
      ':{PLAIN}nologin',
      'eve:',
      'eve :{PLAIN}x',
      'ev\te:{PLAIN}x',
      'mallory:{PLAIN}x:not-an-address',
      'mallory:{PLAIN}x:a@b.c,<x@y.z>',
      'ok:{PLAIN}first',
      'ok:{PLAIN}second',
      'x'.repeat(300) + ':{PLAIN}x',
      '\u0000nul:{PLAIN}x',
    ].join('\n'),
  );
  assert.equal(p.users.size, 2); // 'eve' (trimmed login, line 4) and 'ok'
  assert.equal(p.users.get('ok')!.hash, '{PLAIN}first');
  assert.equal(p.problems.length, 9);
  for (const msg of p.problems) {
    assert.match(msg, /^line \d+: /);
    assert.doesNotMatch(msg, /secret|nologin|PLAIN/);
  }
});

test('format: formatLine always writes the third field so that a hash with a colon parses back', () => {
  const line = formatLine({ login: 'z', hash: '{PLAIN}a:b', addresses: [] });
  const p = parseUsersFile(line);
  assert.equal(p.users.get('z')!.hash, '{PLAIN}a:b');
  assert.throws(() => formatLine({ login: 'z', hash: 'a\nb', addresses: [] }));
});

test('backend: right and wrong passwords, addresses, unknown user, empty password, unsupported scheme', async () => {
  const file = path.join(dir, 'users1');
  const ssha = execFileSync('doveadm', ['pw', '-s', 'SSHA', '-p', 'dove pass'], { encoding: 'utf8' }).trim();
  await fs.writeFile(
    file,
    [
      `alice@example.org:${await hashPassword('pa"ss\\wd é')}:alias@example.org`,
      `bob:${ssha}`,
      `yes:$y$/75$F5Jx5fExrKuPp53xLKQ..1$6z8bJ9aRId.8ArLYSYDplRF69XwusC3CguNEDPO713.`,
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  const logs: string[] = [];
  const b = await createFileBackend(file, { log: (m) => logs.push(m) });
  assert.deepEqual(await verify(b, 'alice@example.org', 'pa"ss\\wd é'), { verdict: 'ok', reason: '', addresses: ['alice@example.org', 'alias@example.org'] });
  assert.equal((await verify(b, 'alice@EXAMPLE.org', 'pa"ss\\wd é')).verdict, 'ok');
  assert.equal((await verify(b, 'alice@example.org', 'pa"ss\\wd e')).verdict, 'fail');
  assert.equal((await verify(b, 'alice@example.org', '')).verdict, 'fail');
  assert.equal((await verify(b, 'bob', 'dove pass')).verdict, 'ok');
  assert.deepEqual((await verify(b, 'bob', 'dove pass')).addresses, []);
  assert.equal((await verify(b, 'nobody', 'dove pass')).verdict, 'fail');
  assert.equal((await verify(b, 'yes', 'anything')).verdict, 'fail');
  assert.ok(logs.some((l) => /line 3: unsupported password hash scheme/.test(l)), JSON.stringify(logs));
  for (const l of logs) assert.doesNotMatch(l, /dove pass|pa"ss/);
  // An unknown user costs an argon2 verification too (the dummy hash), observable through --explain's steps.
  const steps: string[] = [];
  await b.verify(creds('nobody', 'x'), { signal: AbortSignal.timeout(10_000), explain: (s) => steps.push(s) });
  assert.ok(steps.some((s) => /no user 'nobody'/.test(s)), JSON.stringify(steps));
});

test('backend: re-reads the file when it changes (atomic replace and in-place edit), without restart', async () => {
  const file = path.join(dir, 'users2');
  await fs.writeFile(file, `carol:{PLAIN}one:\n`, { mode: 0o600 });
  const logs: string[] = [];
  const b = await createFileBackend(file, { log: (m) => logs.push(m) });
  assert.equal((await verify(b, 'carol', 'one')).verdict, 'ok');
  // Replace by rename (what facteur user does).
  await fs.writeFile(`${file}.new`, `carol:{PLAIN}two:\ndan:{PLAIN}three:\n`, { mode: 0o600 });
  await fs.rename(`${file}.new`, file);
  assert.equal((await verify(b, 'carol', 'one')).verdict, 'fail');
  assert.equal((await verify(b, 'carol', 'two')).verdict, 'ok');
  assert.equal((await verify(b, 'dan', 'three')).verdict, 'ok');
  // In-place edit of a different size.
  await fs.writeFile(file, `dan:{PLAIN}four-four:\n`);
  assert.equal((await verify(b, 'carol', 'two')).verdict, 'fail');
  assert.equal((await verify(b, 'dan', 'four-four')).verdict, 'ok');
  // Many concurrent requests right after a change all see the new file.
  await fs.writeFile(`${file}.new`, `erin:{PLAIN}five:\n`, { mode: 0o600 });
  await fs.rename(`${file}.new`, file);
  const results = await Promise.all(Array.from({ length: 20 }, () => verify(b, 'erin', 'five')));
  assert.ok(results.every((r) => r.verdict === 'ok'), JSON.stringify(results));
});

test('backend: a missing file at start is a ConfigError naming the fix; vanishing later is a temporary failure', async () => {
  const missing = path.join(dir, 'nope');
  await assert.rejects(createFileBackend(missing, { log: () => {} }), (err: Error) => err instanceof ConfigError && /facteur user add --file/.test(err.message));
  const file = path.join(dir, 'users3');
  await fs.writeFile(file, `fred:{PLAIN}six:\n`, { mode: 0o644 });
  const logs: string[] = [];
  const b = await createFileBackend(file, { log: (m) => logs.push(m) });
  assert.ok(logs.some((l) => /readable by everyone/.test(l)), JSON.stringify(logs));
  await fs.rm(file);
  const r = await verify(b, 'fred', 'six');
  assert.equal(r.verdict, 'tempfail');
  assert.match(r.reason, /^\[UNAVAILABLE\]/);
});
