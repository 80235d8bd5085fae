// The spool under stress: SIGKILL at random moments while a child process commits messages (every acknowledged id
// survives and is delivered to smtp-sink), disk full and read-only spools (temporary errors, nothing visible, SMTP
// answers 452/451).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { Spool } from '../../src/queue/spool.js';
import type { Envelope } from '../../src/queue/types.js';
import { FacteurError } from '../../src/lib/errors.js';
import { startDelivery } from '../../src/delivery/scheduler.js';
import { defaultDeliveryOptions } from '../../src/delivery/options.js';
import { parseTransportMap } from '../../src/delivery/routing.js';
import { createLogger } from '../../src/observability/log.js';
import { startSink, type Sink } from '../helpers/sink.js';
import { tempDir } from '../helpers/net.js';
import { RawSmtp, startTestSmtp } from '../helpers/serve.js';

const SPOOL_TS = path.resolve('src/queue/spool.ts');
const log = createLogger({ name: 'test', level: 'silent' });

let sink: Sink;
const mounts: string[] = [];

before(async () => {
  sink = await startSink();
});

after(async () => {
  await sink?.stop();
  for (const m of mounts) spawnSync('umount', [m]);
});

/** Body of message number `seq`: deterministic, some large enough to widen the write window. */
function bodyOf(seq: number): string {
  const filler = seq % 7 === 0 ? 'x'.repeat(200_000) : 'y'.repeat(seq % 500);
  return `From: <load@sender.test>\r\nTo: <sink@remote.test>\r\nSubject: load ${seq}\r\nX-Seq: ${seq}\r\n\r\n${filler}\r\nend ${seq}\r\n`;
}

const CHILD = `
import { Readable } from 'node:stream';
import { Spool } from ${JSON.stringify(SPOOL_TS)};
${bodyOf.toString()}
const [dir, startArg] = process.argv.slice(2);
const spool = await Spool.open(dir);
process.stdout.write('OPEN\\n');
let seq = Number(startArg);
async function worker() {
  for (;;) {
    const n = seq++;
    const env = { mailFrom: 'load@sender.test', rcptTo: [{ address: 'sink@remote.test' }], heloName: 'seq-' + n, receivedAt: Date.now() };
    const body = Buffer.from(bodyOf(n));
    const id = await spool.commit(env, Readable.from([body.subarray(0, 100), body.subarray(100)]));
    process.stdout.write('ACK ' + id + ' ' + n + '\\n');
  }
}
await Promise.all(Array.from({ length: 8 }, worker));
`;

describe('crash safety', () => {
  test('SIGKILL during commits (both commit layers): every acknowledged message survives open() intact and is delivered; partials discarded', async (t) => {
    const dir = await tempDir('facteur-crash-');
    const spoolDir = path.join(dir, 'spool');
    const script = path.join(dir, 'child.mts');
    await fs.writeFile(script, CHILD);
    const acked = new Map<string, number>();
    let nextSeq = 0;
    let discardedIncoming = 0;
    let round = 0;
    for (; round < 5 || (acked.size < 200 && round < 12); round++) {
      // Rounds alternate the commit layer: the C job (native/spool) and node:fs.
      const layer = round % 2 ? 'node' : 'native';
      const child = spawn(process.execPath, ['--import', 'tsx', script, spoolDir, String(nextSeq)], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, FACTEUR_SPOOL_COMMIT: layer } });
      let buf = '';
      let opened = false;
      let killing = false;
      const killAfter = 30 + Math.floor(Math.random() * 150);
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      const safety = setTimeout(() => child.kill('SIGKILL'), 15_000); // never hang if no commit is acknowledged
      child.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line === 'OPEN') opened = true;
          const m = /^ACK (\S+) (\d+)$/.exec(line);
          if (m && !killing) {
            // Killed at a random moment once commits are flowing.
            killing = true;
            setTimeout(() => child.kill('SIGKILL'), killAfter);
          }
          if (m) {
            acked.set(m[1], Number(m[2]));
          }
        }
      });
      await exited;
      clearTimeout(safety);
      assert.ok(opened, 'child opened the spool');
      nextSeq += 100_000;
      // Recovery: what a restart sees.
      const s = await Spool.open(spoolDir);
      discardedIncoming += s.report.discarded.filter((d) => d.reason.startsWith('incomplete')).length;
      assert.equal(s.report.discarded.filter((d) => !d.reason.startsWith('incomplete')).length, 0, 'no complete file is ever judged corrupt');
      assert.deepEqual(await fs.readdir(path.join(spoolDir, 'incoming')), []);
      const present = new Set(await s.ids('active'));
      for (const [id] of acked) assert.ok(present.has(id), `acknowledged ${id} survived round ${round}`);
    }
    assert.ok(acked.size >= 200, `enough acknowledged messages (${acked.size})`);
    assert.ok(discardedIncoming >= 1, 'at least one partial write was caught and discarded');
    const s = await Spool.open(spoolDir);
    t.diagnostic(`${round} SIGKILLs, acknowledged ${acked.size}, partial files discarded ${discardedIncoming}, queued ${(await s.ids('active')).length}`);
    for (const [id, seq] of acked) {
      const e = await s.get(id);
      assert.equal(e?.envelope.heloName, `seq-${seq}`);
      assert.equal((await s.readMessage(id)).toString(), bodyOf(seq));
    }
    // Deliver everything to smtp-sink: every acknowledged message arrives.
    const before = (await sink.messages()).length;
    const total = (await s.ids('active')).length;
    const options = defaultDeliveryOptions(dir, { hostname: 'mx.facteur.test', transportMap: parseTransportMap([`* = smtp:[127.0.0.1]:${sink.port}`]), scanIntervalMs: 3_600_000, concurrency: 20 });
    const h = startDelivery({ spool: s, options, log });
    await h.tick();
    await h.stop();
    assert.equal((await s.ids('active')).length + (await s.ids('deferred')).length, 0, 'queue drained');
    const msgs = await sink.waitForMessages(before + total, 20_000);
    const seen = new Set(msgs.map((m) => Number(/^X-Seq: (\d+)$/m.exec(m.text)?.[1])));
    for (const [, seq] of acked) assert.ok(seen.has(seq), `message ${seq} delivered`);
  });
});

describe('disk full and read-only spool', () => {
  const env = (): Envelope => ({ mailFrom: 'a@sender.test', rcptTo: [{ address: 'b@remote.test' }], receivedAt: Date.now() });
  let dir: string;
  before(async () => {
    dir = await tempDir('facteur-full-');
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'tmpfs', dir]);
    assert.equal(r.status, 0, `mount tmpfs: ${r.stderr}`);
    mounts.push(dir);
  });

  test('ENOSPC: commit rejects with a temporary ESPOOLFULL error and nothing becomes visible', async () => {
    const spool = await Spool.open(dir);
    const small = await spool.commit(env(), Readable.from([Buffer.from('Subject: fits\r\n\r\nok\r\n')]));
    const big = Buffer.alloc(400 * 1024, 0x61);
    const err = await spool.commit(env(), Readable.from([big])).then(
      () => assert.fail('commit of a message larger than the disk succeeded'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof FacteurError);
    assert.equal(err.code, 'ESPOOLFULL');
    assert.equal(err.temporary, true);
    assert.deepEqual(await spool.ids('active'), [small]);
    assert.deepEqual((await fs.readdir(path.join(dir, 'incoming'))).filter((f) => !f.startsWith('spare-')), [], 'nothing of the refused message is left');
    // The space is given back: a small message fits again.
    await spool.commit(env(), Readable.from([Buffer.from('Subject: again\r\n\r\nok\r\n')]));
    assert.equal((await spool.ids('active')).length, 2);
  });

  test('read-only spool: commit rejects with a temporary ESPOOLWRITE error (EROFS)', async () => {
    const spool = await Spool.open(dir);
    const n = (await spool.ids('active')).length;
    const r = spawnSync('mount', ['-o', 'remount,ro', dir]);
    assert.equal(r.status, 0, `remount ro: ${r.stderr}`);
    try {
      const err = await spool.commit(env(), Readable.from([Buffer.from('Subject: ro\r\n\r\nx\r\n')])).then(
        () => assert.fail('commit on a read-only spool succeeded'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof FacteurError);
      assert.equal(err.code, 'ESPOOLWRITE');
      assert.equal(err.temporary, true);
      assert.match(err.message, /EROFS/);
      assert.equal((await spool.ids('active')).length, n);
    } finally {
      spawnSync('mount', ['-o', 'remount,rw', dir]);
    }
  });
});

describe('SMTP over a full or read-only spool', () => {
  test('disk full answers 452, read-only answers 451, and nothing is acknowledged that is not stored', async () => {
    const qdir = await tempDir('facteur-smtpfull-');
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'tmpfs', qdir]);
    assert.equal(r.status, 0, `mount tmpfs: ${r.stderr}`);
    mounts.push(qdir);
    const srv = await startTestSmtp({ toml: `[queue]\ndir = ${JSON.stringify(qdir)}\n` });
    const send = async (body: string): Promise<string> => {
      const c = await RawSmtp.connect(srv.ports.inbound);
      await c.reply();
      await c.cmd('EHLO client.test');
      assert.match(await c.cmd('MAIL FROM:<a@client.test>'), /^250/);
      assert.match(await c.cmd('RCPT TO:<bob@example.org>'), /^250/);
      assert.match(await c.cmd('DATA'), /^354/);
      const reply = await c.cmd(`${body}\r\n.`);
      c.send('QUIT\r\n');
      return reply;
    };
    try {
      const spool = await Spool.open(qdir, { recover: false });
      assert.match(await send('Subject: fits\r\n\r\nsmall'), /^250 /);
      const big = `Subject: big\r\n\r\n${`${'b'.repeat(998)}\r\n`.repeat(400)}`;
      assert.match(await send(big), /^452 4\.3\.1/);
      assert.equal((await spool.ids('active')).length, 1);
      assert.deepEqual((await fs.readdir(path.join(qdir, 'incoming'))).filter((f) => !f.startsWith('spare-')), [], 'nothing of the refused message is left');
      assert.equal(spawnSync('mount', ['-o', 'remount,ro', qdir]).status, 0);
      try {
        assert.match(await send('Subject: ro\r\n\r\nsmall'), /^451 /);
      } finally {
        spawnSync('mount', ['-o', 'remount,rw', qdir]);
      }
      assert.equal((await spool.ids('active')).length, 1);
    } finally {
      await srv.served.stopAll();
    }
  });
});
