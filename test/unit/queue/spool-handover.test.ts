// Handing a just-committed message's bytes from one Spool object to another on the same directory (the main thread's
// to the delivery thread's): the receiver's first load() uses them and reads no file, unless the message has moved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { Spool } from '../../../src/queue/spool.js';
import { tempDir } from '../../helpers/net.js';

const env = { mailFrom: 'a@x.test', rcptTo: [{ address: 'b@y.test' }], receivedAt: Date.now() };
const body = (s: string) => Readable.from([Buffer.from(`Subject: ${s}\r\n\r\n${'x'.repeat(6000)}\r\n`)]);

test('takeCommitted hands the bytes over once; adoptCommitted makes the next load() use them', async () => {
  const dir = path.join(await tempDir('facteur-handover-'), 'queue');
  const writer = await Spool.open(dir);
  const reader = await Spool.open(dir, { recover: false });
  writer.keepCommitted(true);
  reader.keepCommitted(true);
  const id = await writer.commit(env, body('one'));
  const bytes = writer.takeCommitted(id);
  assert.ok(bytes);
  assert.deepEqual(bytes, await fs.readFile(writer.fileOf('active', id)), 'the bytes are the queue file');
  assert.equal(writer.takeCommitted(id), undefined, 'handed over once');
  reader.adoptCommitted(id, bytes);
  // Proof that no file is read: the file on disk is changed behind the reader's back, and load() still gives the copy.
  await fs.writeFile(writer.fileOf('active', id), 'garbage');
  const m = await reader.load(id);
  assert.ok(m);
  assert.match(m.message.toString(), /^Subject: one/);
  // A second load() reads the file (the copy is used once): here the damaged one, which is refused.
  await assert.rejects(reader.load(id));
  await writer.close();
  await reader.close();
});

test('a copy is not used once the message has moved (a queue tool held it)', async () => {
  const dir = path.join(await tempDir('facteur-handover-'), 'queue');
  const writer = await Spool.open(dir);
  const reader = await Spool.open(dir, { recover: false });
  writer.keepCommitted(true);
  reader.keepCommitted(true);
  const id = await writer.commit(env, body('two'));
  reader.adoptCommitted(id, writer.takeCommitted(id)!);
  await writer.move(id, 'active', 'hold');
  const m = await reader.load(id);
  assert.equal(m?.state, 'hold', 'read from where it is now');
  await writer.close();
  await reader.close();
});

test('adoptCommitted keeps nothing when keepCommitted is off', async () => {
  const dir = path.join(await tempDir('facteur-handover-'), 'queue');
  const writer = await Spool.open(dir);
  const reader = await Spool.open(dir, { recover: false });
  writer.keepCommitted(true);
  const id = await writer.commit(env, body('three'));
  reader.adoptCommitted(id, writer.takeCommitted(id)!);
  await fs.writeFile(writer.fileOf('active', id), 'garbage');
  await assert.rejects(reader.load(id), 'the file was read');
  await writer.close();
  await reader.close();
});
