import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnectionLimiter } from '../../../src/policy/connlimit.js';

test('limits per address and overall; release is idempotent', () => {
  const l = new ConnectionLimiter(3, 2);
  const a1 = l.acquire('192.0.2.1');
  const a2 = l.acquire('192.0.2.1');
  assert.ok(a1 && a2);
  assert.equal(l.acquire('192.0.2.1'), undefined, 'per address');
  const b1 = l.acquire('192.0.2.2');
  assert.ok(b1);
  assert.equal(l.acquire('192.0.2.3'), undefined, 'overall');
  a1!();
  a1!();
  assert.equal(l.size, 2);
  assert.ok(l.acquire('192.0.2.3'));
  assert.equal(l.acquire('192.0.2.1'), undefined, 'full again');
});
