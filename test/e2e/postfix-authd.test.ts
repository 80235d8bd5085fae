// The drop-in promise: a real, unmodified Postfix (Debian's, configured as the seed does: smtpd_sasl_path = smtpd,
// smtpd.conf with pwcheck_method: saslauthd and mech_list: PLAIN LOGIN) authenticates members through facteur authd.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { tempDir, freePort } from '../helpers/net.js';
import { facteur, startFacteurAuthd, type Daemon } from '../helpers/authd.js';
import { startPostfix, type Postfix } from '../helpers/postfix.js';

const run = promisify(execFile);
let dir: string;
let authd: Daemon;
let postfix: Postfix;
const PASSWORD = 'pa ss"w\\ord é';

before(async () => {
  dir = await tempDir('facteur-postfix-');
  await fs.chmod(dir, 0o755); // Postfix's smtpd runs as user postfix and must reach the socket directory.
  const users = path.join(dir, 'users');
  for (const [login, pw] of [['alice@picasoft.net', PASSWORD], ['bob@picasoft.net', 'bobpass']]) {
    const r = await facteur(['user', 'add', '--file', users, login], `${pw}\n${pw}\n`);
    assert.equal(r.code, 0, r.stderr);
  }
  // libsasl splits alice@picasoft.net into login "alice" + realm "picasoft.net"; -r joins them back, as deployments do.
  authd = await startFacteurAuthd(path.join(dir, 'run'), ['-a', 'file', '-O', users, '-r', '-c', '--group', 'postfix']);
  postfix = await startPostfix({ dir: path.join(dir, 'postfix'), port: await freePort(), saslauthdPath: authd.socket });
});

after(async () => {
  await postfix?.stop();
  await authd?.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

async function swaks(args: string[], quitAfter: string | null = 'AUTH'): Promise<{ code: number; out: string }> {
  try {
    const { stdout } = await run('swaks', ['--server', '127.0.0.1', '--port', String(postfix.port), ...(quitAfter ? ['--quit-after', quitAfter] : []), ...args]);
    return { code: 0, out: stdout };
  } catch (err) {
    const e = err as { code: number; stdout: string };
    return { code: e.code, out: e.stdout };
  }
}

test('Postfix AUTH PLAIN through facteur authd: right password 235, wrong password 535', async () => {
  const good = await swaks(['--auth', 'PLAIN', '--auth-user', 'alice@picasoft.net', '--auth-password', PASSWORD]);
  assert.match(good.out, /<- {2}235 2\.7\.0 Authentication successful/);
  const bad = await swaks(['--auth', 'PLAIN', '--auth-user', 'alice@picasoft.net', '--auth-password', 'nope']);
  assert.match(bad.out, /<~?\*+ {1,2}535 5\.7\.8/);
});

test('Postfix AUTH LOGIN through facteur authd', async () => {
  const good = await swaks(['--auth', 'LOGIN', '--auth-user', 'bob@picasoft.net', '--auth-password', 'bobpass']);
  assert.match(good.out, /235 2\.7\.0 Authentication successful/);
  const bad = await swaks(['--auth', 'LOGIN', '--auth-user', 'bob@picasoft.net', '--auth-password', 'bobpas']);
  assert.match(bad.out, /535 5\.7\.8/);
});

test("an authenticated member may relay through Postfix; its log names the user, and no log holds the password", async () => {
  const sent = await swaks(['--auth', 'PLAIN', '--auth-user', 'alice@picasoft.net', '--auth-password', PASSWORD, '--from', 'alice@picasoft.net', '--to', 'friend@example.org'], null);
  assert.match(sent.out, /250 2\.0\.0 Ok: queued as/);
  const denied = await swaks(['--from', 'alice@picasoft.net', '--to', 'friend@example.org'], 'RCPT');
  assert.match(denied.out, /554 5\.7\.1 .*Relay access denied/, 'without AUTH, no relay');
  await new Promise((r) => setTimeout(r, 500));
  const log = await fs.readFile(postfix.maillog, 'utf8');
  assert.match(log, /sasl_method=PLAIN, sasl_username=alice@picasoft\.net/);
  assert.ok(!authd.stderr().includes(PASSWORD), 'authd logs no password');
});
