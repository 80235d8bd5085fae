// The install-time build of facteur's C addons (native/build.mjs: authd's, the spool's, the SMTP workers' socket), on a copy of the sources: it
// succeeds where a C compiler is present, and where the compiler fails it says so and lets `npm ci` go on (exit 0),
// while `npm run build:native` (--strict) fails. The addons the other tests use are never touched.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { tempDir } from '../../helpers/net.js';

const SOURCES = path.resolve(import.meta.dirname, '../../../native');
const FILES = ['build.mjs', 'authd/binding.gyp', 'authd/socket.c', 'authd/digest.c', 'spool/binding.gyp', 'spool/commit.c', 'net/binding.gyp', 'net/reuseport.c'];
let dir: string;

before(async () => {
  dir = await tempDir('facteur-native-build-');
  for (const f of FILES) {
    await fs.mkdir(path.dirname(path.join(dir, f)), { recursive: true });
    await fs.copyFile(path.join(SOURCES, f), path.join(dir, f));
  }
});

after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

function build(env: Record<string, string>, ...args: string[]) {
  return spawnSync(process.execPath, [path.join(dir, 'build.mjs'), ...args], { cwd: dir, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 120_000 });
}

test('with a C compiler: the four addons are built and load', () => {
  const r = build({}, '--strict');
  assert.equal(r.status, 0, r.stderr);
  const load = createRequire(import.meta.url);
  const socket = load(path.join(dir, 'authd/build/Release/saslauthd_socket.node')) as Record<string, unknown>;
  const digest = load(path.join(dir, 'authd/build/Release/cache_digest.node')) as Record<string, unknown>;
  const commit = load(path.join(dir, 'spool/build/Release/spool_commit.node')) as Record<string, unknown>;
  for (const f of ['listen', 'reply', 'close']) assert.equal(typeof socket[f], 'function', f);
  for (const f of ['createKey', 'digest', 'matches']) assert.equal(typeof digest[f], 'function', f);
  assert.equal(typeof commit.writeFile, 'function');
  const reuseport = load(path.join(dir, 'net/build/Release/reuseport_socket.node')) as Record<string, unknown>;
  for (const f of ['bind', 'boundPort', 'close']) assert.equal(typeof reuseport[f], 'function', f);
});

test('when the compiler fails: npm install goes on with a sentence (exit 0), build:native fails (exit 1)', () => {
  const broken = { CC: '/bin/false', CXX: '/bin/false' };
  const soft = build(broken);
  assert.equal(soft.status, 0, soft.stderr);
  assert.match(soft.stderr, /the C socket layer of facteur authd was not built \(node-gyp exited with \d+\); authd will use node:net \(slower\)/);
  assert.match(soft.stderr, /the queue's C commit job was not built \(node-gyp exited with \d+\); queue commits will use node:fs calls on the event loop \(slower\)/);
  assert.match(soft.stderr, /the SO_REUSEPORT socket of the SMTP workers was not built \(node-gyp exited with \d+\); with \[server\] workers > 1 the primary will hand each connection to a worker \(slower\)/);
  const strict = build(broken, '--strict');
  assert.equal(strict.status, 1);
});
