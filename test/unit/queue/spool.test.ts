// Spool unit tests: commit framing, reopen keeps complete files and discards partial/corrupt ones, group commit, status records.
// Every test runs with both commit layers: the C job (native/spool, the default when built) and node:fs.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { Spool, isQueueId, initialStatus, commitLayer, type CommitLayer, type SpoolOpenOptions } from '../../../src/queue/spool.js';
import type { Envelope } from '../../../src/queue/types.js';
import { tempDir } from '../../helpers/net.js';

const env = (rcpts = ['bob@example.org']): Envelope => ({ mailFrom: 'alice@example.com', rcptTo: rcpts.map((address) => ({ address })), receivedAt: Date.now() });

test('FACTEUR_SPOOL_COMMIT with another value than native, node or auto is refused, not read as auto', async () => {
  assert.throws(() => commitLayer('nodee'), /FACTEUR_SPOOL_COMMIT=nodee: expected native, node or auto/);
  assert.throws(() => commitLayer(''), /FACTEUR_SPOOL_COMMIT=: expected/);
  assert.equal(commitLayer('auto').layer, 'native');
  assert.equal(commitLayer(undefined).layer, 'native');
  await assert.rejects(Spool.open(await tempDir(), { commitLayer: 'NATIVE' as CommitLayer }), /expected native, node or auto/);
});

for (const layer of ['native', 'node'] as CommitLayer[]) describe(`commit layer ${layer}`, () => {
  const open = (dir: string, o: SpoolOpenOptions = {}) => Spool.open(dir, { ...o, commitLayer: layer });
  test('the layer asked for is the one used (the C job is built by npm install)', async () => {
    assert.equal(commitLayer(layer).layer, layer);
    assert.deepEqual((await open(await tempDir())).commitWriter, { layer });
  });

  test('commit stores the exact bytes with mode 0600 in active/ and reopen keeps it', async () => {
    const dir = await tempDir();
    const spool = await open(dir);
    const body = Buffer.from('Subject: hi\r\n\r\nhello\r\n\xff\x00binary\r\n', 'latin1');
    const id = await spool.commit(env(), Readable.from([body.subarray(0, 5), body.subarray(5)]));
    assert.ok(isQueueId(id));
    const st = await fs.stat(path.join(dir, 'active', id));
    assert.equal(st.mode & 0o777, 0o600);
    // A commit takes a spare file created ahead on the thread pool (the first one, with none ready, creates its own there):
    // afterwards incoming/ holds only empty spares, also after many commits at once.
    const many = await Promise.all(Array.from({ length: 20 }, (_, i) => spool.commit(env(), Readable.from([Buffer.from(`Subject: ${i}\r\n\r\nx\r\n`)]))));
    for (const m of many) assert.equal((await fs.stat(path.join(dir, 'active', m))).mode & 0o777, 0o600);
    const incoming = await fs.readdir(path.join(dir, 'incoming'));
    assert.ok(incoming.length > 0 && incoming.every((f) => f.startsWith('spare-')), incoming.join(' '));
    for (const f of incoming) {
      const st = await fs.stat(path.join(dir, 'incoming', f));
      assert.equal(st.size, 0);
      assert.equal(st.mode & 0o777, 0o600);
    }
    assert.deepEqual(await spool.readMessage(id), body);
    await spool.close();
    assert.deepEqual(await fs.readdir(path.join(dir, 'incoming')), [], 'close removes the spare files');
    const again = await open(dir);
    assert.equal(again.report.kept, 21);
    const e = await again.get(id);
    assert.equal(e?.state, 'active');
    assert.equal(e?.size, body.length);
    assert.equal(e?.envelope.mailFrom, 'alice@example.com');
  });

  test('reopen discards incoming files, truncated files and checksum mismatches, keeps the rest', async () => {
    const dir = await tempDir();
    const spool = await open(dir);
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
    // Spare files left by a crash: an empty one is removed silently, one with bytes was being written (incomplete).
    await fs.writeFile(path.join(dir, 'incoming', 'spare-0123456789abcdef01'), '');
    await fs.writeFile(path.join(dir, 'incoming', 'spare-fedcba987654321001'), 'FACTEUR-SPOOL 1 10\n{"mail');
    const re = await open(dir);
    assert.equal(re.report.kept, 2);
    assert.deepEqual(re.report.discarded.map((d) => path.basename(d.file)).filter((f) => f.startsWith('spare-')), ['spare-fedcba987654321001']);
    assert.equal(re.report.discarded.length, 5, re.report.discarded.map((d) => d.file).join(' '));
    assert.deepEqual((await re.list()).map((e) => e.id).sort(), [c, ids[3]].sort());
    assert.deepEqual(await fs.readdir(path.join(dir, 'incoming')), []);
    assert.equal((await fs.readdir(path.join(dir, 'corrupt'))).length, 3);
  });

  test('concurrent commits all succeed with distinct ids (group commit)', async () => {
    const dir = await tempDir();
    const spool = await open(dir);
    const ids = await Promise.all(Array.from({ length: 200 }, (_, i) => spool.commit(env(), Readable.from([Buffer.from(`n ${i}\r\n`)]))));
    assert.equal(new Set(ids).size, 200);
    assert.equal((await spool.ids('active')).length, 200);
    assert.ok(spool.activeDirSyncs < 200, `directory fsyncs shared: ${spool.activeDirSyncs} for 200 commits`);
    assert.ok(spool.activeDirSyncs >= 1);
  });

  test('a reader error removes the temp file and propagates unchanged', async () => {
    const dir = await tempDir();
    const spool = await open(dir);
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
    const spool = await open(dir);
    const id = await spool.commit(env(['a@x.org', 'b@x.org']), Readable.from([Buffer.from('x\r\n')]));
    const s = initialStatus((await spool.get(id))!.envelope);
    s.recipients[0].state = 'delivered';
    s.recipients[1] = { ...s.recipients[1], state: 'deferred', lastError: '451 4.3.0 try later' };
    s.nextAttempt = 12345;
    await spool.writeStatus(id, s);
    assert.equal(await spool.move(id, 'active', 'deferred'), true);
    assert.equal(await spool.move(id, 'active', 'hold'), false);
    const re = await open(dir);
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
    const a = await open(dir, { lock: true });
    assert.equal((await fs.readFile(path.join(dir, 'lock'), 'utf8')).trim(), String(process.pid));
    // A live other owner: pretend with our parent process id.
    await fs.writeFile(path.join(dir, 'lock'), `${process.ppid}\n`);
    await assert.rejects(open(dir, { lock: true }), (e: Error & { code?: string }) => e.code === 'ESPOOLLOCKED' && /in use by process/.test(e.message));
    // Tools do not lock.
    await open(dir, { recover: false });
    // A dead owner: a pid that cannot exist.
    await fs.writeFile(path.join(dir, 'lock'), '999999999\n');
    const b = await open(dir, { lock: true });
    assert.equal((await fs.readFile(path.join(dir, 'lock'), 'utf8')).trim(), String(process.pid));
    await b.close();
    await assert.rejects(fs.access(path.join(dir, 'lock')));
    await a.close();
  });

  test('load reads envelope, bytes, state and status in one go, trying the given state first', async () => {
    const dir = await tempDir();
    const spool = await open(dir);
    const body = Buffer.from('Subject: load\r\n\r\nbytes \xe9\r\n', 'latin1');
    const id = await spool.commit(env(['a@example.org', 'b@example.org']), Readable.from([body]));
    const first = await spool.load(id);
    assert.equal(first?.state, 'active');
    assert.deepEqual(first?.message, body);
    assert.equal(first?.size, body.length);
    assert.equal(first?.statusStored, false);
    assert.deepEqual(first?.status, initialStatus(first!.envelope));
    const st = initialStatus(first!.envelope);
    st.attempts = 1;
    st.recipients[0].state = 'delivered';
    await spool.writeStatus(id, st);
    assert.ok(await spool.move(id, 'active', 'deferred'));
    const second = await spool.load(id, 'active'); // stale hint: still found
    assert.equal(second?.state, 'deferred');
    assert.equal(second?.statusStored, true);
    assert.equal(second?.status.recipients[0].state, 'delivered');
    assert.deepEqual(second?.message, body);
    assert.equal(await spool.load('0000000000000NOTHERE'), undefined);
  });

  test('remove without waiting for the directory fsync: the file goes at once, the status file only after the fsync', async () => {
    const dir = await tempDir();
    const spool = await open(dir);
    const id = await spool.commit(env(), Readable.from([Buffer.from('Subject: x\r\n\r\nx\r\n')]));
    const e = (await spool.load(id))!;
    e.status.attempts = 1;
    await spool.writeStatus(id, e.status);
    const syncsBefore = spool.activeDirSyncs;
    assert.equal(await spool.remove(id, { state: 'active', lazy: true, status: true }), true);
    assert.equal(await spool.locate(id), undefined);
    assert.equal(spool.activeDirSyncs, syncsBefore, 'not waited for');
    assert.deepEqual(await fs.readdir(path.join(dir, 'status')), [`${id}.json`], 'status kept until the unlink is durable');
    // A commit's directory fsync covers the earlier unlink.
    await spool.commit(env(), Readable.from([Buffer.from('Subject: y\r\n\r\ny\r\n')]));
    for (let i = 0; i < 50 && (await fs.readdir(path.join(dir, 'status'))).length; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(await fs.readdir(path.join(dir, 'status')), []);
    // Without a commit, close() flushes the pending fsync.
    const id2 = await spool.commit(env(), Readable.from([Buffer.from('Subject: z\r\n\r\nz\r\n')]));
    await spool.writeStatus(id2, initialStatus(env()));
    const n = spool.activeDirSyncs;
    await spool.remove(id2, { state: 'active', lazy: true, status: true });
    await spool.close();
    assert.equal(spool.activeDirSyncs, n + 1);
    assert.deepEqual(await fs.readdir(path.join(dir, 'status')), []);
    // A wrong state hint still removes the message where it is.
    const id3 = await spool.commit(env(), Readable.from([Buffer.from('Subject: w\r\n\r\nw\r\n')]));
    assert.ok(await spool.move(id3, 'active', 'hold'));
    assert.equal(await spool.remove(id3, { state: 'active' }), true);
    assert.equal(await spool.locate(id3), undefined);
  });

  test('large files (over the one-read size) are checked in chunks at reopen: kept when intact, set aside when damaged', async () => {
    const dir = await tempDir();
    const spool = await open(dir);
    const big = Buffer.alloc(1536 * 1024, 'abcdefgh\r\n');
    const good = await spool.commit(env(), Readable.from([big]));
    const bad = await spool.commit(env(), Readable.from([big]));
    const fb = path.join(dir, 'active', bad);
    const h = await fs.open(fb, 'r+');
    await h.write(Buffer.from('X'), 0, 1, 700 * 1024);
    await h.close();
    const again = await open(dir);
    assert.equal(again.report.kept, 1);
    assert.deepEqual(again.report.discarded.map((d) => [path.basename(d.file), d.reason]), [[bad, 'corrupt: checksum mismatch']]);
    assert.deepEqual((await again.load(good))?.message, big);
  });

  test('keepCommitted: load() of a just-committed message answers from memory exactly as from the file, and never for a moved one', async () => {
    const dir = await tempDir();
    const spool = await open(dir);
    spool.keepCommitted();
    const body = Buffer.from('Subject: kept\r\n\r\nbody \xe9\r\n', 'latin1');
    const a = await spool.commit(env(['x@example.org', 'y@example.org']), Readable.from([body]));
    const b = await spool.commit(env(), Readable.from([body]));
    const fromFile = await (await open(dir, { recover: false })).load(a);
    const fromMemory = await spool.load(a);
    assert.deepEqual(fromMemory, fromFile);
    assert.deepEqual(fromMemory?.message, body);
    // Moved to hold meanwhile by the queue tools (another process, another Spool object): the file decides.
    await (await open(dir, { recover: false })).move(b, 'active', 'hold');
    assert.equal((await spool.load(b))?.state, 'hold');
    // Once loaded, the copy is gone: a second load reads the file (same answer).
    assert.deepEqual(await spool.load(a), fromFile);
    await spool.close();
  });
});
