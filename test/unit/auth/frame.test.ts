import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseRequest, encodeFields, fieldToString, MAX_FIELD_LEN } from '../../../src/auth/protocol/frame.js';

test('four counted strings make a request (Debian libsasl example)', () => {
  const buf = Buffer.from('0003626f6200067365637265740004736d7470000b6578616d706c652e636f6d', 'hex');
  const r = parseRequest(buf);
  assert.equal(r.kind, 'request');
  assert.deepEqual(r.kind === 'request' && r.fields.map(String), ['bob', 'secret', 'smtp', 'example.com']);
});

test('a fifth field is read when present', () => {
  const r = parseRequest(encodeFields(['a', 'b', 'c', 'd', '127.0.0.1;4242']));
  assert.deepEqual(r.kind === 'request' && r.fields.map(String), ['a', 'b', 'c', 'd', '127.0.0.1;4242']);
});

test('incomplete requests ask for more bytes', () => {
  const full = encodeFields(['alice', 'pw', 'smtp', '']);
  for (let cut = 0; cut < full.length; cut++) {
    const r = parseRequest(full.subarray(0, cut));
    assert.equal(r.kind, 'need', `cut at ${cut}`);
  }
  const partialFifth = Buffer.concat([full, Buffer.from([0x00])]);
  assert.deepEqual(parseRequest(partialFifth), { kind: 'need', fields: 4 });
});

test('a length above 256 is refused at once, 256 is accepted', () => {
  const big = Buffer.from([0x01, 0x01]);
  assert.deepEqual(parseRequest(big), { kind: 'oversize' });
  const ok = encodeFields(['x'.repeat(MAX_FIELD_LEN), 'p', 's', 'r']);
  assert.equal(parseRequest(ok).kind, 'request');
  const later = Buffer.concat([encodeFields(['alice']), Buffer.from([0xff, 0xff])]);
  assert.deepEqual(parseRequest(later), { kind: 'oversize' });
});

test('fields are C strings: a NUL ends them; invalid UTF-8 is refused, not guessed', () => {
  assert.equal(fieldToString(Buffer.from('ali\0ce')), 'ali');
  assert.equal(fieldToString(Buffer.from('pâté')), 'pâté');
  assert.equal(fieldToString(Buffer.from([0x61, 0xff])), null);
});

test('the parser never throws and never over-reads on arbitrary bytes', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 1200 }), (bytes) => {
      const r = parseRequest(Buffer.from(bytes));
      if (r.kind === 'request') {
        assert.ok(r.fields.length === 4 || r.fields.length === 5);
        for (const f of r.fields) assert.ok(f.length <= MAX_FIELD_LEN);
      }
    }),
    { numRuns: 3000 },
  );
});

test('encode/parse round trip', () => {
  fc.assert(
    fc.property(fc.array(fc.string({ maxLength: 60 }), { minLength: 4, maxLength: 5 }), (fields) => {
      const r = parseRequest(encodeFields(fields));
      assert.equal(r.kind, 'request');
      assert.deepEqual(r.kind === 'request' && r.fields.map((b) => b.toString('utf8')), fields);
    }),
  );
});

test('fourOnly: the first four fields are the request even when a 5th never completed', () => {
  const four = encodeFields(['alice', 'pw', 'smtp', '']);
  const partial = Buffer.concat([four, Buffer.from([0x00, 0x09, 0x31])]);
  assert.deepEqual(parseRequest(partial), { kind: 'need', fields: 4 });
  const r = parseRequest(partial, true);
  assert.deepEqual(r.kind === 'request' && r.fields.map(String), ['alice', 'pw', 'smtp', '']);
  assert.equal(parseRequest(four.subarray(0, four.length - 1), true).kind, 'need');
});
