// `facteur user` end to end: the built CLI manages a users file (stdin and terminal passwords, locking, atomic rewrite, errors),
// and `facteur authd -a file` accepts what it wrote, checked with the real Cyrus testsaslauthd.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { facteur, FACTEUR, startFacteurAuthd, testsaslauthd, type Daemon } from '../helpers/authd.js';
import { tempDir } from '../helpers/net.js';
import { parseUsersFile } from '../../src/auth/backends/usersfile/format.js';
import { verifyPasswordHash } from '../../src/auth/passwords.js';

let dir: string;
before(async () => {
  dir = await tempDir('facteur-usercli-');
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const twice = (pw: string) => `${pw}\n${pw}\n`;

test('add / list / passwd / del through stdin; the file is 0600, comments survive, hashes are argon2id', async () => {
  const file = path.join(dir, 'users');
  let r = await facteur(['user', 'add', '--file', file, 'alice@example.org', '--address', 'al@example.org', '--address', 'a2@example.net,a3@example.net'], twice('pa"ss\\wd é'));
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
  await fs.appendFile(file, '# a comment the admin wrote\n');
  r = await facteur(['user', 'add', '--file', file, 'bob'], twice('b'));
  assert.equal(r.code, 0, r.stderr);
  r = await facteur(['user', 'list', '--file', file]);
  assert.equal(r.code, 0);
  assert.equal(r.stdout, 'alice@example.org\talice@example.org,al@example.org,a2@example.net,a3@example.net\nbob\t\n');
  assert.doesNotMatch(r.stdout, /argon2/);

  let users = parseUsersFile(await fs.readFile(file, 'utf8')).users;
  const aliceHash = users.get('alice@example.org')!.hash;
  assert.match(aliceHash, /^\$argon2id\$v=19\$/);
  assert.equal(await verifyPasswordHash('pa"ss\\wd é', aliceHash), true);

  r = await facteur(['user', 'passwd', '--file', file, 'alice@example.org'], twice('new one'));
  assert.equal(r.code, 0, r.stderr);
  users = parseUsersFile(await fs.readFile(file, 'utf8')).users;
  assert.equal(await verifyPasswordHash('new one', users.get('alice@example.org')!.hash), true);
  assert.deepEqual(users.get('alice@example.org')!.addresses, ['al@example.org', 'a2@example.net', 'a3@example.net']);

  r = await facteur(['user', 'del', '--file', file, 'bob']);
  assert.equal(r.code, 0, r.stderr);
  const content = await fs.readFile(file, 'utf8');
  assert.match(content, /# a comment the admin wrote/);
  assert.doesNotMatch(content, /^bob:/m);
  assert.deepEqual((await fs.readdir(dir)).sort(), ['users']); // no temporary or lock file left behind
});

test('clear errors: mismatch, single line, empty, too long, existing, unknown, bad login/address, password on argv, missing file', async () => {
  const file = path.join(dir, 'users-err');
  const cases: Array<[string[], string, RegExp]> = [
    [['user', 'add', '--file', file, 'x'], 'a\nb\n', /two passwords differ/],
    [['user', 'add', '--file', file, 'x'], 'only-once\n', /give the password twice, on two lines/],
    [['user', 'add', '--file', file, 'x'], '\n\n', /empty password refused/],
    [['user', 'add', '--file', file, 'x'], twice('p'.repeat(257)), /longer than 256 bytes/],
    [['user', 'add', '--file', file, 'bad:login'], twice('p'), /contains ':'/],
    [['user', 'add', '--file', file, 'x', '--address', 'nope'], twice('p'), /is not an address/],
    [['user', 'add', '--file', file, 'x', '-p', 'secret'], '', /never taken from the command line/],
    [['user', 'passwd', '--file', file, 'x'], twice('p'), /does not exist/],
    [['user', 'list', '--file', file], '', /does not exist/],
    [['user', 'frobnicate'], '', /unknown action/],
    [['user', 'add', '--file', file], '', /exactly one LOGIN/],
  ];
  const results = await Promise.all(cases.map(([args, input]) => facteur(args, input)));
  for (const [i, [args, , re]] of cases.entries()) {
    const r = results[i]!;
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
    assert.doesNotMatch(r.stderr, /secret|unexpected error/);
  }
  await assert.rejects(fs.stat(file)); // nothing was created by the failures
  assert.equal((await facteur(['user', 'add', '--file', file, 'x'], twice('p'))).code, 0);
  let r = await facteur(['user', 'add', '--file', file, 'x'], twice('q'));
  assert.equal(r.code, 1);
  assert.match(r.stderr, /already exists/);
  r = await facteur(['user', 'del', '--file', file, 'y']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no user 'y'/);
  r = await facteur(['user', 'add', '--file', path.join(dir, 'no-such-dir', 'users'), 'x'], twice('p'));
  assert.equal(r.code, 1);
  assert.match(r.stderr, /does not exist/);
});

test('10 concurrent adds give 10 users and a well-formed file', async () => {
  const file = path.join(dir, 'users-conc');
  const results = await Promise.all(Array.from({ length: 10 }, (_, i) => facteur(['user', 'add', '--file', file, `u${i}@example.org`], twice(`pw${i}`))));
  for (const r of results) assert.equal(r.code, 0, r.stderr);
  const parsed = parseUsersFile(await fs.readFile(file, 'utf8'));
  assert.deepEqual(parsed.problems, []);
  assert.equal(parsed.users.size, 10);
  for (let i = 0; i < 10; i++) assert.equal(await verifyPasswordHash(`pw${i}`, parsed.users.get(`u${i}@example.org`)!.hash), true);
  assert.deepEqual((await fs.readdir(dir)).filter((f) => f.startsWith('users-conc')), ['users-conc']);
});

test('a stale lock left by a dead process is broken; a live one makes the command wait', async () => {
  const file = path.join(dir, 'users-lock');
  await fs.writeFile(`${file}.lock`, '999999999\n');
  let r = await facteur(['user', 'add', '--file', file, 'x'], twice('p'));
  assert.equal(r.code, 0, r.stderr);
  // A lock held by a live process (this test) until we release it.
  await fs.writeFile(`${file}.lock`, `${process.pid}\n`);
  const pending = facteur(['user', 'add', '--file', file, 'y'], twice('p'));
  await new Promise((res) => setTimeout(res, 500));
  assert.equal(parseUsersFile(await fs.readFile(file, 'utf8')).users.has('y'), false);
  await fs.rm(`${file}.lock`);
  r = await pending;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(parseUsersFile(await fs.readFile(file, 'utf8')).users.has('y'), true);
});

/** Run `facteur user add` on a pseudo-terminal (python3's pty module), typing the password at the prompts. */
function onTerminal(args: string[], first: string, second: string): Promise<{ code: number; transcript: string }> {
  const driver = `
import os, pty, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:4] and sys.argv[1:])
out = b''
def read_until(token):
    global out
    while token not in out:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            return
        if not chunk:
            return
        out += chunk
read_until(b'New password')
os.write(fd, os.environ['PW1'].encode() + b'\\r')
read_until(b'Retype')
os.write(fd, os.environ['PW2'].encode() + b'\\r')
while True:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode('utf8', 'replace'))
sys.exit(os.waitstatus_to_exitcode(status))
`;
  return new Promise((resolve) => {
    const p = spawn('python3', ['-c', driver, FACTEUR, ...args], { env: { ...process.env, PW1: first, PW2: second }, stdio: ['ignore', 'pipe', 'inherit'] });
    let transcript = '';
    p.stdout.on('data', (d) => (transcript += d));
    p.on('exit', (code) => resolve({ code: code ?? -1, transcript }));
  });
}

test('on a terminal: prompts twice, never echoes the password, refuses a mismatch', async () => {
  const file = path.join(dir, 'users-tty');
  let r = await onTerminal(['user', 'add', '--file', file, 'tty@example.org'], 'Typed Secret é', 'Typed Secret é');
  assert.equal(r.code, 0, r.transcript);
  assert.match(r.transcript, /New password for tty@example.org: /);
  assert.match(r.transcript, /Retype the password: /);
  assert.doesNotMatch(r.transcript, /Typed Secret/);
  const users = parseUsersFile(await fs.readFile(file, 'utf8')).users;
  assert.equal(await verifyPasswordHash('Typed Secret é', users.get('tty@example.org')!.hash), true);
  r = await onTerminal(['user', 'passwd', '--file', file, 'tty@example.org'], 'one', 'two');
  assert.equal(r.code, 1);
  assert.match(r.transcript, /two passwords differ/);
});

test('facteur authd -a file accepts what facteur user wrote (real testsaslauthd), and sees changes without restart', async () => {
  const file = path.join(dir, 'users-authd');
  assert.equal((await facteur(['user', 'add', '--file', file, 'zoe@example.org'], twice('zoe pw "1"'))).code, 0);
  const runDir = path.join(dir, 'run');
  await fs.mkdir(runDir);
  const d: Daemon = await startFacteurAuthd(runDir, ['-a', 'file', '-O', file]);
  try {
    let r = await testsaslauthd(d.socket, ['-u', 'zoe@example.org', '-p', 'zoe pw "1"', '-s', 'smtp']);
    assert.equal(r.stdout, '0: OK "Success."\n');
    r = await testsaslauthd(d.socket, ['-u', 'zoe@example.org', '-p', 'zoe pw "2"', '-s', 'smtp']);
    assert.equal(r.stdout, '0: NO "authentication failed"\n');
    r = await testsaslauthd(d.socket, ['-u', 'nobody', '-p', 'x', '-s', 'smtp']);
    assert.equal(r.stdout, '0: NO "authentication failed"\n');
    assert.equal((await facteur(['user', 'passwd', '--file', file, 'zoe@example.org'], twice('changed'))).code, 0);
    r = await testsaslauthd(d.socket, ['-u', 'zoe@example.org', '-p', 'changed', '-s', 'smtp']);
    assert.equal(r.stdout, '0: OK "Success."\n');
    r = await testsaslauthd(d.socket, ['-u', 'zoe@example.org', '-p', 'zoe pw "1"', '-s', 'smtp']);
    assert.equal(r.stdout, '0: NO "authentication failed"\n');
  } finally {
    await d.stop();
  }
});
