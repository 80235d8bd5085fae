// `facteur queue` against a real spool: list/show/hold/release/delete/bounce through the CLI, and flush reaching a
// running scheduler (which delivers to smtp-sink) through the control directory.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { Spool, initialStatus } from '../../src/queue/spool.js';
import { startDelivery, type DeliveryHandle } from '../../src/delivery/scheduler.js';
import { defaultDeliveryOptions } from '../../src/delivery/options.js';
import { parseTransportMap } from '../../src/delivery/routing.js';
import { createLogger } from '../../src/observability/log.js';
import { startSink, type Sink } from '../helpers/sink.js';
import { tempDir } from '../helpers/net.js';

const execFileP = promisify(execFile);
const FACTEUR = path.resolve('bin/facteur');
const log = createLogger({ name: 'test', level: 'silent' });

let sink: Sink;

before(async () => {
  sink = await startSink();
});

after(async () => {
  await sink?.stop();
});

describe('facteur queue', () => {
  let data: string;
  let spool: Spool;
  const ids: Record<string, string> = {};
  const cli = async (...args: string[]) => {
    try {
      const r = await execFileP(FACTEUR, ['queue', ...args, '--data', data]);
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };

  before(async () => {
    data = await tempDir('facteur-qcli-');
    spool = await Spool.open(path.join(data, 'queue'));
    const mk = async (name: string, from: string, to: string[]) => {
      ids[name] = await spool.commit({ mailFrom: from, rcptTo: to.map((address) => ({ address })), receivedAt: Date.now() - 3_600_000 }, Readable.from([Buffer.from(`From: <${from}>\r\nSubject: ${name}\r\n\r\nbody of ${name}\r\n`)]));
    };
    await mk('deferred', 'alice@sender.test', ['bob@remote.test', 'carol@remote.test']);
    await mk('held', 'dave@sender.test', ['erin@remote.test']);
    await mk('tobounce', 'frank@sender.test', ['gina@remote.test']);
    await mk('todelete', 'hank@sender.test', ['ivan@remote.test']);
    const st = initialStatus((await spool.get(ids.deferred))!.envelope);
    st.attempts = 3;
    st.nextAttempt = Date.now() + 600_000;
    st.recipients[0] = { ...st.recipients[0], state: 'delivered' };
    st.recipients[1] = { ...st.recipients[1], state: 'deferred', lastError: '450 4.2.0 Mailbox busy' };
    st.lastError = '450 4.2.0 Mailbox busy';
    await spool.writeStatus(ids.deferred, st);
    await spool.move(ids.deferred, 'active', 'deferred');
  });

  test('list shows id, state, size, age, sender, recipients, last error and next attempt; --json too', async () => {
    const r = await cli('list');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`${ids.deferred}\\s+deferred\\s+\\d+\\s+60m\\s+<alice@sender\\.test>\\s+\\(next attempt \\d{4}-`));
    assert.match(r.stdout, /carol@remote\.test \[deferred\]\s+450 4\.2\.0 Mailbox busy/);
    assert.match(r.stdout, /bob@remote\.test \[delivered\]/);
    assert.match(r.stdout, /in 4 Requests\./);
    const j = JSON.parse((await cli('list', '--json')).stdout) as { id: string; state: string; size: number; sender: string; lastError: string | null; recipients: { address: string }[] }[];
    assert.equal(j.length, 4);
    const d = j.find((x) => x.id === ids.deferred)!;
    assert.equal(d.state, 'deferred');
    assert.equal(d.sender, 'alice@sender.test');
    assert.equal(d.lastError, '450 4.2.0 Mailbox busy');
    assert.ok(d.size > 0);
  });

  test('show prints envelope, status and headers; --raw the message; bad ids are refused', async () => {
    const r = await cli('show', ids.held);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /"sender": "dave@sender\.test"/);
    assert.match(r.stdout, /Subject: held/);
    assert.doesNotMatch(r.stdout, /body of held/);
    const raw = await cli('show', ids.held, '--raw');
    assert.match(raw.stdout, /body of held/);
    for (const bad of ['../../etc/passwd', 'abc', 'ZZZZZZZZZZZZZZZZZZZZ']) {
      const b = await cli('show', bad);
      assert.equal(b.code, 1, bad);
    }
    assert.equal((await cli('frobnicate')).code, 1);
  });

  test('hold moves to hold/, release back to active/ with a flush request', async () => {
    assert.equal((await cli('hold', ids.held)).code, 0);
    assert.equal(await spool.locate(ids.held), 'hold');
    await fs.access(path.join(data, 'queue', 'hold', ids.held));
    assert.equal((await cli('hold', ids.held)).code, 1, 'already held');
    assert.equal((await cli('release', ids.held)).code, 0);
    assert.equal(await spool.locate(ids.held), 'active');
    assert.ok((await fs.readdir(path.join(data, 'queue', 'control'))).some((f) => f.startsWith('flush-')));
  });

  test('delete removes the message and its status; bounce queues a DSN from <> to the sender', async () => {
    assert.equal((await cli('delete', ids.todelete)).code, 0);
    assert.equal(await spool.locate(ids.todelete), undefined);
    const r = await cli('bounce', ids.tobounce);
    assert.equal(r.code, 0, r.stderr);
    const dsnId = /bounce queued as (\S+)/.exec(r.stdout)?.[1];
    assert.ok(dsnId);
    assert.equal(await spool.locate(ids.tobounce), undefined);
    const dsn = await spool.get(dsnId);
    assert.equal(dsn?.envelope.mailFrom, '');
    assert.equal(dsn?.envelope.rcptTo[0].address, 'frank@sender.test');
    const text = (await spool.readMessage(dsnId)).toString();
    assert.match(text, /report-type=delivery-status/);
    assert.match(text, /Final-Recipient: rfc822; gina@remote\.test\r\nAction: failed\r\nStatus: 5\.0\.0/);
    await spool.remove(dsnId);
  });

  test('flush reaches a running scheduler through control/: the deferred message is retried now and delivered', async () => {
    for (const f of await fs.readdir(path.join(data, 'queue', 'control'))) await fs.rm(path.join(data, 'queue', 'control', f));
    const options = defaultDeliveryOptions(data, { hostname: 'mx.facteur.test', transportMap: parseTransportMap([`* = smtp:[127.0.0.1]:${sink.port}`]), scanIntervalMs: 3_600_000 });
    const live = await Spool.open(path.join(data, 'queue'));
    const h: DeliveryHandle = startDelivery({ spool: live, options, log });
    try {
      await h.tick(); // delivers the released message; the deferred one is not due
      assert.equal(await live.locate(ids.held), undefined);
      assert.equal(await live.locate(ids.deferred), 'deferred');
      const before = (await sink.messages()).length;
      const r = await cli('flush');
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /taken by the running server/);
      const msgs = await sink.waitForMessages(before + 1);
      const m = msgs.find((x) => x.text.includes('Subject: deferred'));
      assert.ok(m);
      assert.match(m.text, /X-Rcpt-Args: <carol@remote\.test>/);
      assert.doesNotMatch(m.text, /bob@remote\.test/, 'the delivered recipient is not sent again');
      await h.tick();
      assert.equal(await live.locate(ids.deferred), undefined);
    } finally {
      await h.stop();
    }
  });
});
