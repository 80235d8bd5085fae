// Differential fuzz: facteur's outbound message encoder (src/delivery/dot-stuffing.ts) against nodemailer's own
// DataStream._transform, fed the same random bytes (rich in CR, LF and dots, bare and paired) cut into the same random
// chunks: the bytes sent and both byte counters must be identical, end marker included. A deliberately broken variant
// (the position after each CR not examined) fails it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { NodemailerDataStream, originalTransform, fastTransform } from '../../../src/delivery/dot-stuffing.js';
import { cutAt } from '../../helpers/chunks.js';

type Stream = NodeJS.ReadWriteStream & { _transform: unknown; inByteCount: number; outByteCount: number };

async function encode(transform: unknown, chunks: (Buffer | string)[]): Promise<{ out: string; counts: [number, number] }> {
  const s = new (NodemailerDataStream as unknown as new () => Stream)();
  s._transform = transform; // an own property: the class's prototype is left as it is
  const got: Buffer[] = [];
  s.on('data', (d: Buffer) => got.push(d));
  const ended = new Promise<void>((resolve) => s.on('end', () => resolve()));
  for (const c of chunks) s.write(c);
  s.end();
  await ended;
  return { out: Buffer.concat(got).toString('hex'), counts: [s.inByteCount, s.outByteCount] };
}

const pieces = fc.constantFrom('\r\n', '\n', '\r', '.', '..', '\r\n.', '\n.', '\r.', '\r\r', '\n\n', 'a', 'xy', '\x00', '\xff');
const input = fc.record({ text: fc.array(pieces, { maxLength: 80 }).map((a) => a.join('')), cuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 10 }) });

test("same bytes and counters as nodemailer's encoder, for any input and chunking", async () => {
  await fc.assert(
    fc.asyncProperty(input, async ({ text, cuts }) => {
      const chunks = cutAt(Buffer.from(text, 'latin1'), cuts);
      assert.deepEqual(await encode(fastTransform, chunks), await encode(originalTransform, chunks));
    }),
    { numRuns: 3000 },
  );
});

test('one byte at a time, strings as well as buffers, and a large ordinary message', async () => {
  const text = '.start\r\n..\r\nbare\nlf\rcr\r\n.\r\nend.';
  const bytes = [...Buffer.from(text, 'latin1')].map((b) => Buffer.from([b]));
  assert.deepEqual(await encode(fastTransform, bytes), await encode(originalTransform, bytes));
  assert.deepEqual(await encode(fastTransform, [text, 'more\r\n']), await encode(originalTransform, [text, 'more\r\n']));
  const big = Buffer.from(('Subject: x\r\n\r\n' + 'y'.repeat(76) + '\r\n.dot\r\n').repeat(2000), 'latin1');
  const chunks = cutAt(big, [0.1, 0.2, 0.5, 0.9]);
  const fast = await encode(fastTransform, chunks);
  assert.deepEqual(fast, await encode(originalTransform, chunks));
  assert.match(Buffer.from(fast.out, 'hex').toString('latin1'), /\r\n\.\.dot\r\n/, 'line-starting dots are doubled');
});
