import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSenderMap, SenderPolicy } from '../../../src/policy/sender.js';

const map = parseSenderMap('# comment\nteam@example.org alice, bob\n@lists.example.org listmaster\nCarol@Example.ORG carol\n');

test('sender map: addresses and whole domains, case-insensitive', () => {
  const p = new SenderPolicy({ map, loginIsAddress: true });
  assert.equal(p.owns('alice', 'team@example.org'), true);
  assert.equal(p.owns('BOB', 'TEAM@example.org'), true);
  assert.equal(p.owns('carol', 'team@example.org'), false);
  assert.equal(p.owns('listmaster', 'any@lists.example.org'), true);
  assert.equal(p.owns('carol', 'carol@example.org'), true);
});

test('login as address, backend addresses, and nothing else', () => {
  const p = new SenderPolicy({ map: new Map(), loginIsAddress: true });
  assert.equal(p.owns('dave@example.org', 'dave@example.org'), true);
  assert.equal(p.owns('dave@example.org', 'Dave@Example.org'), true);
  assert.equal(p.owns('dave', 'dave@example.org'), false);
  assert.equal(p.owns('dave', 'd@example.org', ['d@example.org']), true);
  assert.equal(p.owns('dave', 'not-an-address'), false);
  assert.equal(new SenderPolicy({ map: new Map(), loginIsAddress: false }).owns('dave@example.org', 'dave@example.org'), false);
});

test('member addresses: from the map and learned at AUTH', () => {
  const p = new SenderPolicy({ map, loginIsAddress: true });
  assert.equal(p.isMemberAddress('team@example.org'), true);
  assert.equal(p.isMemberAddress('x@lists.example.org'), true);
  assert.equal(p.isMemberAddress('eve@example.org'), false);
  p.learn('eve@example.org', ['eve.alias@example.org']);
  assert.equal(p.isMemberAddress('EVE@example.org'), true);
  assert.equal(p.isMemberAddress('eve.alias@example.org'), true);
});

test('malformed map lines are reported by number', () => {
  assert.throws(() => parseSenderMap('ok@x a\nlonely\n', 'senders'), /senders:2:/);
});
