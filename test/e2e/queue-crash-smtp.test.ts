// The whole promise, end to end: clients submit over SMTP to `facteur serve` (the real CLI) while it is killed with
// SIGKILL at random moments and restarted; every message that got a 250 reaches smtp-sink, none is lost.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { RawSmtp } from '../helpers/serve.js';
import { startSink, type Sink } from '../helpers/sink.js';
import { freePort, tempDir, waitForSocket } from '../helpers/net.js';

const FACTEUR = path.resolve('bin/facteur');
let sink: Sink;
let dir: string;
let configFile: string;
let inbound: number;
let metrics: number;
let server: ChildProcess | undefined;

before(async () => {
  sink = await startSink();
  dir = await tempDir('facteur-crash-smtp-');
  inbound = await freePort();
  metrics = await freePort();
  configFile = path.join(dir, 'facteur.toml');
  await fs.writeFile(
    configFile,
    `[server]
data_dir = ${JSON.stringify(path.join(dir, 'data'))}
hostname = "mx.crash.test"
local_domains = ["example.org"]
log_level = "warn"
[inbound]
listen = ["127.0.0.1:${inbound}"]
[submission]
listen = ["127.0.0.1:${await freePort()}"]
[submissions]
listen = ["127.0.0.1:${await freePort()}"]
[queue]
retry_initial = "1s"
retry_max = "2s"
scan_interval = "1s"
[delivery]
transport_map = ["example.org = smtp:[127.0.0.1]:${sink.port}"]
`,
  );
});

after(async () => {
  server?.kill('SIGKILL');
  await sink?.stop();
});

async function startServer(): Promise<ChildProcess> {
  const child = spawn(FACTEUR, ['serve', '--config', configFile], {
    stdio: ['ignore', 'ignore', 'ignore'],
    env: { ...process.env, FACTEUR_RATELIMIT_CONNECTIONS_PER_IP_PER_MINUTE: '0', FACTEUR_METRICS_LISTEN: `127.0.0.1:${metrics}` },
  });
  await waitForSocket(inbound, 20_000);
  return child;
}

/** One SMTP transaction; resolves with the queue id if the server said 250 after the data, else undefined. */
async function submitOne(seq: number): Promise<string | undefined> {
  let c: RawSmtp;
  try {
    c = await RawSmtp.connect(inbound);
  } catch {
    return undefined;
  }
  try {
    if (!(await c.reply()).startsWith('220')) return undefined;
    if (!(await c.cmd('EHLO client.test')).startsWith('250')) return undefined;
    if (!(await c.cmd('MAIL FROM:<load@client.test>')).startsWith('250')) return undefined;
    if (!(await c.cmd('RCPT TO:<bob@example.org>')).startsWith('250')) return undefined;
    if (!(await c.cmd('DATA')).startsWith('354')) return undefined;
    const filler = seq % 5 === 0 ? `${'z'.repeat(998)}\r\n`.repeat(100) : '';
    const r = await c.cmd(`From: <load@client.test>\r\nTo: <bob@example.org>\r\nSubject: crash ${seq}\r\nX-Seq: ${seq}\r\n\r\n${filler}body ${seq}\r\n.`);
    const m = /^250 .*queued as (\S+)/.exec(r);
    c.send('QUIT\r\n');
    return m?.[1];
  } catch {
    return undefined;
  }
}

test('SIGKILL during SMTP submissions: every 250-acknowledged message is delivered to smtp-sink', async (t) => {
  const acked = new Map<number, string>();
  let seq = 0;
  // At least 4 kills, and go on until a few hundred messages were acknowledged (slow machines get more rounds).
  let rounds = 0;
  for (; rounds < 4 || (acked.size < 200 && rounds < 12); rounds++) {
    server = await startServer();
    const exited = new Promise<void>((r) => server!.once('exit', () => r()));
    let stop = false;
    let firstAck!: () => void;
    const gotFirst = new Promise<void>((r) => (firstAck = r));
    const workers = Array.from({ length: 6 }, async () => {
      while (!stop) {
        const n = seq++;
        const id = await submitOne(n);
        if (id) {
          acked.set(n, id);
          firstAck();
        }
      }
    });
    await Promise.race([gotFirst, new Promise((r) => setTimeout(r, 10_000))]);
    await new Promise((r) => setTimeout(r, 300 + Math.floor(Math.random() * 1000)));
    server.kill('SIGKILL');
    await exited;
    stop = true;
    await Promise.all(workers);
  }
  t.diagnostic(`${rounds} SIGKILLs`);
  assert.ok(acked.size >= 200, `enough messages acknowledged (${acked.size})`);
  server = await startServer();
  const deadline = Date.now() + 30_000;
  let delivered = new Map<number, number>();
  for (;;) {
    delivered = new Map();
    for (const m of await sink.messages()) {
      const s = Number(/^X-Seq: (\d+)$/m.exec(m.text)?.[1]);
      delivered.set(s, (delivered.get(s) ?? 0) + 1);
    }
    if ([...acked.keys()].every((s) => delivered.has(s)) || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const lost = [...acked.entries()].filter(([s]) => !delivered.has(s));
  const dups = [...delivered.values()].filter((n) => n > 1).length;
  t.diagnostic(`acknowledged ${acked.size}, delivered ${delivered.size} distinct, duplicates (crash between remote 250 and recording it) ${dups}`);
  assert.deepEqual(lost, [], 'no acknowledged message lost');
  const exited = new Promise<void>((r) => server!.once('exit', () => r()));
  server.kill('SIGTERM');
  await exited;
  server = undefined;
});
