// `bin/facteur serve` with no configuration: the embedded default (loopback high ports, data dir, self-signed
// certificate, users file, welcome text), driven end to end with swaks down to the delivered Maildir file.
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { freePort, tempDir } from '../helpers/net.js';
import { spawnServe, runProgram, eventually, type ServeProcess } from '../helpers/serve.js';
import { facteur } from '../helpers/authd.js';

let dir: string;
let data: string;
let proc: ServeProcess;
const ports = { inbound: 0, submission: 0, submissions: 0 };

before(async () => {
  dir = await tempDir('facteur-embedded-');
  data = path.join(dir, 'data');
  for (const k of Object.keys(ports) as (keyof typeof ports)[]) ports[k] = await freePort();
  proc = await spawnServe(
    ['--data', data],
    {
      FACTEUR_INBOUND_LISTEN: `127.0.0.1:${ports.inbound}`,
      FACTEUR_SUBMISSION_LISTEN: `127.0.0.1:${ports.submission}`,
      FACTEUR_SUBMISSIONS_LISTEN: `127.0.0.1:${ports.submissions}`,
      FACTEUR_SERVER_LOG_LEVEL: 'warn',
    },
    ports.submissions,
  );
});
after(async () => {
  await proc.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

async function maildirFiles(user: string): Promise<string[] | undefined> {
  const files = await fs.readdir(path.join(data, 'mail', 'localhost', user, 'new')).catch(() => []);
  return files.length ? files : undefined;
}

test('prints how to add a user and send a first message', async () => {
  const out = await eventually(async () => (proc.stdout().includes('Stop with') ? proc.stdout() : undefined), 'welcome text');
  assert.match(out, new RegExp(`inbound\\s+127\\.0\\.0\\.1:${ports.inbound}`));
  assert.match(out, new RegExp(`bin/facteur user add --file ${data}/users alice@localhost`));
  assert.match(out, new RegExp(`swaks --server 127\\.0\\.0\\.1:${ports.submission} --tls`));
});

test('generates a self-signed certificate (key mode 600) and an empty users file in the data dir', async () => {
  const key = await fs.stat(path.join(data, 'tls', 'key.pem'));
  assert.equal(key.mode & 0o777, 0o600);
  const subject = execFileSync('openssl', ['x509', '-in', path.join(data, 'tls', 'cert.pem'), '-noout', '-subject'], { encoding: 'utf8' });
  assert.match(subject, /CN ?= ?localhost/);
  assert.equal((await fs.stat(path.join(data, 'users'))).mode & 0o777, 0o600);
});

test('inbound mail for localhost is queued and delivered to a Maildir; other domains are refused', async () => {
  const r = await runProgram('swaks', ['--server', `127.0.0.1:${ports.inbound}`, '--from', 'someone@example.net', '--to', 'bob@localhost', '--hide-all']);
  assert.equal(r.code, 0, r.stdout);
  const files = await eventually(() => maildirFiles('bob'), 'delivery to bob');
  assert.equal(files.length, 1);
  const relay = await runProgram('swaks', ['--server', `127.0.0.1:${ports.inbound}`, '--from', 'someone@example.net', '--to', 'victim@example.com', '--hide-all']);
  assert.notEqual(relay.code, 0);
});

test('a user added with the printed command can submit over STARTTLS and implicit TLS', async () => {
  const add = await facteur(['user', 'add', '--file', path.join(data, 'users'), 'alice@localhost'], 'first message\nfirst message\n');
  assert.equal(add.code, 0, add.stderr);
  // The swaks command exactly as printed (continuation lines joined, PASSWORD filled in), so a wrong hint fails here.
  const printed = /^\s*(swaks [^\n]*\\\n[^\n]*)$/m.exec(proc.stdout())![1].replace(/\\\n\s*/, ' ').replace("'PASSWORD'", "'first message'");
  const argv = [...printed.matchAll(/'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2]);
  assert.equal(argv[0], 'swaks');
  const sub = await runProgram('swaks', [...argv.slice(1), '--hide-all']);
  assert.equal(sub.code, 0, sub.stdout);
  const ssl = await runProgram('swaks', ['--server', `127.0.0.1:${ports.submissions}`, '--tls-on-connect', '--auth', 'LOGIN', '--auth-user', 'alice@localhost', '--auth-password', 'first message', '--from', 'alice@localhost', '--to', 'alice@localhost', '--hide-all']);
  assert.equal(ssl.code, 0, ssl.stdout);
  const files = await eventually(async () => ((await maildirFiles('alice'))?.length === 2 ? await maildirFiles('alice') : undefined), 'two deliveries to alice');
  const text = await fs.readFile(path.join(data, 'mail', 'localhost', 'alice', 'new', files[0]), 'utf8');
  assert.match(text, /^Received: from /m);
  assert.match(text, /with ESMTPSA/);
});

test('SIGTERM stops it cleanly', async () => {
  assert.equal(await proc.stop('SIGTERM'), 0);
});
