// The benchmark's load generators, the C one (bench/lib/loadgen.c, the default) and the Node one (--generator node),
// follow the same rules, checked by the same tests: only OK replies are successes; NO, dropped, truncated and oversized
// replies are errors by kind; a full listen queue is waited out, not counted as a failure; latencies and merges are
// computed from successes only.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs/promises';
import { spawn, type ChildProcess } from 'node:child_process';
import { runLoad, percentile, mergeResults, ConnectGate, oneRequest, type LoadResult, type LoadSpec } from '../../../bench/lib/loadgen.js';
import { buildCGenerator, runCLoad, parseOutput } from '../../../bench/lib/cgen.js';
import { encodeFields, parseRequest } from '../../../src/auth/protocol/frame.js';
import { tempDir } from '../../helpers/net.js';

let dir: string;
let sock: string;
let server: net.Server;
let bin: string;

// user0 → OK, user1 → NO, user2 → closes without replying, user3 → a garbage length prefix, user4 → an oversized
// reply, user5 → OK after 20 ms.
before(async () => {
  dir = await tempDir('facteur-loadgen-');
  bin = buildCGenerator(path.join(dir, 'bin'));
  sock = path.join(dir, 'mux');
  server = net.createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const r = parseRequest(buf);
      if (r.kind !== 'request') return;
      const login = r.fields[0].toString();
      const pass = r.fields[1].toString();
      if (login === 'user0' && pass === 'pass0') s.end(encodeFields(['OK']));
      else if (login === 'user2') s.destroy();
      else if (login === 'user3') s.end(Buffer.from([0xff, 0xff, 0x41]));
      else if (login === 'user4') s.end(Buffer.concat([Buffer.from([0x08, 0x00]), Buffer.alloc(2048, 0x41)]));
      else if (login === 'user5') setTimeout(() => s.end(encodeFields(['OK slow'])), 20);
      else s.end(encodeFields(['NO authentication failed']));
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(sock, r));
});

after(async () => {
  await new Promise((r) => server.close(r));
  await fs.rm(dir, { recursive: true, force: true });
});

const spec = (users: { login: string; password: string }[], o: { concurrency?: number; durationMs?: number; socket?: string } = {}) => ({
  socket: o.socket ?? sock,
  concurrency: o.concurrency ?? 4,
  durationMs: o.durationMs ?? 300,
  users,
  service: 'smtp',
  realm: '',
  timeoutMs: 2000,
});

const generators: [string, (spec: LoadSpec) => Promise<LoadResult>][] = [
  ['C', (s) => runCLoad(bin, s)],
  ['Node', runLoad],
];

for (const [gen, run] of generators) {
  test(`${gen}: only OK replies are successes; NO, dropped, truncated and oversized replies are errors by kind`, async () => {
    const users = ['0', '1', '2', '3', '4'].map((i) => ({ login: `user${i}`, password: i === '0' ? 'pass0' : 'x' }));
    const r = await run(spec(users));
    assert.ok(r.ok > 0);
    assert.ok(r.errors['reply: NO authentication failed'] > 0, JSON.stringify(r.errors));
    assert.ok(r.errors['transport: closed without reply'] > 0, JSON.stringify(r.errors));
    assert.ok(r.errors['transport: truncated reply'] > 0, JSON.stringify(r.errors));
    assert.ok(r.errors['transport: oversized reply'] > 0, JSON.stringify(r.errors));
    assert.equal(r.errorCount, Object.values(r.errors).reduce((a, b) => a + b, 0));
    // Users are taken in turn, so each kind is about a fifth of the requests.
    const total = r.ok + r.errorCount;
    assert.ok(r.ok >= total / 5 - 4 && r.ok <= total / 5 + 4, `ok ${r.ok} of ${total}`);
    assert.equal(r.latencies.length, r.ok);
    assert.ok(r.rate > 0 && r.p50 > 0 && r.p99 >= r.p50);
    assert.ok(r.generatorCpuMs > 0 && r.elapsedMs >= 300);
  });

  test(`${gen}: a wrong password is never counted as a success`, async () => {
    const r = await run(spec([{ login: 'user0', password: 'wrong' }]));
    assert.equal(r.ok, 0);
    assert.ok(r.errorCount > 0);
    assert.ok(Number.isNaN(r.p50));
    assert.equal(r.rate, 0);
  });

  test(`${gen}: latencies are measured: replies held 20 ms take at least 20 ms`, async () => {
    const r = await run(spec([{ login: 'user5', password: 'x' }], { concurrency: 2, durationMs: 200 }));
    assert.ok(r.ok >= 10, `ok ${r.ok}`);
    assert.ok(r.p50 >= 20 && r.max < 1000, `p50 ${r.p50} max ${r.max}`);
    // Two clients, one request at a time each, ~20 ms apiece: about 100 per second, never more.
    assert.ok(r.rate <= 2 * (1000 / 20), `rate ${r.rate}`);
  });

  test(`${gen}: a missing socket is counted as a transport error for the whole run, and the run still ends`, async () => {
    const r = await run(spec([{ login: 'user0', password: 'pass0' }], { socket: path.join(dir, 'nothing'), durationMs: 100 }));
    assert.equal(r.ok, 0);
    assert.ok(r.errors['transport: ENOENT'] > 0, JSON.stringify(r.errors));
    assert.ok(r.elapsedMs >= 100 && r.elapsedMs < 2000);
  });

  test(`${gen}: a full listen queue is waited out (EAGAIN retried in turn), not counted as an error`, async () => {
    // A server with a listen queue of 1 that accepts one connection every 5 ms: most of 16 clients' connects are refused.
    const slow = path.join(dir, `slow-${gen}`);
    const py = spawn('python3', ['-c', `
import socket, time, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)
print('ready', flush=True)
while True:
    c, _ = s.accept(); c.recv(1024); c.sendall(b'\\x00\\x02OK'); c.close(); time.sleep(0.005)
`, slow], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await readyLine(py);
      const r = await run(spec([{ login: 'user0', password: 'pass0' }], { socket: slow, concurrency: 16, durationMs: 300 }));
      assert.equal(r.errorCount, 0, JSON.stringify(r.errors));
      assert.ok(r.connectRetries > 0, 'connects were refused and retried');
      assert.ok(r.ok > 10, `ok ${r.ok}`);
    } finally {
      py.kill();
    }
  });
}

test('a missing socket is a transport error, not a hang', async () => {
  await assert.rejects(oneRequest(path.join(dir, 'nothing'), encodeFields(['a', 'b', 'c', '']), 1000), /ENOENT/);
});

test('percentile is nearest-rank on sorted data', () => {
  const a = Float64Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(percentile(a, 50), 50);
  assert.equal(percentile(a, 99), 99);
  assert.equal(percentile(a, 100), 100);
  assert.equal(percentile(Float64Array.of(7), 99), 7);
  assert.ok(Number.isNaN(percentile(new Float64Array(0), 50)));
});

test('merging results adds counts and recomputes percentiles from all latencies', () => {
  const part = (lat: number[], elapsedMs: number, errors: Record<string, number>): LoadResult => ({
    concurrency: 1, elapsedMs, ok: lat.length, errors, errorCount: Object.values(errors).reduce((a, b) => a + b, 0),
    connectRetries: 1, p50: 0, p90: 0, p99: 0, max: 0, rate: 0, generatorCpuMs: 10, latencies: Float64Array.from(lat),
  });
  const a = part([1, 2, 3], 1000, { 'reply: NO': 2 });
  const b = part([10, 20], 1000, { 'reply: NO': 1, 'transport: timeout': 1 });
  const par = mergeResults([a, b], 2, 'parallel');
  assert.equal(par.ok, 5);
  assert.deepEqual(par.errors, { 'reply: NO': 3, 'transport: timeout': 1 });
  assert.equal(par.errorCount, 4);
  assert.equal(par.rate, 5);
  assert.equal(par.max, 20);
  assert.equal(par.p50, 3);
  assert.equal(par.connectRetries, 2);
  const seq = mergeResults([a, b], 1, 'sequential');
  assert.equal(seq.elapsedMs, 2000);
  assert.equal(seq.rate, 2.5);
});

test('the connect gate lets waiting clients through in order, one per completed request', async () => {
  const g = new ConnectGate();
  const order: string[] = [];
  assert.equal(g.waiting, false);
  g.enqueue(() => order.push('b'));
  g.refused(() => order.push('a')); // refused at the head goes first
  g.enqueue(() => order.push('c'));
  assert.equal(g.retries, 1);
  g.release();
  assert.deepEqual(order, ['a']);
  g.release();
  assert.deepEqual(order, ['a', 'b']);
  // The fallback timer lets the last one through even with no completion.
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(order, ['a', 'b', 'c']);
  assert.equal(g.waiting, false);
});

test('with a rate, requests follow a fixed schedule and a late reply counts from when its request was due', async () => {
  // 4 clients, 200 requests/s in all, 500 ms: ~100 requests, whatever the daemon's speed.
  const fast = await runCLoad(bin, { ...spec([{ login: 'user0', password: 'pass0' }], { concurrency: 4, durationMs: 500 }), rate: 200 });
  assert.equal(fast.errorCount, 0, JSON.stringify(fast.errors));
  assert.ok(fast.ok >= 90 && fast.ok <= 101, `ok ${fast.ok}`);
  // Replies held 20 ms, 2 clients asked for 200/s (each due every 10 ms): they fall behind, and the latencies say so,
  // growing with the backlog, where a closed loop would report a flat 20 ms.
  const slow = await runCLoad(bin, { ...spec([{ login: 'user5', password: 'x' }], { concurrency: 2, durationMs: 400 }), rate: 200 });
  assert.ok(slow.ok >= 20 && slow.ok < 60, `ok ${slow.ok}`);
  assert.ok(slow.max >= 100, `max ${slow.max}: the last requests waited for the backlog`);
  assert.ok(slow.p50 > 30, `p50 ${slow.p50}`);
});

test('the output parser refuses a result whose latencies do not match its count', () => {
  const head = Buffer.from('{"ok":2,"errorCount":0,"connectRetries":0,"elapsedMs":10,"generatorCpuMs":1,"errors":{}}\n');
  const lat = Buffer.alloc(16);
  lat.writeDoubleLE(2, 0);
  lat.writeDoubleLE(1, 8);
  const r = parseOutput(Buffer.concat([head, lat]), 1);
  assert.deepEqual(Array.from(r.latencies), [1, 2]);
  assert.equal(r.rate, 200);
  assert.throws(() => parseOutput(Buffer.concat([head, lat.subarray(0, 8)]), 1), /8 bytes of latencies for 2 successes/);
  assert.throws(() => parseOutput(Buffer.from('{"ok":-1}\n'), 1), /bad ok/);
  assert.throws(() => parseOutput(Buffer.from('no newline'), 1), /no result line/);
});

function readyLine(p: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    p.stdout!.once('data', () => resolve());
    p.once('exit', (code) => reject(new Error(`python server exited with ${code}`)));
  });
}
