// `facteur serve`'s /metrics for the queue and delivery: per-recipient results (facteur_deliveries_total: sent,
// deferred, bounced) and the queue's size by state (facteur_queue_messages), scraped with curl, with delivery on its
// thread (the default) and on the SMTP event loop ([delivery] thread = false).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { freePort, tempDir } from '../helpers/net.js';
import { eventually, listenersToml, runProgram, spawnServe, type ServeProcess } from '../helpers/serve.js';

let dir: string;
before(async () => {
  dir = await tempDir('facteur-serve-metrics-');
});

async function scrape(port: number): Promise<Map<string, number>> {
  const r = await runProgram('curl', ['-sf', `http://127.0.0.1:${port}/metrics`]);
  assert.equal(r.code, 0, r.stderr);
  const out = new Map<string, number>();
  for (const l of r.stdout.split('\n')) {
    if (!l.startsWith('facteur_deliveries_total{') && !l.startsWith('facteur_queue_messages{')) continue;
    const i = l.lastIndexOf(' ');
    out.set(l.slice(0, i), Number(l.slice(i + 1)));
  }
  // Each series family is described once (a second HELP/TYPE would make the exposition invalid).
  for (const name of ['facteur_deliveries_total', 'facteur_queue_messages']) assert.equal(r.stdout.split('\n').filter((l) => l === `# TYPE ${name} ${name.endsWith('_total') ? 'counter' : 'gauge'}`).length, 1, name);
  return out;
}

for (const thread of [true, false]) {
  describe(`delivery ${thread ? 'on its thread' : 'on the SMTP event loop'}`, () => {
    let serve: ServeProcess;
    let metricsPort: number;
    let inbound: number;
    before(async () => {
      const ports = { inbound: await freePort(), submission: await freePort(), submissions: await freePort() };
      inbound = ports.inbound;
      metricsPort = await freePort();
      const data = path.join(dir, thread ? 'thread' : 'loop');
      const file = path.join(dir, `${thread ? 'thread' : 'loop'}.toml`);
      await fs.writeFile(
        file,
        `[server]
hostname = "mx.test"
data_dir = ${JSON.stringify(data)}
local_domains = ["x.test", "down.test", "bad.test"]
${listenersToml(ports)}[metrics]
listen = "127.0.0.1:${metricsPort}"
[delivery]
thread = ${thread}
# The transport map comes before local delivery: these two local domains are routed elsewhere.
transport_map = ["down.test = smtp:[127.0.0.1]:${await freePort()}", "bad.test = error:5.1.1 No such domain here"]
connect_timeout = "2s"
`,
      );
      serve = await spawnServe(['--config', file], { FACTEUR_RATELIMIT_CONNECTIONS_PER_IP_PER_MINUTE: '0' }, inbound);
    });
    after(async () => {
      await serve?.stop();
    });

    test('a delivery, a deferral and a bounce are counted, and the deferred message is in the queue gauge', async () => {
      const before = await scrape(metricsPort);
      assert.equal(before.get('facteur_queue_messages{state="deferred"}'), 0, 'the gauge reads the spool from the start');
      const send = async (to: string) => {
        const r = await runProgram('swaks', ['--server', `127.0.0.1:${inbound}`, '--from', 'sender@x.test', '--to', to, '--hide-all']);
        assert.equal(r.code, 0, `${to}: ${r.stdout}`);
      };
      await send('bob@x.test'); // Maildir: sent
      await send('carol@down.test'); // nobody listens: deferred
      await send('dave@bad.test'); // error route: bounced, and its DSN to sender@x.test is delivered (sent)
      const m = await eventually(
        async () => {
          const s = await scrape(metricsPort);
          return (s.get('facteur_deliveries_total{result="sent"}') ?? 0) >= 2 && (s.get('facteur_deliveries_total{result="bounced"}') ?? 0) >= 1 && (s.get('facteur_deliveries_total{result="deferred"}') ?? 0) >= 1 ? s : undefined;
        },
        'the three results on /metrics',
        15_000,
      );
      assert.equal(m.get('facteur_deliveries_total{result="sent"}'), 2, 'bob, and the bounce to the sender');
      assert.equal(m.get('facteur_deliveries_total{result="bounced"}'), 1);
      assert.equal(m.get('facteur_deliveries_total{result="deferred"}'), 1);
      assert.equal(m.get('facteur_queue_messages{state="deferred"}'), 1);
      assert.equal(m.get('facteur_queue_messages{state="active"}'), 0);
      assert.equal(m.get('facteur_queue_messages{state="hold"}'), 0);
    });
  });
}
