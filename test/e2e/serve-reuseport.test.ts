// `bin/facteur serve` with [server] workers = 2 and the default reuse_port: each worker listens on its own socket
// (SO_REUSEPORT, native/net) on the addresses the primary checked and reserved, and the kernel spreads the connections.
// Proves, from the kernel's own tables (/proc/net/tcp): one listening socket per worker on one port, even when the
// configuration says port 0; the primary accepts none; connections reach both workers; the limits still hold over
// both; a killed worker's socket leaves the group and its replacement's joins; a second server on the same addresses
// is refused (with or without workers), not silently let into the group; SIGTERM frees the addresses.
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { socketOwners, tempDir } from '../helpers/net.js';
import { RawSmtp, runProgram, eventually, listenersToml, serveWorkerPids } from '../helpers/serve.js';
import { FACTEUR } from '../helpers/authd.js';

let dir: string;
let proc: ChildProcess;
let stderr = '';
let exited: Promise<number | null>;
/** The ports the primary chose (the configuration says 0). */
const ports = { inbound: 0, submission: 0, submissions: 0 };

const logLines = (): { msg: string; [k: string]: unknown }[] =>
  stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg: string });

function configText(data: string, p: typeof ports, workers: number): string {
  return `[server]
data_dir = ${JSON.stringify(data)}
hostname = "mx.test"
local_domains = ["localhost"]
workers = ${workers}
max_connections_per_ip = 30
[auth]
backend = "file"
[ratelimit]
connections_per_ip_per_minute = 0
${listenersToml(p)}`;
}

const workerPids = () => serveWorkerPids(proc.pid!);

/** Open n sessions to the inbound port and read each one's first reply. */
async function openSessions(n: number): Promise<{ sessions: RawSmtp[]; replies: string[] }> {
  const sessions: RawSmtp[] = [];
  const replies: string[] = [];
  for (let i = 0; i < n; i++) {
    const s = await RawSmtp.connect(ports.inbound);
    sessions.push(s);
    replies.push(await s.reply());
  }
  return { sessions, replies };
}

before(async () => {
  dir = await tempDir('facteur-reuseport-');
  const data = path.join(dir, 'data');
  await fs.mkdir(data, { recursive: true });
  await fs.writeFile(path.join(dir, 'facteur.toml'), configText(data, ports, 2));
  proc = spawn(FACTEUR, ['serve', '--config', path.join(dir, 'facteur.toml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr!.on('data', (d) => (stderr += d));
  exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
  const ready = await Promise.race([
    eventually(async () => logLines().find((l) => l.msg === 'smtp workers ready'), 'workers ready', 30_000),
    exited.then((c) => Promise.reject(new Error(`facteur exited ${c}: ${stderr}`))),
  ]);
  for (const l of ready.listeners as { kind: keyof typeof ports; port: number }[]) ports[l.kind] = l.port;
});

after(async () => {
  if (proc.exitCode === null) proc.kill('SIGKILL');
  await fs.rm(dir, { recursive: true, force: true });
});

test('each worker listens on its own socket on the one port the primary chose for port 0; the primary on none', async () => {
  const workers = workerPids().sort((a, b) => a - b);
  assert.equal(workers.length, 2);
  for (const kind of Object.keys(ports) as (keyof typeof ports)[]) {
    assert.ok(ports[kind] > 0, `${kind} has a real port`);
    assert.deepEqual(await socketOwners(ports[kind], 'listen', [proc.pid!, ...workers]), workers, `${kind}: one listening socket per worker`);
  }
  assert.equal(new Set(Object.values(ports)).size, 3, 'three different ports');
});

test('the kernel spreads connections over both workers, and max_connections_per_ip holds over both', async () => {
  const { sessions, replies } = await openSessions(30);
  try {
    assert.ok(replies.every((r) => r.startsWith('220 ')), replies.join(''));
    const owners = await socketOwners(ports.inbound, 'established', workerPids());
    assert.equal(owners.length, 30, 'every session is held by a worker');
    assert.equal(new Set(owners).size, 2, `both workers hold sessions (${owners.join(' ')})`);
    // The 31st from 127.0.0.1: refused wherever the kernel sent it, since the count is kept over all workers.
    const extra = await RawSmtp.connect(ports.inbound);
    assert.match(await extra.reply(), /^421 4\.7\.0 Too many connections/);
    extra.close();
  } finally {
    for (const s of sessions) s.close();
  }
});

test('a killed worker is replaced: its socket leaves the group, the new one joins, and no connection is lost to it', async () => {
  const [victim] = workerPids();
  process.kill(victim, 'SIGKILL');
  const replaced = await eventually(
    async () => {
      const pids = workerPids().sort((a, b) => a - b);
      if (pids.length !== 2 || pids.includes(victim)) return undefined;
      const owners = await socketOwners(ports.inbound, 'listen', [victim, ...pids]);
      return owners.length === 2 && owners.join() === pids.join() ? pids : undefined;
    },
    'a replacement worker listening',
    20_000,
  );
  assert.equal(replaced.length, 2);
  // The places the dead worker held come back with its exit: 30 sessions fit again, all answered.
  const { sessions, replies } = await eventually(async () => {
    const r = await openSessions(20);
    if (r.replies.every((x) => x.startsWith('220 '))) return r;
    for (const s of r.sessions) s.close();
    return undefined;
  }, 'twenty sessions answered');
  assert.equal(replies.length, 20);
  for (const s of sessions) s.close();
});

test('a second server on the same addresses is refused, with workers or without, and leaves nothing behind', async () => {
  for (const workers of [2, 1]) {
    const data2 = path.join(dir, `data-${workers}`);
    const file = path.join(dir, `second-${workers}.toml`);
    await fs.writeFile(file, configText(data2, ports, workers));
    const r = await runProgram(FACTEUR, ['serve', '--config', file]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`\\[inbound\\] cannot listen on 127\\.0\\.0\\.1:${ports.inbound}: the address is already in use`));
    await assert.rejects(fs.access(path.join(data2, 'queue', 'lock')), 'no queue lock left');
  }
  // The first server still owns the port alone.
  assert.equal((await socketOwners(ports.inbound, 'listen', workerPids())).length, 2);
});

test('SIGTERM stops everything and frees the addresses', async () => {
  proc.kill('SIGTERM');
  assert.equal(await exited, 0);
  for (const port of Object.values(ports)) {
    const srv = net.createServer();
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => resolve());
    });
    await new Promise((r) => srv.close(r));
  }
});
