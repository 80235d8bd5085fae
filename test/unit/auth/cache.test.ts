import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CredentialCache } from '../../../src/auth/daemon/cache.js';

const key = { login: 'alice', realm: 'picasoft.net', service: 'smtp' };

test('remembers a confirmed password for exactly the lifetime, hits do not extend it', () => {
  let now = 1_000_000;
  const c = new CredentialCache({ ttlSeconds: 10, now: () => now });
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
  const c = new CredentialCache({ ttlSeconds: 100 });
  c.store(key, 'old');
  assert.equal(c.lookup(key, 'new'), false);
  c.store(key, 'new');
  assert.equal(c.lookup(key, 'old'), false, 'old password stops working from the cache');
  assert.equal(c.lookup(key, 'new'), true);
});

test('login, realm and service are separate keys that cannot be confused', () => {
  const c = new CredentialCache({ ttlSeconds: 100 });
  c.store({ login: 'a@b', realm: '', service: 'smtp' }, 'pw');
  assert.equal(c.lookup({ login: 'a', realm: 'b', service: 'smtp' }, 'pw'), false);
  assert.equal(c.lookup({ login: 'a@b', realm: '', service: 'imap' }, 'pw'), false);
  assert.equal(c.lookup({ login: 'a@b', realm: '', service: 'smtp' }, 'pw'), true);
});

test('bounded: the oldest entries go first', () => {
  const c = new CredentialCache({ ttlSeconds: 100, capacity: 3 });
  for (let i = 0; i < 5; i++) c.store({ ...key, login: `u${i}` }, 'pw');
  assert.equal(c.size, 3);
  assert.equal(c.lookup({ ...key, login: 'u0' }, 'pw'), false);
  assert.equal(c.lookup({ ...key, login: 'u4' }, 'pw'), true);
});

test('the password itself is not stored anywhere in the cache', () => {
  const c = new CredentialCache({ ttlSeconds: 100 });
  const secret = 'S3cr3t-unique-marker';
  c.store(key, secret);
  const dump = JSON.stringify([...(c as unknown as { entries: Map<string, { digest: Buffer }> }).entries.entries()].map(([k, v]) => [k, v.digest.toString('latin1')]));
  assert.ok(!dump.includes(secret));
});
