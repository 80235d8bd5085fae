// The queue's C commit job (native/spool/commit.c) on its own: the file lands at its destination with the exact bytes
// and mode 0600, a vanished spare falls back to creating the file, and every failing step rejects with node:fs's error
// shape (code, syscall) and leaves no file behind; with syncDir, concurrent jobs share their directory fsyncs. Its use inside Spool.commit is tested in spool.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { nativeAddon } from '../../../src/lib/native.js';
import { COMMIT_MADE_SPARE, COMMIT_RAN_SYNC, COMMIT_USED_SPARE, type CommitJob } from '../../../src/queue/spool.js';
import { tempDir } from '../../helpers/net.js';

const addon = nativeAddon<CommitJob>('spool_commit');
if (!('binding' in addon)) throw new Error(addon.error); // built by npm install: its absence is a failure, not a skip
const job = addon.binding;
const bytes = Buffer.from('queue file\r\n\x00\xff'.repeat(5000), 'latin1');

test('a spare file is used, written, renamed to its destination with the exact bytes', async () => {
  const dir = await tempDir();
  const spare = path.join(dir, 'spare-1');
  await fs.writeFile(spare, '', { mode: 0o600 });
  assert.equal(await job.writeFile(spare, path.join(dir, 'new'), path.join(dir, 'dest'), bytes), COMMIT_USED_SPARE);
  assert.deepEqual(await fs.readFile(path.join(dir, 'dest')), bytes);
  assert.deepEqual((await fs.readdir(dir)).sort(), ['dest']);
});

test('no spare, or a spare gone: the file is created with mode 0600', async () => {
  const dir = await tempDir();
  assert.equal(await job.writeFile(null, path.join(dir, 'a'), path.join(dir, 'dest-a'), bytes), 0);
  assert.equal(await job.writeFile(path.join(dir, 'spare-gone'), path.join(dir, 'b'), path.join(dir, 'dest-b'), Buffer.alloc(0)), 0);
  assert.equal((await fs.stat(path.join(dir, 'dest-a'))).mode & 0o777, 0o600);
  assert.deepEqual(await fs.readFile(path.join(dir, 'dest-a')), bytes);
  assert.equal((await fs.stat(path.join(dir, 'dest-b'))).size, 0);
  assert.deepEqual((await fs.readdir(dir)).sort(), ['dest-a', 'dest-b']);
});

test('the next spare is made in the same job: empty, mode 0600; an existing name is never taken over', async () => {
  const dir = await tempDir();
  const next = path.join(dir, 'spare-next');
  assert.equal(await job.writeFile(null, path.join(dir, 'a'), path.join(dir, 'dest-a'), bytes, next), COMMIT_MADE_SPARE);
  const st = await fs.stat(next);
  assert.equal(st.size, 0);
  assert.equal(st.mode & 0o777, 0o600);
  // It is the spare of the next commit.
  assert.equal(await job.writeFile(next, path.join(dir, 'b'), path.join(dir, 'dest-b'), bytes, path.join(dir, 'spare-3')), COMMIT_USED_SPARE | COMMIT_MADE_SPARE);
  assert.deepEqual(await fs.readFile(path.join(dir, 'dest-b')), bytes);
  // A name already there (O_EXCL): not made, and its content untouched; the commit itself succeeds.
  await fs.writeFile(path.join(dir, 'occupied'), 'mine');
  assert.equal(await job.writeFile(null, path.join(dir, 'c'), path.join(dir, 'dest-c'), bytes, path.join(dir, 'occupied')), 0);
  assert.equal(await fs.readFile(path.join(dir, 'occupied'), 'utf8'), 'mine');
  // A spare that cannot be made (no such folder) fails nothing.
  assert.equal(await job.writeFile(null, path.join(dir, 'd'), path.join(dir, 'dest-d'), bytes, path.join(dir, 'nope', 'spare')), 0);
  assert.deepEqual((await fs.readdir(dir)).sort(), ['dest-a', 'dest-b', 'dest-c', 'dest-d', 'occupied', 'spare-3']);
  // A commit that fails after the spare was made says so (the caller keeps it for later).
  const kept = path.join(dir, 'spare-4');
  await assert.rejects(job.writeFile(null, path.join(dir, 'e'), path.join(dir, 'missing', 'dest'), bytes, kept), (e: NodeJS.ErrnoException & { madeSpare?: boolean }) => e.syscall === 'rename' && e.madeSpare === true);
  assert.equal((await fs.stat(kept)).size, 0);
});

test('syncDir: the destination folder is fsynced after the rename; concurrent jobs, in two folders, all land', async () => {
  const dirs = [await tempDir(), await tempDir()];
  // One job alone runs its own fsync.
  assert.equal(await job.writeFile(null, path.join(dirs[0], 'solo'), path.join(dirs[0], 'solo-dest'), bytes, null, true), COMMIT_RAN_SYNC);
  // 48 at once into each of two folders: every file lands, each folder fsynced at least once. (Whether jobs share an
  // fsync depends on timing: on ext4 their fdatasyncs mostly take turns, so they seldom reach the fsync together.)
  const flags = await Promise.all(
    Array.from({ length: 96 }, (_, i) => {
      const dir = dirs[i % 2];
      return job.writeFile(null, path.join(dir, `t${i}`), path.join(dir, `d${i}`), bytes, null, true);
    }),
  );
  for (const [k, dir] of dirs.entries()) {
    const ran = flags.filter((f, i) => i % 2 === k && (f & COMMIT_RAN_SYNC) !== 0).length;
    assert.ok(ran >= 1 && ran <= 48, `folder ${k}: ${ran} fsyncs for 48 commits`);
    const names = (await fs.readdir(dir)).filter((f) => f.startsWith('d'));
    assert.equal(names.length, 48);
    for (const n of names) assert.deepEqual(await fs.readFile(path.join(dir, n)), bytes);
  }
  // Without syncDir, no directory fsync.
  assert.equal(await job.writeFile(null, path.join(dirs[0], 'x'), path.join(dirs[0], 'x-dest'), bytes, null, false), 0);
});

test('failures reject like node:fs (code, syscall) and leave nothing behind', async () => {
  const dir = await tempDir();
  // create fails: its folder does not exist
  await assert.rejects(job.writeFile(null, path.join(dir, 'no-such-dir', 'x'), path.join(dir, 'dest'), bytes), (e: NodeJS.ErrnoException) => e.code === 'ENOENT' && e.syscall === 'open' && e.errno! < 0);
  // the file already exists where it would be created (O_EXCL)
  await fs.writeFile(path.join(dir, 'taken'), 'keep me');
  await assert.rejects(job.writeFile(null, path.join(dir, 'taken'), path.join(dir, 'dest'), bytes), (e: NodeJS.ErrnoException) => e.code === 'EEXIST' && e.syscall === 'open');
  assert.equal(await fs.readFile(path.join(dir, 'taken'), 'utf8'), 'keep me', 'an existing file is never written over');
  // rename fails (destination folder missing): the written spare is removed, nothing reaches a destination
  const spare = path.join(dir, 'spare-2');
  await fs.writeFile(spare, '');
  await assert.rejects(job.writeFile(spare, path.join(dir, 'y'), path.join(dir, 'missing', 'dest'), bytes), (e: NodeJS.ErrnoException) => e.code === 'ENOENT' && e.syscall === 'rename');
  assert.deepEqual(await fs.readdir(dir), ['taken']);
});

test('a pool thread that ran a commit job runs with SCHED_BATCH; the event loop thread keeps the normal policy', async () => {
  const dir = await tempDir();
  await Promise.all(Array.from({ length: 8 }, (_, i) => job.writeFile(null, path.join(dir, `p${i}`), path.join(dir, `q${i}`), bytes)));
  // /proc/self/task/TID/stat: field 41 is the scheduling policy (0 SCHED_OTHER, 3 SCHED_BATCH); the command name, in
  // parentheses, may hold spaces, so fields are counted after its closing parenthesis.
  const policy = async (tid: string) => {
    const stat = await fs.readFile(`/proc/self/task/${tid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[41 - 3]);
  };
  const tids = await fs.readdir('/proc/self/task');
  const policies = await Promise.all(tids.map(policy));
  assert.equal(await policy(String(process.pid)), 0, 'the main thread');
  assert.ok(policies.includes(3), `some pool thread is SCHED_BATCH: ${policies.join(' ')}`);
});

test('bad arguments throw a TypeError at once (nothing queued)', () => {
  const call = job.writeFile as unknown as (...a: unknown[]) => unknown;
  assert.throws(() => call(null, '/tmp/x', '/tmp/y', 'not a buffer'), TypeError);
  assert.throws(() => call(1, '/tmp/x', '/tmp/y', Buffer.alloc(1)), TypeError);
  assert.throws(() => call(null, '/tmp/x'), TypeError);
  assert.throws(() => call(null, '/tmp/x\0/../etc/y', '/tmp/y', Buffer.alloc(1)), TypeError, 'a NUL byte in a path is refused, not cut');
  assert.throws(() => call(null, '/tmp/x', '/tmp/y', Buffer.alloc(1), 7), TypeError, 'nextSpare: a string or null');
  assert.throws(() => call(null, '/tmp/x', '/tmp/y', Buffer.alloc(1), '/tmp/s\0x'), TypeError, 'a NUL byte in nextSpare is refused');
  assert.throws(() => call(null, '/tmp/x', '/tmp/y', Buffer.alloc(1), null, 'yes'), TypeError, 'syncDir: a boolean');
});
