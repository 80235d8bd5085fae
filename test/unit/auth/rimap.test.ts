// rimap against a fake IMAP server (node:net) that misbehaves on purpose: upstream texts, exact bytes sent, never OK by accident, no crash.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { parseRimapOption, imapQuote, classifyReply, rimapVerify, TEXT, createRimapBackend, type RimapTarget } from '../../../src/auth/backends/rimap.js';
import { ConfigError } from '../../../src/lib/errors.js';
import type { AuthResult } from '../../../src/auth/types.js';

interface Conn {
  send(s: string | Buffer): void;
  /** Next CRLF-terminated line from the client, or null at EOF. */
  line(): Promise<string | null>;
  close(): void;
  sock: net.Socket;
}
type Script = (c: Conn) => Promise<void>;

let server: net.Server;
let port: number;
let script: Script = async () => {};
const received: string[] = [];
const sockets = new Set<net.Socket>();

before(async () => {
  server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    let buf = '';
    let waiting: ((l: string | null) => void) | undefined;
    let ended = false;
    const take = () => {
      const i = buf.indexOf('\r\n');
      if (i >= 0 && waiting) {
        const l = buf.slice(0, i);
        buf = buf.slice(i + 2);
        received.push(l);
        const w = waiting;
        waiting = undefined;
        w(l);
      } else if (ended && waiting) {
        const w = waiting;
        waiting = undefined;
        w(null);
      }
    };
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      take();
    });
    sock.on('end', () => {
      ended = true;
      take();
    });
    sock.on('error', () => undefined);
    const c: Conn = {
      sock,
      send: (s) => {
        if (!sock.destroyed) sock.write(s);
      },
      line: () =>
        new Promise((resolve) => {
          waiting = resolve;
          take();
        }),
      close: () => sock.end(),
    };
    void script(c).catch(() => sock.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as net.AddressInfo).port;
});
after(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((r) => server.close(r));
});

const target = (over: Partial<RimapTarget> = {}): RimapTarget => ({ host: '127.0.0.1', port, mode: 'plain', ioTimeoutMs: 400, ...over });
const check = (login = 'alice', password = 'secret', t = target()): Promise<AuthResult> => rimapVerify(t, login, password, AbortSignal.timeout(10_000));

/** A well-behaved server answering LOGIN with `reply`. */
const answering = (reply: string, greeting = '* OK [CAPABILITY IMAP4rev1] ready\r\n'): Script => async (c) => {
  c.send(greeting);
  const l = await c.line();
  if (l === null) return;
  c.send(reply);
  await c.line(); // LOGOUT
  c.close();
};

test('-O parsing: host[/port], service names, IPv6 literals, URL forms, CA files, errors', () => {
  assert.deepEqual(parseRimapOption('imap.example.org'), { host: 'imap.example.org', port: 143, mode: 'plain' });
  assert.deepEqual(parseRimapOption('imap.example.org/imaps'), { host: 'imap.example.org', port: 993, mode: 'plain' });
  assert.deepEqual(parseRimapOption('127.0.0.1/14303'), { host: '127.0.0.1', port: 14303, mode: 'plain' });
  assert.deepEqual(parseRimapOption('::1/14303'), { host: '::1', port: 14303, mode: 'plain' });
  assert.deepEqual(parseRimapOption('::1'), { host: '::1', port: 143, mode: 'plain' });
  assert.deepEqual(parseRimapOption('[::1]/14303'), { host: '::1', port: 14303, mode: 'plain' });
  assert.deepEqual(parseRimapOption('imaps://mail.example.org'), { host: 'mail.example.org', port: 993, mode: 'tls' });
  assert.deepEqual(parseRimapOption('imaps://[::1]:9993'), { host: '::1', port: 9993, mode: 'tls' });
  assert.deepEqual(parseRimapOption('imap+starttls://mail.example.org'), { host: 'mail.example.org', port: 143, mode: 'starttls' });
  assert.deepEqual(parseRimapOption('imap://mail.example.org:1143'), { host: 'mail.example.org', port: 1143, mode: 'plain' });
  const bad: Array<[string | undefined, RegExp]> = [
    [undefined, /needs -O host/],
    ['', /needs -O host/],
    ['host/nosuchservice', /unknown port or service/],
    ['host/99999', /unknown port/],
    ['pop3://host', /unknown scheme/],
    ['imaps://user:pw@host', /no user or password/],
    ['imaps://host/path', /unexpected path/],
    ['imaps://host?ca=/nonexistent/ca.pem', /cannot read the CA file/],
    ['imaps://host?ca=/etc/hostname', /no PEM certificate/],
    ['imaps://host?verify=no', /unknown parameter/],
    ['imap://host?ca=/etc/hostname', /only makes sense/],
  ];
  for (const [o, re] of bad) assert.throws(() => parseRimapOption(o), (e: Error) => e instanceof ConfigError && re.test(e.message), String(o));
});

test('quoting and reply classification follow auth_rimap.c', () => {
  assert.equal(imapQuote('alice'), '"alice"');
  assert.equal(imapQuote('pa"ss\\wd'), '"pa\\"ss\\\\wd"');
  assert.equal(imapQuote('{5}\r\n'), '"{5}\r\n"');
  assert.equal(imapQuote('é'), '"é"');
  assert.deepEqual(classifyReply('saslauthd OK Logged in\r\n'), { verdict: 'ok', reason: TEXT.ok, addresses: undefined });
  assert.deepEqual(classifyReply('* CAPABILITY IMAP4rev1\r\nsaslauthd OK done\r\n').verdict, 'ok');
  assert.deepEqual(classifyReply('saslauthd NO [AUTHENTICATIONFAILED] no\r\n'), { verdict: 'fail', reason: TEXT.rejected });
  assert.deepEqual(classifyReply('* OK [ALERT] hi\r\nsaslauthd OK\r\n'), { verdict: 'fail', reason: TEXT.unexpected });
  assert.deepEqual(classifyReply('saslauthd BAD what\r\n'), { verdict: 'fail', reason: TEXT.unexpected });
  assert.deepEqual(classifyReply(''), { verdict: 'fail', reason: TEXT.unexpected });
});

test('the exact bytes: LOGIN with upstream quoting, then LOGOUT; OK and NO texts', async () => {
  received.length = 0;
  script = answering('saslauthd OK [CAPABILITY IMAP4rev1] Logged in\r\n');
  assert.deepEqual(await check('alice@example.org', 'pa"ss\\wd é {3}'), { verdict: 'ok', reason: 'remote authentication successful', addresses: undefined });
  for (let i = 0; i < 200 && received.length < 2; i++) await new Promise((r) => setTimeout(r, 10)); // LOGOUT is sent without waiting
  assert.deepEqual(received, ['saslauthd LOGIN "alice@example.org" "pa\\"ss\\\\wd é {3}"', 'saslauthd LOGOUT']);
  script = answering('saslauthd NO [AUTHENTICATIONFAILED] Authentication failed.\r\n');
  assert.deepEqual(await check(), { verdict: 'fail', reason: 'remote server rejected your credentials' });
});

test('replies split into single bytes, CAPABILITY lines first: still parsed', async () => {
  script = async (c) => {
    for (const ch of '* OK hi\r\n') c.send(ch);
    await c.line();
    for (const ch of '* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nsaslauthd OK yes\r\n') {
      c.send(ch);
      await new Promise((r) => setImmediate(r));
    }
    await c.line();
    c.close();
  };
  assert.equal((await check()).verdict, 'ok');
});

const hostile: Array<[string, Script, AuthResult['verdict'], string]> = [
  ['greeting * PREAUTH', answering('saslauthd OK\r\n', '* PREAUTH [CAPABILITY IMAP4rev1] logged in as root\r\n'), 'fail', TEXT.unexpected],
  ['greeting * BYE', answering('saslauthd OK\r\n', '* BYE server shutting down\r\n'), 'tempfail', `[UNAVAILABLE] ${TEXT.unavailable}`],
  ['greeting * NO', answering('saslauthd OK\r\n', '* NO overloaded\r\n'), 'tempfail', `[UNAVAILABLE] ${TEXT.unavailable}`],
  ['greeting garbage', answering('saslauthd OK\r\n', 'HTTP/1.1 400 * Bad Request\r\n'), 'fail', TEXT.unexpected],
  ['greeting of 1000 bytes', answering('saslauthd OK\r\n', `* OK ${'x'.repeat(1000)}\r\n`), 'fail', TEXT.syncError],
  ['greeting without LF, then silence', async (c) => c.send('* OK no end of line'), 'tempfail', `[UNAVAILABLE] ${TEXT.syncTemp}`],
  ['never answering', async () => {}, 'tempfail', `[UNAVAILABLE] ${TEXT.syncTemp}`],
  ['closing at once', async (c) => {
    c.sock.destroy();
  }, 'tempfail', `[UNAVAILABLE] ${TEXT.syncTemp}`],
  ['reply BAD', answering('saslauthd BAD [PARSE] no\r\n'), 'fail', TEXT.unexpected],
  ['reply untagged * OK then tagged OK', answering('* OK [ALERT] hello\r\nsaslauthd OK\r\n'), 'fail', TEXT.unexpected],
  ['reply of 1000 bytes', answering(`saslauthd OK ${'y'.repeat(1000)}\r\n`), 'fail', TEXT.internal],
  ['many lines without the tag past 1000 bytes', answering(`* CAPABILITY ${'z'.repeat(300)}\r\n`.repeat(4)), 'fail', TEXT.internal],
  ['reply never comes', answering(''), 'tempfail', `[UNAVAILABLE] ${TEXT.syncTemp}`],
  ['reply without LF, then close', async (c) => {
    c.send('* OK hi\r\n');
    await c.line();
    c.send('saslauthd OK');
    c.close();
  }, 'tempfail', `[UNAVAILABLE] ${TEXT.syncTemp}`],
  ['BYE after LOGIN then close', async (c) => {
    c.send('* OK hi\r\n');
    await c.line();
    c.send('* BYE bye\r\n');
    c.sock.destroy();
  }, 'tempfail', `[UNAVAILABLE] ${TEXT.syncTemp}`],
  ['tagged OK for another tag', answering('a1 OK\r\nsaslauthd NO\r\n'), 'fail', TEXT.unexpected],
  ['NUL bytes and 8-bit garbage', answering('saslauthd \u0000OK\xff\r\n'), 'fail', TEXT.unexpected],
];

for (const [name, s, verdict, reason] of hostile) {
  test(`hostile server: ${name} -> ${verdict} "${reason}"`, async () => {
    script = s;
    const r = await check();
    assert.equal(r.verdict, verdict);
    assert.equal(r.reason, reason);
  });
}

test('CR, LF or NUL in the login or password: refused without contacting the server', async () => {
  received.length = 0;
  script = answering('saslauthd OK\r\n');
  for (const [l, p] of [['alice', 'x\r\nsaslauthd LOGIN "root" "y"'], ['alice\n', 'x'], ['alice', 'x\0y']]) {
    const r = await check(l, p);
    assert.equal(r.verdict, 'fail');
  }
  assert.deepEqual(received, []);
});

test('connection refused and unresolvable names are temporary failures with the upstream text', async () => {
  const closed = await new Promise<number>((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const logs: string[] = [];
  let r = await rimapVerify(target({ port: closed }), 'a', 'b', AbortSignal.timeout(5000), undefined, (m) => logs.push(m));
  assert.deepEqual(r, { verdict: 'tempfail', reason: "[UNAVAILABLE] Couldn't contact remote authentication server" });
  r = await rimapVerify(target({ host: 'no-such-host.invalid' }), 'a', 'b', AbortSignal.timeout(5000), undefined, (m) => logs.push(m));
  assert.deepEqual(r, { verdict: 'tempfail', reason: "[UNAVAILABLE] Couldn't contact remote authentication server" });
  assert.ok(logs.every((l) => !l.includes('b"')), JSON.stringify(logs));
});

test('STARTTLS: plaintext injected after the OK is refused; a refused STARTTLS is not OK', async () => {
  script = async (c) => {
    c.send('* OK hi\r\n');
    await c.line();
    c.send('saslauthd OK Begin TLS\r\nsaslauthd OK injected\r\n');
    await c.line();
  };
  let r = await check('a', 'b', target({ mode: 'starttls' }));
  assert.deepEqual(r, { verdict: 'fail', reason: TEXT.unexpected });
  script = answering('saslauthd BAD no TLS here\r\n');
  r = await check('a', 'b', target({ mode: 'starttls' }));
  assert.equal(r.verdict, 'fail');
  assert.match(r.reason, /refused STARTTLS/);
  // A plaintext server where TLS is expected.
  script = answering('saslauthd OK\r\n');
  r = await check('a', 'b', target({ mode: 'tls' }));
  assert.equal(r.verdict, 'tempfail');
  assert.match(r.reason, /^\[UNAVAILABLE\] TLS with the remote authentication server failed/);
});

test('requests run concurrently: the server answers only once 8 LOGINs are waiting', async () => {
  const waiting: Array<() => void> = [];
  script = async (c) => {
    c.send('* OK hi\r\n');
    const l = await c.line();
    await new Promise<void>((resolve) => {
      waiting.push(resolve);
      if (waiting.length === 8) for (const w of waiting) w();
    });
    c.send(l?.includes('"good"') ? 'saslauthd OK\r\n' : 'saslauthd NO\r\n');
    await c.line();
    c.close();
  };
  const t = target({ ioTimeoutMs: 5000 });
  const results = await Promise.all(Array.from({ length: 8 }, (_, i) => rimapVerify(t, `u${i}`, i % 2 ? 'good' : 'bad', AbortSignal.timeout(10_000))));
  assert.deepEqual(results.map((r) => r.verdict), ['fail', 'ok', 'fail', 'ok', 'fail', 'ok', 'fail', 'ok']);
});

test('the backend factory: verify() goes through the same conversation; an abort is a temporary failure', async () => {
  script = answering('saslauthd OK\r\n');
  const b = await createRimapBackend(`127.0.0.1/${port}`, { log: () => {} });
  const steps: string[] = [];
  const r = await b.verify({ login: 'alice', password: 'sekrit', service: 'smtp', realm: '' }, { signal: AbortSignal.timeout(5000), explain: (s) => steps.push(s) });
  assert.equal(r.verdict, 'ok');
  assert.ok(steps.some((s) => s.includes('saslauthd LOGIN "alice" "<password>"')), JSON.stringify(steps));
  assert.ok(steps.every((s) => !s.includes('sekrit')), JSON.stringify(steps));
  script = async () => {};
  const ac = new AbortController();
  const pending = b.verify({ login: 'alice', password: 'x', service: 'smtp', realm: '' }, { signal: ac.signal });
  setTimeout(() => ac.abort(), 50);
  assert.equal((await pending).verdict, 'tempfail');
});
