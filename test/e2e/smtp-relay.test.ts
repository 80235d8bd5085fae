// Open-relay tests: every classic trick on port 25 and on the submission ports without AUTH; nothing relays.
import { before, after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestSmtp, MemoryQueue, MapVerifier, RawSmtp, b64, type TestServer } from '../helpers/serve.js';

const queue = new MemoryQueue();
const verifier = new MapVerifier({ 'alice@example.org': { password: 'alice-secret' } });
let srv: TestServer;

before(async () => {
  srv = await startTestSmtp({ queue, verifier, toml: `[server]\nhostname = "mx.test"\nlocal_domains = ["example.org", "Example.NET."]\n` });
});
after(() => srv.stop());

/** Recipients that must never be accepted from an unauthenticated client. */
const TRICKS = [
  'victim@evil.test',
  'victim@EVIL.TEST',
  'victim%evil.test@example.org',
  'victim%evil.test@EXAMPLE.ORG',
  'evil.test!victim@example.org',
  '@example.org:victim@evil.test',
  '@example.org,@example.net:victim@evil.test',
  '"victim@evil.test"@example.org',
  '"victim%evil.test"@example.org',
  '"evil.test!victim"@example.org',
  'victim@evil.test@example.org',
  'victim@[192.0.2.1]',
  'victim@[127.0.0.1]',
  'victim@[IPv6:::1]',
  'victim@evil.test.',
  'victim@example.org.evil.test',
  'victim@evil.example.org',
  'victim@example.org.',
  'victim%evil.test',
  'evil.test!victim',
  'victim@evil.test%example.org',
  'victim\\@evil.test@example.org',
];

async function inbound(): Promise<RawSmtp> {
  const c = await RawSmtp.connect(srv.ports.inbound);
  await c.reply();
  await c.cmd('EHLO relay-tester.test');
  return c;
}

describe('port 25', () => {
  for (const sender of ['x@outside.test', '']) {
    test(`no trick relays (MAIL FROM:<${sender}>)`, async () => {
      const c = await inbound();
      for (const rcpt of TRICKS) {
        assert.match(await c.cmd(`MAIL FROM:<${sender}>`), /^250 /);
        const r = await c.cmd(`RCPT TO:<${rcpt}>`);
        assert.match(r, /^5\d\d /, `${rcpt} → ${r}`);
        assert.match(await c.cmd('RSET'), /^250 /);
      }
      c.close();
    });
  }

  test('plain remote recipients get exactly 554 5.7.1 Relay access denied', async () => {
    const c = await inbound();
    await c.cmd('MAIL FROM:<x@outside.test>');
    for (const rcpt of ['victim@evil.test', 'victim%evil.test@example.org', 'evil.test!victim@example.org', 'victim@[192.0.2.1]', '@example.org:victim@evil.test']) {
      assert.equal(await c.cmd(`RCPT TO:<${rcpt}>`), '554 5.7.1 Relay access denied', rcpt);
    }
    c.close();
  });

  test('local domains are accepted in any case, configured ones normalised; a source route to a local address is ignored', async () => {
    const c = await inbound();
    await c.cmd('MAIL FROM:<x@outside.test>');
    for (const rcpt of ['bob@example.org', 'BOB@EXAMPLE.ORG', 'carol@example.net', '@evil.test:bob@example.org', 'postmaster']) {
      assert.match(await c.cmd(`RCPT TO:<${rcpt}>`), /^250 /, rcpt);
    }
    c.close();
  });

  test('a remote recipient after a local one and after RSET is still refused; DATA carries only local recipients', async () => {
    const c = await inbound();
    await c.cmd('MAIL FROM:<x@outside.test>');
    assert.match(await c.cmd('RCPT TO:<bob@example.org>'), /^250 /);
    assert.match(await c.cmd('RCPT TO:<victim@evil.test>'), /^554 /);
    assert.match(await c.cmd('RSET'), /^250 /);
    assert.match(await c.cmd('RCPT TO:<victim@evil.test>'), /^503 /);
    await c.cmd('MAIL FROM:<x@outside.test>');
    assert.match(await c.cmd('RCPT TO:<victim@evil.test>'), /^554 /);
    assert.match(await c.cmd('RCPT TO:<bob@example.org>'), /^250 /);
    assert.match(await c.cmd('DATA'), /^354 /);
    assert.match(await c.cmd('Subject: x\r\n\r\nx\r\n.'), /^250 /);
    assert.deepEqual(queue.last().envelope.rcptTo.map((r) => r.address), ['bob@example.org']);
    c.close();
  });

  test('after STARTTLS on port 25 nothing changes', async () => {
    const c = await inbound();
    assert.match(await c.cmd('STARTTLS'), /^220 /);
    await c.upgrade();
    await c.cmd('EHLO relay-tester.test');
    await c.cmd('MAIL FROM:<x@outside.test>');
    assert.equal(await c.cmd('RCPT TO:<victim@evil.test>'), '554 5.7.1 Relay access denied');
    c.close();
  });
});

describe('submission without AUTH', () => {
  test('587 in plaintext: MAIL needs AUTH, RCPT needs MAIL', async () => {
    const c = await RawSmtp.connect(srv.ports.submission);
    await c.reply();
    await c.cmd('EHLO relay-tester.test');
    for (const sender of ['x@outside.test', '', 'alice@example.org']) assert.equal(await c.cmd(`MAIL FROM:<${sender}>`), '530 5.7.0 Authentication required');
    for (const rcpt of TRICKS.slice(0, 5)) assert.match(await c.cmd(`RCPT TO:<${rcpt}>`), /^5\d\d /);
    assert.match(await c.cmd('DATA'), /^5\d\d /);
    c.close();
  });

  test('587 over TLS, after a failed AUTH and after RSET: still 530', async () => {
    const c = await RawSmtp.connect(srv.ports.submission);
    await c.reply();
    await c.cmd('EHLO relay-tester.test');
    await c.cmd('STARTTLS');
    await c.upgrade();
    await c.cmd('EHLO relay-tester.test');
    assert.match(await c.cmd(`AUTH PLAIN ${b64('\0alice@example.org\0wrong')}`), /^535 /);
    assert.equal(await c.cmd('MAIL FROM:<alice@example.org>'), '530 5.7.0 Authentication required');
    assert.match(await c.cmd('RSET'), /^250 /);
    assert.equal(await c.cmd('MAIL FROM:<>'), '530 5.7.0 Authentication required');
    for (const rcpt of TRICKS) assert.match(await c.cmd(`RCPT TO:<${rcpt}>`), /^5\d\d /);
    c.close();
  });

  test('465 without AUTH: 530', async () => {
    const c = await RawSmtp.connect(srv.ports.submissions, { tls: true });
    await c.reply();
    await c.cmd('EHLO relay-tester.test');
    assert.equal(await c.cmd('MAIL FROM:<x@outside.test>'), '530 5.7.0 Authentication required');
    c.close();
  });

  test('control: an authenticated member may relay', async () => {
    const c = await RawSmtp.connect(srv.ports.submissions, { tls: true });
    await c.reply();
    await c.cmd('EHLO member.test');
    assert.match(await c.cmd(`AUTH PLAIN ${b64('\0alice@example.org\0alice-secret')}`), /^235 /);
    assert.match(await c.cmd('MAIL FROM:<alice@example.org>'), /^250 /);
    assert.match(await c.cmd('RCPT TO:<friend@elsewhere.test>'), /^250 /);
    c.close();
  });
});

test('nothing was ever queued for a remote recipient by an unauthenticated client', () => {
  const remote = queue.messages.flatMap((m) => (m.envelope.authUser ? [] : m.envelope.rcptTo.map((r) => r.address))).filter((a) => !/@example\.(org|net)$/i.test(a) && a !== 'postmaster');
  assert.deepEqual(remote, []);
});
