import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Deadlines } from '../../../src/auth/daemon/server.js';

test('a deadline fires once, after its time; a cancelled one never fires', async () => {
  const d = new Deadlines(5);
  const fired: string[] = [];
  d.add(20, () => fired.push('a'));
  const cancel = d.add(20, () => fired.push('b'));
  d.add(10_000, () => fired.push('late'));
  cancel();
  assert.deepEqual(fired, [], 'nothing fires synchronously');
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(fired, ['a']);
});

test('the sweeper does not keep the process alive and restarts after going idle', async () => {
  const d = new Deadlines(5);
  let n = 0;
  d.add(1, () => n++);
  await new Promise((r) => setTimeout(r, 40));
  d.add(1, () => n++);
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(n, 2);
});
