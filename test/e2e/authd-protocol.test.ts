// The saslauthd wire protocol of facteur authd, driven by the real Cyrus client (testsaslauthd) and by hostile raw sockets.
// The backend here is a small in-test password table (with one deliberately slow user): this file proves the protocol
// and the daemon's handling of connections; the real backends have their own end-to-end tests.
// Every test runs against both socket layers: the C one (native/authd, the default) and node:net.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { AuthService } from '../../src/auth/daemon/server.js';
import { listenSaslauthd, type SaslauthdListener } from '../../src/auth/daemon/listener.js';
import { CredentialCache } from '../../src/auth/daemon/cache.js';
import { encodeFields } from '../../src/auth/protocol/frame.js';
import { verifyViaSocket } from '../../src/auth/client/saslauthd.js';
import { ok, fail, tempfail, type AuthBackend, type Credentials } from '../../src/auth/types.js';
import { createLogger } from '../../src/observability/log.js';
import { tempDir } from '../helpers/net.js';

const run = promisify(execFile);
const users: Record<string, string> = { alice: 'wonderland', 'bob@example.com': 'b0b', 'slow': 'snail', 'pâté': 'crème brûlée' };
const seen: Credentials[] = [];
let backendCalls = 0;
let directoryDown = false;

const backend: AuthBackend = {
  name: 'table',
  async verify(c, { signal }) {
    backendCalls++;
    seen.push(c);
    if (directoryDown) return tempfail('directory unreachable');
    if (c.login === 'slow') await new Promise((r, j) => { const t = setTimeout(r, 1500); signal.addEventListener('abort', () => { clearTimeout(t); j(new Error('aborted')); }); });
    if (c.login === 'thrower') throw new Error('boom');
    return users[c.login] === c.password ? ok() : fail();
  },
};

for (const layer of ['native', 'node'] as const) describe(`socket layer: ${layer}`, () => {
  let dir: string;
  let sock: string;
  let server: SaslauthdListener;

  before(async () => {
    dir = await tempDir('facteur-authd-');
    sock = path.join(dir, 'mux');
    const log = createLogger({ name: 'authd-test', level: 'silent' });
    const service = new AuthService({ backend, cache: new CredentialCache({ ttlSeconds: 60 }), realmJoin: false, maxInflight: 64, readTimeoutMs: 1500, backendTimeoutMs: 5000, verbose: false, log });
    server = await listenSaslauthd(sock, service, { readTimeoutMs: 1500, log, layer });
    assert.equal(server.layer, layer);
  });

  after(async () => {
    await server.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  async function testsaslauthd(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    try {
      const { stdout, stderr } = await run('testsaslauthd', ['-f', sock, ...args]);
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  }

  /** Send raw bytes; collect everything the server sends until it closes (or the timeout). */
  function raw(bytes: Buffer, opts: { halfClose?: boolean; waitMs?: number } = {}): Promise<{ reply: Buffer; closedByServer: boolean }> {
    return new Promise((resolve) => {
      const s = net.connect(sock);
      const chunks: Buffer[] = [];
      let closedByServer = false;
      const t = setTimeout(() => { s.destroy(); resolve({ reply: Buffer.concat(chunks), closedByServer }); }, opts.waitMs ?? 2500);
      s.on('connect', () => { s.write(bytes); if (opts.halfClose) s.end(); });
      s.on('data', (d) => chunks.push(d));
      s.on('end', () => { closedByServer = true; clearTimeout(t); s.end(); resolve({ reply: Buffer.concat(chunks), closedByServer }); });
      s.on('error', () => undefined);
    });
  }

  test('real testsaslauthd: good password gives its OK line and status 0', async () => {
    const r = await testsaslauthd('-u', 'alice', '-p', 'wonderland', '-s', 'smtp');
    assert.equal(r.stdout, '0: OK "Success."\n');
    assert.equal(r.code, 0);
    assert.deepEqual(seen.at(-1), { login: 'alice', password: 'wonderland', service: 'smtp', realm: '', clientAddr: '' });
  });

  test('real testsaslauthd: wrong password gives its NO line and status 255; -R repeats', async () => {
    const r = await testsaslauthd('-u', 'alice', '-p', 'nope', '-R', '3');
    assert.equal(r.stdout, '0: NO "authentication failed"\n1: NO "authentication failed"\n2: NO "authentication failed"\n');
    assert.equal(r.code, 255);
  });

  test('realm and non-ASCII travel unchanged; testsaslauthd does not split user@realm', async () => {
    assert.equal((await testsaslauthd('-u', 'bob@example.com', '-p', 'b0b')).code, 0);
    assert.equal(seen.at(-1)!.realm, '');
    assert.equal((await testsaslauthd('-u', 'pâté', '-p', 'crème brûlée', '-r', 'picasoft.net', '-s', 'smtp')).code, 0);
    assert.deepEqual({ login: seen.at(-1)!.login, realm: seen.at(-1)!.realm }, { login: 'pâté', realm: 'picasoft.net' });
  });

  test('exact reply bytes: OK with no trailing NUL, then the server half-closes', async () => {
    const { reply, closedByServer } = await raw(encodeFields(['alice', 'wonderland', 'imap', '']));
    assert.deepEqual(reply, Buffer.from('\x00\x02OK'));
    assert.ok(closedByServer);
  });

  test('empty login and empty password: the upstream texts', async () => {
    assert.equal((await raw(encodeFields(['', 'x', 'imap', '']))).reply.subarray(2).toString(), 'NO NULL login received');
    assert.equal((await raw(encodeFields(['alice', '', 'imap', '']))).reply.subarray(2).toString(), 'NO NULL password received');
  });

  test('a length prefix above 256 gets the 3 bytes "NO " at once, without reading on', async () => {
    const { reply } = await raw(Buffer.concat([encodeFields(['alice']), Buffer.from([0x01, 0x01]), Buffer.alloc(300, 0x41)]));
    assert.deepEqual(reply, Buffer.from('\x00\x03NO '));
    assert.deepEqual((await raw(Buffer.from([0xff, 0xff]))).reply, Buffer.from('\x00\x03NO '));
  });

  test('truncated frames get no reply at all, and never reach the backend', async () => {
    const before = backendCalls;
    const full = encodeFields(['alice', 'wonderland', 'imap', '']);
    for (const cut of [1, 2, 5, 9, full.length - 1]) {
      const { reply, closedByServer } = await raw(full.subarray(0, cut), { halfClose: true });
      assert.equal(reply.length, 0, `cut ${cut}`);
      assert.ok(closedByServer);
    }
    assert.equal(backendCalls, before);
  });

  test('a client that connects and sends nothing is dropped after the read timeout; others are served meanwhile', async () => {
    const idle = raw(Buffer.alloc(0), { waitMs: 5000 });
    const r = await testsaslauthd('-u', 'alice', '-p', 'wonderland');
    assert.equal(r.code, 0);
    const { reply, closedByServer } = await idle;
    assert.equal(reply.length, 0);
    assert.ok(closedByServer, 'server closed the idle connection');
  });

  test('a 5-field request (cyrus master) is answered and the client address reaches the backend', async () => {
    const { reply } = await raw(encodeFields(['alice', 'wonderland', 'submission', '', '192.0.2.7;40000']));
    assert.equal(reply.subarray(2).toString(), 'OK');
    assert.equal(seen.at(-1)!.clientAddr, '192.0.2.7;40000');
  });

  test('a 5th field that never completes: after a short grace the 4 fields are answered', async () => {
    const { reply } = await raw(Buffer.concat([encodeFields(['alice', 'wonderland', 'grace', '']), Buffer.from([0x00])]));
    assert.equal(reply.subarray(2).toString(), 'OK');
    assert.equal(seen.at(-1)!.service, 'grace');
  });

  test('a NUL inside a field ends it (C string), and invalid UTF-8 is refused', async () => {
    const nul = await raw(encodeFields(['alice\0admin', 'wonderland', 'imap', '']));
    assert.equal(seen.at(-1)!.login, 'alice');
    assert.equal(nul.reply.subarray(2).toString(), 'OK');
    const bad = await raw(encodeFields([Buffer.from([0x61, 0xff]), Buffer.from('x'), Buffer.from('imap'), Buffer.alloc(0)]));
    assert.match(bad.reply.subarray(2).toString(), /^NO /);
  });

  test('a slow backend call does not hold back the others', async () => {
    const started = Date.now();
    const slow = testsaslauthd('-u', 'slow', '-p', 'snail');
    await new Promise((r) => setTimeout(r, 100));
    const quick = await Promise.all(Array.from({ length: 20 }, () => testsaslauthd('-u', 'alice', '-p', 'wonderland')));
    const quickDone = Date.now();
    assert.ok(quick.every((q) => q.code === 0));
    assert.equal((await slow).code, 0);
    assert.ok(quickDone < started + 1500, 'the 20 quick logins finished before the slow one');
  });

  test('the cache answers a repeat success without the backend, never a wrong password', async () => {
    await testsaslauthd('-u', 'bob@example.com', '-p', 'b0b', '-s', 'smtp');
    const calls = backendCalls;
    const { reply } = await raw(encodeFields(['bob@example.com', 'b0b', 'smtp', '']));
    assert.equal(reply.subarray(2).toString(), 'OK', 'a cache hit replies exactly OK');
    assert.equal(backendCalls, calls);
    assert.equal((await testsaslauthd('-u', 'bob@example.com', '-p', 'wrong', '-s', 'smtp')).code, 255);
    assert.equal(backendCalls, calls + 1, 'failures always go to the backend');
  });

  test('a backend that is down is a temporary failure the client can tell from a wrong password; an exception fails closed', async () => {
    directoryDown = true;
    try {
      const r = await verifyViaSocket(sock, { login: 'alice', password: 'other', service: 'smtp', realm: '' }, AbortSignal.timeout(3000));
      assert.equal(r.verdict, 'tempfail');
      assert.match(r.reason, /^\[UNAVAILABLE\]/);
    } finally {
      directoryDown = false;
    }
    const thrown = await verifyViaSocket(sock, { login: 'thrower', password: 'x', service: 'smtp', realm: '' }, AbortSignal.timeout(3000));
    assert.equal(thrown.verdict, 'tempfail');
    const wrong = await verifyViaSocket(sock, { login: 'alice', password: 'other', service: 'smtp', realm: '' }, AbortSignal.timeout(3000));
    assert.equal(wrong.verdict, 'fail');
  });

  test('garbage storms do not take the daemon down', async () => {
    const storms = Array.from({ length: 50 }, (_, i) => raw(Buffer.from(Array.from({ length: 1 + ((i * 37) % 700) }, (_, j) => (i * 31 + j * 17) & 0xff)), { halfClose: true, waitMs: 2000 }));
    await Promise.all(storms);
    assert.equal((await testsaslauthd('-u', 'alice', '-p', 'wonderland')).code, 0);
  });

  test('brute force: 1000 wrong passwords from one address are slowed then refused; the real user elsewhere gets in throughout', async () => {
    const { PenaltyBox, DEFAULT_PENALTY } = await import('../../src/policy/penalty.js');
    const penalty = new PenaltyBox({ ...DEFAULT_PENALTY, baseDelayMs: 20, maxDelayMs: 200 });
    const log = createLogger({ name: 'authd-test', level: 'silent' });
    const service = new AuthService({ backend, realmJoin: false, maxInflight: 64, readTimeoutMs: 3000, backendTimeoutMs: 5000, verbose: false, log, penalty });
    const psock = path.join(dir, 'mux-penalty');
    const srv = await listenSaslauthd(psock, service, { readTimeoutMs: 3000, log, layer });
    try {
      const callsBefore = backendCalls;
      const attacker = { fail: 0, refused: 0, ok: 0 };
      const legit = { ok: 0, other: 0 };
      const attack = async (n: number) => {
        for (let i = 0; i < n; i++) {
          const r = await verifyViaSocket(psock, { login: 'alice', password: `guess${i}`, service: 'smtp', realm: '', clientAddr: '198.51.100.9;50000' }, AbortSignal.timeout(10_000));
          if (r.verdict === 'fail') attacker.fail++;
          else if (r.verdict === 'tempfail' && /too many authentication failures/.test(r.reason)) attacker.refused++;
          else attacker.ok++;
        }
      };
      const user = async () => {
        for (let i = 0; i < 40; i++) {
          const r = await verifyViaSocket(psock, { login: 'alice', password: 'wonderland', service: 'smtp', realm: '', clientAddr: '192.0.2.1;40000' }, AbortSignal.timeout(10_000));
          if (r.verdict === 'ok') legit.ok++;
          else legit.other++;
        }
      };
      await Promise.all([...Array.from({ length: 20 }, () => attack(50)), user()]);
      assert.equal(attacker.ok, 0);
      assert.equal(attacker.fail + attacker.refused, 1000);
      assert.ok(attacker.fail <= DEFAULT_PENALTY.blockAfter + 20, `only the first attempts reached the backend (${attacker.fail})`);
      assert.ok(attacker.refused >= 1000 - DEFAULT_PENALTY.blockAfter - 20);
      assert.ok(penalty.stats.delayed > 0, 'failure replies were held back before the block');
      assert.deepEqual(legit, { ok: 40, other: 0 });
      assert.ok(backendCalls - callsBefore < 100, 'refused attempts never reach the backend');
    } finally {
      await srv.close();
    }
  });

  test('a request followed by a half-close is still answered when the answer takes time', async () => {
    const { reply, closedByServer } = await raw(encodeFields(['slow', 'snail', 'halfclose', '']), { halfClose: true, waitMs: 4000 });
    assert.equal(reply.subarray(2).toString(), 'OK');
    assert.ok(closedByServer);
  });

  test('a client gone before its answer: the late answer reaches nobody, not the next connection in its place', async () => {
    const gone = net.connect(sock);
    gone.on('error', () => undefined);
    gone.write(encodeFields(['slow', 'snail', 'gone', '']));
    await new Promise((r) => setTimeout(r, 100));
    gone.destroy();
    await new Promise((r) => setTimeout(r, 50));
    // Connections opened after it take its place; each sends a truncated request, so none must ever receive a reply.
    const waiting = Array.from({ length: 20 }, () => raw(encodeFields(['alice']), { waitMs: 2500 }));
    const answered = await Promise.all(waiting);
    for (const w of answered) assert.equal(w.reply.length, 0);
    assert.equal((await testsaslauthd('-u', 'alice', '-p', 'wonderland')).code, 0);
  });

  test('a request written one byte at a time is answered', async () => {
    const bytes = encodeFields(['alice', 'wonderland', 'trickle', '']);
    const reply = await new Promise<Buffer>((resolve) => {
      const s = net.connect(sock);
      const chunks: Buffer[] = [];
      s.on('data', (d) => chunks.push(d));
      s.on('close', () => resolve(Buffer.concat(chunks)));
      s.on('error', () => undefined);
      let i = 0;
      const next = () => {
        if (i < bytes.length) s.write(bytes.subarray(i, ++i), () => setTimeout(next, 2));
      };
      s.on('connect', next);
    });
    assert.equal(reply.subarray(2).toString(), 'OK');
  });

  test('bytes after a whole request are read and discarded: the reply arrives whole, then end of file, no reset', async () => {
    const bytes = Buffer.concat([encodeFields(['alice', 'wonderland', 'junk', '', '192.0.2.7;1']), Buffer.alloc(5000, 0x41)]);
    const r = await new Promise<{ reply: Buffer; error?: string }>((resolve) => {
      const s = net.connect(sock);
      const chunks: Buffer[] = [];
      let error: string | undefined;
      s.on('data', (d) => chunks.push(d));
      s.on('error', (e) => (error = (e as NodeJS.ErrnoException).code));
      s.on('end', () => s.end());
      s.on('close', () => resolve({ reply: Buffer.concat(chunks), error }));
      s.write(bytes);
    });
    assert.deepEqual(r, { reply: Buffer.from('\x00\x02OK'), error: undefined });
  });

  test('300 clients at once are all answered', async () => {
    const replies = await Promise.all(Array.from({ length: 300 }, (_, i) => raw(encodeFields(['alice', i % 2 ? 'wonderland' : 'nope', 'many', '']), { waitMs: 10_000 })));
    assert.deepEqual(new Set(replies.map((r) => r.reply.subarray(2).toString())), new Set(['OK', 'NO']));
    assert.equal(replies.filter((r) => r.reply.subarray(2).toString() === 'OK').length, 150);
  });

  test('close() stops accepting at once but answers the requests already in progress', async () => {
    const log = createLogger({ name: 'authd-test', level: 'silent' });
    const service = new AuthService({ backend, realmJoin: false, maxInflight: 8, readTimeoutMs: 3000, backendTimeoutMs: 5000, verbose: false, log });
    const csock = path.join(dir, 'mux-close');
    const srv = await listenSaslauthd(csock, service, { readTimeoutMs: 3000, log, layer });
    const inflight = new Promise<Buffer>((resolve) => {
      const s = net.connect(csock);
      const chunks: Buffer[] = [];
      s.on('data', (d) => chunks.push(d));
      s.on('close', () => resolve(Buffer.concat(chunks)));
      s.on('error', () => undefined);
      s.write(encodeFields(['slow', 'snail', 'close', '']));
    });
    await new Promise((r) => setTimeout(r, 200));
    let closed = false;
    const closing = srv.close().then(() => (closed = true));
    await new Promise((r) => setTimeout(r, 100));
    const refused = await verifyViaSocket(csock, { login: 'alice', password: 'wonderland', service: 'smtp', realm: '' }, AbortSignal.timeout(2000));
    assert.equal(refused.verdict, 'tempfail');
    assert.match(refused.reason, /ENOENT|ECONNREFUSED/, "the socket is gone");
    assert.equal(closed, false, 'close() waits for the request in progress');
    assert.equal((await inflight).subarray(2).toString(), 'OK');
    await closing;
  });
});
