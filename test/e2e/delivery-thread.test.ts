// Delivery on its own thread (src/delivery/thread.ts), as `facteur serve` runs it by default: commits made by the main
// thread's spool reach the thread's scheduler and a real smtp-sink and Maildir; flush and tick cross the thread; a dead
// thread is replaced and finds what was committed meanwhile; a thread that cannot start says why and leaves nothing.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { Spool } from '../../src/queue/spool.js';
import type { Envelope } from '../../src/queue/types.js';
import { defaultDeliveryOptions, type DeliveryOptions } from '../../src/delivery/options.js';
import { parseTransportMap } from '../../src/delivery/routing.js';
import { startDeliveryThread, type DeliveryThreadHandle } from '../../src/delivery/thread.js';
import { createLogger } from '../../src/observability/log.js';
import { startSink, type Sink } from '../helpers/sink.js';
import { freePort, tempDir } from '../helpers/net.js';
import { eventually } from '../helpers/serve.js';

const log = createLogger({ name: 'test', level: 'silent' });
let data: string;
let spool: Spool;
let sink: Sink;
let options: DeliveryOptions;
let handle: DeliveryThreadHandle | undefined;

function submit(to: string, subject: string): Promise<string> {
  const env: Envelope = { mailFrom: 'alice@sender.test', rcptTo: [{ address: to }], receivedAt: Date.now() };
  return spool.commit(env, Readable.from([Buffer.from(`From: <alice@sender.test>\r\nTo: <${to}>\r\nSubject: ${subject}\r\n\r\nHello ${subject}\r\n`)]));
}

const queued = async () => (await spool.ids('active')).length + (await spool.ids('deferred')).length;
const inMaildir = async (local: string) => (await fs.readdir(path.join(data, 'mail', 'local.test', local, 'new')).catch(() => [] as string[])).length;

before(async () => {
  data = await tempDir('facteur-dthread-');
  sink = await startSink();
  spool = await Spool.open(path.join(data, 'queue'), { lock: true });
  options = defaultDeliveryOptions(data, {
    hostname: 'mx.facteur.test',
    localDomains: ['local.test'],
    transportMap: parseTransportMap([`ok.test = smtp:[127.0.0.1]:${sink.port}`, `down.test = smtp:[127.0.0.1]:${await freePort()}`, 'local.test = maildir']),
    dkimSign: false,
    mtaSts: false,
    dane: 'off',
    scanIntervalMs: 3_600_000,
    connectTimeoutMs: 2000,
  });
});

after(async () => {
  // Each step whatever the others do: a test that failed half-way must not leave the sink or a thread keeping this
  // file's process (and so the whole suite) alive.
  const results = await Promise.allSettled([handle?.stop(), spool?.close(), sink?.stop()]);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
});

test('a message committed on the main thread is delivered by the thread: remote (smtp-sink) and Maildir', async () => {
  handle = await startDeliveryThread({ spool, options, log, logLevel: 'silent' });
  assert.ok(handle.thread(), 'a thread runs');
  await submit('bob@ok.test', 'to the sink');
  await submit('carol@local.test', 'to the maildir');
  const got = await sink.waitForMessages(1);
  assert.ok(got.some((m) => m.text.includes('Subject: to the sink')));
  await eventually(async () => ((await inMaildir('carol')) === 1 ? true : undefined), 'the Maildir copy', 20_000);
  await eventually(async () => ((await queued()) === 0 ? true : undefined), 'an empty queue', 20_000);
});

test('200 messages committed at once, announced in batches: every one delivered once, queue empty', async () => {
  const before = (await sink.messages()).length;
  await Promise.all(Array.from({ length: 200 }, (_, i) => submit('bob@ok.test', `batch ${i}`)));
  const got = await sink.waitForMessages(before + 200, 60_000);
  const subjects = got.map((m) => /Subject: (batch \d+)/.exec(m.text)?.[1]).filter(Boolean);
  assert.equal(subjects.length, 200);
  assert.equal(new Set(subjects).size, 200, 'no message delivered twice');
  await eventually(async () => ((await queued()) === 0 ? true : undefined), 'an empty queue', 20_000);
});

test('tick and flush cross the thread: a message to a dead host is deferred, flushing it tries again', async () => {
  const id = await submit('dave@down.test', 'deferred');
  await eventually(async () => ((await spool.locate(id)) === 'deferred' ? true : undefined), 'the deferral', 20_000);
  const attempts = async () => (await spool.readStatus(id))?.attempts ?? 0;
  const before = await attempts();
  assert.ok(before >= 1);
  await handle!.flush(id);
  await handle!.tick();
  await eventually(async () => ((await attempts()) > before ? true : undefined), 'a second attempt', 20_000);
  assert.equal(await spool.locate(id), 'deferred');
  await spool.remove(id, { state: 'deferred' });
});

test('a thread that dies is replaced; what was committed while none ran is delivered by the next one', async () => {
  const first = handle!.thread()!;
  const exited = new Promise((r) => first.once('exit', r));
  await first.terminate();
  await exited;
  assert.equal(handle!.thread(), undefined, 'no thread between the death and the restart');
  await submit('erin@local.test', 'while no thread ran');
  await eventually(async () => handle!.thread(), 'a new thread', 20_000);
  assert.notEqual(handle!.thread(), first);
  await eventually(async () => ((await inMaildir('erin')) === 1 ? true : undefined), 'the message committed meanwhile', 20_000);
  await submit('frank@local.test', 'after the restart');
  await eventually(async () => ((await inMaildir('frank')) === 1 ? true : undefined), 'a message committed after the restart', 20_000);
});

test('a restart that fails (the spool cannot be opened for a while) is tried again until a thread runs', async () => {
  const first = handle!.thread()!;
  const queueDir = spool.dir;
  const aside = `${queueDir}.aside`;
  // A file where the spool's directory was, before the thread dies: its restart (1 s later, then again 1 s after that)
  // cannot start, however late this test's own steps run on a loaded machine (set up after the death, the rename
  // could come after the restart when the thread pool was busy).
  await fs.rename(queueDir, aside);
  await fs.writeFile(queueDir, 'not a directory');
  try {
    const exited = new Promise((r) => first.once('exit', r));
    await first.terminate();
    await exited;
    await new Promise((r) => setTimeout(r, 1800));
    assert.equal(handle!.thread(), undefined, 'no thread could start');
  } finally {
    await fs.rm(queueDir, { force: true });
    await fs.rename(aside, queueDir);
  }
  await submit('hank@local.test', 'after a failed restart');
  await eventually(async () => ((await inMaildir('hank')) === 1 ? true : undefined), 'delivery by a later restart', 30_000);
});

test('stop: the thread finishes and exits; commits after it are left queued for the next start', async () => {
  const t = handle!.thread()!;
  const exited = new Promise<number>((r) => t.once('exit', r));
  await handle!.stop();
  assert.equal(await exited, 0);
  handle = undefined;
  const id = await submit('gina@local.test', 'after stop');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await spool.locate(id), 'active', 'nothing delivers after stop');
  handle = await startDeliveryThread({ spool, options, log, logLevel: 'silent' });
  await eventually(async () => ((await inMaildir('gina')) === 1 ? true : undefined), 'delivery after a new start', 20_000);
});

test('a thread that cannot open the spool: start fails with the reason, and no thread is left running', async () => {
  const bogus = { dir: '/etc/hostname/queue', onCommit: () => () => undefined, keepCommitted: () => undefined } as unknown as Spool;
  await assert.rejects(startDeliveryThread({ spool: bogus, options, log, logLevel: 'silent' }), /ENOTDIR|not a directory/i);
});
