// The durable spool: one file per message (header, envelope, bytes, trailer with length and SHA-256), written to incoming/,
// fsynced, renamed into active/ and the directory fsynced before commit() resolves. Trusts only its own directory.
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { randomHex } from '../lib/random.js';
import { nativeAddon } from '../lib/native.js';
import { FacteurError } from '../lib/errors.js';
import type { Envelope, QueueWriter } from './types.js';

/*
 * Layout of the spool directory (the state of every message is visible with ls):
 *   incoming/<id>        being written; never acknowledged; deleted at open()
 *   active/<id>          committed, due for delivery now
 *   deferred/<id>        waiting for its next attempt (time in status/<id>.json)
 *   hold/<id>            held by the administrator (facteur queue hold/release)
 *   status/<id>.json     per-recipient results, attempts, next attempt (written tmp → fsync → rename → dir fsync)
 *   corrupt/<id>.<time>  files that failed the end-marker/length/SHA-256 check at open()
 *   control/flush-*      flush requests from facteur queue, consumed by the running scheduler
 *   lock                 pid of the server using this spool (Spool.open with lock: true)
 * A message file: "FACTEUR-SPOOL 1 <envelope length>\n", the envelope as JSON, "\n", the message bytes, then
 * "\nFACTEUR-END <16 hex digits: message length> <64 hex digits: SHA-256 of everything before>\n".
 */

/** Where a committed message lives; the directory name is the state. */
export type QueueState = 'active' | 'deferred' | 'hold';
export const QUEUE_STATES: readonly QueueState[] = ['active', 'deferred', 'hold'];

export type RecipientState = 'pending' | 'delivered' | 'deferred' | 'failed';

export interface RecipientStatus {
  address: string;
  state: RecipientState;
  /** Last reply or local error, e.g. `550 5.1.1 User unknown`. */
  lastError?: string;
  /** RFC 3463 status for DSNs, e.g. `5.1.1`. */
  status?: string;
  /** `smtp` when lastError is a remote SMTP reply. */
  diagnosticType?: 'smtp';
  /** Remote host that gave the last answer. */
  remoteMta?: string;
  /** When the final result (delivered/failed) was recorded. */
  finalAt?: number;
  /** A DSN (failure, success or delay) has already been queued for this recipient. */
  notified?: 'failure' | 'success' | 'delay';
}

export interface MessageStatus {
  attempts: number;
  /** ms since epoch; 0 = as soon as possible. */
  nextAttempt: number;
  lastAttempt?: number;
  lastError?: string;
  /** Same order as envelope.rcptTo. */
  recipients: RecipientStatus[];
}

export interface QueueEntry {
  id: string;
  state: QueueState;
  /** Message size in bytes (without spool framing). */
  size: number;
  envelope: Envelope;
  status: MessageStatus;
}

/** A queue entry with its bytes (Spool.load). */
export interface LoadedMessage extends QueueEntry {
  /** The message without spool framing (a view into the file's buffer). */
  message: Buffer;
  /** Whether status/<id>.json exists (false: first attempt, nothing recorded yet). */
  statusStored: boolean;
}

const MAGIC = 'FACTEUR-SPOOL 1';
const TRAILER_TAG = '\nFACTEUR-END ';
// "\nFACTEUR-END " + 16 hex length + " " + 64 hex sha256 + "\n"
const TRAILER_LEN = TRAILER_TAG.length + 16 + 1 + 64 + 1;
const MAX_HEADER = 1024 * 1024;
const ID_RE = /^[0-9A-Z]{12,40}$/;

export function isQueueId(id: string): boolean {
  return ID_RE.test(id);
}

let idCounter = 0;
/** Time-ordered, file-name safe, unique within and across processes. */
export function newQueueId(now = Date.now()): string {
  idCounter = (idCounter + 1) % 1296;
  const t = now.toString(36).toUpperCase().padStart(9, '0');
  const c = idCounter.toString(36).toUpperCase().padStart(2, '0');
  const r = randomHex(5).toUpperCase();
  return `${t}${c}${r}`;
}

const DISK_FULL = new Set(['ENOSPC', 'EDQUOT', 'EFBIG']);

/** A spool I/O failure as a temporary error: SMTP answers 452 (full) or 451 (anything else). */
export function spoolError(err: unknown, what: string): FacteurError {
  if (err instanceof FacteurError) return err;
  const code = (err as NodeJS.ErrnoException)?.code ?? 'EIO';
  if (DISK_FULL.has(code)) return new FacteurError('ESPOOLFULL', `queue ${what} failed: no space left on the spool device (${code})`, { temporary: true, cause: err });
  return new FacteurError('ESPOOLWRITE', `queue ${what} failed (${code})`, { temporary: true, cause: err });
}

/** Batches directory fsyncs: callers that arrive while one runs share the next one (group commit). */
class DirSyncer {
  /** fsync calls actually made (fewer than sync() calls when commits overlap). */
  count = 0;
  private running = false;
  private waiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private lazyTimer: NodeJS.Timeout | undefined;
  /** Work to do once a directory fsync has covered what was marked with soon() (e.g. a delivered message's status file). */
  private afterLazy: (() => Promise<void>)[] = [];
  private afterRunning: Promise<void> = Promise.resolve();
  constructor(private readonly dir: string) {}

  sync(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      if (!this.running) void this.run();
    });
  }

  /**
   * A change nobody waits for (a delivered message's unlink): made durable by the next fsync of this directory,
   * whichever comes first, a commit's (group commit) or one at most LAZY_SYNC_MS later. `then` runs after that fsync.
   */
  soon(then?: () => Promise<void>): void {
    if (then) this.afterLazy.push(then);
    // An fsync already running may have started before the change: the timer is re-armed, so one starts after it.
    if (!this.lazyTimer) this.arm();
  }

  private arm(): void {
    this.lazyTimer = setTimeout(() => {
      this.lazyTimer = undefined;
      void this.sync().catch(() => undefined);
    }, LAZY_SYNC_MS);
    this.lazyTimer.unref();
  }

  /**
   * For an fsync of this directory run elsewhere (the C commit job's, which starts after this call): once it succeeds,
   * what soon() asked before this call is durable, and its `then` work runs (as after one of ours); if it fails, that
   * stays pending. `ran`: the fsync was that job's own, not one it shared (counted like ours).
   */
  cover(): { synced(ran: boolean): void; failed(): void } {
    const after = this.afterLazy;
    this.afterLazy = [];
    return {
      synced: (ran) => {
        if (ran) this.count++;
        // The lazy timer, if armed, still runs its fsync: soon() may have been called again since.
        this.covered(after);
      },
      failed: () => this.uncovered(after),
    };
  }

  /** soon()'s `then` work whose changes an fsync just made durable: run it now. */
  private covered(after: (() => Promise<void>)[]): void {
    if (after.length) this.afterRunning = Promise.all([this.afterRunning, ...after.map((fn) => fn().catch(() => undefined))]).then(() => undefined);
  }

  /** soon()'s `then` work whose fsync failed: not known to be durable, so pending again, with a lazy fsync to retry. */
  private uncovered(after: (() => Promise<void>)[]): void {
    this.afterLazy.push(...after);
    if (after.length && !this.lazyTimer) this.arm();
  }

  /** Run a pending lazy fsync now (close()). */
  async flush(): Promise<void> {
    if (this.lazyTimer || this.afterLazy.length) await this.sync();
    await this.afterRunning;
  }

  private async run(): Promise<void> {
    this.running = true;
    while (this.waiters.length) {
      const batch = this.waiters;
      this.waiters = [];
      // Everything marked with soon() before this fsync starts is covered by it.
      if (this.lazyTimer) clearTimeout(this.lazyTimer);
      this.lazyTimer = undefined;
      const after = this.afterLazy;
      this.afterLazy = [];
      try {
        // open and close are instant on a directory: done here, so the group costs one thread-pool trip (the fsync).
        const fd = Fd.openSync(this.dir, fs.constants.O_RDONLY, 0);
        this.count++;
        try {
          await fd.sync();
        } finally {
          fd.closeSync();
        }
        for (const w of batch) w.resolve();
        this.covered(after);
      } catch (err) {
        for (const w of batch) w.reject(err);
        this.uncovered(after);
      }
    }
    this.running = false;
  }
}

/** Longest time a delivered message's removal waits for a directory fsync when no commit brings one sooner. */
export const LAZY_SYNC_MS = 1000;

function header(envelope: Envelope): Buffer {
  const env = Buffer.from(JSON.stringify(envelope), 'utf8');
  return Buffer.concat([Buffer.from(`${MAGIC} ${env.length}\n`, 'ascii'), env, Buffer.from('\n')]);
}

function trailer(length: number, sha: string): Buffer {
  return Buffer.from(`${TRAILER_TAG}${length.toString(16).padStart(16, '0')} ${sha}\n`, 'ascii');
}

interface Framing {
  envelope: Envelope;
  bodyOffset: number;
  size: number;
}

/** Files up to this size are read with one read() (framing, checksum and message from one buffer). */
const WHOLE_READ_MAX = 1024 * 1024;

/** Where the header line says the envelope is, checked against the file size. `head` is the start of the file. */
function parseHead(head: Buffer, fileSize: number): { envStart: number; envLen: number; bodyOffset: number } {
  const nl = head.subarray(0, 64 * 1024).indexOf(0x0a);
  if (nl < 0) throw new Error('no header line');
  const m = /^FACTEUR-SPOOL 1 (\d+)$/.exec(head.toString('ascii', 0, nl));
  if (!m) throw new Error('bad magic');
  const envLen = Number(m[1]);
  if (envLen > MAX_HEADER) throw new Error('envelope too large');
  const bodyOffset = nl + 1 + envLen + 1;
  if (fileSize < bodyOffset + TRAILER_LEN) throw new Error('truncated');
  return { envStart: nl + 1, envLen, bodyOffset };
}

/** The envelope JSON and the "\n" that ends it. */
function parseEnvelope(b: Buffer): Envelope {
  if (b[b.length - 1] !== 0x0a) throw new Error('envelope not terminated');
  return JSON.parse(b.toString('utf8', 0, b.length - 1)) as Envelope;
}

/** The end marker: the message length (checked against the file) and the SHA-256 it records. */
function parseTrailer(tail: Buffer, fileSize: number, bodyOffset: number): { size: number; sha: string } {
  const t = /^\nFACTEUR-END ([0-9a-f]{16}) ([0-9a-f]{64})\n$/.exec(tail.toString('ascii'));
  if (!t) throw new Error('no end marker');
  const size = parseInt(t[1], 16);
  if (size !== fileSize - bodyOffset - TRAILER_LEN) throw new Error('length mismatch');
  return { size, sha: t[2] };
}

/** Parse and check the framing of a whole spool file held in memory (and its checksum when `verify`). */
function parseFraming(buf: Buffer, verify: boolean): Framing {
  const fileSize = buf.length;
  const { envStart, envLen, bodyOffset } = parseHead(buf, fileSize);
  const envelope = parseEnvelope(buf.subarray(envStart, envStart + envLen + 1));
  const { size, sha } = parseTrailer(buf.subarray(fileSize - TRAILER_LEN), fileSize, bodyOffset);
  if (verify && crypto.createHash('sha256').update(buf.subarray(0, fileSize - TRAILER_LEN)).digest('hex') !== sha) throw new Error('checksum mismatch');
  return { envelope, bodyOffset, size };
}

/** Read a whole file with one open, fstat, read and close (fewer round trips than fsp.readFile's chunked loop). */
async function readWhole(fh: fsp.FileHandle, fileSize: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(fileSize);
  let pos = 0;
  while (pos < fileSize) {
    const { bytesRead } = await fh.read(buf, pos, fileSize - pos, pos);
    if (bytesRead === 0) throw new Error('short read');
    pos += bytesRead;
  }
  return buf;
}

/** Parse the header and trailer of a spool file (and verify the checksum when `verify`). Throws on any inconsistency. */
async function readFraming(file: string, verify: boolean): Promise<Framing> {
  const fh = await fsp.open(file, 'r');
  try {
    const { size: fileSize } = await fh.stat();
    if (fileSize <= WHOLE_READ_MAX) return parseFraming(await readWhole(fh, fileSize), verify);
    // A large file: the same checks on its parts, and the checksum over chunks.
    const headBuf = Buffer.alloc(Math.min(fileSize, 64 * 1024));
    await fh.read(headBuf, 0, headBuf.length, 0);
    const { envStart, envLen, bodyOffset } = parseHead(headBuf, fileSize);
    const envBuf = Buffer.alloc(envLen + 1);
    await fh.read(envBuf, 0, envLen + 1, envStart);
    const envelope = parseEnvelope(envBuf);
    const tBuf = Buffer.alloc(TRAILER_LEN);
    await fh.read(tBuf, 0, TRAILER_LEN, fileSize - TRAILER_LEN);
    const { size, sha } = parseTrailer(tBuf, fileSize, bodyOffset);
    if (verify) {
      const h = crypto.createHash('sha256');
      const chunk = Buffer.allocUnsafe(256 * 1024);
      let pos = 0;
      const end = fileSize - TRAILER_LEN;
      while (pos < end) {
        const { bytesRead } = await fh.read(chunk, 0, Math.min(chunk.length, end - pos), pos);
        if (bytesRead === 0) throw new Error('short read');
        h.update(chunk.subarray(0, bytesRead));
        pos += bytesRead;
      }
      if (h.digest('hex') !== sha) throw new Error('checksum mismatch');
    }
    return { envelope, bodyOffset, size };
  } finally {
    await fh.close();
  }
}

/** Name prefix of the empty files SpareFiles keeps ready in incoming/ (never a queue id, so never taken for a message). */
const SPARE_PREFIX = 'spare-';
/** How many empty files each Spool keeps ready for its commits. */
const SPARE_TARGET = 16;
/** Bounds of the in-memory copies of just-committed files (Spool.keepCommitted). */
const COMMITTED_MAX = 2_000;
const COMMITTED_MAX_BYTES = 32 * 1024 * 1024;
const COMMITTED_MAX_AGE_MS = 60_000;

/**
 * Empty files created ahead of time in incoming/, on libuv's thread pool: a commit opens one that exists instead of
 * creating its file while the SMTP client waits. Creating a file allocates an inode and a directory entry, and on ext4
 * that waits whenever the blocks it changes are being written by a journal commit (which every fsync forces): measured
 * at ~300 µs per message on the event loop with one message per connection (smtp-source). Opening an existing file
 * changes nothing on disk. The files are closed once created (a spool with files open for writing could not be
 * remounted read-only). A file taken is replaced at once: by the C commit job that took it, in the same trip to the
 * thread pool (reserve/created), else by a creation of its own here (take). When none is ready (first commits, a
 * burst), commit() creates its own file, on the thread pool.
 */
class SpareFiles {
  private readonly ready: string[] = [];
  private creating = 0;
  private closed = false;
  constructor(private readonly dir: string) {}

  /** A ready file, or undefined; `refill` (default) starts creating its replacement at once. */
  take(refill = true): string | undefined {
    const spare = this.ready.pop();
    if (refill) this.refill();
    return spare;
  }

  /**
   * A name for a new spare while the pool is below its target, else undefined; created() must follow, with whether the
   * file was made. Used by refill() and by the C commit job, which makes the next spare in its own trip to the pool.
   */
  reserve(): string | undefined {
    if (this.closed || this.ready.length + this.creating >= SPARE_TARGET) return undefined;
    this.creating++;
    return path.join(this.dir, `${SPARE_PREFIX}${randomHex(9)}`);
  }

  created(file: string, made: boolean): void {
    this.creating--;
    if (!made) return;
    if (this.closed) void fsp.rm(file, { force: true }).catch(() => undefined);
    else this.ready.push(file);
  }

  /** Create files up to the target. A failure (disk full, read-only) is not retried here: the next take() tries again. */
  private refill(): void {
    for (let file = this.reserve(); file; file = this.reserve()) {
      const name = file;
      Fd.open(name, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600)
        .then((fd) => fd.close())
        .then(
          () => this.created(name, true),
          () => this.created(name, false),
        );
    }
  }

  /** Remove the files not used (spool close). Files still being created remove themselves. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.ready.splice(0).map((f) => fsp.rm(f, { force: true }).catch(() => undefined)));
  }
}

/** The few file-descriptor calls commit() and the directory fsyncs make, on the callback API (no FileHandle object and promise chain per call). */
class Fd {
  private constructor(private readonly fd: number) {}
  static open(file: string, flags: number, mode: number): Promise<Fd> {
    return new Promise((resolve, reject) => fs.open(file, flags, mode, (err, fd) => (err ? reject(err) : resolve(new Fd(fd)))));
  }
  write(buf: Buffer, off: number, len: number, pos: number): Promise<{ bytesWritten: number }> {
    return new Promise((resolve, reject) => fs.write(this.fd, buf, off, len, pos, (err, bytesWritten) => (err ? reject(err) : resolve({ bytesWritten }))));
  }
  datasync(): Promise<void> {
    return new Promise((resolve, reject) => fs.fdatasync(this.fd, (err) => (err ? reject(err) : resolve())));
  }
  sync(): Promise<void> {
    return new Promise((resolve, reject) => fs.fsync(this.fd, (err) => (err ? reject(err) : resolve())));
  }
  private closed = false;
  /** Closes once: a second call (error paths) must not close a descriptor number the process has reused since. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve, reject) => fs.close(this.fd, (err) => (err ? reject(err) : resolve())));
  }

  // Synchronous variants, for calls that only touch the page cache (open, a small write, close; not the fsyncs): they
  // take microseconds, less than a hand-off to libuv's thread pool and back, and each hand-off also waits its turn.
  static openSync(file: string, flags: number, mode: number): Fd {
    return new Fd(fs.openSync(file, flags, mode));
  }
  writeAllSync(buf: Buffer): void {
    for (let off = 0; off < buf.length; ) off += fs.writeSync(this.fd, buf, off, buf.length - off, off);
  }
  closeSync(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }
}

function readFileCb(file: string): Promise<Buffer> {
  return new Promise((resolve, reject) => fs.readFile(file, (err, buf) => (err ? reject(err) : resolve(buf))));
}

/** Run fn over items with at most `limit` at a time; results in input order. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]);
      }
    }),
  );
  return out;
}

export interface SpoolOpenOptions {
  /**
   * Discard partial files and check complete ones (default true). Tools that run beside a live server (facteur queue)
   * pass false: the server's messages being written in incoming/ must not be touched.
   */
  recover?: boolean;
  /**
   * Take `<dir>/lock` (holding this process id) so a second server cannot deliver the same queue; a lock left by a
   * dead process is taken over. Release it with close(). Default false (tools and tests); facteur serve sets it.
   */
  lock?: boolean;
  /** Verify every file's checksum at open (default true). */
  verify?: boolean;
  /** Called for each file discarded at open. */
  onDiscard?: (file: string, reason: string) => void;
  /** Who writes a small message's file: see commitLayer() (default: FACTEUR_SPOOL_COMMIT, else the C job when built). */
  commitLayer?: CommitLayer;
}

/** CommitJob.writeFile's flags. */
export const COMMIT_USED_SPARE = 1;
export const COMMIT_MADE_SPARE = 2;
/** The job ran the directory fsync itself (rather than sharing one another job ran). */
export const COMMIT_RAN_SYNC = 4;

/** The C commit job (native/spool/commit.c): open the spare (or create), write, fdatasync, close, rename, on the thread pool. */
export interface CommitJob {
  /**
   * Resolves with flags: COMMIT_USED_SPARE, COMMIT_MADE_SPARE (nextSpare created, empty), COMMIT_RAN_SYNC; a rejection's
   * madeSpare says the latter. With syncDir, dest's directory is fsynced after the rename (shared by concurrent jobs);
   * if that fails, dest is removed again and the job rejects (syscall fsync).
   */
  writeFile(spare: string | null, create: string, dest: string, data: Buffer, nextSpare?: string | null, syncDir?: boolean): Promise<number>;
}
export type CommitLayer = 'native' | 'node';

/**
 * Which code writes a message under 64 KB into the queue (larger ones are written as they arrive, always by node:fs):
 * `native`, the C job (one trip to the thread pool for open, write, fdatasync, close and rename; fails if not built);
 * `node`, node:fs calls (open, write, close and rename on the event loop, the fdatasync on the thread pool). Same files,
 * same order of steps. From FACTEUR_SPOOL_COMMIT (native | node | auto), default auto: native when built.
 */
export function commitLayer(wanted: string | undefined = process.env.FACTEUR_SPOOL_COMMIT): { layer: CommitLayer; job?: CommitJob; why?: string } {
  if (wanted === 'node') return { layer: 'node' };
  // A typo must not quietly pick a layer: refused, as FACTEUR_AUTHD_SOCKET_LAYER is.
  if (wanted !== undefined && wanted !== 'native' && wanted !== 'auto') throw new FacteurError('ECONFIG', `FACTEUR_SPOOL_COMMIT=${wanted}: expected native, node or auto`);
  const addon = nativeAddon<CommitJob>('spool_commit');
  if ('binding' in addon) return { layer: 'native', job: addon.binding };
  if (wanted === 'native') throw new FacteurError('ENATIVE', `FACTEUR_SPOOL_COMMIT=native but ${addon.error}`);
  return { layer: 'node', why: addon.error };
}

export interface OpenReport {
  kept: number;
  discarded: { file: string; reason: string }[];
}

export class Spool implements QueueWriter {
  readonly dir: string;
  readonly report: OpenReport = { kept: 0, discarded: [] };
  private readonly syncers = new Map<string, DirSyncer>();
  private readonly listeners = new Set<(id: string) => void>();
  /** Created at the first commit (a Spool opened to read the queue creates no files). */
  private spares: SpareFiles | undefined;
  /**
   * Files just committed, kept in memory for the delivery scheduler of this process (see keepCommitted): its first
   * load() of a message then costs no read of the file. Insertion order is age order; bounded in count and bytes.
   */
  private readonly committed = new Map<string, { buf: Buffer; at: number }>();
  private committedBytes = 0;
  private keepCommittedOn = false;
  /** Who writes small messages' files, chosen at open (see commitLayer()); `why` says why not the C job when it is not. */
  commitWriter: { layer: CommitLayer; why?: string } = { layer: 'node' };
  /** The C commit job, when used. */
  private commitJob: CommitJob | undefined;
  /** Keep small committed files in memory for a load() soon after (the scheduler in the same process turns it on). */
  keepCommitted(on = true): void {
    this.keepCommittedOn = on;
    if (!on) this.forgetCommitted();
  }

  private forgetCommitted(id?: string): void {
    if (id === undefined) {
      this.committed.clear();
      this.committedBytes = 0;
      return;
    }
    const e = this.committed.get(id);
    if (!e) return;
    this.committed.delete(id);
    this.committedBytes -= e.buf.length;
  }

  /** The kept bytes of a message this object just committed, handed over (to the delivery thread's spool, see adoptCommitted). */
  takeCommitted(id: string): Buffer | undefined {
    const e = this.committed.get(id);
    if (e) this.forgetCommitted(id);
    return e?.buf;
  }

  /** Keep the bytes another Spool object on this directory just committed, as if this one had (when keepCommitted is on). */
  adoptCommitted(id: string, buf: Buffer): void {
    if (this.keepCommittedOn && isQueueId(id)) this.rememberCommitted(id, buf);
  }

  private rememberCommitted(id: string, buf: Buffer): void {
    const now = Date.now();
    this.committed.set(id, { buf, at: now });
    this.committedBytes += buf.length;
    for (const [k, e] of this.committed) {
      if (this.committed.size <= COMMITTED_MAX && this.committedBytes <= COMMITTED_MAX_BYTES && now - e.at <= COMMITTED_MAX_AGE_MS) break;
      this.forgetCommitted(k);
    }
  }

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** Create the layout if needed, discard partial and corrupt files, keep complete ones. */
  static async open(dir: string, opts: SpoolOpenOptions = {}): Promise<Spool> {
    const s = new Spool(path.resolve(dir));
    const { job, ...writer } = commitLayer(opts.commitLayer);
    s.commitJob = job;
    s.commitWriter = writer;
    if (opts.lock) {
      await fsp.mkdir(s.dir, { recursive: true, mode: 0o700 }).catch((err: unknown) => {
        throw spoolError(err, 'open');
      });
      await s.takeLock();
    }
    await s.init(opts);
    return s;
  }

  private locked = false;

  private async takeLock(): Promise<void> {
    const file = path.join(this.dir, 'lock');
    for (let tries = 0; tries < 3; tries++) {
      try {
        await fsp.writeFile(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
        this.locked = true;
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw spoolError(err, 'lock');
      }
      const pid = Number((await fsp.readFile(file, 'utf8').catch(() => '')).trim());
      let alive = false;
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid) {
        try {
          process.kill(pid, 0);
          alive = true;
        } catch (err) {
          alive = (err as NodeJS.ErrnoException).code === 'EPERM';
        }
      }
      if (alive) throw new FacteurError('ESPOOLLOCKED', `queue directory ${this.dir} is in use by process ${pid} (another facteur serve?); stop it or give this one another [queue] dir`);
      await fsp.rm(file, { force: true }); // stale: its owner is gone
    }
    throw new FacteurError('ESPOOLLOCKED', `could not lock queue directory ${this.dir}`);
  }

  /** Release the lock (if taken). The object stays usable for reading. */
  async close(): Promise<void> {
    this.forgetCommitted();
    await this.spares?.close();
    this.spares = undefined;
    for (const s of this.syncers.values()) await s.flush().catch(() => undefined);
    if (!this.locked) return;
    this.locked = false;
    await fsp.rm(path.join(this.dir, 'lock'), { force: true });
  }

  dirOf(name: QueueState | 'incoming' | 'status' | 'corrupt' | 'control'): string {
    return path.join(this.dir, name);
  }

  fileOf(state: QueueState, id: string): string {
    return path.join(this.dir, state, id);
  }

  private syncer(dir: string): DirSyncer {
    let s = this.syncers.get(dir);
    if (!s) this.syncers.set(dir, (s = new DirSyncer(dir)));
    return s;
  }

  private async init(opts: SpoolOpenOptions): Promise<void> {
    try {
      await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
      for (const d of ['incoming', 'status', 'corrupt', 'control', ...QUEUE_STATES] as const) await fsp.mkdir(this.dirOf(d), { recursive: true, mode: 0o700 });
    } catch (err) {
      throw spoolError(err, 'open');
    }
    if (opts.recover === false) return;
    const discard = async (file: string, reason: string, keepCopy: boolean) => {
      this.report.discarded.push({ file, reason });
      opts.onDiscard?.(file, reason);
      if (keepCopy) await fsp.rename(file, path.join(this.dirOf('corrupt'), `${path.basename(file)}.${Date.now()}`)).catch(() => fsp.rm(file, { force: true }));
      else await fsp.rm(file, { force: true });
    };
    // Never acknowledged: whatever is in incoming/ was being written when we stopped.
    // An empty spare file (kept ready for commits) is removed without a report; one with bytes was being written.
    for (const f of await fsp.readdir(this.dirOf('incoming'))) {
      const file = path.join(this.dirOf('incoming'), f);
      const size = f.startsWith(SPARE_PREFIX) ? await fsp.stat(file).then((st) => st.size, () => 0) : 1;
      if (size === 0) await fsp.rm(file, { force: true });
      else await discard(file, 'incomplete (never committed)', false);
    }
    const ids = new Set<string>();
    for (const state of QUEUE_STATES) {
      const names = await fsp.readdir(this.dirOf(state));
      // Files are checked several at a time (the reads overlap on the I/O pool); decisions are made in listing order.
      const checks = await mapLimit(names, 8, async (f) => {
        if (!isQueueId(f) || ids.has(f)) return undefined;
        try {
          await readFraming(path.join(this.dirOf(state), f), opts.verify ?? true);
          return 'ok';
        } catch (err) {
          return `corrupt: ${(err as Error).message}`;
        }
      });
      for (const [i, f] of names.entries()) {
        const file = path.join(this.dirOf(state), f);
        if (!isQueueId(f)) {
          await discard(file, 'not a queue file name', true);
          continue;
        }
        if (ids.has(f)) {
          // A crash between the two steps of a cross-state move cannot leave two links (rename is atomic), but be safe.
          await discard(file, 'duplicate', true);
          continue;
        }
        if (checks[i] === 'ok') {
          ids.add(f);
          this.report.kept++;
        } else await discard(file, checks[i]!, true);
      }
    }
    for (const f of await fsp.readdir(this.dirOf('status'))) {
      const id = f.replace(/\.json$/, '');
      if (!f.endsWith('.json') || !ids.has(id)) await fsp.rm(path.join(this.dirOf('status'), f), { force: true });
    }
    for (const d of ['incoming', 'status', 'corrupt', ...QUEUE_STATES] as const) await this.syncer(this.dirOf(d)).sync();
  }

  /** Directory fsyncs done so far for active/ (group commit makes this smaller than the number of commits). */
  get activeDirSyncs(): number {
    return this.syncers.get(this.dirOf('active'))?.count ?? 0;
  }

  /** An empty file made ahead in incoming/ (the spares are created at the first commit), or undefined when none is ready. */
  private takeSpare(): string | undefined {
    return this.spareFiles().take();
  }

  /** The spare files of this spool, made at the first commit (a Spool opened to read the queue creates none). */
  private spareFiles(): SpareFiles {
    return (this.spares ??= new SpareFiles(this.dirOf('incoming')));
  }

  /** Subscribe to commits made through this Spool object (the scheduler picks new mail up at once). */
  onCommit(fn: (id: string) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  async commit(envelope: Envelope, message: Readable): Promise<string> {
    const id = newQueueId();
    let tmp = path.join(this.dirOf('incoming'), id);
    const flags = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL;
    let fh: Fd | undefined;
    // The file to write: an empty spare file made ahead on the thread pool, or one created on the thread pool when none
    // is ready. Never created here: on ext4 a create searches the inode bitmap past recently deleted inodes (a queue
    // deletes a file per message) and waits for any journal commit an fsync forced, ~80 µs of the event loop per message.
    const create = async (): Promise<Fd> => {
      const spare = this.takeSpare();
      if (spare) {
        try {
          const fd = Fd.openSync(spare, fs.constants.O_WRONLY, 0);
          tmp = spare;
          return fd;
        } catch {
          // gone or unwritable: create one, which reports the real error if there is one
        }
      }
      return Fd.open(tmp, flags, 0o600);
    };
    let written = false;
    let keep: Buffer | undefined;
    try {
      const hash = crypto.createHash('sha256');
      let pos = 0;
      const write = async (handle: Fd, buf: Buffer, hashed = true) => {
        if (hashed) hash.update(buf);
        let off = 0;
        while (off < buf.length) {
          const { bytesWritten } = await handle.write(buf, off, buf.length - off, pos);
          off += bytesWritten;
          pos += bytesWritten;
        }
      };
      const head = header(envelope);
      let pending: Buffer[] = [head];
      let pendingLen = head.length;
      let size = 0;
      // The reader's own errors (client gone, size limit) propagate unchanged; only disk errors become spool errors.
      // After a disk error the rest of the message is read and dropped, so the SMTP side can still answer after the dot.
      let diskError: unknown;
      for await (const chunk of message) {
        if (diskError) continue;
        const b = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : (chunk as Buffer);
        size += b.length;
        pending.push(b);
        pendingLen += b.length;
        if (pendingLen >= 64 * 1024) {
          const out = Buffer.concat(pending, pendingLen);
          pending = [];
          pendingLen = 0;
          try {
            fh ??= await create(); // a large message is written as it arrives
            await write(fh, out);
          } catch (err) {
            diskError = err;
            pending = [];
            await fh?.close().catch(() => undefined);
            fh = undefined;
            await fsp.rm(tmp, { force: true }).catch(() => undefined);
          }
        }
      }
      if (diskError) throw spoolError(diskError, 'write');
      try {
        // The rest of the bytes and the end marker in one write (a small message is one write in all).
        for (const b of pending) hash.update(b);
        pending.push(trailer(size, hash.digest('hex')));
        const rest = Buffer.concat(pending);
        if (!fh && this.commitJob) {
          // A message under 64 KB (most mail), by the C job: the spare file (or a new one) written, synced, closed and
          // renamed into active/ in one trip to the thread pool; on failure it has removed the file.
          // The job also creates the spare file a later commit takes, so the pool needs no trips of its own.
          // It also makes the rename durable: the directory fsync, shared by the jobs of concurrent commits (group commit
          // among the pool's threads), so a commit is one trip to the pool. That fsync also covers what soon() asked
          // before this commit started (a delivered message's unlink, see DirSyncer.cover).
          const spares = this.spareFiles();
          const spare = spares.take(false);
          const next = spares.reserve();
          const cover = this.syncer(this.dirOf('active')).cover();
          try {
            const flags = await this.commitJob.writeFile(spare ?? null, tmp, this.fileOf('active', id), rest, next ?? null, true);
            if (next) spares.created(next, (flags & COMMIT_MADE_SPARE) !== 0);
            cover.synced((flags & COMMIT_RAN_SYNC) !== 0);
          } catch (err) {
            if (next) spares.created(next, (err as { madeSpare?: boolean }).madeSpare === true);
            cover.failed();
            throw err;
          }
          if (this.keepCommittedOn) keep = rest;
          written = true;
        } else {
          if (fh) await write(fh, rest, false);
          else {
            // A message under 64 KB, by node:fs: written at once, with a call that only touches the page cache; the
            // thread pool is used for what waits on the disk, the fdatasync and the directory fsync.
            fh = await create();
            fh.writeAllSync(rest);
            if (this.keepCommittedOn) keep = rest;
          }
          await fh.datasync();
          fh.closeSync();
          fh = undefined;
          fs.renameSync(tmp, this.fileOf('active', id));
          written = true;
          await this.syncer(this.dirOf('active')).sync();
        }
      } catch (err) {
        throw spoolError(err, 'write');
      }
    } catch (err) {
      if (fh) await fh.close().catch(() => undefined);
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      // Renamed but the directory fsync failed: not acknowledged, so take it back out (best effort).
      if (written) await fsp.rm(this.fileOf('active', id), { force: true }).catch(() => undefined);
      throw err;
    }
    if (keep) this.rememberCommitted(id, keep);
    this.announce(id);
    return id;
  }

  /**
   * Tell this object's commit listeners that `id` is now in active/: called by commit(), and by the primary of a
   * multi-process server for messages its workers committed through their own Spool objects.
   */
  announce(id: string): void {
    for (const fn of this.listeners) {
      try {
        fn(id);
      } catch {
        /* a listener's bug must not un-acknowledge a stored message */
      }
    }
  }

  /** Which state directory holds this id, if any. */
  async locate(id: string): Promise<QueueState | undefined> {
    if (!isQueueId(id)) return undefined;
    for (const state of QUEUE_STATES) {
      try {
        await fsp.access(this.fileOf(state, id));
        return state;
      } catch {
        /* next */
      }
    }
    return undefined;
  }

  async ids(state: QueueState): Promise<string[]> {
    return (await fsp.readdir(this.dirOf(state))).filter(isQueueId).sort();
  }

  /** How many messages each state holds (for the facteur_queue_messages gauge). */
  async sizes(): Promise<Record<QueueState, number>> {
    const out = {} as Record<QueueState, number>;
    for (const st of QUEUE_STATES) out[st] = (await fsp.readdir(this.dirOf(st))).filter(isQueueId).length;
    return out;
  }

  /** Envelope, size, state and status of one message (undefined if it is gone). */
  async get(id: string, state?: QueueState): Promise<QueueEntry | undefined> {
    const st = state ?? (await this.locate(id));
    if (!st) return undefined;
    let fr: Framing;
    try {
      fr = await readFraming(this.fileOf(st, id), false);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return state ? this.get(id) : undefined;
      throw err;
    }
    const status = (await this.readStatus(id)) ?? initialStatus(fr.envelope);
    return { id, state: st, size: fr.size, envelope: fr.envelope, status };
  }

  async list(): Promise<QueueEntry[]> {
    const out: QueueEntry[] = [];
    for (const state of QUEUE_STATES) {
      for (const id of await this.ids(state)) {
        const e = await this.get(id, state).catch(() => undefined);
        if (e) out.push(e);
      }
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  /** The message bytes (without framing) as a stream. */
  async messageStream(id: string): Promise<Readable> {
    const st = await this.locate(id);
    if (!st) throw new FacteurError('ENOTQUEUED', `message ${id} is not in the queue`);
    const file = this.fileOf(st, id);
    const fr = await readFraming(file, false);
    return fs.createReadStream(file, { start: fr.bodyOffset, end: fr.bodyOffset + fr.size - 1 });
  }

  async readMessage(id: string): Promise<Buffer> {
    const chunks: Buffer[] = [];
    const s = await this.messageStream(id);
    for await (const c of s) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  private statusFileOf(id: string): string {
    return path.join(this.dirOf('status'), `${id}.json`);
  }

  async readStatus(id: string): Promise<MessageStatus | undefined> {
    // Most messages have no status file (first attempt): a stat on the event loop answers that without a failed open
    // on the thread pool and the error object it makes.
    const file = this.statusFileOf(id);
    if (!fs.existsSync(file)) return undefined;
    try {
      return JSON.parse((await readFileCb(file)).toString('utf8')) as MessageStatus;
    } catch {
      return undefined;
    }
  }

  /** Durably replace the status record: temp file, fdatasync, rename, directory fsync (grouped). */
  async writeStatus(id: string, status: MessageStatus): Promise<void> {
    this.forgetCommitted(id);
    const dir = this.dirOf('status');
    const tmp = path.join(dir, `${id}.json.tmp${crypto.randomBytes(4).toString('hex')}`);
    try {
      const fh = await fsp.open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(JSON.stringify(status));
        await fh.datasync();
      } finally {
        await fh.close();
      }
      await fsp.rename(tmp, path.join(dir, `${id}.json`));
      await this.syncer(dir).sync();
    } catch (err) {
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      throw spoolError(err, 'status write');
    }
  }

  /** Move between state directories; false when the message is not (any more) in `from`. */
  async move(id: string, from: QueueState, to: QueueState): Promise<boolean> {
    this.forgetCommitted(id);
    if (from === to) return (await this.locate(id)) === from;
    try {
      await fsp.rename(this.fileOf(from, id), this.fileOf(to, id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw spoolError(err, 'move');
    }
    await Promise.all([this.syncer(this.dirOf(to)).sync(), this.syncer(this.dirOf(from)).sync()]);
    return true;
  }

  /**
   * Envelope, state, status and the message bytes with one read of the queue file (the delivery path), trying `state`
   * first. The status file is read at the same time. Undefined if the message is gone.
   */
  async load(id: string, state?: QueueState): Promise<LoadedMessage | undefined> {
    if (!isQueueId(id)) return undefined;
    const kept = this.committed.get(id);
    if (kept) {
      this.forgetCommitted(id);
      // Still where commit() put it, with no status yet (nothing moved it meanwhile: a stat, no read).
      if (fs.existsSync(this.fileOf('active', id)) && !fs.existsSync(this.statusFileOf(id))) return loaded(id, 'active', kept.buf, undefined);
    }
    const statusRead = this.readStatus(id); // never rejects (as in get())
    for (const st of state ? [state, ...QUEUE_STATES.filter((x) => x !== state)] : QUEUE_STATES) {
      let buf: Buffer;
      try {
        // The callback readFile: open, fstat, one read, close without a FileHandle per step (cheaper per message).
        buf = await readFileCb(this.fileOf(st, id));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      return loaded(id, st, buf, await statusRead);
    }
    await statusRead;
    return undefined;
  }

  /**
   * Remove a message (delivered, bounced or deleted by the administrator). The queue file goes first; its status file
   * only once the directory fsync covering that unlink is done (a crash in between must not leave a message without
   * its recorded results). Options for the delivery path: `state`, where the caller just read it (saves a lookup);
   * `lazy`, do not wait for the directory fsync (see LAZY_SYNC_MS); `status: false`, no status file was ever written.
   */
  async remove(id: string, opts: { state?: QueueState; lazy?: boolean; status?: boolean } = {}): Promise<boolean> {
    this.forgetCommitted(id);
    let st: QueueState | undefined = opts.state;
    if (st) {
      try {
        await fsp.unlink(this.fileOf(st, id));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        st = undefined; // moved meanwhile (facteur queue hold?): look for it
      }
    }
    if (!st) {
      st = await this.locate(id);
      if (st) await fsp.rm(this.fileOf(st, id), { force: true });
    }
    const statusFile = path.join(this.dirOf('status'), `${id}.json`);
    const dropStatus = opts.status === false ? undefined : () => fsp.rm(statusFile, { force: true });
    if (!st) {
      await dropStatus?.();
      return false;
    }
    const syncer = this.syncer(this.dirOf(st));
    if (opts.lazy) syncer.soon(dropStatus);
    else {
      await syncer.sync();
      await dropStatus?.();
    }
    return true;
  }
}

/** A LoadedMessage from a whole queue file's bytes and its stored status, if any. */
function loaded(id: string, state: QueueState, buf: Buffer, stored: MessageStatus | undefined): LoadedMessage {
  const fr = parseFraming(buf, false);
  return {
    id,
    state,
    size: fr.size,
    envelope: fr.envelope,
    status: stored ?? initialStatus(fr.envelope),
    statusStored: stored !== undefined,
    message: buf.subarray(fr.bodyOffset, fr.bodyOffset + fr.size),
  };
}

export function initialStatus(envelope: Envelope): MessageStatus {
  return { attempts: 0, nextAttempt: 0, recipients: envelope.rcptTo.map((r) => ({ address: r.address, state: 'pending' })) };
}
