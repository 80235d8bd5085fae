// Pooled random ids: shape, no repeats across many 4 KB block refills, and every hex digit / base-32 digit in use.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomHex, sessionId } from '../../../src/lib/random.js';

test('randomHex gives 2n hex digits, never the same twice over many block refills', () => {
  const seen = new Set<string>();
  const digits = new Set<string>();
  for (let i = 0; i < 20_000; i++) {
    const h = randomHex(i % 2 ? 5 : 9); // 140 KB drawn: ~34 refills, some ids straddling a block end
    assert.match(h, i % 2 ? /^[0-9a-f]{10}$/ : /^[0-9a-f]{18}$/);
    assert.ok(!seen.has(h), `repeat: ${h}`);
    seen.add(h);
    for (const d of h) digits.add(d);
  }
  assert.equal(digits.size, 16);
});

test('sessionId is 16 base-32 digits like smtp-server ids, unique, with leading digits not stuck at zero', () => {
  const seen = new Set<string>();
  const first = new Set<string>();
  for (let i = 0; i < 20_000; i++) {
    const id = sessionId();
    assert.match(id, /^[0-9a-v]{16}$/);
    assert.ok(!seen.has(id), `repeat: ${id}`);
    seen.add(id);
    first.add(id[0]).add(id[8]);
  }
  assert.equal(first.size, 32, 'each half of the id uses all 32 digits in first position');
});
