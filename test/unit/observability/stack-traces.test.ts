// daemonStackTraces: serve and authd turn tsx's source maps off (an error's stack is then cheap to read) unless
// FACTEUR_SOURCE_MAPS=1; the stack still names the function. Runs in its own process (node --test), so the switch does
// not leak into other test files.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { daemonStackTraces } from '../../../src/observability/log.js';

const before = process.sourceMapsEnabled;
after(() => process.setSourceMapsEnabled(before));

function namedThrower(): Error {
  return new Error('where am I');
}

test('tsx runs the tests with source maps on: a stack points at this TypeScript line', () => {
  process.setSourceMapsEnabled(true);
  assert.match(namedThrower().stack!, /namedThrower .*stack-traces\.test\.ts:12:/);
});

test('off by default for the daemons, the function still named; FACTEUR_SOURCE_MAPS=1 keeps them', () => {
  assert.equal(daemonStackTraces({}), false);
  assert.equal(process.sourceMapsEnabled, false);
  const stack = namedThrower().stack!;
  assert.match(stack, /namedThrower /);
  assert.doesNotMatch(stack, /stack-traces\.test\.ts:12:/);
  assert.equal(daemonStackTraces({ FACTEUR_SOURCE_MAPS: '1' }), true);
  assert.equal(process.sourceMapsEnabled, true);
  assert.match(namedThrower().stack!, /stack-traces\.test\.ts:12:/);
});
