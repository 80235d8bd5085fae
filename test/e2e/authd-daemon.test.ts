// facteur authd as a process, as Debian's init script or systemd would run it: flags, run directory, pid file,
// single instance, signals, detaching, and the seed's /etc/default/saslauthd file. Backend: a users file.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { tempDir, waitForSocket } from '../helpers/net.js';
import { facteur, startFacteurAuthd, testsaslauthd } from '../helpers/authd.js';

let dir: string;
let users: string;

before(async () => {
  dir = await tempDir('facteur-authd-proc-');
  users = path.join(dir, 'users');
  const add = await facteur(['user', 'add', '--file', users, 'alice@picasoft.net'], 'correct horse\ncorrect horse\n');
  assert.equal(add.code, 0, add.stderr);
});

after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

test('-v prints the version and the mechanisms; -h the usage; both exit 0', async () => {
  const v = await facteur(['authd', '-v']);
  assert.equal(v.code, 0);
  assert.match(v.stderr, /authentication mechanisms: .*ldap/);
  const h = await facteur(['authd', '-h']);
  assert.equal(h.code, 0);
  assert.match(h.stdout, /-a mech/);
});

test('bad command lines fail with a sentence and status 1', async () => {
  const cases: [string[], RegExp][] = [
    [['authd', '-c'], /no authentication mechanism/],
    [['authd', '-a', 'file', '-m', 'relative/dir'], /-m requires an absolute pathname/],
    [['authd', '-a', 'kerberos9', '-d', '-m', path.join(dir, 'k')], /unknown authentication mechanism: kerberos9/],
    [['authd', '-a', 'file', '-t', '0'], /-t must be greater than 0/],
  ];
  for (const [args, re] of cases) {
    const r = await facteur(args);
    assert.equal(r.code, 1, args.join(' '));
    assert.match(r.stderr, re);
  }
});

test('foreground daemon: run dir 0710, pid file 0600, answers testsaslauthd, single instance, clean SIGTERM', async () => {
  const run = path.join(dir, 'run1');
  const d = await startFacteurAuthd(run, ['-a', 'file', '-O', users, '-c']);
  try {
    assert.equal((await fs.stat(run)).mode & 0o777, 0o710);
    const pid = await fs.readFile(path.join(run, 'saslauthd.pid'), 'utf8');
    assert.equal(pid, `${d.proc.pid}\n`);
    assert.equal((await fs.stat(path.join(run, 'saslauthd.pid'))).mode & 0o777, 0o600);
    assert.ok((await fs.stat(d.socket)).isSocket());
    // The C socket layer is built by npm install (native/authd) and used by default.
    assert.match(d.stderr(), /"socketLayer":"native"/);
    const good = await testsaslauthd(d.socket, ['-u', 'alice@picasoft.net', '-p', 'correct horse', '-s', 'smtp']);
    assert.equal(good.stdout, '0: OK "Success."\n');
    const bad = await testsaslauthd(d.socket, ['-u', 'alice@picasoft.net', '-p', 'battery staple', '-s', 'smtp']);
    assert.equal(bad.stdout, '0: NO "authentication failed"\n');
    const second = await facteur(['authd', '-d', '-a', 'file', '-O', users, '-m', run]);
    assert.equal(second.code, 2);
    assert.match(second.stderr, /Another instance of saslauthd is currently running/);
    assert.equal((await testsaslauthd(d.socket, ['-u', 'alice@picasoft.net', '-p', 'correct horse'])).code, 0, 'the first one still serves');
    d.proc.kill('SIGHUP');
    for (let i = 0; i < 100 && !/configuration reloaded/.test(d.stderr()); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(d.stderr(), /configuration reloaded/);
    assert.equal((await testsaslauthd(d.socket, ['-u', 'alice@picasoft.net', '-p', 'correct horse'])).code, 0, 'still serving after SIGHUP');
  } catch (err) {
    await d.stop();
    throw err;
  }
  assert.equal(await d.stop(), 0, `clean exit on SIGTERM; stderr: ${d.stderr()}`);
  assert.deepEqual(await fs.readdir(run), [], 'socket and pid file removed on SIGTERM');
});

test('without -d it detaches like saslauthd: the parent exits 0 once the socket is ready', async () => {
  const run = path.join(dir, 'run2');
  const r = await facteur(['authd', '-a', 'file', '-O', users, '-m', run]);
  assert.equal(r.code, 0, r.stderr);
  const sock = path.join(run, 'mux');
  await waitForSocket(sock, 5000);
  assert.equal((await testsaslauthd(sock, ['-u', 'alice@picasoft.net', '-p', 'correct horse'])).code, 0);
  const pid = Number(await fs.readFile(path.join(run, 'saslauthd.pid'), 'utf8'));
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100; i++) {
    if ((await fs.readdir(run)).length === 0) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  assert.deepEqual(await fs.readdir(run), []);
});

test("the seed's Debian defaults file starts it as it is (START, NAME with a comment, OPTIONS -c -m)", async () => {
  const run = path.join(dir, 'postfix-run');
  const defaults = path.join(dir, 'saslauthd-postfix');
  await fs.writeFile(
    defaults,
    `START=yes\nDESC="SASL Auth. Daemon for Postfix"\nNAME="saslauthd-postf"      # max. 15 char.\n# Option -m sets working dir for saslauthd (contains socket)\nOPTIONS="-c -m ${run}"        # postfix/smtp in chroot()\nMECHANISMS="file"\nMECH_OPTIONS="${users}"\n`,
  );
  const r = await facteur(['authd', '--defaults', defaults]);
  assert.equal(r.code, 0, r.stderr);
  const sock = path.join(run, 'mux');
  try {
    assert.equal((await testsaslauthd(sock, ['-u', 'alice@picasoft.net', '-p', 'correct horse', '-s', 'smtp'])).code, 0);
    const explain = await facteur(['testauth', '--explain', '--defaults', defaults, '-u', 'alice@picasoft.net', '-p', 'correct horse', '-s', 'smtp']);
    assert.equal(explain.code, 0, explain.stdout + explain.stderr);
    assert.match(explain.stdout, /daemon replied "OK/);
    assert.match(explain.stdout, /result: OK/);
    assert.ok(!explain.stdout.includes('correct horse'), 'the password is never printed');
    const own = await facteur(['testauth', '-f', sock, '-u', 'alice@picasoft.net', '-p', 'wrong', '-R', '2']);
    assert.equal(own.stdout, '0: NO "authentication failed"\n1: NO "authentication failed"\n');
    assert.equal(own.code, 255);
  } finally {
    const pid = Number(await fs.readFile(path.join(run, 'saslauthd.pid'), 'utf8'));
    process.kill(pid, 'SIGTERM');
  }
});

test('--metrics serves Prometheus counters for attempts, cache and latency; curl scrapes them', async () => {
  const { freePort } = await import('../helpers/net.js');
  const { execFile } = await import('node:child_process');
  const port = await freePort();
  const d = await startFacteurAuthd(path.join(dir, 'run-metrics'), ['-a', 'file', '-O', users, '-c', '--metrics', `127.0.0.1:${port}`]);
  try {
    for (const pw of ['correct horse', 'correct horse', 'wrong']) await testsaslauthd(d.socket, ['-u', 'alice@picasoft.net', '-p', pw, '-s', 'smtp']);
    const text = await new Promise<string>((resolve, reject) => execFile('curl', ['-sf', `http://127.0.0.1:${port}/metrics`], (err, out) => (err ? reject(err) : resolve(out))));
    assert.match(text, /facteur_auth_attempts_total\{backend="file",result="ok"\} 2/);
    assert.match(text, /facteur_auth_attempts_total\{backend="file",result="fail"\} 1/);
    assert.match(text, /facteur_auth_cache_lookups_total\{result="hit"\} 1/);
    assert.match(text, /facteur_auth_backend_latency_seconds_count\{backend="file"\} 2/);
    // three testsaslauthd requests plus the readiness probe of startFacteurAuthd
    assert.match(text, /facteur_connections_total\{listener="authd"\} 4/);
    assert.ok(!text.includes('correct horse'));
    // bin/facteur's shebang sizes V8's young generation (16 MiB from the start, not 1 MiB): fewer pauses in the replies.
    assert.match(text, /nodejs_heap_space_size_total_bytes\{space="new"\} 16777216\n/);
    const health = await new Promise<string>((resolve, reject) => execFile('curl', ['-sf', `http://127.0.0.1:${port}/health`], (err, out) => (err ? reject(err) : resolve(out))));
    assert.match(health, /"status":"ok"/);
  } finally {
    await d.stop();
  }
});

test('testauth reports a missing socket like testsaslauthd', async () => {
  const r = await facteur(['testauth', '-f', path.join(dir, 'nowhere', 'mux'), '-u', 'a', '-p', 'b']);
  assert.equal(r.code, 255);
  assert.equal(r.stdout, '0: ');
  assert.match(r.stderr, /connect\(\) : No such file or directory/);
  const t = await testsaslauthd(path.join(dir, 'nowhere', 'mux'), ['-u', 'a', '-p', 'b']);
  assert.equal(t.stdout, r.stdout, 'same stdout as the real testsaslauthd');
});
