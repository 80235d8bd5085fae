// DKIM signing: every signature facteur emits verifies against the published record (mailauth's dkimVerify), for RSA
// and Ed25519, over many messages; hostile From headers do not break key lookup.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { dnsRecord, fromDomain, generateDkimKey, publicRecord, signMessage, validDomain, type DkimKey } from '../../../src/delivery/dkim.js';

for (const type of ['rsa', 'ed25519'] as const) {
  test(`${type}: 200 signed messages all verify against the published TXT record`, async () => {
    const k = generateDkimKey(type);
    assert.equal(publicRecord(k.privatePem), k.txt);
    const key: DkimKey = { domain: 'sender.test', selector: 's1', privateKey: k.privatePem, algorithm: type === 'rsa' ? 'rsa-sha256' : 'ed25519-sha256' };
    const resolver = async (name: string, t: string) => {
      if (t === 'TXT' && name === 's1._domainkey.sender.test') return [[k.txt]];
      throw Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' });
    };
    let bad = 0;
    for (let i = 0; i < 200; i++) {
      const m = Buffer.from(`From: Alice <alice@sender.test>\r\nTo: bob@remote.test\r\nSubject: n ${i}\r\nDate: Mon, 5 Jan 2026 12:00:00 +0000\r\n\r\nBody ${i}\r\n`);
      const s = await signMessage(m, key);
      assert.equal(s.error, undefined);
      const r = await dkimVerify(s.message, { resolver: resolver as never });
      if (r.results[0]?.status.result !== 'pass') bad++;
    }
    assert.equal(bad, 0);
  });
}

test('From: domain extraction and DNS record formatting', () => {
  assert.equal(fromDomain(Buffer.from('Subject: x\r\nFrom: "A, B" <a@Example.ORG>\r\n\r\nb')), 'example.org');
  assert.equal(fromDomain(Buffer.from('From:\r\n  <a@folded.test>\r\n\r\nb')), 'folded.test');
  assert.equal(fromDomain(Buffer.from('To: x@y\r\n\r\nFrom: a@body.test\r\n')), undefined, 'a From line in the body is not a header');
  assert.equal(validDomain('../../etc'), false);
  assert.equal(validDomain('a.b'), true);
  const line = dnsRecord('a.test', 's', 'v=DKIM1; p=' + 'A'.repeat(600));
  assert.ok([...line.matchAll(/"([^"]*)"/g)].every((m) => m[1].length <= 255));
});
