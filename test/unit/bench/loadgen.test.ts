// The benchmark's load generator must never count a refusal as a success: NO replies, dropped connections and
// malformed replies are errors, by kind; latencies and merges are computed from successes only.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs/promises';
import { runLoad, percentile, mergeResults, ConnectGate, oneRequest, type LoadResult } from '../../../bench/lib/loadgen.js';
import { encodeFields, parseRequest } from '../../../src/auth/protocol/frame.js';
import { tempDir } from '../../helpers/net.js';

let dir: string;
let sock: string;
let server: net.Server;

// A tiny saslauthd-like server: user0 → OK, user1 → NO, user2 → closes without replying, user3 → a garbage length prefix.
before(async () => {
  dir = await tempDir('facteur-loadgen-');
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

const spec = (users: { login: string; password: string }[]) => ({ socket: sock, concurrency: 4, durationMs: 300, users, service: 'smtp', realm: '', timeoutMs: 2000 });

test('only OK replies are successes; NO, dropped and truncated replies are errors by kind', async () => {
  const users = [
    { login: 'user0', password: 'pass0' },
    { login: 'user1', password: 'pass1' },
    { login: 'user2', password: 'pass2' },
    { login: 'user3', password: 'pass3' },
  ];
  const r = await runLoad(spec(users));
  assert.ok(r.ok > 0);
  assert.ok(r.errors['reply: NO authentication failed'] > 0, JSON.stringify(r.errors));
  assert.ok(r.errors['transport: closed without reply'] > 0, JSON.stringify(r.errors));
  assert.ok(r.errors['transport: truncated reply'] > 0, JSON.stringify(r.errors));
  assert.equal(r.errorCount, Object.values(r.errors).reduce((a, b) => a + b, 0));
  // Users are taken in turn, so each kind is about a quarter of the requests.
  const total = r.ok + r.errorCount;
  assert.ok(r.ok >= total / 4 - 4 && r.ok <= total / 4 + 4, `ok ${r.ok} of ${total}`);
  assert.equal(r.latencies.length, r.ok);
  assert.ok(r.rate > 0 && r.p50 > 0 && r.p99 >= r.p50);
});

test('a wrong password is never counted as a success', async () => {
  const r = await runLoad(spec([{ login: 'user0', password: 'wrong' }]));
  assert.equal(r.ok, 0);
  assert.ok(r.errorCount > 0);
  assert.ok(Number.isNaN(r.p50));
  assert.equal(r.rate, 0);
});

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
