import { test } from 'node:test';
import assert from 'node:assert/strict';
import { extractAddresses, headerValues, receivedHeader } from '../../../src/mail/headers.js';
import { SmtpReply, Replies } from '../../../src/mail/reply.js';
import { hasRoutingTrick, parseAddress } from '../../../src/mail/address.js';

test('headerValues unfolds and finds every instance, case-insensitively', () => {
  const block = 'Subject: x\r\nfrom: A\r\n <a@x.test>\r\nFROM: b@y.test\r\nX-From: c@z.test';
  assert.deepEqual(headerValues(block, 'From'), ['A <a@x.test>', 'b@y.test']);
});

test('extractAddresses over-includes (fails closed)', () => {
  assert.deepEqual(extractAddresses('"boss@x.test" <me@y.test>').sort(), ['boss@x.test', 'me@y.test']);
  assert.deepEqual(extractAddresses('a@x.test, B <b@y.test>').sort(), ['a@x.test', 'b@y.test']);
  assert.deepEqual(extractAddresses('Undisclosed'), []);
});

test('Received: is folded, has no control characters from the client, ends with CRLF', () => {
  const h = receivedHeader({ heloName: 'evil\r\nX-Injected: 1', clientAddress: '192.0.2.1', byHost: 'mx.test', protocol: 'ESMTPSA', authUser: 'bob', tls: { protocol: 'TLSv1.3', cipher: 'TLS_AES_128_GCM_SHA256' }, forAddress: 'a@b', date: new Date(Date.UTC(2026, 0, 2, 3, 4, 5)) });
  assert.equal(h, 'Received: from evil??X-Injected:?1 (unknown [192.0.2.1])\r\n\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n\t(Authenticated sender: bob)\r\n\tby mx.test (facteur) with ESMTPSA\r\n\tfor <a@b>; Fri, 02 Jan 2026 03:04:05 +0000\r\n');
});

test('SmtpReply: the enhanced class follows the code; text cannot split the reply', () => {
  assert.throws(() => new SmtpReply(550, '4.7.1', 'x'));
  assert.equal(new SmtpReply(550, '5.7.1', 'a\r\n250 ok').toString(), '550 5.7.1 a  250 ok');
  assert.equal(Replies.tlsRequired().toString(), '538 5.7.11 Must issue a STARTTLS command first');
});

test('addresses: split at the last @, domain normalised, tricks spotted', () => {
  assert.deepEqual(parseAddress('"a@b"@Example.ORG.'), { local: '"a@b"', domain: 'example.org', normalized: '"a@b"@example.org' });
  assert.equal(parseAddress('nodomain'), undefined);
  for (const l of ['a%b', 'b!a', '"q"', 'a:b']) assert.equal(hasRoutingTrick(l), true, l);
  assert.equal(hasRoutingTrick('first.last+tag'), false);
});
