import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Deadlines } from '../../../src/auth/daemon/server.js';

test('a deadline fires once, after its time; a cancelled one never fires', async () => {
  const d = new Deadlines(5);
  const fired: string[] = [];
  const at = (ms: number, name: string) => ({ at: Date.now() + ms, fire: () => fired.push(name) });
  d.track(at(20, 'a'));
  const b = at(20, 'b');
  d.track(b);
  d.track(at(10_000, 'late'));
  d.untrack(b);
  assert.deepEqual(fired, [], 'nothing fires synchronously');
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(fired, ['a']);
});

test('the sweeper does not keep the process alive and restarts after going idle', async () => {
  const d = new Deadlines(5);
  let n = 0;
  d.track({ at: Date.now() + 1, fire: () => n++ });
  await new Promise((r) => setTimeout(r, 40));
  d.track({ at: Date.now() + 1, fire: () => n++ });
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(n, 2);
});
