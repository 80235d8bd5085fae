// Shared by the SMTP fuzz tests: an in-process facteur SMTP service on free loopback ports (memory queue, map verifier,
// a brute-force box that never delays), raw byte sessions, and the reply-format properties every answer must satisfy.
import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs/promises';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { freePort, tempDir } from '../../helpers/net.js';
import { MemoryQueue, MapVerifier, listenersToml } from '../../helpers/serve.js';
import { loadConfig } from '../../../src/config/load.js';
import { serve, type Served } from '../../../src/cli/commands/serve.js';
import { PenaltyBox, DEFAULT_PENALTY } from '../../../src/policy/penalty.js';

export const PASSWORD = 'correct horse';

export interface FuzzServer {
  served: Served;
  ports: { inbound: number; submission: number; submissions: number };
  queue: MemoryQueue;
  verifier: MapVerifier;
  stop(): Promise<void>;
}

export async function startFuzzServer(): Promise<FuzzServer> {
  const dir = await tempDir('facteur-fuzz-');
  const ports = { inbound: await freePort(), submission: await freePort(), submissions: await freePort() };
  const text = `[server]
data_dir = ${JSON.stringify(dir)}
hostname = "mx.test"
local_domains = ["example.org"]
timeout = "5s"
${listenersToml(ports)}[metrics]
listen = ""
[ratelimit]
connections_per_ip_per_minute = 0
`;
  const config = await loadConfig({ text, file: 'fuzz.toml', env: {} });
  const queue = new MemoryQueue();
  const verifier = new MapVerifier({ 'alice@example.org': { password: PASSWORD, addresses: ['alice@example.org'] } });
  // Thousands of wrong passwords from 127.0.0.1 must not slow the fuzzer down: the defence itself is tested elsewhere.
  const penalty = new PenaltyBox({ ...DEFAULT_PENALTY, delayAfter: 1e9, blockAfter: 1e9, loginDelayAfter: 1e9 });
  const served = await serve({ config, queue, verifier, penalty, log: pino({ level: process.env.FACTEUR_TEST_LOG ?? 'silent' }), delivery: false });
  return {
    served,
    ports,
    queue,
    verifier,
    async stop() {
      await served.stopAll();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

export interface Exchange {
  /** Everything received, latin1. */
  text: string;
  /** The server closed the connection (rather than us giving up waiting). */
  closedByServer: boolean;
}

/**
 * Open a session, wait for the greeting, send `payload` then `trailer`, and read until the server closes or `waitMs` passes
 * (a payload may leave the session in a state that waits for more, e.g. a DATA body: that is not a failure).
 */
export async function exchange(port: number, payload: Buffer, o: { tls?: boolean; trailer?: string; waitMs?: number; halfClose?: boolean } = {}): Promise<Exchange> {
  const sock: net.Socket = o.tls ? tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }) : net.connect(port, '127.0.0.1');
  let text = '';
  let closedByServer = false;
  const closed = new Promise<void>((resolve) => {
    sock.on('data', (d: Buffer) => (text += d.toString('latin1')));
    sock.on('end', () => {
      closedByServer = true;
      resolve();
    });
    sock.on('close', () => resolve());
    sock.on('error', () => resolve());
  });
  await new Promise<void>((resolve) => {
    const check = () => (text.includes('\r\n') ? resolve() : undefined);
    sock.on('data', check);
    sock.on('close', () => resolve());
  });
  sock.write(payload);
  // halfClose: no trailer, the input just ends (the server then sees a last line without its line end, if any).
  if (o.halfClose) sock.end();
  else sock.write(o.trailer ?? '\r\n.\r\nRSET\r\nQUIT\r\n');
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([closed, new Promise<void>((r) => (timer = setTimeout(r, o.waitMs ?? 1500)))]);
  clearTimeout(timer);
  sock.destroy();
  return { text, closedByServer };
}

/** Split received text into reply lines, stopping at a 220 that starts TLS (what follows is a TLS handshake). */
export function replyLines(text: string): string[] {
  const lines = text.split('\r\n');
  const tail = lines.pop();
  const out: string[] = [];
  for (const l of lines) {
    out.push(l);
    if (/^220 .*TLS/i.test(l)) return out;
  }
  assert.equal(tail, '', `a reply line without CRLF at the end: ${JSON.stringify(tail?.slice(0, 200))}`);
  return out;
}

/** Every line is `NNN-text` or `NNN text` with a 2xx-5xx code, and an enhanced status code (when present) has the same class. */
export function assertValidReplies(text: string): void {
  for (const line of replyLines(text)) {
    const m = /^([2-5])\d\d(?:([ -])(.*))?$/.exec(line);
    assert.ok(m, `not an SMTP reply line: ${JSON.stringify(line.slice(0, 200))}`);
    const enhanced = /^([245])\.\d{1,3}\.\d{1,3}(?: |$)/.exec(m[3] ?? '');
    if (enhanced && m[2] === ' ') assert.equal(enhanced[1], m[1], `enhanced code class differs from the reply code: ${line}`);
  }
}

/** A complete ordinary session on port 25 that must still work after anything. */
export async function normalSession(port: number, queue: MemoryQueue): Promise<void> {
  const before = queue.messages.length;
  const r = await exchange(port, Buffer.from('EHLO client.test\r\nMAIL FROM:<someone@remote.test>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n'), {
    trailer: 'From: someone@remote.test\r\nSubject: after the fuzz\r\n\r\nstill here\r\n.\r\nQUIT\r\n',
    waitMs: 10_000,
  });
  assert.match(r.text, /\r\n250 2\.0\.0 Ok: queued as \S+\r\n221 /, r.text);
  assert.equal(queue.messages.length, before + 1);
}
