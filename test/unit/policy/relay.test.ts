import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkRecipient, isLocalRecipient } from '../../../src/policy/relay.js';

const local = new Set(['example.org']);

test('local recipients: any case, trailing dot tolerated; postmaster', () => {
  for (const a of ['bob@example.org', 'Bob@EXAMPLE.ORG', 'bob@example.org.', 'postmaster', 'PostMaster']) assert.equal(isLocalRecipient(a, local), true, a);
});

test('routing tricks and foreign domains are not local', () => {
  for (const a of ['v%evil.test@example.org', 'evil!v@example.org', '"v@evil"@example.org', 'v@[127.0.0.1]', 'v@evil.test', 'v@example.org.evil.test', 'v@sub.example.org', 'noatsign', '@example.org', 'v@', 'a:b@example.org', 'a\\@b@example.org']) {
    assert.equal(isLocalRecipient(a, local), false, a);
  }
});

test('authenticated clients may relay; others get 554 5.7.1', () => {
  assert.equal(checkRecipient('v@evil.test', { authenticated: true, localDomains: local }), undefined);
  assert.equal(checkRecipient('v@evil.test', { authenticated: false, localDomains: local })?.toString(), '554 5.7.1 Relay access denied');
  assert.equal(checkRecipient('postmaster', { authenticated: false, localDomains: new Set() })?.code, 554, 'no local domains: nothing is local');
});
