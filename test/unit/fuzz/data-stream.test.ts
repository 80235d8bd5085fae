// Differential fuzz: facteur's DATA parser (src/smtp/data-stream.ts, a native search for line-starting dots) against
// smtp-server's own (a byte loop), fed the same input cut into the same random chunks. Inputs are commands, DATA, a body
// made of the bytes that matter here ("\r", "\n", ".", and a few others: lone dots, stuffed dots, markers split at
// every place, a "\r\n.\r\n" without its leading line break), the final dot, and commands pipelined after it. The two
// must emit the same message bytes, the same byte counts and the same commands afterwards, in the same order; a
// deliberately broken search (one that skips a candidate) makes this test fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import { FastDataStream } from '../../../src/smtp/data-stream.js';
import { cutAt } from '../../helpers/chunks.js';

interface Trace {
  /** Commands seen, and for each DATA the message bytes (hex) and the parser's byte count. */
  events: string[];
}

/** Drive one parser like smtp-server's connection does: DATA starts data mode, the end of the message continues. */
async function run(Parser: typeof SMTPStream, chunks: Buffer[]): Promise<Trace> {
  const p = new Parser({ maxCommandLength: 1 << 20 });
  const events: string[] = [];
  p.oncommand = (command: Buffer, cb?: () => void) => {
    const line = command.toString('latin1');
    events.push(`cmd ${line}`);
    if (line === 'DATA') {
      const ds = p.startDataMode(1 << 20);
      const got: Buffer[] = [];
      ds.on('data', (d: Buffer) => got.push(d));
      ds.on('end', () => {
        events.push(`data ${Buffer.concat(got).toString('hex')} bytes=${p.dataBytes}`);
        p.continue();
      });
      // Asynchronously, as the connection's handlers answer: a message pipelined right after this one must not be
      // parsed inside continue() (the engine's continue() would then drop that message's own continuation).
      setImmediate(() => cb?.());
      return;
    }
    cb?.();
  };
  for (const c of chunks) await new Promise<void>((resolve, reject) => p.write(c, (err) => (err ? reject(err) : resolve())));
  await new Promise<void>((resolve) => p.end(resolve));
  // Let setImmediate continuations (stuffed dots) and the last 'end' run.
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  return { events };
}

const pieces = fc.constantFrom('\r\n', '\n', '\r', '.', '..', '\r\n.', '\r\n..', '\r\n.\r\n', '.\r\n', 'a', 'xy', ' ', '\x00', '\xff', '\r\n\r\n');
const body = fc.array(pieces, { maxLength: 60 }).map((a) => a.join(''));
const input = fc.record({
  bodies: fc.array(body, { minLength: 1, maxLength: 3 }),
  cuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 12 }),
});

/** Each body sent as a message; a body containing the marker ends early there, the rest are then commands, as on the wire. */
function wire(bodies: string[]): Buffer {
  let s = 'EHLO x\r\n';
  for (const b of bodies) s += `MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n${b}\r\n.\r\n`;
  return Buffer.from(`${s}QUIT\r\n`, 'latin1');
}

test('same message bytes, byte counts and following commands as smtp-server, for any chunking', async () => {
  await fc.assert(
    fc.asyncProperty(input, async ({ bodies, cuts }) => {
      const chunks = cutAt(wire(bodies), cuts);
      const [ours, theirs] = await Promise.all([run(FastDataStream, chunks), run(SMTPStream, chunks)]);
      assert.deepEqual(ours.events, theirs.events);
    }),
    { numRuns: 1500 },
  );
});

test('one byte at a time, and a large message with dots at chunk edges', async () => {
  const bodies = ['.\r\n..\r\n.x\r\n\r\n.', 'a\r\n'.repeat(3000) + '..\r\n.\r\nRSET', '.'];
  const all = wire(bodies);
  const bytes = [...all].map((b) => Buffer.from([b]));
  const [a, b] = await Promise.all([run(FastDataStream, bytes), run(SMTPStream, bytes)]);
  assert.deepEqual(a.events, b.events);
  const big = cutAt(all, [0.1, 0.33, 0.5, 0.77, 0.99]);
  const [c, d] = await Promise.all([run(FastDataStream, big), run(SMTPStream, big)]);
  assert.deepEqual(c.events, d.events);
  assert.ok(c.events.some((e) => e.startsWith('cmd RSET')), 'a marker inside a body ends the message: what follows is commands');
});

test('the empty message and a leading stuffed dot split from the rest (no command smuggled in by the cut)', async () => {
  for (const raw of ['DATA\r\n.\r\nQUIT\r\n', 'DATA\r\n..\r\n.\r\nQUIT\r\n']) {
    const buf = Buffer.from(raw, 'latin1');
    for (let i = 1; i < buf.length; i++) {
      const chunks = [buf.subarray(0, i), buf.subarray(i)];
      const [a, b] = await Promise.all([run(FastDataStream, chunks), run(SMTPStream, chunks)]);
      assert.deepEqual(a.events, b.events, `cut at ${i} of ${JSON.stringify(raw)}`);
    }
  }
});
