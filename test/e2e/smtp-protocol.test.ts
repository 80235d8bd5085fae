// SMTP transcripts against facteur serve(): listeners' AUTH policy, SASL PLAIN/LOGIN exchanges, sender ownership,
// SIZE, DSN/8BITMIME/SMTPUTF8 parameters, STARTTLS injection, queue hand-off and its failures.
import { before, after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestSmtp, MemoryQueue, MapVerifier, RawSmtp, b64, type TestServer } from '../helpers/serve.js';

const queue = new MemoryQueue();
const verifier = new MapVerifier({
  'alice@example.org': { password: 'alice-secret', addresses: ['alice.smith@example.org'] },
  bob: { password: 'bob-secret', addresses: ['bob@example.org'] },
});
let srv: TestServer;

before(async () => {
  srv = await startTestSmtp({
    queue,
    verifier,
    toml: `[server]\nhostname = "mx.test"\nlocal_domains = ["example.org"]\nmax_message_size = 20000\nmax_recipients = 3\n[auth]\ntimeout = "1s"\n[policy]\nsender_check = "reject"\n`,
  });
});
after(() => srv.stop());

async function ehlo(c: RawSmtp, name = 'client.test'): Promise<string> {
  return c.cmd(`EHLO ${name}`);
}

/** Connect to 587, STARTTLS, EHLO again. */
async function tlsSubmission(): Promise<RawSmtp> {
  const c = await RawSmtp.connect(srv.ports.submission);
  assert.match(await c.reply(), /^220 /);
  await ehlo(c);
  assert.match(await c.cmd('STARTTLS'), /^220 /);
  await c.upgrade();
  await ehlo(c);
  return c;
}

async function authed(user = 'alice@example.org', pass = 'alice-secret'): Promise<RawSmtp> {
  const c = await tlsSubmission();
  assert.match(await c.cmd(`AUTH PLAIN ${b64(`\0${user}\0${pass}`)}`), /^235 2\.7\.0 /);
  return c;
}

async function send(c: RawSmtp, from: string, to: string[], body: string): Promise<string> {
  const r = await c.cmd(`MAIL FROM:<${from}>`);
  if (!r.startsWith('250')) return r;
  for (const t of to) {
    const rr = await c.cmd(`RCPT TO:<${t}>`);
    if (!rr.startsWith('250')) return rr;
  }
  assert.match(await c.cmd('DATA'), /^354 /);
  return c.cmd(`${body}\r\n.`);
}

describe('listeners and AUTH advertisement', () => {
  test('inbound: greeting, EHLO lists the extensions, no AUTH, STARTTLS offered', async () => {
    const c = await RawSmtp.connect(srv.ports.inbound);
    assert.match(await c.reply(), /^220 mx\.test ESMTP facteur/);
    const e = await ehlo(c);
    for (const ext of ['PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'DSN', 'STARTTLS', 'SIZE 20000']) assert.match(e, new RegExp(`250[- ]${ext}`), ext);
    assert.doesNotMatch(e, /AUTH/);
    assert.equal(await c.cmd(`AUTH PLAIN ${b64('\0bob\0bob-secret')}`), '503 5.5.1 Error: authentication not enabled');
    c.send('STARTTLS\r\n');
    assert.match(await c.reply(), /^220 /);
    await c.upgrade();
    assert.doesNotMatch(await ehlo(c), /AUTH/, 'inbound never offers AUTH, even over TLS');
    assert.equal(await c.cmd(`AUTH PLAIN ${b64('\0bob\0bob-secret')}`), '503 5.5.1 Error: authentication not enabled');
    c.close();
  });

  test('submission: no AUTH before STARTTLS (538 5.7.11), AUTH advertised after', async () => {
    const c = await RawSmtp.connect(srv.ports.submission);
    await c.reply();
    const e = await ehlo(c);
    assert.doesNotMatch(e, /AUTH/);
    assert.match(e, /STARTTLS/);
    assert.equal(await c.cmd(`AUTH PLAIN ${b64('\0bob\0bob-secret')}`), '538 5.7.11 Must issue a STARTTLS command first');
    assert.equal(await c.cmd('AUTH LOGIN'), '538 5.7.11 Must issue a STARTTLS command first');
    assert.equal(await c.cmd('MAIL FROM:<bob@example.org>'), '530 5.7.0 Authentication required');
    assert.equal(verifier.calls.length, 0, 'no password was ever checked in plaintext');
    assert.match(await c.cmd('STARTTLS'), /^220 /);
    await c.upgrade();
    const e2 = await ehlo(c);
    assert.match(e2, /250[- ]AUTH PLAIN LOGIN/);
    assert.doesNotMatch(e2, /STARTTLS/);
    c.close();
  });

  test('submissions (465): implicit TLS, AUTH advertised, no STARTTLS, AUTH required before MAIL', async () => {
    const c = await RawSmtp.connect(srv.ports.submissions, { tls: true });
    assert.match(await c.reply(), /^220 /);
    const e = await ehlo(c);
    assert.match(e, /AUTH PLAIN LOGIN/);
    assert.doesNotMatch(e, /STARTTLS/);
    assert.equal(await c.cmd('MAIL FROM:<bob@example.org>'), '530 5.7.0 Authentication required');
    assert.match(await c.cmd(`AUTH PLAIN ${b64('\0bob\0bob-secret')}`), /^235 2\.7\.0/);
    assert.match(await c.cmd('MAIL FROM:<bob@example.org>'), /^250 /);
    c.close();
  });

  test('VRFY is off (502 5.5.1), HELP and NOOP answer', async () => {
    const c = await RawSmtp.connect(srv.ports.inbound);
    await c.reply();
    await ehlo(c);
    assert.equal(await c.cmd('VRFY postmaster'), '502 5.5.1 VRFY command is disabled');
    assert.match(await c.cmd('HELP'), /^214 /);
    assert.match(await c.cmd('NOOP'), /^250 /);
    assert.match(await c.cmd('QUIT'), /^221 /);
  });
});

describe('SASL exchanges', () => {
  test('PLAIN with initial response, and with a challenge', async () => {
    const c = await tlsSubmission();
    assert.equal(await c.cmd('AUTH PLAIN'), '334 ');
    assert.match(await c.cmd(b64('\0alice@example.org\0alice-secret')), /^235 2\.7\.0/);
    assert.equal(await c.cmd(`AUTH PLAIN ${b64('\0bob\0bob-secret')}`), '503 5.5.1 Error: No identity changes permitted');
    c.close();
  });

  test('PLAIN authzid must be empty or equal to authcid', async () => {
    const c = await tlsSubmission();
    assert.equal(await c.cmd(`AUTH PLAIN ${b64('alice@example.org\0bob\0bob-secret')}`), '535 5.7.8 Authentication credentials invalid');
    assert.match(await c.cmd(`AUTH PLAIN ${b64('bob\0bob\0bob-secret')}`), /^235 /);
    c.close();
  });

  test('PLAIN with only an authzid (empty authcid) is refused', async () => {
    const c = await tlsSubmission();
    assert.equal(await c.cmd(`AUTH PLAIN ${b64('bob\0\0bob-secret')}`), '535 5.7.8 Authentication credentials invalid');
    c.close();
  });

  test('LOGIN with challenges, and with an initial response', async () => {
    const c = await tlsSubmission();
    assert.equal(await c.cmd('AUTH LOGIN'), '334 VXNlcm5hbWU6');
    assert.equal(await c.cmd(b64('bob')), '334 UGFzc3dvcmQ6');
    assert.match(await c.cmd(b64('bob-secret')), /^235 2\.7\.0/);
    c.close();
    const d = await tlsSubmission();
    assert.equal(await d.cmd(`AUTH LOGIN ${b64('bob')}`), '334 UGFzc3dvcmQ6');
    assert.match(await d.cmd(b64('bob-secret')), /^235 /);
    d.close();
  });

  test('"*" cancels an exchange with 501; the session can authenticate afterwards', async () => {
    const c = await tlsSubmission();
    assert.equal(await c.cmd('AUTH LOGIN'), '334 VXNlcm5hbWU6');
    assert.match(await c.cmd('*'), /^501 /);
    assert.equal(await c.cmd('AUTH PLAIN'), '334 ');
    assert.match(await c.cmd('*'), /^501 /);
    assert.match(await c.cmd(`AUTH PLAIN ${b64('\0bob\0bob-secret')}`), /^235 /);
    c.close();
  });

  test('wrong password: 535 5.7.8; unknown mechanism: 504; garbage base64 does not authenticate', async () => {
    const c = await tlsSubmission();
    assert.equal(await c.cmd(`AUTH PLAIN ${b64('\0bob\0wrong')}`), '535 5.7.8 Authentication credentials invalid');
    assert.match(await c.cmd('AUTH CRAM-MD5'), /^504 /);
    assert.match(await c.cmd('AUTH PLAIN !!!not*base64@@@'), /^5\d\d /);
    assert.match(await c.cmd('AUTH LOGIN'), /^334 /);
    assert.match(await c.cmd('%%%%'), /^501 /, 'decodes to nothing: no username');
    assert.match(await c.cmd('AUTH LOGIN'), /^334 /);
    assert.match(await c.cmd(b64('nobody')), /^334 /);
    assert.match(await c.cmd('&&&&'), /^535 5\.7\.8/);
    assert.equal(await c.cmd('MAIL FROM:<bob@example.org>'), '530 5.7.0 Authentication required');
    c.close();
  });

  test('backend outage: 454 4.7.0 (temporary), not 535', async () => {
    verifier.tempfail = true;
    try {
      const c = await tlsSubmission();
      assert.equal(await c.cmd(`AUTH PLAIN ${b64('\0bob\0bob-secret')}`), '454 4.7.0 Temporary authentication failure, try again later');
      c.close();
    } finally {
      verifier.tempfail = false;
    }
  });

  test('a directory that never answers: 454 4.7.0 once [auth] timeout has passed', async () => {
    verifier.hang = true;
    try {
      const c = await tlsSubmission();
      assert.equal(await c.cmd(`AUTH PLAIN ${b64('\0bob\0bob-secret')}`), '454 4.7.0 Temporary authentication failure, try again later');
      assert.match(await c.cmd('NOOP'), /^250 /, 'the session goes on');
      c.close();
    } finally {
      verifier.hang = false;
    }
  });

  test('the check reaches the verifier with service smtp and the client address', async () => {
    verifier.calls = [];
    const c = await authed('bob', 'bob-secret');
    c.close();
    assert.equal(verifier.calls[0].login, 'bob');
    assert.equal(verifier.calls[0].service, 'smtp');
    assert.match(verifier.calls[0].clientAddr ?? '', /^127\.0\.0\.1;\d+$/);
  });
});

describe('sender ownership', () => {
  test('MAIL FROM must belong to the authenticated user (553 5.7.1)', async () => {
    const c = await authed();
    assert.equal(await c.cmd('MAIL FROM:<bob@example.org>'), '553 5.7.1 Sender address rejected: not owned by user (bob@example.org)');
    assert.match(await c.cmd('MAIL FROM:<alice@example.org>'), /^250 2\.1\.0/, 'the login itself');
    assert.match(await c.cmd('RSET'), /^250/);
    assert.match(await c.cmd('MAIL FROM:<Alice.Smith@EXAMPLE.org>'), /^250 /, 'an address the backend listed, any case');
    assert.match(await c.cmd('RSET'), /^250/);
    assert.match(await c.cmd('MAIL FROM:<alice@example.org> AUTH=<>'), /^250 /, 'AUTH= on MAIL is accepted (and not trusted)');
    assert.match(await c.cmd('RSET'), /^250/);
    assert.equal(await c.cmd('MAIL FROM:<bob@example.org> AUTH=alice@example.org'), '553 5.7.1 Sender address rejected: not owned by user (bob@example.org)');
    c.close();
  });

  test('From: header must belong to the user too', async () => {
    const c = await authed();
    const r = await send(c, 'alice@example.org', ['someone@elsewhere.test'], 'From: Boss <boss@example.org>\r\nSubject: x\r\n\r\nhi');
    assert.equal(r, '553 5.7.1 From: header address rejected: not owned by user (boss@example.org)');
    const r2 = await send(c, 'alice@example.org', ['someone@elsewhere.test'], 'From: "alice@example.org" <boss@example.org>\r\n\r\nhi');
    assert.match(r2, /^553 5\.7\.1 /, 'a display name cannot hide another address');
    const r3 = await send(c, 'alice@example.org', ['someone@elsewhere.test'], 'From: Alice\r\n <alice.smith@example.org>\r\nSubject: ok\r\n\r\nhi');
    assert.match(r3, /^250 2\.0\.0 Ok: queued as TEST/);
    c.close();
  });

  test('unauthenticated use of a member address on port 25 is refused', async () => {
    // bob authenticated earlier, so facteur knows bob@example.org is a member's address
    const c = await RawSmtp.connect(srv.ports.inbound);
    await c.reply();
    await ehlo(c);
    assert.equal(await c.cmd('MAIL FROM:<bob@example.org>'), '553 5.7.1 Sender address rejected: this address belongs to a member, authenticate on the submission port');
    assert.match(await c.cmd('MAIL FROM:<stranger@elsewhere.test>'), /^250 /);
    c.close();
  });
});

describe('transactions', () => {
  test('inbound accepts mail for local domains; envelope, DSN, 8BITMIME and Received: reach the queue', async () => {
    const c = await RawSmtp.connect(srv.ports.inbound);
    await c.reply();
    await ehlo(c, 'sender.example.net');
    assert.match(await c.cmd('MAIL FROM:<x@example.net> BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc123 SIZE=100'), /^250 2\.1\.0/);
    assert.match(await c.cmd('RCPT TO:<bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.org'), /^250 2\.1\.5/);
    assert.match(await c.cmd('DATA'), /^354 /);
    const r = await c.cmd('Subject: caf\xc3\xa9\r\n\r\n..dot-stuffed line\r\n.');
    const m = /^250 2\.0\.0 Ok: queued as (TEST\d+)$/.exec(r);
    assert.ok(m, r);
    const q = queue.last();
    assert.equal(q.id, m[1]);
    assert.equal(q.envelope.mailFrom, 'x@example.net');
    assert.deepEqual(q.envelope.rcptTo, [{ address: 'bob@example.org', notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;bob@example.org' }]);
    assert.deepEqual(q.envelope.dsn, { ret: 'HDRS', envid: 'abc123' });
    assert.equal(q.envelope.body8bit, true);
    assert.equal(q.envelope.smtputf8, true);
    assert.equal(q.envelope.heloName, 'sender.example.net');
    assert.equal(q.envelope.authUser, undefined);
    const text = q.data.toString('latin1');
    assert.match(text, /^Received: from sender\.example\.net \(unknown \[127\.0\.0\.1\]\)\r\n\tby mx\.test \(facteur\) with ESMTP\r\n\tfor <bob@example\.org>; \w{3}, \d\d \w{3} \d{4} [\d:]{8} \+0000\r\n/);
    assert.match(text, /\r\n\r\n\.dot-stuffed line\r\n$/);
    c.close();
  });

  test('Received: names TLS and the protocol ESMTPSA for authenticated submission, not the user (default)', async () => {
    const c = await authed('bob', 'bob-secret');
    assert.match(await send(c, 'bob@example.org', ['x@elsewhere.test'], 'From: bob@example.org\r\n\r\nhi'), /^250 /);
    const text = queue.last().data.toString('latin1');
    assert.match(text, /^Received: from client\.test \(unknown \[127\.0\.0\.1\]\)\r\n\t\(using TLSv1\.[23] with cipher [A-Z0-9_-]+\)\r\n\tby mx\.test \(facteur\) with ESMTPSA\r\n/);
    assert.doesNotMatch(text.split('\r\nFrom:')[0], /bob/i);
    assert.equal(queue.last().envelope.authUser, 'bob');
    c.close();
  });

  test('SIZE: MAIL SIZE= over the limit is 552 5.3.4; an oversized DATA is read to the end, refused, and the session goes on', async () => {
    const c = await RawSmtp.connect(srv.ports.inbound);
    await c.reply();
    await ehlo(c);
    assert.match(await c.cmd('MAIL FROM:<x@example.net> SIZE=999999'), /^552 5\.3\.4 /);
    const before = queue.messages.length;
    const big = ('y'.repeat(70) + '\r\n').repeat(400); // ~29 KB > 20000
    assert.equal(await send(c, 'x@example.net', ['bob@example.org'], `Subject: big\r\n\r\n${big}`), '552 5.3.4 Message size exceeds fixed maximum message size');
    assert.equal(queue.messages.length, before);
    assert.match(await send(c, 'x@example.net', ['bob@example.org'], 'Subject: small\r\n\r\nok'), /^250 2\.0\.0 /);
    c.close();
  });

  test('SMTPUTF8: a UTF-8 recipient is accepted for a local domain and kept as UTF-8', async () => {
    const c = await RawSmtp.connect(srv.ports.inbound);
    await c.reply();
    await ehlo(c);
    assert.match(await c.cmd('MAIL FROM:<expéditeur@example.net> SMTPUTF8'), /^250 /);
    c.send(Buffer.from('RCPT TO:<josé@example.org>\r\n', 'utf8'));
    assert.match(await c.reply(), /^250 /);
    assert.match(await c.cmd('DATA'), /^354 /);
    assert.match(await c.cmd('Subject: utf8\r\n\r\nx\r\n.'), /^250 /);
    assert.equal(queue.last().envelope.rcptTo[0].address, 'josé@example.org');
    assert.equal(queue.last().envelope.smtputf8, true);
    c.close();
  });

  test('too many recipients: 452 4.5.3 after max_recipients', async () => {
    const c = await RawSmtp.connect(srv.ports.inbound);
    await c.reply();
    await ehlo(c);
    await c.cmd('MAIL FROM:<x@example.net>');
    for (const r of ['a', 'b', 'c']) assert.match(await c.cmd(`RCPT TO:<${r}@example.org>`), /^250 /);
    assert.match(await c.cmd('RCPT TO:<d@example.org>'), /^452 4\.5\.3 /);
    c.close();
  });

  test('250 only after the queue says the message is durable', async () => {
    queue.hold = true;
    const c = await RawSmtp.connect(srv.ports.inbound);
    await c.reply();
    await ehlo(c);
    await c.cmd('MAIL FROM:<x@example.net>');
    await c.cmd('RCPT TO:<bob@example.org>');
    assert.match(await c.cmd('DATA'), /^354 /);
    c.send('Subject: held\r\n\r\nwait\r\n.\r\n');
    await queue.whenHeld();
    assert.equal(c.pending(), '', 'no reply while the queue has not confirmed');
    queue.release();
    assert.match(await c.reply(), /^250 2\.0\.0 Ok: queued as /);
    c.close();
  });

  test('queue failure: 451 4.3.0, and the next transaction works', async () => {
    queue.failNext = true;
    const c = await RawSmtp.connect(srv.ports.inbound);
    await c.reply();
    await ehlo(c);
    assert.equal(await send(c, 'x@example.net', ['bob@example.org'], 'Subject: fail\r\n\r\nx'), '451 4.3.0 Queue write error, try again later');
    assert.match(await send(c, 'x@example.net', ['bob@example.org'], 'Subject: again\r\n\r\nx'), /^250 /);
    c.close();
  });

  test('STARTTLS discards commands pipelined after it (plaintext injection)', async () => {
    const c = await RawSmtp.connect(srv.ports.inbound);
    await c.reply();
    await ehlo(c);
    const before = queue.messages.length;
    c.send('STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nSubject: injected\r\n\r\nx\r\n.\r\n');
    assert.match(await c.reply(), /^220 /);
    await c.upgrade();
    assert.match(await ehlo(c), /^250-/);
    assert.equal(await c.cmd('RCPT TO:<bob@example.org>'), '503 5.5.1 Error: need MAIL command', 'no MAIL survived the upgrade');
    assert.equal(queue.messages.length, before);
    c.close();
  });

  test('STARTTLS forgets the plaintext EHLO and transaction', async () => {
    const c = await RawSmtp.connect(srv.ports.inbound);
    await c.reply();
    await ehlo(c);
    assert.match(await c.cmd('MAIL FROM:<x@example.net>'), /^250 /);
    assert.match(await c.cmd('STARTTLS'), /^220 /);
    await c.upgrade();
    assert.match(await c.cmd('MAIL FROM:<x@example.net>'), /^503 /, 'EHLO is needed again');
    c.close();
  });

  test('RSET clears the transaction', async () => {
    const c = await RawSmtp.connect(srv.ports.inbound);
    await c.reply();
    await ehlo(c);
    await c.cmd('MAIL FROM:<x@example.net>');
    assert.match(await c.cmd('RSET'), /^250 /);
    assert.match(await c.cmd('RCPT TO:<bob@example.org>'), /^503 /);
    c.close();
  });
});

test('/metrics counts connections, AUTH results, TLS sessions and messages per listener', async () => {
  const text = await (await fetch(`http://127.0.0.1:${srv.metricsPort}/metrics`)).text();
  const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  assert.ok(value(/^facteur_messages_total\{listener="inbound",result="accepted"\} (\d+)/m) >= 3);
  assert.ok(value(/^facteur_messages_total\{listener="inbound",result="rejected"\} (\d+)/m) >= 2, 'oversized and queue failure');
  assert.ok(value(/^facteur_auth_attempts_total\{backend="file",result="fail"\} (\d+)/m) >= 1);
  assert.ok(value(/^facteur_auth_attempts_total\{backend="file",result="tempfail"\} (\d+)/m) >= 1);
  assert.ok(value(/^facteur_tls_sessions_total\{listener="submission",version="TLSv1\.3"\} (\d+)/m) >= 1);
  assert.ok(value(/^facteur_connections_total\{listener="submissions"\} (\d+)/m) >= 1);
  assert.match(text, /^facteur_connections_active\{listener="inbound"\} \d+/m);
  const health = await fetch(`http://127.0.0.1:${srv.metricsPort}/health`);
  assert.equal(health.status, 200);
});
