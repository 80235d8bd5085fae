// The credential cache, with each of its two HMAC implementations (C, native/authd/digest.c; node:crypto), and the
// C HMAC checked against node:crypto's on random keys and messages.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fc from 'fast-check';
import { CredentialCache, createMac } from '../../../src/auth/daemon/cache.js';

const key = { login: 'alice', realm: 'picasoft.net', service: 'smtp' };

for (const mac of ['native', 'node'] as const) describe(`HMAC: ${mac}`, () => {
  test('remembers a confirmed password for exactly the lifetime, hits do not extend it', () => {
    let now = 1_000_000;
    const c = new CredentialCache({ ttlSeconds: 10, now: () => now, mac });
    assert.equal(c.lookup(key, 'pw'), false);
    c.store(key, 'pw');
    now += 9_000;
    assert.equal(c.lookup(key, 'pw'), true);
    now += 999;
    assert.equal(c.lookup(key, 'pw'), true);
    now += 1;
    assert.equal(c.lookup(key, 'pw'), false, 'expired at created + ttl');
    assert.equal(c.size, 0, 'expired entry dropped');
  });

  test('a different password never hits; a newly confirmed password replaces the old one at once', () => {
    const c = new CredentialCache({ ttlSeconds: 100, mac });
    c.store(key, 'old');
    assert.equal(c.lookup(key, 'new'), false);
    c.store(key, 'new');
    assert.equal(c.lookup(key, 'old'), false, 'old password stops working from the cache');
    assert.equal(c.lookup(key, 'new'), true);
  });

  test('login, realm and service are separate keys that cannot be confused', () => {
    const c = new CredentialCache({ ttlSeconds: 100, mac });
    c.store({ login: 'a@b', realm: '', service: 'smtp' }, 'pw');
    assert.equal(c.lookup({ login: 'a', realm: 'b', service: 'smtp' }, 'pw'), false);
    assert.equal(c.lookup({ login: 'a@b', realm: '', service: 'imap' }, 'pw'), false);
    assert.equal(c.lookup({ login: 'a@b', realm: '', service: 'smtp' }, 'pw'), true);
  });

  test('bounded: the oldest entries go first', () => {
    const c = new CredentialCache({ ttlSeconds: 100, capacity: 3, mac });
    for (let i = 0; i < 5; i++) c.store({ ...key, login: `u${i}` }, 'pw');
    assert.equal(c.size, 3);
    assert.equal(c.lookup({ ...key, login: 'u0' }, 'pw'), false);
    assert.equal(c.lookup({ ...key, login: 'u4' }, 'pw'), true);
  });

  test('the password itself is not stored anywhere in the cache', () => {
    const c = new CredentialCache({ ttlSeconds: 100, mac });
    const secret = 'S3cr3t-unique-marker';
    c.store(key, secret);
    const dump = JSON.stringify([...(c as unknown as { entries: Map<string, { digest: Buffer }> }).entries.entries()].map(([k, v]) => [k, v.digest.toString('latin1')]));
    assert.ok(!dump.includes(secret));
  });
});

test('the C HMAC is HMAC-SHA256: equal to node:crypto on random keys and messages (long ones, every plane of Unicode)', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.string({ unit: 'grapheme', maxLength: 3000 }), (key, message) => {
      const k = Buffer.from(key);
      const expected = crypto.createHmac('sha256', k).update(message).digest();
      const c = createMac(k, 'native');
      assert.deepEqual(c.digest(message), expected);
      assert.equal(c.matches(message, expected), true);
      const wrong = Buffer.from(expected);
      wrong[31] ^= 1;
      assert.equal(c.matches(message, wrong), false);
      assert.equal(c.matches(message, expected.subarray(0, 31)), false);
      assert.equal(c.matches(`${message}x`, expected), false);
    }),
    { numRuns: 2000 },
  );
  assert.deepEqual(createMac(Buffer.alloc(32, 7), 'native').digest(''), crypto.createHmac('sha256', Buffer.alloc(32, 7)).digest());
});
