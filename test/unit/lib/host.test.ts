// unbracketed: the host of `[::1]:25` or of an LDAP URL, fit for the socket calls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { unbracketed } from '../../../src/lib/host.js';

test('brackets around an IPv6 address go; names and IPv4 addresses are unchanged', () => {
  assert.equal(unbracketed('[::1]'), '::1');
  assert.equal(unbracketed('[2001:db8::25]'), '2001:db8::25');
  assert.equal(unbracketed('127.0.0.1'), '127.0.0.1');
  assert.equal(unbracketed('mx.example.org'), 'mx.example.org');
  assert.equal(unbracketed('::1'), '::1');
});
