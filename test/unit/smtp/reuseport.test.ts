// src/smtp/reuseport.ts and its addon (native/net): the primary's check and reservation of a listener's address, and a
// worker's own socket on it. Real sockets on 127.0.0.1 and ::1; the kernel's answer is the proof.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { nativeAddon } from '../../../src/lib/native.js';
import { reserveListen, reusePortHandle, reusePortUnavailable } from '../../../src/smtp/reuseport.js';

interface Binding {
  bind(host: unknown, port: unknown, reusePort: unknown): number;
}

function listenOn(handleOrPort: object | number): Promise<net.Server> {
  const srv = net.createServer((c) => c.end('hello\n'));
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    if (typeof handleOrPort === 'number') srv.listen({ port: handleOrPort, host: '127.0.0.1', exclusive: true }, () => resolve(srv));
    else srv.listen(handleOrPort, () => resolve(srv));
  });
}

const close = (srv: net.Server) => new Promise((r) => srv.close(r));

function greeting(port: number, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, host);
    let got = '';
    c.on('data', (d) => (got += d));
    c.on('end', () => resolve(got));
    c.on('error', reject);
  });
}

test('the addon is built here (CI builds it with npm ci)', () => {
  assert.equal(reusePortUnavailable(), undefined);
});

test('port 0 is fixed by the primary; two sockets then listen on it and both serve; release frees the port', async () => {
  const r = await reserveListen('inbound', '127.0.0.1', 0);
  assert.ok(r.port > 0);
  assert.equal(r.host, '127.0.0.1');
  const a = await listenOn(reusePortHandle(r));
  const b = await listenOn(reusePortHandle(r));
  assert.equal((a.address() as net.AddressInfo).port, r.port);
  assert.equal((b.address() as net.AddressInfo).port, r.port);
  for (let i = 0; i < 10; i++) assert.equal(await greeting(r.port), 'hello\n');
  // While listening, a plain listener (what any other server does) is refused.
  await assert.rejects(listenOn(r.port), { code: 'EADDRINUSE' });
  await close(a);
  await close(b);
  r.release();
  r.release(); // twice is harmless
  const plain = await listenOn(r.port);
  await close(plain);
});

test('an address something already listens on is refused with EADDRINUSE, as net.Server would say', async () => {
  const other = await listenOn(0);
  const port = (other.address() as net.AddressInfo).port;
  await assert.rejects(reserveListen('submission', '127.0.0.1', port), (err: NodeJS.ErrnoException) => {
    assert.equal(err.code, 'EADDRINUSE');
    assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
    return true;
  });
  await close(other);
});

test('a name is resolved to a numeric address, and IPv6 works', async () => {
  const r = await reserveListen('inbound', 'localhost', 0);
  assert.ok(net.isIP(r.host));
  r.release();
  const v6 = await reserveListen('inbound', '[::1]', 0);
  assert.equal(v6.host, '::1');
  const srv = await listenOn(reusePortHandle(v6));
  assert.equal(await greeting(v6.port, '::1'), 'hello\n');
  await close(srv);
  v6.release();
});

test('the addon refuses bad arguments with a TypeError, never a crash', () => {
  const a = nativeAddon<Binding>('reuseport_socket');
  assert.ok('binding' in a);
  const b = a.binding;
  for (const args of [
    ['not an address', 25, true],
    ['127.0.0.1', -1, true],
    ['127.0.0.1', 70000, true],
    ['127.0.0.1', 25, 'yes'],
    [null, 25, true],
    ['127.0.0.1'.repeat(20), 25, true],
    ['127.0.0.1\u0000evil', 25, true],
  ]) {
    assert.throws(() => b.bind(args[0], args[1], args[2]), TypeError, JSON.stringify(args));
  }
});

test('an address of no interface here, or a name that does not resolve: the code net.Server would give, and a sentence for each', async () => {
  const { listenError } = await import('../../../src/smtp/server.js');
  const l = (host: string) => ({ kind: 'inbound' as const, host, port: 2525 });
  await assert.rejects(reserveListen('inbound', '192.0.2.55', 2525), (err: NodeJS.ErrnoException) => {
    assert.equal(err.code, 'EADDRNOTAVAIL');
    assert.equal(listenError(l('192.0.2.55'), err).message, '[inbound] cannot listen on 192.0.2.55:2525: no network interface of this machine has that address; change [inbound] listen');
    return true;
  });
  await assert.rejects(reserveListen('inbound', 'no-such-host.invalid', 2525), (err: NodeJS.ErrnoException) => {
    assert.ok(err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN', String(err.code)); // EAI_AGAIN where no resolver answers
    assert.equal(listenError(l('no-such-host.invalid'), err).message, '[inbound] cannot listen on no-such-host.invalid:2525: the host name does not resolve; change [inbound] listen to an IP address');
    return true;
  });
  const inUse = Object.assign(new Error('bind: Address already in use'), { code: 'EADDRINUSE' });
  assert.match(listenError(l('127.0.0.1'), inUse).message, /the address is already in use \(another facteur or MTA running\?\); stop the other server or change \[inbound\] listen$/);
  const denied = Object.assign(new Error('bind: Permission denied'), { code: 'EACCES' });
  assert.match(listenError(l('0.0.0.0'), denied).message, /permission denied \(ports below 1024 need CAP_NET_BIND_SERVICE or root\); grant it or change \[inbound\] listen$/);
});
