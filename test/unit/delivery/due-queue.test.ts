import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DueQueue } from '../../../src/delivery/scheduler.js';

type Op = { kind: 'set'; id: number; t: number } | { kind: 'delete'; id: number } | { kind: 'take'; now: number; free: number; busy: number[] } | { kind: 'end'; id: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('set' as const), id: fc.integer({ min: 0, max: 15 }), t: fc.integer({ min: 0, max: 50 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('delete' as const), id: fc.integer({ min: 0, max: 15 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('take' as const), now: fc.integer({ min: 0, max: 50 }), free: fc.integer({ min: 0, max: 6 }), busy: fc.array(fc.integer({ min: 0, max: 15 }), { maxLength: 4 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('end' as const), id: fc.integer({ min: 0, max: 15 }) }) },
);

test('DueQueue.take gives the earliest due messages not in flight, as many as there are free slots, against a plain map', () => {
  fc.assert(
    fc.property(fc.array(op, { maxLength: 120 }), (ops) => {
      const q = new DueQueue();
      const model = new Map<string, number>();
      const inflight = new Set<string>();
      for (const o of ops) {
        if (o.kind === 'set') {
          q.set(`m${o.id}`, o.t);
          model.set(`m${o.id}`, o.t);
        } else if (o.kind === 'delete') {
          q.delete(`m${o.id}`);
          model.delete(`m${o.id}`);
        } else if (o.kind === 'end') {
          // The scheduler's order when an attempt ends: not in flight any more, then unpark.
          inflight.delete(`m${o.id}`);
          q.unpark(`m${o.id}`);
        } else {
          for (const b of o.busy) inflight.add(`m${b}`);
          const eligible = [...model.entries()].filter(([id, t]) => t <= o.now && !inflight.has(id));
          const got = q.take(o.now, o.free, (id) => inflight.has(id));
          assert.equal(got.length, Math.min(o.free, eligible.length));
          const times = got.map((id) => model.get(id)!);
          for (let i = 1; i < times.length; i++) assert.ok(times[i - 1] <= times[i], 'earliest first');
          for (const id of got) assert.ok(eligible.some(([e]) => e === id), 'only due, idle messages');
          const worst = times.length ? times[times.length - 1] : -Infinity;
          if (got.length === o.free) for (const [id, t] of eligible) if (!got.includes(id)) assert.ok(t >= worst, 'nothing earlier was left behind');
          for (const id of got) {
            model.delete(id);
            inflight.add(id);
          }
        }
        assert.equal(q.size, model.size);
        for (const [id, t] of model) assert.equal(q.get(id), t);
        // next(): the earliest time among queued messages that are not parked in flight; never later than any idle one.
        const idle = [...model.entries()].filter(([id]) => !inflight.has(id)).map(([, t]) => t);
        if (idle.length) assert.ok(q.next() <= Math.min(...idle));
        if (!model.size) assert.equal(q.next(), Infinity);
      }
    }),
    { numRuns: 2000 },
  );
});

test('DueQueue: a message due while its attempt runs is taken again once that attempt ends', () => {
  const q = new DueQueue();
  q.set('a', 0);
  assert.deepEqual(q.take(10, 5, () => true), []);
  assert.equal(q.has('a'), true);
  assert.equal(q.next(), Infinity, 'parked: no wake-up for it while in flight');
  q.unpark('a');
  assert.equal(q.next(), 0);
  assert.deepEqual(q.take(10, 5, () => false), ['a']);
  assert.equal(q.size, 0);
});
