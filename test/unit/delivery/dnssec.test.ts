import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DNS_TYPE, encodeQuery, mxRecords, parseAnswer, readName } from '../../../src/delivery/dnssec.js';
import { parseTlsa, usable } from '../../../src/delivery/dane.js';

/** An answer to `q` with flags and records (type, rdata), names compressed as a pointer to the question. */
function answer(q: Buffer, flags: number, records: [number, Buffer][]): Buffer {
  const head = Buffer.from(q.subarray(0, 12));
  head.writeUInt16BE(flags, 2);
  head.writeUInt16BE(records.length, 6);
  head.writeUInt16BE(0, 10);
  const question = q.subarray(12, q.length - 11); // without the OPT record
  const rrs = records.map(([type, rdata]) => {
    const fixed = Buffer.alloc(12);
    fixed.writeUInt16BE(0xc00c, 0); // pointer to the question name
    fixed.writeUInt16BE(type, 2);
    fixed.writeUInt16BE(1, 4);
    fixed.writeUInt32BE(300, 6);
    fixed.writeUInt16BE(rdata.length, 10);
    return Buffer.concat([fixed, rdata]);
  });
  return Buffer.concat([head, question, ...rrs]);
}

test('query: RD and AD set, one question, an EDNS0 OPT record with the DO bit', () => {
  const q = encodeQuery(0x1234, '_25._tcp.mx.example.org.', DNS_TYPE.TLSA);
  assert.equal(q.readUInt16BE(0), 0x1234);
  assert.equal(q.readUInt16BE(2), 0x0120);
  assert.equal(readName(q, 12), '_25._tcp.mx.example.org');
  assert.deepEqual([...q.subarray(q.length - 11)], [0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
  assert.throws(() => encodeQuery(1, `${'a'.repeat(64)}.org`, DNS_TYPE.MX), /label too long/);
});

test('answers: AD bit, NXDOMAIN, NODATA, SERVFAIL, MX names behind compression pointers', () => {
  const q = encodeQuery(7, 'example.org', DNS_TYPE.MX);
  const mxRdata = Buffer.concat([Buffer.from([0, 10]), Buffer.from([2]), Buffer.from('mx'), Buffer.from([0xc0, 0x0c])]);
  const a = parseAnswer(answer(q, 0x81a0, [[DNS_TYPE.MX, mxRdata]]), DNS_TYPE.MX);
  assert.deepEqual([a.secure, a.status], [true, 'ok']);
  assert.deepEqual(mxRecords(a), [{ priority: 10, exchange: 'mx.example.org' }]);
  assert.deepEqual([parseAnswer(answer(q, 0x8180, []), DNS_TYPE.MX).secure, parseAnswer(answer(q, 0x8180, []), DNS_TYPE.MX).status], [false, 'nodata']);
  assert.equal(parseAnswer(answer(q, 0x81a3, []), DNS_TYPE.MX).status, 'nxdomain');
  assert.throws(() => parseAnswer(answer(q, 0x8182, []), DNS_TYPE.MX), /SERVFAIL/);
  assert.throws(() => parseAnswer(answer(q, 0x0100, []), DNS_TYPE.MX), /not an answer/);
  // records of another type (a CNAME on the way) are not taken for the asked type
  assert.equal(parseAnswer(answer(q, 0x81a0, [[DNS_TYPE.CNAME, Buffer.from([0xc0, 0x0c])]]), DNS_TYPE.MX).status, 'nodata');
});

test('hostile answers: truncation, pointer loops, bad label types, lengths past the end are errors, never a hang', () => {
  const q = encodeQuery(7, 'example.org', DNS_TYPE.TLSA);
  const ok = answer(q, 0x81a0, [[DNS_TYPE.TLSA, Buffer.from([3, 1, 1, 0xaa])]]);
  for (let cut = 0; cut < ok.length; cut++) {
    try {
      parseAnswer(ok.subarray(0, cut), DNS_TYPE.TLSA);
    } catch (err) {
      assert.ok(err instanceof Error);
    }
  }
  const loop = Buffer.from([0xc0, 0x00]);
  assert.throws(() => readName(loop, 0), /loop/);
  assert.throws(() => readName(Buffer.from([0x80, 1]), 0), /label type/);
  const longRd = Buffer.from(ok);
  longRd.writeUInt16BE(0xffff, ok.length - 4 - 2);
  assert.throws(() => parseAnswer(longRd, DNS_TYPE.TLSA), /truncated/);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      try {
        const a = parseAnswer(Buffer.from(bytes), DNS_TYPE.MX);
        mxRecords(a);
      } catch (err) {
        assert.ok(err instanceof Error);
      }
    }),
    { numRuns: 2000 },
  );
});

test('TLSA records: only DANE-TA(2)/DANE-EE(3) with known selectors and matching types are usable', () => {
  assert.equal(parseTlsa(Buffer.from([3, 1])), undefined);
  assert.ok(usable(parseTlsa(Buffer.from([3, 1, 1, 0xaa]))!));
  assert.ok(usable(parseTlsa(Buffer.from([2, 0, 2, 0xaa]))!));
  for (const bad of [[1, 1, 1], [0, 0, 1], [3, 2, 1], [3, 1, 3]]) assert.equal(usable(parseTlsa(Buffer.from([...bad, 0xaa]))!), false, bad.join(' '));
});
