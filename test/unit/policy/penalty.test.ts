import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PenaltyBox, penaltyKey, DEFAULT_PENALTY } from '../../../src/policy/penalty.js';

test('IPv6 addresses are grouped by /64, IPv4 by address, saslauthd "IP;port" understood', () => {
  assert.equal(penaltyKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  assert.equal(penaltyKey('2001:db8:1:2::ffff'), '2001:db8:1:2::/64');
  assert.equal(penaltyKey('2001:db8::1'), '2001:db8:0:0::/64');
  assert.equal(penaltyKey('192.0.2.7;4567'), '192.0.2.7');
  assert.equal(penaltyKey('::ffff:192.0.2.7'), '192.0.2.7');
});

test('failures from one address are delayed, growing, then the address is refused for a while', () => {
  let now = 0;
  const box = new PenaltyBox(DEFAULT_PENALTY, () => now);
  const delays: number[] = [];
  for (let i = 0; i < DEFAULT_PENALTY.blockAfter; i++) {
    assert.equal(box.admit('198.51.100.9').allowed, true);
    delays.push(box.failure('198.51.100.9', `victim${i % 3}`));
    now += 10;
  }
  assert.deepEqual(delays.slice(0, DEFAULT_PENALTY.delayAfter), Array(DEFAULT_PENALTY.delayAfter).fill(0));
  assert.equal(delays[DEFAULT_PENALTY.delayAfter], DEFAULT_PENALTY.baseDelayMs);
  assert.ok(delays[DEFAULT_PENALTY.delayAfter + 2] > delays[DEFAULT_PENALTY.delayAfter + 1]);
  assert.ok(delays.every((d) => d <= DEFAULT_PENALTY.maxDelayMs));
  const refused = box.admit('198.51.100.9');
  assert.equal(refused.allowed, false);
  assert.equal(box.admit('198.51.100.10').allowed, true, 'a neighbour address is not refused');
  now += DEFAULT_PENALTY.blockMs + 1;
  assert.equal(box.admit('198.51.100.9').allowed, true, 'the block ends');
});

test('the real user from another address is never refused, even while their login is attacked', () => {
  const box = new PenaltyBox();
  for (let i = 0; i < 200; i++) box.failure('203.0.113.66', 'alice');
  assert.equal(box.admit('192.0.2.1').allowed, true);
  box.success('192.0.2.1');
  assert.equal(box.admit('192.0.2.1').allowed, true);
});

test('a success forgives the address; counts decay after the window', () => {
  let now = 0;
  const box = new PenaltyBox(DEFAULT_PENALTY, () => now);
  for (let i = 0; i < DEFAULT_PENALTY.delayAfter + 2; i++) box.failure('192.0.2.5', 'bob');
  box.success('192.0.2.5');
  assert.equal(box.failure('192.0.2.5', 'carol'), 0);
  for (let i = 0; i < DEFAULT_PENALTY.delayAfter + 2; i++) box.failure('192.0.2.6', `u${i}`);
  now += DEFAULT_PENALTY.windowMs + 1;
  assert.equal(box.failure('192.0.2.6', 'u'), 0);
});
