// Local delivery over LMTP to a real Dovecot: per-recipient LMTP replies (delivered, unknown user bounced), mail
// lands in Dovecot's maildirs.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { Spool } from '../../src/queue/spool.js';
import { startDelivery, type DeliveryHandle } from '../../src/delivery/scheduler.js';
import { deliveryOptionsFromConfig } from '../../src/delivery/options.js';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/observability/log.js';
import { startDovecot, type Dovecot } from '../helpers/dovecot.js';
import { tempDir } from '../helpers/net.js';

let dovecot: Dovecot;
let data: string;
let spool: Spool;
let handle: DeliveryHandle;

before(async () => {
  dovecot = await startDovecot({ users: { 'alice@example.org': 'secret one', 'bob@example.org': 'secret two' } });
  data = await tempDir('facteur-lmtp-');
  // Built the way `facteur serve` builds it: from a TOML configuration.
  const config = await loadConfig({
    text: `
[server]
hostname = "mx.facteur.test"
data_dir = "${data}"
local_domains = ["example.org"]
[delivery]
local_transport = "lmtp"
lmtp_target = "127.0.0.1:${dovecot.lmtpPort}"
transport_map = ["sender.test = maildir"]
[queue]
scan_interval = "1h"
`,
  });
  spool = await Spool.open(path.join(data, 'queue'));
  handle = startDelivery({ spool, options: deliveryOptionsFromConfig(config), log: createLogger({ name: 'test', level: 'silent' }) });
});

after(async () => {
  await handle?.stop();
  await dovecot?.stop();
});

test('LMTP to Dovecot: known users get the message, the unknown one bounces with Dovecot\'s 5.1.1', async () => {
  const body = 'From: <carl@sender.test>\r\nTo: <alice@example.org>\r\nSubject: via lmtp\r\n\r\nHello Dovecot\r\n';
  const id = await spool.commit(
    { mailFrom: 'carl@sender.test', rcptTo: [{ address: 'alice@example.org' }, { address: 'bob@example.org' }, { address: 'nobody@example.org' }], receivedAt: Date.now() },
    Readable.from([Buffer.from(body)]),
  );
  await handle.tick();
  assert.equal(await spool.locate(id), undefined);
  for (const u of ['alice@example.org', 'bob@example.org']) {
    const files = await dovecot.messages(u);
    assert.equal(files.length, 1, u);
    const text = await fs.readFile(files[0], 'utf8');
    assert.match(text, /Subject: via lmtp/);
    assert.match(text, /Hello Dovecot/);
  }
  const bounceDir = path.join(data, 'mail', 'sender.test', 'carl', 'new');
  const bounces = await fs.readdir(bounceDir);
  assert.equal(bounces.length, 1);
  const dsn = await fs.readFile(path.join(bounceDir, bounces[0]), 'utf8');
  assert.match(dsn, /Final-Recipient: rfc822; nobody@example\.org\r\nAction: failed\r\nStatus: 5\.1\.1/);
  assert.match(dsn, /Diagnostic-Code: smtp; 550 5\.1\.1/);
  assert.doesNotMatch(dsn, /alice@example\.org\r\nAction/);
});
