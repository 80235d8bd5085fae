import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MessageInspector } from '../../../src/smtp/inspect.js';

function run(chunks: (string | Buffer)[], max = 1e9, mode: 'reject' | 'normalize' = 'reject') {
  const i = new MessageInspector(max, mode);
  const out: Buffer[] = [];
  for (const c of chunks) {
    const b = i.feed(Buffer.isBuffer(c) ? c : Buffer.from(c, 'latin1'));
    if (!b) return { i, out: undefined };
    out.push(b);
  }
  const tail = i.finish();
  if (!tail) return { i, out: undefined };
  out.push(tail);
  return { i, out: Buffer.concat(out).toString('latin1') };
}

test('a clean message passes unchanged; the header block is kept', () => {
  const { i, out } = run(['From: a@b\r\nSubject: x\r\n\r\nbody\r\n']);
  assert.equal(out, 'From: a@b\r\nSubject: x\r\n\r\nbody\r\n');
  assert.equal(i.headerText(), 'From: a@b\r\nSubject: x');
  assert.equal(i.headerComplete, true);
  assert.equal(i.violation, undefined);
});

test('CRLF split across chunks is not a bare CR or LF', () => {
  const { out } = run(['a\r', '\nb\r', '\n']);
  assert.equal(out, 'a\r\nb\r\n');
});

test('bare LF, bare CR, CR at the very end: refused in reject mode', () => {
  for (const chunks of [['a\nb\r\n'], ['a\rb\r\n'], ['a\r', 'b'], ['x\r\n', '\n'], ['abc\r']]) {
    const { i, out } = run(chunks);
    assert.equal(out, undefined, JSON.stringify(chunks));
    assert.equal(i.violation?.toString(), '550 5.5.2 Message contains bare <CR> or <LF> (RFC 5321 2.3.8)');
  }
});

test('normalize mode turns bare LF and bare CR into CRLF, across chunks too', () => {
  assert.equal(run(['a\nb\r\n'], 1e9, 'normalize').out, 'a\r\nb\r\n');
  assert.equal(run(['a\rb'], 1e9, 'normalize').out, 'a\r\nb');
  assert.equal(run(['a\r', 'b\n'], 1e9, 'normalize').out, 'a\r\nb\r\n');
  assert.equal(run(['a\r'], 1e9, 'normalize').out, 'a\r\n');
});

test('normalized output never contains a bare CR or LF (property)', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 50 }).map((a) => Buffer.from(a.map((b) => [13, 10, 97][b % 3]))), { maxLength: 6 }), (chunks) => {
      const { out } = run(chunks, 1e9, 'normalize');
      assert.ok(out !== undefined);
      assert.equal(out.replace(/\r\n/g, '').includes('\r') || out.replace(/\r\n/g, '').includes('\n'), false);
    }),
  );
});

test('NUL, a 999-octet line and an oversized message are refused with their replies', () => {
  assert.equal(run(['a\0b\r\n']).i.violation?.toString(), '554 5.6.0 Message contains NUL characters');
  assert.equal(run([`${'x'.repeat(999)}\r\n`]).i.violation?.code, 550);
  assert.equal(run([`${'x'.repeat(500)}`, `${'x'.repeat(498)}\r\n`]).out?.length, 1000);
  assert.equal(run(['x'.repeat(10), 'y'.repeat(10)], 15).i.violation?.toString(), '552 5.3.4 Message size exceeds fixed maximum message size');
});

test('8-bit content is noticed', () => {
  assert.equal(run(['caf\xe9\r\n']).i.eightBit, true);
  assert.equal(run(['cafe\r\n']).i.eightBit, false);
});

test('the native-search fast path decides exactly as the byte loop (random messages, random chunking, both modes)', () => {
  const byte = fc.constantFrom(0x61, 0x20, 0x3a, 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0xe9);
  const message = fc.oneof(
    fc.array(byte, { maxLength: 400 }),
    // mostly clean CRLF lines, some long, so that the fast path is taken and its line counting matters
    fc.array(fc.tuple(fc.integer({ min: 0, max: 1100 }), fc.constantFrom('\r\n', '\r\n', '\r\n', '\n', '\r')), { maxLength: 6 }).map((ls) => [...Buffer.from(ls.map(([n, end]) => `${'x'.repeat(n)}${end}`).join(''), 'latin1')]),
  );
  fc.assert(
    fc.property(message, fc.array(fc.integer({ min: 1, max: 300 }), { maxLength: 8 }), fc.constantFrom('reject', 'normalize'), (bytes, cuts, mode) => {
      const buf = Buffer.from(bytes);
      const chunks: Buffer[] = [];
      let pos = 0;
      for (const c of cuts) {
        if (pos >= buf.length) break;
        chunks.push(buf.subarray(pos, pos + c));
        pos += c;
      }
      chunks.push(buf.subarray(pos));
      const outcome = (slowOnly: boolean) => {
        const i = new MessageInspector(1e9, mode as 'reject' | 'normalize');
        if (slowOnly) (i as unknown as { cleanChunk: () => boolean }).cleanChunk = () => false;
        const out: Buffer[] = [];
        for (const c of chunks) {
          const b = i.feed(c);
          if (!b) break;
          out.push(Buffer.from(b)); // copy: the fast path returns the chunk itself
        }
        const tail = i.violation ? undefined : i.finish();
        return { out: Buffer.concat(tail ? [...out, tail] : out).toString('latin1'), violation: i.violation?.toString(), eightBit: i.eightBit, header: i.headerText(), headerComplete: i.headerComplete };
      };
      assert.deepEqual(outcome(false), outcome(true));
    }),
    { numRuns: 3000 },
  );
});
