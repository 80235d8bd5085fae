import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { simpleParser } from 'mailparser';
import { downgradeTo7bit, quotedPrintable } from '../../../src/mail/downgrade.js';

/** Decode quoted-printable (RFC 2045 6.7) strictly enough to check our encoder. */
function unQp(s: string): Buffer {
  const out: number[] = [];
  const text = s.replace(/=\r\n/g, '');
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '=') {
      out.push(parseInt(text.slice(i + 1, i + 3), 16));
      i += 2;
    } else out.push(text.charCodeAt(i));
  }
  return Buffer.from(out);
}

function sevenBit(b: Buffer): void {
  for (const c of b) assert.ok(c < 0x80, 'only 7-bit bytes');
  for (const line of b.toString('latin1').split('\r\n')) assert.ok(line.length <= 998, 'SMTP line length');
  assert.ok(!/(^|[^\r])\n/.test(b.toString('latin1')), 'no bare LF');
}

test('quoted-printable: 8-bit and "=" encoded, trailing space encoded, lines at most 76, decodes back exactly', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a.filter((c) => c !== 13 && c !== 10))), { maxLength: 8 }), (lines) => {
      const body = Buffer.concat(lines.flatMap((l, i) => (i ? [Buffer.from('\r\n'), l] : [l])));
      const qp = quotedPrintable(body).toString('latin1');
      for (const l of qp.split('\r\n')) {
        assert.ok(l.length <= 76, `line of ${l.length}`);
        assert.ok(!/[ \t]$/.test(l), 'no trailing white space');
        assert.ok(/^[\x20-\x7e\t]*$/.test(l));
      }
      assert.deepEqual(unQp(qp), body);
    }),
    { numRuns: 300 },
  );
});

test('a non-MIME 8-bit message becomes MIME, text/plain with an unknown-8bit charset, quoted-printable', async () => {
  const msg = Buffer.from('From: a@x.test\r\nSubject: hi\r\n\r\nCaf\xe9 cr\xe8me = 1\r\nline 2 \r\n', 'latin1');
  const out = downgradeTo7bit(msg)!;
  sevenBit(out);
  const text = out.toString('latin1');
  assert.match(text, /^From: a@x\.test\r\nSubject: hi\r\nMIME-Version: 1\.0\r\nContent-Type: text\/plain; charset=unknown-8bit\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n/);
  assert.deepEqual(unQp(text.slice(text.indexOf('\r\n\r\n') + 4)), msg.subarray(msg.indexOf('\r\n\r\n') + 4));
});

test('multipart: 8-bit parts re-encoded, 7-bit and base64 parts and the delimiters kept byte for byte; content unchanged', async () => {
  const att = Buffer.from('%PDF-1.4 binary \x00\xff\xfe', 'latin1').toString('base64');
  const msg = Buffer.from(
    [
      'From: a@x.test',
      'To: b@y.test',
      'Subject: test',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="outer b"',
      '',
      'preamble',
      '--outer b',
      'Content-Type: multipart/alternative; boundary=inner',
      '',
      '--inner',
      'Content-Type: text/plain; charset=utf-8',
      'Content-Transfer-Encoding: 8bit',
      '',
      'Grüße aus Köln — ça va ?',
      '--inner',
      'Content-Type: text/html; charset=utf-8',
      '',
      '<p>Grüße</p>',
      '--inner--',
      '--outer b',
      'Content-Type: text/plain; charset=us-ascii',
      '',
      'plain ascii part',
      '--outer b',
      'Content-Type: application/pdf; name=a.pdf',
      'Content-Transfer-Encoding: base64',
      'Content-Disposition: attachment; filename=a.pdf',
      '',
      att,
      '--outer b--',
      'epilogue',
      '',
    ].join('\r\n'),
    'utf8',
  );
  const out = downgradeTo7bit(msg)!;
  assert.ok(out, 'converted');
  sevenBit(out);
  const text = out.toString('latin1');
  assert.ok(text.includes('--outer b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nplain ascii part\r\n--outer b'), 'the 7-bit part is untouched');
  assert.ok(text.includes(`\r\n\r\n${att}\r\n--outer b--\r\nepilogue\r\n`), 'the base64 part and the epilogue are untouched');
  const [a, b] = await Promise.all([simpleParser(msg), simpleParser(out)]);
  assert.equal(b.text, a.text);
  assert.equal(b.html, a.html);
  assert.match(a.text ?? '', /^Grüße aus Köln — ça va \?/);
  assert.deepEqual(b.attachments.map((x) => x.content), a.attachments.map((x) => x.content));
});

test('an 8-bit message/rfc822 part is converted inside', async () => {
  const inner = 'From: c@z.test\r\nSubject: inner\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nDéjà vu\r\n';
  const msg = Buffer.from(`From: a@x.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n${inner}--b--\r\n`, 'utf8');
  const out = downgradeTo7bit(msg)!;
  sevenBit(out);
  const t = out.toString('latin1');
  assert.match(t, /Content-Type: message\/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\nFrom: c@z\.test/);
  assert.match(t, /D=C3=A9j=C3=A0 vu/);
});

test('what cannot be converted faithfully is refused (the caller bounces it)', () => {
  const cases: [string, string][] = [
    ['8-bit header', 'Subject: Grüße\r\n\r\nbody\r\n'],
    ['binary part', 'MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\xff\xfe\r\n'],
    ['8-bit inside base64', 'MIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n\r\n\xff\r\n'],
    ['no closing delimiter', 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n\xe9\r\n'],
    ['multipart without boundary', 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n\xe9\r\n'],
    ['8-bit preamble', 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\xe9\r\n--b\r\n\r\nx\r\n--b--\r\n'],
    ['no header/body separator', 'Subject: x\r\n\xe9'],
  ];
  for (const [what, m] of cases) assert.equal(downgradeTo7bit(Buffer.from(m, 'latin1')), undefined, what);
  const seven = Buffer.from('Subject: x\r\n\r\nascii\r\n');
  assert.equal(downgradeTo7bit(seven), seven, 'a 7-bit message is returned as is');
});

test('hostile nesting: deep multiparts end in a refusal, not a stack overflow', () => {
  let body = 'Content-Type: text/plain\r\n\r\n\xe9\r\n';
  for (let i = 0; i < 200; i++) body = `Content-Type: multipart/mixed; boundary=b${i}\r\n\r\n--b${i}\r\n${body}--b${i}--\r\n`;
  assert.equal(downgradeTo7bit(Buffer.from(`MIME-Version: 1.0\r\n${body}`, 'latin1')), undefined);
});
