// Delivery end to end: real smtp-sink MXs (accept, 4xx, 5xx, LMTP), Maildir on disk, retry schedule on a controlled
// clock, bounces parsed with mailparser, NOTIFY/RET/ENVID, null MX and SMTPUTF8 refusals.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { Readable } from 'node:stream';
import { simpleParser, type ParsedMail } from 'mailparser';
import { Spool } from '../../src/queue/spool.js';
import type { Envelope, RecipientParams } from '../../src/queue/types.js';
import { startDelivery, type DeliveryHandle } from '../../src/delivery/scheduler.js';
import { defaultDeliveryOptions } from '../../src/delivery/options.js';
import { parseTransportMap } from '../../src/delivery/routing.js';
import type { MxResolver } from '../../src/delivery/mx.js';
import { createLogger } from '../../src/observability/log.js';
import { startSink, type Sink } from '../helpers/sink.js';
import { freePort, tempDir } from '../helpers/net.js';

const clock = { t: Date.UTC(2026, 0, 5, 12, 0, 0), now() {
  return this.t;
} };
const MIN = 60_000;

let data: string;
let spool: Spool;
let handle: DeliveryHandle;
let ok: Sink, soft: Sink, hard: Sink, noesmtp: Sink, lmtp: Sink, lmtpUnix: Sink;
let hostile: net.Server;
let hostilePort: number;
const hostileMode = { mode: 'garbage' as 'garbage' | 'longline' | 'drop-in-data' | '421' | '554' | 'rcpt-mixed' };
const mxQueries: string[] = [];

function msg(from: string, to: string, subject: string, extra = ''): string {
  return `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@test>\r\n${extra}\r\nHello ${subject}\r\n`;
}

async function submit(mailFrom: string, rcpts: (string | RecipientParams)[], body: string, extra: Partial<Envelope> = {}): Promise<string> {
  const env: Envelope = { mailFrom, rcptTo: rcpts.map((r) => (typeof r === 'string' ? { address: r } : r)), receivedAt: clock.t, ...extra };
  return spool.commit(env, Readable.from([Buffer.from(body, 'utf8')]));
}

async function maildir(domain: string, local: string): Promise<{ file: string; raw: string }[]> {
  const dir = path.join(data, 'mail', domain, local, 'new');
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  return Promise.all(names.sort().map(async (f) => ({ file: f, raw: await fs.readFile(path.join(dir, f), 'utf8') })));
}

async function bounces(local = 'sender'): Promise<ParsedMail[]> {
  const out: ParsedMail[] = [];
  for (const m of await maildir('sender.test', local)) out.push(await parse(m.raw));
  return out;
}

/**
 * The message/delivery-status part. mailparser folds that part into `text`, so find it by the boundary mailparser
 * parsed, check its Content-Type, and check mailparser saw the same fields.
 */
function deliveryStatus(p: ParsedMail): string {
  const ct = p.headers.get('content-type') as { value: string; params: Record<string, string> };
  assert.equal(ct.value, 'multipart/report');
  assert.equal(ct.params['report-type'], 'delivery-status');
  const raw = (p as ParsedMail & { raw?: string }).raw;
  assert.ok(raw);
  const parts = raw.split(`--${ct.params.boundary}`);
  const part = parts.find((x) => /^\r\n(?:[^\r\n]+\r\n)*Content-Type: message\/(?:global-)?delivery-status\r\n/i.test(x));
  assert.ok(part, 'a message/delivery-status part');
  const body = part.slice(part.indexOf('\r\n\r\n') + 4);
  const first = body.split('\r\n')[0];
  const seen = (p.text ?? '').includes(first) || p.attachments.some((a) => /delivery-status/.test(a.contentType) && a.content.toString('utf8').includes(first));
  assert.ok(seen, 'mailparser read the same report');
  return body;
}

async function parse(raw: string): Promise<ParsedMail> {
  const p = await simpleParser(raw);
  return Object.assign(p, { raw });
}

before(async () => {
  data = await tempDir('facteur-delivery-');
  [ok, soft, hard, noesmtp] = await Promise.all([
    startSink(),
    startSink({ mode: 'tempfail' }),
    startSink({ mode: 'permfail', hardReply: '550 5.1.1 No such user here' }),
    startSink({ args: ['-e'] }),
  ]);
  lmtp = await startSink({ lmtp: true });
  const sockDir = await tempDir('facteur-lmtp-sock-');
  await fs.chmod(sockDir, 0o777);
  lmtpUnix = await startSink({ lmtp: true, unixPath: path.join(sockDir, 'lmtp') });
  hostilePort = await freePort();
  hostile = net.createServer((sock) => {
    sock.on('error', () => undefined);
    const say = (s: string) => sock.write(s);
    switch (hostileMode.mode) {
      case 'garbage':
        say('\x00\xff garbage without a code\r\n');
        return;
      case 'longline':
        say(`220 ${'x'.repeat(2_000_000)}`);
        return;
      case '421':
        say('421 4.3.2 Service shutting down\r\n');
        sock.end();
        return;
      case '554':
        say('554 5.7.1 No SMTP service here\r\n');
        return;
    }
    say('220 hostile ESMTP\r\n');
    let buf = '';
    let inData = false;
    let dropOnDot = false;
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      let i;
      while ((i = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (inData) {
          if (line === '.') {
            inData = false;
            if (dropOnDot) sock.destroy();
            else say('250 2.0.0 ok\r\n');
          }
          continue;
        }
        const cmd = line.slice(0, 4).toUpperCase();
        if (cmd === 'EHLO') say('250-hostile\r\n250 8BITMIME\r\n');
        else if (cmd === 'MAIL') say('250 2.1.0 ok\r\n');
        else if (cmd === 'RCPT') {
          if (hostileMode.mode === 'rcpt-mixed' && /soft/.test(line)) say('452 4.2.2 Mailbox full\r\n');
          else if (hostileMode.mode === 'rcpt-mixed' && /hard/.test(line)) say('550 5.1.1 \x1b[31mno such user\x07\r\n');
          else say('250 2.1.5 ok\r\n');
        } else if (cmd === 'DATA') {
          if (hostileMode.mode === 'drop-in-data') {
            inData = true;
            dropOnDot = true;
            say('354 go\r\n');
          } else {
            inData = true;
            say('354 go\r\n');
          }
        } else if (cmd === 'QUIT') {
          say('221 bye\r\n');
          sock.end();
        } else say('502 5.5.2 what\r\n');
      }
    });
  });
  await new Promise<void>((r) => hostile.listen(hostilePort, '127.0.0.1', r));
  const refused = await freePort();
  spool = await Spool.open(path.join(data, 'queue'));
  const resolver: MxResolver = {
    async resolveMx(d: string) {
      mxQueries.push(d);
      if (d === 'nullmx.test') return [{ exchange: '', priority: 0 }];
      if (d === 'viamx.test') return [{ exchange: '127.0.0.1', priority: 10 }];
      const e = new Error(`queryMx ENOTFOUND ${d}`) as NodeJS.ErrnoException;
      e.code = 'ENOTFOUND';
      throw e;
    },
  };
  const options = defaultDeliveryOptions(data, {
    hostname: 'mx.facteur.test',
    localDomains: ['local.test'],
    transportMap: parseTransportMap([
      `ok.test = smtp:[127.0.0.1]:${ok.port}`,
      `soft.test = smtp:[127.0.0.1]:${soft.port}`,
      `hard.test = smtp:[127.0.0.1]:${hard.port}`,
      `old.test = smtp:[127.0.0.1]:${noesmtp.port}`,
      `lmtp.test = lmtp:[127.0.0.1]:${lmtp.port}`,
      `unixlmtp.test = lmtp:unix:${path.join(sockDir, 'lmtp')}`,
      `hostile.test = smtp:[127.0.0.1]:${hostilePort}`,
      `down.test = smtp:[127.0.0.1]:${refused}`,
      'sender.test = maildir',
      'blocked.test = error:5.7.1 We do not send there',
    ]),
    smtpPort: ok.port,
    scanIntervalMs: 3_600_000,
    connectTimeoutMs: 5000,
    timeoutMs: 10_000,
  });
  handle = startDelivery({ spool, options, log: createLogger({ name: 'test', level: 'silent' }), clock, resolver });
});

after(async () => {
  await handle?.stop();
  await Promise.all([ok, soft, hard, noesmtp, lmtp, lmtpUnix].map((s) => s?.stop()));
  hostile?.close();
});

describe('delivery', () => {
  test('remote accept: several recipients in one transaction, queue emptied, EHLO with our name', async () => {
    const id = await submit('alice@sender.test', ['bob@ok.test', 'carol@ok.test'], msg('alice@sender.test', 'bob@ok.test', 'accept one'));
    await handle.tick();
    const got = await ok.waitForMessages(1);
    const m = got.find((x) => x.text.includes('Subject: accept one'));
    assert.ok(m);
    assert.match(m.text, /X-Rcpt-Args: <bob@ok.test>/);
    assert.match(m.text, /X-Rcpt-Args: <carol@ok.test>/);
    assert.match(m.text, /X-Helo-Args: mx\.facteur\.test/);
    assert.match(m.text, /X-Mail-Args: <alice@sender.test>/);
    assert.equal(await spool.locate(id), undefined);
  });

  test('local domain goes to Maildir new/ with Return-Path and Delivered-To; tmp/ is left empty', async () => {
    await submit('alice@sender.test', ['Dave@local.test'], msg('alice@sender.test', 'dave@local.test', 'local one'));
    await handle.tick();
    const files = await maildir('local.test', 'dave');
    assert.equal(files.length, 1);
    assert.match(files[0].file, /,S=\d+$/);
    assert.ok(files[0].raw.startsWith('Return-Path: <alice@sender.test>\r\nDelivered-To: Dave@local.test\r\n'));
    assert.match(files[0].raw, /Hello local one/);
    assert.deepEqual(await fs.readdir(path.join(data, 'mail', 'local.test', 'dave', 'tmp')), []);
  });

  test('LMTP delivery (smtp-sink -L) records per-recipient success', async () => {
    const id = await submit('alice@sender.test', ['u1@lmtp.test', 'u2@lmtp.test'], msg('alice@sender.test', 'u1@lmtp.test', 'lmtp one'));
    await handle.tick();
    const got = await lmtp.waitForMessages(1);
    assert.match(got[0].text, /X-Client-Proto: LMTP/);
    assert.equal(await spool.locate(id), undefined);
  });

  test('permanent failure: RFC 3464 bounce to the sender from the null sender, original attached', async () => {
    const before = (await bounces()).length;
    const id = await submit('sender@sender.test', [{ address: 'nobody@hard.test', orcpt: 'rfc822;nobody@hard.test' }], msg('sender@sender.test', 'nobody@hard.test', 'hard one'), { dsn: { envid: 'ENV-42' } });
    await handle.tick();
    assert.equal(await spool.locate(id), undefined);
    const all = await maildir('sender.test', 'sender');
    assert.equal(all.length, before + 1);
    const raw = all[all.length - 1].raw;
    assert.ok(raw.startsWith('Return-Path: <>\r\n'), 'bounce comes from the null sender');
    const p = await parse(raw);
    assert.equal(p.subject, 'Undelivered Mail Returned to Sender');
    const ct = p.headers.get('content-type') as { value: string; params: Record<string, string> };
    assert.equal(ct.value, 'multipart/report');
    assert.equal(ct.params['report-type'], 'delivery-status');
    assert.match(p.text ?? '', /nobody@hard\.test/);
    const ds = deliveryStatus(p);
    assert.match(ds, /^Reporting-MTA: dns; mx\.facteur\.test$/m);
    assert.match(ds, /^Original-Envelope-Id: ENV-42$/m);
    assert.match(ds, /^Final-Recipient: rfc822; nobody@hard\.test$/m);
    assert.match(ds, /^Original-Recipient: rfc822;nobody@hard\.test$/m);
    assert.match(ds, /^Action: failed$/m);
    assert.match(ds, /^Status: 5\.1\.1$/m);
    assert.match(ds, /^Remote-MTA: dns; 127\.0\.0\.1$/m);
    assert.match(ds, /^Diagnostic-Code: smtp; 550 5\.1\.1 No such user here$/m);
    const orig = p.attachments.find((a) => a.contentType === 'message/rfc822');
    assert.ok(orig, 'original message attached');
    assert.match(orig.content.toString('utf8'), /Subject: hard one/);
  });

  test('no bounce for a null sender, none for NOTIFY=NEVER; RET=HDRS returns headers only', async () => {
    const n0 = (await bounces()).length;
    const a = await submit('', ['x@hard.test'], msg('', 'x@hard.test', 'null sender'));
    const b = await submit('sender@sender.test', [{ address: 'y@hard.test', notify: ['NEVER'] }], msg('sender@sender.test', 'y@hard.test', 'never'));
    await handle.tick();
    assert.equal(await spool.locate(a), undefined);
    assert.equal(await spool.locate(b), undefined);
    assert.equal((await bounces()).length, n0);
    await submit('sender@sender.test', ['z@hard.test'], msg('sender@sender.test', 'z@hard.test', 'headers only'), { dsn: { ret: 'HDRS' } });
    await handle.tick();
    const all = await bounces();
    assert.equal(all.length, n0 + 1);
    const last = all[all.length - 1];
    const hdrs = last.attachments.find((x) => x.contentType === 'text/rfc822-headers');
    assert.ok(hdrs, 'headers part');
    assert.match(hdrs.content.toString(), /Subject: headers only/);
    assert.doesNotMatch(hdrs.content.toString(), /Hello headers only/);
  });

  test('NOTIFY=SUCCESS produces a success report', async () => {
    const n0 = (await bounces()).length;
    await submit('sender@sender.test', [{ address: 'happy@local.test', notify: ['SUCCESS'] }], msg('sender@sender.test', 'happy@local.test', 'success'));
    await handle.tick();
    const all = await bounces();
    assert.equal(all.length, n0 + 1);
    const ds = deliveryStatus(all[all.length - 1]);
    assert.match(ds, /^Action: delivered$/m);
    assert.match(ds, /^Status: 2\.0\.0$/m);
  });

  test('mixed result: delivered once, bounced once, deferred with backoff 5m, 10m, 20m ... 1h, expired after 5 days', async () => {
    const n0 = (await bounces()).length;
    const okBefore = (await ok.messages()).length;
    const t0 = clock.t;
    const id = await submit('sender@sender.test', ['r1@ok.test', 'r2@soft.test', 'r3@hard.test'], msg('sender@sender.test', 'r1@ok.test', 'mixed'));
    await handle.tick();
    let e = await spool.get(id);
    assert.equal(e?.state, 'deferred');
    assert.deepEqual(e?.status.recipients.map((r) => r.state), ['delivered', 'deferred', 'failed']);
    assert.equal(e?.status.attempts, 1);
    assert.equal(e?.status.nextAttempt, t0 + 5 * MIN);
    assert.match(e?.status.recipients[1].lastError ?? '', /^450 4\.3\.0/);
    assert.equal((await bounces()).length, n0 + 1, 'the hard failure bounced at once');
    // Not due yet.
    clock.t = t0 + 4 * MIN;
    await handle.tick();
    assert.equal((await spool.get(id))?.status.attempts, 1);
    // Due: second attempt, then the wait doubles.
    const expectNext = [10, 20, 40, 60, 60];
    let t = t0 + 5 * MIN;
    for (const waitMin of expectNext) {
      clock.t = t;
      await handle.tick();
      e = await spool.get(id);
      assert.equal(e?.status.nextAttempt, t + waitMin * MIN);
      t += waitMin * MIN;
    }
    assert.equal(e?.status.attempts, 6);
    // The delivered recipient is never sent again; the failed one never retried.
    assert.equal((await ok.messages()).filter((m) => m.text.includes('Subject: mixed')).length, 1);
    assert.equal((await ok.messages()).length, okBefore + 1);
    // Give up after max_lifetime.
    clock.t = t0 + 5 * 24 * 60 * MIN + 1;
    await handle.flush(id);
    await handle.tick();
    assert.equal(await spool.locate(id), undefined);
    const all = await bounces();
    assert.equal(all.length, n0 + 2);
    const ds = deliveryStatus(all[all.length - 1]);
    assert.match(ds, /^Final-Recipient: rfc822; r2@soft\.test$/m);
    assert.match(ds, /^Status: 4\.4\.7$/m);
    assert.match(ds, /^Action: failed$/m);
    assert.doesNotMatch(ds, /r3@hard\.test/, 'r3 was already reported');
  });

  test('unreachable next hop defers with 4.4.1; flush retries it now', async () => {
    const id = await submit('sender@sender.test', ['someone@down.test'], msg('sender@sender.test', 'someone@down.test', 'down'));
    await handle.tick();
    let e = await spool.get(id);
    assert.equal(e?.state, 'deferred');
    assert.equal(e?.status.recipients[0].status, '4.4.1');
    await handle.flush(id);
    await handle.tick();
    e = await spool.get(id);
    assert.equal(e?.status.attempts, 2);
    await spool.remove(id);
  });

  test('MX lookup routes to the MX host; null MX and NXDOMAIN bounce (5.1.10, 5.1.2); error transport bounces', async () => {
    const n0 = (await bounces()).length;
    const okBefore = (await ok.messages()).length;
    await submit('sender@sender.test', ['m@viamx.test'], msg('sender@sender.test', 'm@viamx.test', 'via mx'));
    await submit('sender@sender.test', ['n@nullmx.test', 'q@nxdomain.test', 'b@blocked.test'], msg('sender@sender.test', 'n@nullmx.test', 'null mx'));
    await handle.tick();
    assert.ok(mxQueries.includes('viamx.test'));
    assert.equal((await ok.messages()).length, okBefore + 1);
    const all = await bounces();
    assert.equal(all.length, n0 + 1, 'one bounce for the three failed recipients');
    const ds = deliveryStatus(all[all.length - 1]);
    assert.match(ds, /Final-Recipient: rfc822; n@nullmx\.test\r?\nAction: failed\r?\nStatus: 5\.1\.10/);
    assert.match(ds, /Final-Recipient: rfc822; q@nxdomain\.test\r?\nAction: failed\r?\nStatus: 5\.1\.2/);
    assert.match(ds, /Final-Recipient: rfc822; b@blocked\.test\r?\nAction: failed\r?\nStatus: 5\.7\.1/);
  });

  test('SMTPUTF8 message to a server without SMTPUTF8 bounces with 5.6.7', async () => {
    const n0 = (await bounces()).length;
    const id = await submit('sender@sender.test', ['jos\u00e9@old.test'], msg('sender@sender.test', 'jos\u00e9@old.test', 'utf8'), { smtputf8: true });
    await handle.tick();
    assert.equal(await spool.locate(id), undefined);
    const all = await bounces();
    assert.equal(all.length, n0 + 1);
    const ds = deliveryStatus(all[all.length - 1]);
    assert.match(ds, /Status: 5\.6\.7/);
    assert.match(ds, /utf-8; jos\u00e9@old\.test/);
  });

  test('hostile local parts never become paths outside the mail root', async () => {
    const n0 = (await bounces()).length;
    await submit('sender@sender.test', ['../../etc@local.test', '.hidden@local.test', 'a/b@local.test'], msg('sender@sender.test', 'x@local.test', 'hostile'));
    await handle.tick();
    const all = await bounces();
    assert.equal(all.length, n0 + 1);
    const ds = deliveryStatus(all[all.length - 1]);
    assert.equal((ds.match(/Status: 5\.1\.3/g) ?? []).length, 3);
    const root = await fs.readdir(path.join(data, 'mail'));
    assert.deepEqual(root.sort(), ['local.test', 'sender.test']);
    await assert.rejects(fs.access(path.join(data, 'etc')));
  });
  test('LMTP over a UNIX socket (lmtp:unix:/path)', async () => {
    const id = await submit('alice@sender.test', ['u@unixlmtp.test'], msg('alice@sender.test', 'u@unixlmtp.test', 'lmtp unix'));
    await handle.tick();
    const got = await lmtpUnix.waitForMessages(1);
    assert.match(got[0].text, /Subject: lmtp unix/);
    assert.equal(await spool.locate(id), undefined);
  });

  test('hostile remote servers: garbage greeting, 2 MB line, 421, drop during DATA all defer; 554 greeting bounces; control characters in replies are cleaned', async () => {
    for (const mode of ['garbage', 'longline', '421', 'drop-in-data'] as const) {
      hostileMode.mode = mode;
      const id = await submit('sender@sender.test', ['v@hostile.test'], msg('sender@sender.test', 'v@hostile.test', `hostile ${mode}`));
      await handle.tick();
      const e = await spool.get(id);
      assert.equal(e?.state, 'deferred', mode);
      assert.equal(e?.status.recipients[0].state, 'deferred', mode);
      assert.ok((e?.status.recipients[0].lastError ?? '').length <= 1000, mode);
      await spool.remove(id);
    }
    hostileMode.mode = '554';
    const n0 = (await bounces()).length;
    const refusedId = await submit('sender@sender.test', ['w@hostile.test'], msg('sender@sender.test', 'w@hostile.test', 'hostile 554'));
    await handle.tick();
    assert.equal(await spool.locate(refusedId), undefined, 'a 554 greeting is a permanent refusal');
    assert.match(deliveryStatus((await bounces()).at(-1)!), /Status: 5\.7\.1/);
    hostileMode.mode = 'rcpt-mixed';
    const id = await submit('sender@sender.test', ['good@hostile.test', 'soft@hostile.test', 'hard@hostile.test'], msg('sender@sender.test', 'good@hostile.test', 'hostile mixed'));
    await handle.tick();
    const e = await spool.get(id);
    assert.deepEqual(e?.status.recipients.map((r) => [r.state, r.status]), [['delivered', '2.0.0'], ['deferred', '4.2.2'], ['failed', '5.1.1']]);
    assert.doesNotMatch(e?.status.recipients[2].lastError ?? '', /[\x00-\x1f]/);
    assert.equal((await bounces()).length, n0 + 2);
    await spool.remove(id);
  });
  test('delay warning: one "delayed" DSN once a recipient is late by delay_warning, then the final bounce', async () => {
    const data2 = await tempDir('facteur-delay-');
    const spool2 = await Spool.open(path.join(data2, 'queue'));
    const options = defaultDeliveryOptions(data2, {
      hostname: 'mx.facteur.test',
      transportMap: parseTransportMap([`soft.test = smtp:[127.0.0.1]:${soft.port}`, 'sender.test = maildir']),
      scanIntervalMs: 3_600_000,
      delayWarningMs: 4 * 60 * MIN,
    });
    const h2 = startDelivery({ spool: spool2, options, log: createLogger({ name: 'test', level: 'silent' }), clock });
    try {
      const t0 = clock.t;
      const id = await spool2.commit({ mailFrom: 'late@sender.test', rcptTo: [{ address: 'x@soft.test' }], receivedAt: t0 }, Readable.from([Buffer.from(msg('late@sender.test', 'x@soft.test', 'late'))]));
      await h2.tick();
      const inbox = () => fs.readdir(path.join(data2, 'mail', 'sender.test', 'late', 'new')).catch(() => [] as string[]);
      assert.equal((await inbox()).length, 0, 'no warning before delay_warning');
      clock.t = t0 + 5 * 60 * MIN;
      await h2.flush(id);
      await h2.tick();
      const files = await inbox();
      assert.equal(files.length, 1);
      const warn = await parse(await fs.readFile(path.join(data2, 'mail', 'sender.test', 'late', 'new', files[0]), 'utf8'));
      assert.equal(warn.subject, 'Delayed Mail (still being retried)');
      const ds = deliveryStatus(warn);
      assert.match(ds, /^Action: delayed$/m);
      assert.match(ds, /^Will-Retry-Until: /m);
      // Only once.
      clock.t = t0 + 6 * 60 * MIN;
      await h2.flush(id);
      await h2.tick();
      assert.equal((await inbox()).length, 1);
      assert.equal((await spool2.get(id))?.state, 'deferred');
    } finally {
      await h2.stop();
    }
  });
});
