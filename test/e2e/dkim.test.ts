// DKIM end to end: `facteur dkim keygen` writes the key and prints the TXT record; mail sent through smtp-sink carries a
// signature that mailauth's dkimVerify accepts against that record (resolver stub), and rejects against another key.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { simpleParser } from 'mailparser';
import { Spool } from '../../src/queue/spool.js';
import { startDelivery, type DeliveryHandle } from '../../src/delivery/scheduler.js';
import { defaultDeliveryOptions } from '../../src/delivery/options.js';
import { parseTransportMap } from '../../src/delivery/routing.js';
import { createLogger } from '../../src/observability/log.js';
import { startSink, type Sink } from '../helpers/sink.js';
import { tempDir } from '../helpers/net.js';

const run = promisify(execFile);
const FACTEUR = path.resolve('bin/facteur');

let data: string;
let keys: string;
let sink: Sink;
let no8bit: Sink;
let spool: Spool;
let handle: DeliveryHandle;
const records = new Map<string, string>();

async function keygen(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(FACTEUR, ['dkim', 'keygen', ...args]);
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** `sel._domainkey.dom. IN TXT ( "a" "b" )` → name and joined value. */
function parseRecord(line: string): { name: string; value: string } {
  const m = /^(\S+)\. IN TXT \( (.*) \)$/.exec(line.trim());
  assert.ok(m, `record line: ${line}`);
  const parts = [...m[2].matchAll(/"([^"]*)"/g)].map((x) => x[1]);
  assert.ok(parts.every((p) => p.length <= 255));
  return { name: m[1], value: parts.join('') };
}

const resolver = async (name: string, type: string) => {
  const v = type === 'TXT' ? records.get(name) : undefined;
  if (!v) throw Object.assign(new Error(`ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
  return [[v]];
};

before(async () => {
  data = await tempDir('facteur-dkim-');
  keys = path.join(data, 'dkim');
  sink = await startSink();
  no8bit = await startSink({ args: ['-8'] }); // announces no 8BITMIME
  spool = await Spool.open(path.join(data, 'queue'));
  const options = defaultDeliveryOptions(data, {
    hostname: 'mx.facteur.test',
    transportMap: parseTransportMap([`no8bit.test = smtp:[127.0.0.1]:${no8bit.port}`, `* = smtp:[127.0.0.1]:${sink.port}`]),
    dkimDir: keys,
    scanIntervalMs: 3_600_000,
  });
  handle = startDelivery({ spool, options, log: createLogger({ name: 'test', level: 'silent' }) });
});

after(async () => {
  await handle?.stop();
  await sink?.stop();
  await no8bit?.stop();
});

test('keygen writes a 0600 RSA key and prints a TXT record; refuses to overwrite and bad names', async () => {
  const r = await keygen(['Sender.Test', '--selector', 's1', '--dir', keys]);
  assert.equal(r.code, 0, r.stderr);
  const rec = parseRecord(r.stdout);
  assert.equal(rec.name, 's1._domainkey.sender.test');
  assert.match(rec.value, /^v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]{300,}$/);
  records.set(rec.name, rec.value);
  const st = await fs.stat(path.join(keys, 'sender.test.s1.key'));
  assert.equal(st.mode & 0o777, 0o600);
  assert.match(await fs.readFile(path.join(keys, 'sender.test.s1.key'), 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
  const again = await keygen(['sender.test', '--selector', 's1', '--dir', keys]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already exists/);
  const bad = await keygen(['../etc', '--dir', keys]);
  assert.equal(bad.code, 1);
  const badSel = await keygen(['ok.test', '--selector', '../x', '--dir', keys]);
  assert.equal(badSel.code, 1);
  assert.deepEqual((await fs.readdir(keys)).sort(), ['sender.test.s1.key']);
});

test('outgoing mail is signed and verifies against the published record; a different key fails', async () => {
  const body = 'From: Alice <alice@sender.test>\r\nTo: bob@remote.test\r\nSubject: signed\r\nDate: Mon, 5 Jan 2026 12:00:00 +0000\r\nMessage-ID: <signed@sender.test>\r\n\r\nSigned body line\r\n';
  await spool.commit({ mailFrom: 'alice@sender.test', rcptTo: [{ address: 'bob@remote.test' }], receivedAt: Date.now() }, Readable.from([Buffer.from(body)]));
  await handle.tick();
  const [m] = await sink.waitForMessages(1);
  assert.match(m.text, /^DKIM-Signature: .*d=sender\.test/m);
  // smtp-sink writes LF line ends and prepends its own headers: neither is covered by the signature.
  const received = Buffer.from(m.text.replace(/\r?\n/g, '\r\n'));
  const res = await dkimVerify(received, { resolver });
  assert.equal(res.results.length, 1);
  assert.equal(res.results[0].status.result, 'pass', JSON.stringify(res.results[0].status));
  assert.equal(res.results[0].signingDomain, 'sender.test');

  // Publish another key under the same name: the signature must not verify.
  const other = await keygen(['sender.test', '--selector', 'other', '--dir', await tempDir()]);
  const saved = records.get('s1._domainkey.sender.test')!;
  records.set('s1._domainkey.sender.test', parseRecord(other.stdout).value);
  const bad = await dkimVerify(received, { resolver });
  assert.notEqual(bad.results[0].status.result, 'pass');
  records.set('s1._domainkey.sender.test', saved);
  // A tampered body fails too.
  const tampered = Buffer.from(received.toString().replace('Signed body line', 'Changed body line'));
  assert.notEqual((await dkimVerify(tampered, { resolver })).results[0].status.result, 'pass');
});

test('ed25519 keys sign and verify (RFC 8463)', async () => {
  const r = await keygen(['ed.test', '--selector', 'e1', '--type', 'ed25519', '--dir', keys]);
  assert.equal(r.code, 0, r.stderr);
  const rec = parseRecord(r.stdout);
  assert.match(rec.value, /^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$/);
  records.set(rec.name, rec.value);
  const before = (await sink.messages()).length;
  const body = 'From: <x@ed.test>\r\nTo: bob@remote.test\r\nSubject: ed\r\n\r\nEd body\r\n';
  await spool.commit({ mailFrom: 'x@ed.test', rcptTo: [{ address: 'bob@remote.test' }], receivedAt: Date.now() }, Readable.from([Buffer.from(body)]));
  await handle.tick();
  const all = await sink.waitForMessages(before + 1);
  const m = all.find((x) => x.text.includes('Subject: ed'))!;
  const res = await dkimVerify(Buffer.from(m.text.replace(/\r?\n/g, '\r\n')), { resolver });
  assert.equal(res.results[0].status.result, 'pass', JSON.stringify(res.results[0].status));
  assert.match(m.text, /a=ed25519-sha256/);
});

test('mail from a domain without a key goes out unsigned', async () => {
  const before = (await sink.messages()).length;
  await spool.commit({ mailFrom: 'x@nokey.test', rcptTo: [{ address: 'bob@remote.test' }], receivedAt: Date.now() }, Readable.from([Buffer.from('From: <x@nokey.test>\r\nSubject: nokey\r\n\r\nx\r\n')]));
  await handle.tick();
  const all = await sink.waitForMessages(before + 1);
  const m = all.find((x) => x.text.includes('Subject: nokey'))!;
  assert.doesNotMatch(m.text, /DKIM-Signature/);
});

test('8-bit mail to a server without 8BITMIME: converted to quoted-printable, signed after the conversion, same content', async () => {
  const body = 'From: Alice <alice@sender.test>\r\nTo: bob@no8bit.test\r\nSubject: eight\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße, ça marche = oui\r\n';
  // Not declared (no BODY=8BITMIME, as many clients do): found in the bytes.
  await spool.commit({ mailFrom: 'alice@sender.test', rcptTo: [{ address: 'bob@no8bit.test' }], receivedAt: Date.now() }, Readable.from([Buffer.from(body, 'utf8')]));
  await handle.tick();
  const [m] = await no8bit.waitForMessages(1);
  const received = Buffer.from(m.text.replace(/\r?\n/g, '\r\n'));
  assert.ok(received.every((c) => c < 0x80), 'only 7-bit bytes reached the server');
  assert.match(m.text, /^Content-Transfer-Encoding: quoted-printable$/m);
  assert.match(m.text, /^Gr=C3=BC=C3=9Fe, =C3=A7a marche =3D oui$/m);
  const res = await dkimVerify(received, { resolver });
  assert.equal(res.results[0].status.result, 'pass', JSON.stringify(res.results[0].status));
  const parsed = await simpleParser(received);
  assert.equal(parsed.text?.trim(), 'Grüße, ça marche = oui');
});

test('8-bit mail that cannot be converted (8-bit header) to a server without 8BITMIME is returned with 5.6.3', async () => {
  const before = (await sink.messages()).length;
  const body = 'From: <alice@sender.test>\r\nTo: bob@no8bit.test\r\nSubject: Grüße\r\n\r\nx\r\n';
  const id = await spool.commit({ mailFrom: 'alice@sender.test', rcptTo: [{ address: 'carol@no8bit.test' }], receivedAt: Date.now(), body8bit: true }, Readable.from([Buffer.from(body, 'utf8')]));
  await handle.tick();
  assert.equal(await spool.locate(id), undefined, 'not kept: failed permanently');
  const all = await sink.waitForMessages(before + 1);
  const dsn = all.map((x) => x.text).find((t) => t.includes('carol@no8bit.test') && /Status: 5\.6\.3/.test(t));
  assert.ok(dsn, 'a bounce with status 5.6.3 went back to the sender');
  assert.match(dsn, /does not support 8BITMIME, and this message cannot be converted to 7-bit/);
});
