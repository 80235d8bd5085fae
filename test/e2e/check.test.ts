// `facteur check` on broken Postfix + authd setups: one problem per test, each with its one-sentence explanation.
// Postfix's configuration is read through the real `postconf`; the authd side is a running facteur authd.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { tempDir, freePort } from '../helpers/net.js';
import { facteur, startFacteurAuthd, type Daemon } from '../helpers/authd.js';
import { writePostfixConfig } from '../helpers/postfix.js';

let dir: string;
let users: string;
let authd: Daemon;
let runDir: string;

before(async () => {
  dir = await tempDir('facteur-check-');
  await fs.chmod(dir, 0o755);
  users = path.join(dir, 'users');
  const r = await facteur(['user', 'add', '--file', users, 'alice@picasoft.net'], 'pw-alice\npw-alice\n');
  assert.equal(r.code, 0, r.stderr);
  runDir = path.join(dir, 'run');
  authd = await startFacteurAuthd(runDir, ['-a', 'file', '-O', users, '--group', 'postfix']);
});

after(async () => {
  await authd?.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

let n = 0;
async function postfixDir(opts: { main?: string[]; saslauthdPath?: string; edit?: (saslDir: string) => Promise<void> } = {}): Promise<string> {
  const { configDir, saslDir } = await writePostfixConfig({ dir: path.join(dir, `pf${n++}`), port: await freePort(), saslauthdPath: opts.saslauthdPath ?? authd.socket, main: ['smtpd_tls_auth_only = yes', ...(opts.main ?? [])] });
  await opts.edit?.(saslDir);
  return configDir;
}

async function check(pf: string, authdFlags = `-a file -O ${users} -m ${runDir}`) {
  return facteur(['check', '--authd', authdFlags, '--postfix', pf]);
}

test('a correct seed-style setup passes, exit 0', async () => {
  const r = await check(await postfixDir());
  assert.equal(r.code, 0, r.stdout);
  assert.match(r.stdout, /smtpd_sasl_path = smtpd matches/);
  assert.match(r.stdout, /answers and refuses a made-up user/);
  assert.match(r.stdout, /ok +authd serves its socket with its C layer/);
  assert.match(r.stdout, /no problem found/);
});

test('smtpd_sasl_path not matching the Cyrus file name (the seed warns about it)', async () => {
  const pf = await postfixDir({ edit: (s) => fs.rename(path.join(s, 'smtpd.conf'), path.join(s, 'mail.conf')) });
  const r = await check(pf);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /smtpd_sasl_path = smtpd makes Cyrus SASL read .*smtpd\.conf, which does not exist \(found: mail\.conf\): the name must be the Cyrus file's name without \.conf/);
});

test('saslauthd_path naming the directory instead of the socket', async () => {
  const r = await check(await postfixDir({ saslauthdPath: runDir }));
  assert.equal(r.code, 1);
  assert.match(r.stdout, /is a directory: it must name the socket itself/);
});

test('socket path that does not match authd -m', async () => {
  const r = await check(await postfixDir({ saslauthdPath: '/var/run/elsewhere/mux' }));
  assert.equal(r.code, 1);
  assert.match(r.stdout, /looks for the socket at \/var\/run\/elsewhere\/mux, but authd listens at/);
});

test('mech_list with a mechanism saslauthd cannot serve', async () => {
  const pf = await postfixDir({ edit: (s) => fs.writeFile(path.join(s, 'smtpd.conf'), `pwcheck_method: saslauthd\nmech_list: PLAIN LOGIN CRAM-MD5\nsaslauthd_path: ${authd.socket}\n`) });
  const r = await check(pf);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /mech_list offers CRAM-MD5/);
});

test('AUTH over plaintext is a warning, an open relay an error', async () => {
  const pf = await postfixDir({ main: ['smtpd_tls_auth_only = no', 'smtpd_relay_restrictions = permit', 'smtpd_recipient_restrictions = permit'] });
  const r = await check(pf);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /warning +Postfix offers AUTH PLAIN\/LOGIN on unencrypted connections: set smtpd_tls_auth_only = yes/);
  assert.match(r.stdout, /open relay/);
});

test('postfix not allowed into the socket directory', async () => {
  const closed = path.join(dir, 'closed');
  const d2 = await startFacteurAuthd(closed, ['-a', 'file', '-O', users]);
  try {
    await fs.chmod(closed, 0o700);
    const r = await check(await postfixDir({ saslauthdPath: d2.socket }), `-a file -O ${users} -m ${closed}`);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /postfix cannot enter .*closed \(mode 700/);
  } finally {
    await d2.stop();
  }
});

test('a backend that cannot be reached is named', async () => {
  const dead = await freePort();
  const r = await check(await postfixDir(), `-a rimap -O 127.0.0.1/${dead} -m ${runDir}`);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /mechanism rimap cannot reach its backend/);
});

test('the socket layer line: forced node:net is a warning, an unknown FACTEUR_AUTHD_SOCKET_LAYER an error', async () => {
  const { checkSocketLayer } = await import('../../src/auth/check.js');
  assert.equal(checkSocketLayer({}).level, 'ok');
  assert.equal(checkSocketLayer({ FACTEUR_AUTHD_SOCKET_LAYER: 'native' }).level, 'ok');
  assert.match(checkSocketLayer({ FACTEUR_AUTHD_SOCKET_LAYER: 'node' }).message, /node:net/);
  assert.equal(checkSocketLayer({ FACTEUR_AUTHD_SOCKET_LAYER: 'node' }).level, 'warning');
  assert.equal(checkSocketLayer({ FACTEUR_AUTHD_SOCKET_LAYER: 'fast' }).level, 'error');
});
