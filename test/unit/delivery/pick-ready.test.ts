import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { pickReady } from '../../../src/delivery/scheduler.js';

test('pickReady gives the earliest due messages not in flight, as many as there are free slots', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.integer({ min: 0, max: 50 }), fc.boolean()), { maxLength: 60 }),
      fc.integer({ min: 0, max: 40 }),
      fc.integer({ min: 0, max: 12 }),
      (items, now, free) => {
        const due = new Map<string, number>(items.map(([t], i) => [`m${i}`, t]));
        const inflight = new Set<string>(items.flatMap(([, busy], i) => (busy ? [`m${i}`] : [])));
        const got = pickReady(due, inflight, now, free);
        const eligible = [...due.entries()].filter(([id, t]) => t <= now && !inflight.has(id));
        assert.equal(got.length, Math.min(free, eligible.length));
        for (let i = 1; i < got.length; i++) assert.ok(got[i - 1][1] <= got[i][1], 'earliest first');
        for (const [id, t] of got) assert.ok(t <= now && !inflight.has(id) && due.get(id) === t, 'only due, idle messages');
        const worstPicked = got.length ? got[got.length - 1][1] : -Infinity;
        const left = eligible.filter(([id]) => !got.some(([g]) => g === id));
        if (got.length === free) for (const [, t] of left) assert.ok(t >= worstPicked, 'nothing earlier was left behind');
      },
    ),
    { numRuns: 2000 },
  );
});
