// Fuzz: the AUTH PLAIN and AUTH LOGIN decoders (smtp-server's SASL code plus facteur's authenticate() in src/smtp/server.ts) over
// implicit TLS, with random base64, random bytes, NUL-split fields and cancellations. src/smtp exposes no decoder function of its
// own, so the fuzzing goes through the socket. Properties: valid replies, 235 only for the right password, the session continues.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { startFuzzServer, exchange, assertValidReplies, normalSession, PASSWORD, type FuzzServer, type Exchange } from './smtp.js';

let srv: FuzzServer;
/** Reply codes met, so the test proves it reached both verdicts. */
const seen = new Set<string>();
const USER = 'alice@example.org';
const b64 = (b: Buffer | string) => Buffer.from(b).toString('base64');
const unb64 = (s: string) => Buffer.from(s, 'base64').toString('utf8');

before(async () => {
  srv = await startFuzzServer();
});

after(async () => {
  await srv?.stop();
});

const field = fc.oneof(
  fc.constantFrom(USER, ` ${USER} `, 'ALICE@EXAMPLE.ORG', PASSWORD, `${PASSWORD} `, '', 'alice', 'bob@example.org', 'alice@example.org@evil.test', 'a'.repeat(300)),
  fc.string({ maxLength: 30 }),
  fc.string({ unit: 'binary', maxLength: 30 }),
);

/** An AUTH PLAIN message: usually authzid NUL authcid NUL password (sometimes more or fewer NULs), sometimes raw bytes. */
const plainMessage = fc.oneof(
  { weight: 5, arbitrary: fc.array(field, { minLength: 1, maxLength: 5 }).map((f) => Buffer.from(f.join('\0'), 'utf8')) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 120 }).map((u) => Buffer.from(u)) },
  { weight: 1, arbitrary: fc.constant(Buffer.from(`\0${USER}\0${PASSWORD}`)) },
);

/** What goes on the wire for a base64 response: valid base64, broken base64, '*' (cancel), '=' (empty), or junk. */
function wire(msg: fc.Arbitrary<Buffer>): fc.Arbitrary<{ line: string; decoded?: string }> {
  return fc.oneof(
    { weight: 6, arbitrary: msg.map((m) => ({ line: b64(m), decoded: m.toString('utf8') })) },
    { weight: 1, arbitrary: fc.constantFrom('*', '=', '', '====', 'not base64!', 'AA', 'A'.repeat(5000)).map((line) => ({ line })) },
    { weight: 1, arbitrary: fc.string({ maxLength: 60 }).filter((s) => !/[\r\n]/.test(s)).map((line) => ({ line })) },
  );
}

/** The session went on to our QUIT (221), or ended cleanly with 421 (a line over the 4096-byte command limit), closed by the server. */
function assertSessionEnds(r: Exchange): void {
  assert.match(r.text, /\r\n(221|421) [^\r]*\r\n$/, r.text.slice(-300));
  assert.ok(r.closedByServer, 'the server closed the session');
}

/** The AUTH reply: the first reply after the greeting and EHLO (multi-line EHLO skipped), and any 334 challenges. */
function authReplies(text: string): string[] {
  const lines = text.split('\r\n').filter((l) => /^\d{3} /.test(l));
  return lines.slice(2); // 220 greeting, 250 end of EHLO
}

test('AUTH PLAIN with random messages: valid replies, 235 only for the right password, the session goes on', async () => {
  await fc.assert(
    fc.asyncProperty(wire(plainMessage), fc.boolean(), async (w, initial) => {
      const auth = initial ? `AUTH PLAIN ${w.line}\r\n` : `AUTH PLAIN\r\n${w.line}\r\n`;
      const r = await exchange(srv.ports.submissions, Buffer.from(`EHLO fuzz.test\r\n${auth}`), { tls: true, trailer: 'NOOP\r\nQUIT\r\n' });
      assertValidReplies(r.text);
      const replies = authReplies(r.text);
      const result = replies.find((l) => !l.startsWith('334'));
      assert.ok(result, r.text);
      assert.match(result, /^(235|501|535|454|504|500|421) /);
      seen.add(`PLAIN ${result.slice(0, 3)}`);
      if (result.startsWith('235')) {
        const parts = (w.decoded ?? unb64(w.line)).split('\0');
        assert.equal(parts.length, 3, `235 for ${JSON.stringify(parts)}`);
        assert.equal(parts[1].trim(), USER);
        assert.equal(parts[2], PASSWORD);
        assert.ok(parts[0] === '' || parts[0] === parts[1], 'no proxy authorization');
      }
      assertSessionEnds(r);
    }),
    { numRuns: 500, interruptAfterTimeLimit: 8_000, markInterruptAsFailure: false, examples: [[{ line: b64(`\0${USER}\0${PASSWORD}`) }, true], [{ line: b64(`\0${USER}\0wrong`) }, false]] },
  );
  assert.ok(seen.has('PLAIN 235') && seen.has('PLAIN 535'), [...seen].join(' '));
  await normalSession(srv.ports.inbound, srv.queue);
});

test('AUTH LOGIN with random username and password lines: valid replies, 235 only for the right pair, the session goes on', async () => {
  const user = wire(fc.oneof(field, fc.constant(USER)).map((s) => Buffer.from(s, 'utf8')));
  const pass = wire(fc.oneof(field, fc.constant(PASSWORD)).map((s) => Buffer.from(s, 'utf8')));
  await fc.assert(
    fc.asyncProperty(user, pass, fc.boolean(), async (u, p, initial) => {
      const auth = initial ? `AUTH LOGIN ${u.line}\r\n${p.line}\r\n` : `AUTH LOGIN\r\n${u.line}\r\n${p.line}\r\n`;
      const r = await exchange(srv.ports.submissions, Buffer.from(`EHLO fuzz.test\r\n${auth}`), { tls: true, trailer: 'NOOP\r\nQUIT\r\n' });
      assertValidReplies(r.text);
      const replies = authReplies(r.text);
      const result = replies.find((l) => !l.startsWith('334'));
      assert.ok(result, r.text);
      seen.add(`LOGIN ${result.slice(0, 3)}`);
      if (result.startsWith('235')) {
        assert.equal((u.decoded ?? unb64(u.line)).trim(), USER);
        assert.equal(p.decoded ?? unb64(p.line), PASSWORD);
      }
      assertSessionEnds(r);
    }),
    { numRuns: 500, interruptAfterTimeLimit: 8_000, markInterruptAsFailure: false, examples: [[{ line: b64(USER) }, { line: b64(PASSWORD) }, false], [{ line: b64(USER) }, { line: b64('wrong') }, true]] },
  );
  assert.ok(seen.has('LOGIN 235') && seen.has('LOGIN 535'), [...seen].join(' '));
  await normalSession(srv.ports.inbound, srv.queue);
});
