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
  spool = await Spool.open(path.join(data, 'queue'));
  const options = defaultDeliveryOptions(data, {
    hostname: 'mx.facteur.test',
    transportMap: parseTransportMap([`* = smtp:[127.0.0.1]:${sink.port}`]),
    dkimDir: keys,
    scanIntervalMs: 3_600_000,
  });
  handle = startDelivery({ spool, options, log: createLogger({ name: 'test', level: 'silent' }) });
});

after(async () => {
  await handle?.stop();
  await sink?.stop();
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
