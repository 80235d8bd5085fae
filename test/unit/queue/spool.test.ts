// Spool unit tests: commit framing, reopen keeps complete files and discards partial/corrupt ones, group commit, status records.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { Spool, isQueueId, initialStatus } from '../../../src/queue/spool.js';
import type { Envelope } from '../../../src/queue/types.js';
import { tempDir } from '../../helpers/net.js';

const env = (rcpts = ['bob@example.org']): Envelope => ({ mailFrom: 'alice@example.com', rcptTo: rcpts.map((address) => ({ address })), receivedAt: Date.now() });

test('commit stores the exact bytes with mode 0600 in active/ and reopen keeps it', async () => {
  const dir = await tempDir();
  const spool = await Spool.open(dir);
  const body = Buffer.from('Subject: hi\r\n\r\nhello\r\n\xff\x00binary\r\n', 'latin1');
  const id = await spool.commit(env(), Readable.from([body.subarray(0, 5), body.subarray(5)]));
  assert.ok(isQueueId(id));
  const st = await fs.stat(path.join(dir, 'active', id));
  assert.equal(st.mode & 0o777, 0o600);
  assert.deepEqual(await fs.readdir(path.join(dir, 'incoming')), []);
  assert.deepEqual(await spool.readMessage(id), body);
  const again = await Spool.open(dir);
  assert.equal(again.report.kept, 1);
  const e = await again.get(id);
  assert.equal(e?.state, 'active');
  assert.equal(e?.size, body.length);
  assert.equal(e?.envelope.mailFrom, 'alice@example.com');
});

test('reopen discards incoming files, truncated files and checksum mismatches, keeps the rest', async () => {
  const dir = await tempDir();
  const spool = await Spool.open(dir);
  const ids = [];
  for (let i = 0; i < 4; i++) ids.push(await spool.commit(env(), Readable.from([Buffer.from(`Subject: ${i}\r\n\r\nbody ${i}\r\n`)])));
  const [a, b, c] = ids;
  // truncated (crash mid-write would never be renamed, but a damaged disk could do this)
  const fa = path.join(dir, 'active', a);
  const full = await fs.readFile(fa);
  await fs.writeFile(fa, full.subarray(0, full.length - 10));
  // one flipped byte in the body
  const fb = path.join(dir, 'active', b);
  const bb = await fs.readFile(fb);
  bb[bb.length - 120] ^= 0x20;
  await fs.writeFile(fb, bb);
  // a half-written file in incoming/
  await fs.writeFile(path.join(dir, 'incoming', 'ZZZZZZZZZZZZZZZZZZZ'), 'FACTEUR-SPOOL 1 10\n{"mail');
  // garbage name in a state dir
  await fs.writeFile(path.join(dir, 'deferred', 'not-an-id'), 'x');
  const re = await Spool.open(dir);
  assert.equal(re.report.kept, 2);
  assert.equal(re.report.discarded.length, 4);
  assert.deepEqual((await re.list()).map((e) => e.id).sort(), [c, ids[3]].sort());
  assert.deepEqual(await fs.readdir(path.join(dir, 'incoming')), []);
  assert.equal((await fs.readdir(path.join(dir, 'corrupt'))).length, 3);
});

test('concurrent commits all succeed with distinct ids (group commit)', async () => {
  const dir = await tempDir();
  const spool = await Spool.open(dir);
  const ids = await Promise.all(Array.from({ length: 200 }, (_, i) => spool.commit(env(), Readable.from([Buffer.from(`n ${i}\r\n`)]))));
  assert.equal(new Set(ids).size, 200);
  assert.equal((await spool.ids('active')).length, 200);
  assert.ok(spool.activeDirSyncs < 200, `directory fsyncs shared: ${spool.activeDirSyncs} for 200 commits`);
  assert.ok(spool.activeDirSyncs >= 1);
});

test('a reader error removes the temp file and propagates unchanged', async () => {
  const dir = await tempDir();
  const spool = await Spool.open(dir);
  const boom = new Error('client went away');
  const r = new Readable({
    read() {
      this.push(Buffer.from('partial'));
      this.destroy(boom);
    },
  });
  await assert.rejects(spool.commit(env(), r), (e) => e === boom);
  assert.deepEqual(await fs.readdir(path.join(dir, 'incoming')), []);
  assert.deepEqual(await fs.readdir(path.join(dir, 'active')), []);
});

test('status records survive reopen; move and remove change the visible state', async () => {
  const dir = await tempDir();
  const spool = await Spool.open(dir);
  const id = await spool.commit(env(['a@x.org', 'b@x.org']), Readable.from([Buffer.from('x\r\n')]));
  const s = initialStatus((await spool.get(id))!.envelope);
  s.recipients[0].state = 'delivered';
  s.recipients[1] = { ...s.recipients[1], state: 'deferred', lastError: '451 4.3.0 try later' };
  s.nextAttempt = 12345;
  await spool.writeStatus(id, s);
  assert.equal(await spool.move(id, 'active', 'deferred'), true);
  assert.equal(await spool.move(id, 'active', 'hold'), false);
  const re = await Spool.open(dir);
  const e = await re.get(id);
  assert.equal(e?.state, 'deferred');
  assert.equal(e?.status.recipients[0].state, 'delivered');
  assert.equal(e?.status.nextAttempt, 12345);
  assert.equal(await re.remove(id), true);
  assert.equal(await re.get(id), undefined);
  assert.deepEqual(await fs.readdir(path.join(dir, 'status')), []);
});

test('lock: a second locking open fails while the owner lives; a stale lock (dead pid) is taken over; close releases', async () => {
  const dir = await tempDir();
  const a = await Spool.open(dir, { lock: true });
  assert.equal((await fs.readFile(path.join(dir, 'lock'), 'utf8')).trim(), String(process.pid));
  // A live other owner: pretend with our parent process id.
  await fs.writeFile(path.join(dir, 'lock'), `${process.ppid}\n`);
  await assert.rejects(Spool.open(dir, { lock: true }), (e: Error & { code?: string }) => e.code === 'ESPOOLLOCKED' && /in use by process/.test(e.message));
  // Tools do not lock.
  await Spool.open(dir, { recover: false });
  // A dead owner: a pid that cannot exist.
  await fs.writeFile(path.join(dir, 'lock'), '999999999\n');
  const b = await Spool.open(dir, { lock: true });
  assert.equal((await fs.readFile(path.join(dir, 'lock'), 'utf8')).trim(), String(process.pid));
  await b.close();
  await assert.rejects(fs.access(path.join(dir, 'lock')));
  await a.close();
});
