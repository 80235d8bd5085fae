// Fuzz: random bytes, truncated and oversized frames, and well-formed requests with random fields, sent to a real saslauthd
// protocol socket (AuthService in-process), served by both socket layers (the C one and node:net) side by side. Properties:
// the server never crashes, answers at most one well-formed frame `OK`/`NO`, says OK only for the right password, both
// layers answer every input with the same bytes, and a normal request is still answered afterwards.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs/promises';
import fc from 'fast-check';
import { pino } from 'pino';
import { tempDir } from '../../helpers/net.js';
import { AuthService } from '../../../src/auth/daemon/server.js';
import { listenSaslauthd, type SaslauthdListener } from '../../../src/auth/daemon/listener.js';
import { encodeFields, fieldToString } from '../../../src/auth/protocol/frame.js';
import { ok, fail, type AuthBackend } from '../../../src/auth/types.js';

const PASSWORD = 'correct horse';
let dir: string;
let socket: string;
let nodeSocket: string;
let servers: SaslauthdListener[] = [];

const backend: AuthBackend = {
  name: 'fuzz',
  async verify(c) {
    return c.login === 'alice' && c.password === PASSWORD ? ok() : fail();
  },
};

before(async () => {
  dir = await tempDir('facteur-fuzz-authd-');
  socket = path.join(dir, 'mux');
  nodeSocket = path.join(dir, 'mux-node');
  const log = pino({ level: 'silent' });
  const service = new AuthService({ backend, realmJoin: false, maxInflight: 8, readTimeoutMs: 2000, backendTimeoutMs: 2000, verbose: false, log });
  servers = [
    await listenSaslauthd(socket, service, { readTimeoutMs: 2000, log, layer: 'native' }),
    await listenSaslauthd(nodeSocket, service, { readTimeoutMs: 2000, log, layer: 'node' }),
  ];
});

after(async () => {
  await Promise.all(servers.map((s) => s.close()));
  await fs.rm(dir, { recursive: true, force: true });
});

/** Send bytes, half-close, read everything until the server closes. */
function ask(bytes: Buffer, to = socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(to);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('no end of reply within 5 s'));
    }, 5000);
    s.on('data', (d) => chunks.push(d));
    s.on('error', () => undefined); // EPIPE when the server refuses early: the reply (if any) is still checked
    s.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
    s.write(bytes);
    s.end();
  });
}

/** At most one frame: 2-byte big-endian length, then exactly that many bytes, starting OK or NO. */
function replyOf(buf: Buffer): string | undefined {
  if (buf.length === 0) return undefined;
  assert.ok(buf.length >= 2, `truncated reply ${buf.toString('hex')}`);
  const len = buf.readUInt16BE(0);
  assert.equal(buf.length, 2 + len, `reply length ${len} but ${buf.length - 2} bytes`);
  const text = buf.subarray(2).toString('utf8');
  assert.match(text, /^(OK|NO)/);
  return text;
}

/** Byte strings at the edges of UTF-8 validity, where a decoder in C and TextDecoder could disagree. */
const UTF8_EDGES = [
  'efbbbf616c696365', // BOM + alice: kept, not stripped
  'c0af', 'c1bf', 'e080af', 'f08080af', // overlong forms
  'c280', 'dfbf', 'e0a080', 'efbfbf', 'f0908080', 'f48fbfbf', // smallest and largest of each length
  'eda080', 'edbfbf', 'ed9fbf', // surrogates, and the last code point before them
  'f4908080', 'f5808080', 'f8888080', 'ff', 'fe', // above U+10FFFF, invalid lead bytes
  'e282', 'f09f98', 'c3', '80', 'bf', // truncated sequences, lone continuation bytes
  '61c3a962', '61e282ac00ff', 'c3a900c3', // valid with a NUL: cut before invalid bytes after it
].map((h) => Buffer.from(h, 'hex'));

const fieldBytes = fc.oneof(
  fc.constantFrom('alice', PASSWORD, 'smtp', '', 'alice\0', 'bob', '127.0.0.1;25', ' alice').map((s) => Buffer.from(s)),
  fc.constantFrom(...UTF8_EDGES),
  fc.array(fc.constantFrom(...UTF8_EDGES), { maxLength: 4 }).map((parts) => Buffer.concat(parts)),
  fc.string({ unit: 'binary', maxLength: 40 }).map((s) => Buffer.from(s, 'utf8')),
  fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u)),
);

const request = fc.oneof(
  // well-formed 4 or 5 fields (oversized ones included: encodeFields writes any length up to 65535)
  { weight: 4, arbitrary: fc.array(fieldBytes, { minLength: 4, maxLength: 5 }).map((f) => ({ bytes: encodeFields(f), fields: f })) },
  // random bytes
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 600 }).map((u) => ({ bytes: Buffer.from(u), fields: undefined })) },
  // a well-formed request cut short or followed by junk
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.array(fieldBytes, { minLength: 4, maxLength: 5 }), fc.nat(), fc.uint8Array({ maxLength: 50 }))
      .map(([f, cut, junk]) => {
        const full = encodeFields(f);
        return { bytes: Buffer.concat([full.subarray(0, cut % (full.length + 1)), Buffer.from(junk)]), fields: undefined };
      }),
  },
);

test('random requests on the saslauthd socket: at most one well-formed reply, OK only for the right password, the same bytes from both layers', async () => {
  const seen = new Set<string>();
  await fc.assert(
    fc.asyncProperty(request, async (r) => {
      const [reply, nodeReply] = await Promise.all([ask(r.bytes), ask(r.bytes, nodeSocket)]);
      assert.deepEqual(reply, nodeReply, 'the C layer and node:net answer alike');
      const text = replyOf(reply);
      if (text === undefined) return;
      seen.add(text.slice(0, 2));
      if (text.startsWith('OK')) {
        // Only reachable with a request whose first two fields are exactly alice / the password (junk after is ignored).
        // A field ends at its first NUL, as the C string upstream's saslauthd makes of it ('alice\0' is alice).
        const first = r.fields ?? undefined;
        if (first) {
          assert.equal(fieldToString(first[0]), 'alice');
          assert.equal(fieldToString(first[1]), PASSWORD);
        } else {
          assert.ok(r.bytes.includes(Buffer.from(PASSWORD)), 'OK without the password in the request');
        }
      }
    }),
    {
      numRuns: 3000,
      interruptAfterTimeLimit: 10_000,
      markInterruptAsFailure: false,
      examples: [[{ bytes: encodeFields(['alice', PASSWORD, 'smtp', '']), fields: ['alice', PASSWORD, 'smtp', ''].map((s) => Buffer.from(s)) }]],
    },
  );
  assert.ok(seen.has('OK') && seen.has('NO'), [...seen].join(' '));
  assert.match(replyOf(await ask(encodeFields(['alice', PASSWORD, 'smtp', '']))) ?? '', /^OK/);
  assert.match(replyOf(await ask(encodeFields(['alice', 'wrong', 'smtp', '']))) ?? '', /^NO/);
});
