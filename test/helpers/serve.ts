// Test helpers for the SMTP server: an in-memory queue writer, a map-backed password verifier, a raw SMTP client that
// speaks exact lines (plain, STARTTLS, implicit TLS), and a starter that runs facteur's serve() on free loopback ports.
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import fs from 'node:fs/promises';
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { pino } from 'pino';
import { freePort, tempDir } from './net.js';
import { loadConfig } from '../../src/config/load.js';
import { serve, type Served } from '../../src/cli/commands/serve.js';
import type { Envelope, QueueWriter } from '../../src/queue/types.js';
import type { PasswordVerifier } from '../../src/auth/client/index.js';
import type { AuthResult, Credentials } from '../../src/auth/types.js';

export interface Stored {
  id: string;
  envelope: Envelope;
  data: Buffer;
}

/** A QueueWriter that keeps messages in memory; can be told to fail or to hold the next commit. */
export class MemoryQueue implements QueueWriter {
  messages: Stored[] = [];
  failNext = false;
  /** While set, commits wait for release() after reading the whole stream. */
  hold = false;
  private held: Array<() => void> = [];
  private waiters: Array<() => void> = [];
  private n = 0;
  aborted = 0;

  async commit(envelope: Envelope, message: Readable): Promise<string> {
    const chunks: Buffer[] = [];
    try {
      for await (const c of message) chunks.push(c as Buffer);
    } catch {
      this.aborted++;
      throw new Error('stream aborted');
    }
    if (this.failNext) {
      this.failNext = false;
      throw new Error('EIO: simulated disk error');
    }
    if (this.hold) {
      await new Promise<void>((r) => {
        this.held.push(r);
        this.waiters.splice(0).forEach((w) => w());
      });
    }
    const id = `TEST${String(++this.n).padStart(6, '0')}`;
    this.messages.push({ id, envelope, data: Buffer.concat(chunks) });
    return id;
  }

  /** Resolves once a commit has read its whole message and is being held. */
  whenHeld(): Promise<void> {
    if (this.held.length) return Promise.resolve();
    return new Promise((r) => this.waiters.push(r));
  }

  release(): void {
    this.hold = false;
    this.held.splice(0).forEach((r) => r());
  }

  last(): Stored {
    const m = this.messages.at(-1);
    if (!m) throw new Error('no message queued');
    return m;
  }
}

export interface TestUser {
  password: string;
  addresses?: string[];
}

/** Password verifier over a map (login → password, addresses); `tempfail` simulates a backend outage. */
export class MapVerifier implements PasswordVerifier {
  tempfail = false;
  /** Never answer (a hung directory). */
  hang = false;
  calls: Credentials[] = [];
  constructor(public users: Record<string, TestUser>) {}
  async verify(c: Credentials): Promise<AuthResult> {
    this.calls.push({ ...c, password: '' });
    if (this.tempfail) return { verdict: 'tempfail', reason: '[UNAVAILABLE] test outage' };
    if (this.hang) return new Promise<AuthResult>(() => undefined);
    const u = this.users[c.login];
    if (u && u.password === c.password) return { verdict: 'ok', reason: '', addresses: u.addresses };
    return { verdict: 'fail', reason: '' };
  }
}

export interface TestServer {
  served: Served;
  ports: { inbound: number; submission: number; submissions: number };
  metricsPort: number;
  dir: string;
  certFile: string;
  stop(): Promise<void>;
}

/** The three listeners of a test server on the given loopback ports, as TOML. */
export function listenersToml(ports: { inbound: number; submission: number; submissions: number }): string {
  return `[inbound]
listen = ["127.0.0.1:${ports.inbound}"]
[submission]
listen = ["127.0.0.1:${ports.submission}"]
[submissions]
listen = ["127.0.0.1:${ports.submissions}"]
`;
}

/** Run serve() with a config on free ports; `toml` is appended (sections other than the listeners). */
export async function startTestSmtp(o: { toml?: string; queue?: QueueWriter; verifier?: PasswordVerifier; env?: NodeJS.ProcessEnv } = {}): Promise<TestServer> {
  const dir = await tempDir('facteur-smtp-');
  const ports = { inbound: await freePort(), submission: await freePort(), submissions: await freePort() };
  const text = `${o.toml ?? ''}
${listenersToml(ports)}`;
  const metricsPort = await freePort();
  // Tests open many connections from 127.0.0.1: no connection rate limit unless a test sets one.
  const env = { FACTEUR_RATELIMIT_CONNECTIONS_PER_IP_PER_MINUTE: '0', FACTEUR_METRICS_LISTEN: `127.0.0.1:${metricsPort}`, ...o.env };
  const config = await loadConfig({ text: withServer(text, dir), file: 'test.toml', env });
  const served = await serve({ config, queue: o.queue, verifier: o.verifier, log: pino({ level: process.env.FACTEUR_TEST_LOG ?? 'silent' }), delivery: false });
  return {
    served,
    ports,
    metricsPort,
    dir,
    certFile: path.join(dir, 'tls', 'cert.pem'),
    async stop() {
      await served.stopAll();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

/** Insert data_dir into the [server] table (creating it when the caller gave none). */
function withServer(text: string, dir: string): string {
  if (/^\[server\]\s*$/m.test(text)) return text.replace(/^\[server\]\s*$/m, `[server]\ndata_dir = ${JSON.stringify(dir)}`);
  return `[server]\ndata_dir = ${JSON.stringify(dir)}\nhostname = "mx.test"\nlocal_domains = ["example.org"]\n${text}`;
}

/** A line-exact SMTP client for transcripts: send() raw bytes, reply() one complete (possibly multi-line) reply. */
export class RawSmtp {
  private buf = '';
  private closed = false;
  private wake?: () => void;
  constructor(private sock: net.Socket | tls.TLSSocket) {
    this.attach(sock);
  }

  private attach(sock: net.Socket | tls.TLSSocket): void {
    sock.on('data', (d: Buffer) => {
      this.buf += d.toString('latin1');
      this.wake?.();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
    sock.on('error', () => {
      this.closed = true;
      this.wake?.();
    });
  }

  static async connect(port: number, opts: { tls?: boolean } = {}): Promise<RawSmtp> {
    const sock = opts.tls ? tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }) : net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      sock.once(opts.tls ? 'secureConnect' : 'connect', () => resolve());
      sock.once('error', reject);
    });
    return new RawSmtp(sock);
  }

  send(data: string | Buffer): void {
    this.sock.write(data);
  }

  /** Next complete reply (all its lines joined with \n), or '' once the connection is closed without one. */
  async reply(): Promise<string> {
    for (;;) {
      const m = /^((?:\d{3}-[^\r\n]*\r?\n)*\d{3}(?: [^\r\n]*)?\r?\n)/.exec(this.buf);
      if (m) {
        this.buf = this.buf.slice(m[1].length);
        return m[1].replace(/\r?\n$/, '').replace(/\r\n/g, '\n');
      }
      if (this.closed) return '';
      await new Promise<void>((r) => (this.wake = r));
    }
  }

  async cmd(line: string): Promise<string> {
    this.send(`${line}\r\n`);
    return this.reply();
  }

  /** Anything received and not yet read as a reply. */
  pending(): string {
    return this.buf;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** After a 220 to STARTTLS: wrap the socket in TLS. */
  async upgrade(): Promise<void> {
    const plain = this.sock;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    const t = tls.connect({ socket: plain, rejectUnauthorized: false, servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      t.once('secureConnect', () => resolve());
      t.once('error', reject);
    });
    this.sock = t;
    this.buf = '';
    this.attach(t);
  }

  /** Write `data` (if any) and half-close: the client sends nothing more. */
  end(data?: string | Buffer): void {
    if (data === undefined) this.sock.end();
    else this.sock.end(data);
  }

  close(): void {
    this.sock.destroy();
  }
}

export const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');

/** Run a program to completion (swaks, curl, python3). */
export function runProgram(cmd: string, args: string[], input = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.stdin.end(input);
    p.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

export interface ServeProcess {
  stdout: () => string;
  stderr: () => string;
  /** Send a signal without waiting (SIGHUP). */
  signal(sig: NodeJS.Signals): void;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Run `bin/facteur serve ARGS` as a user would; resolves once `port` accepts connections. */
export async function spawnServe(args: string[], env: NodeJS.ProcessEnv, port: number): Promise<ServeProcess> {
  const { FACTEUR } = await import('./authd.js');
  const { waitForSocket } = await import('./net.js');
  const p = spawn(FACTEUR, ['serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  let err = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => p.once('exit', (code) => resolve(code)));
  await Promise.race([waitForSocket(port, 20_000), exited.then((code) => Promise.reject(new Error(`facteur serve exited ${code}: ${err}`)))]);
  return {
    stdout: () => out,
    stderr: () => err,
    signal: (sig) => void p.kill(sig),
    async stop(signal = 'SIGTERM') {
      if (p.exitCode === null && p.signalCode === null) p.kill(signal);
      return exited;
    },
  };
}

/** Poll until `fn` returns a value (files written by another process); fails after `ms`. */
export async function eventually<T>(fn: () => Promise<T | undefined>, what: string, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The SMTP worker processes of a multi-process `bin/facteur serve` whose primary is `primaryPid`: its children running
 * `bin/facteur serve` (tsx's esbuild service is a child too, and is left out). A child that exited between pgrep and
 * the read of its command line (a worker just killed) is left out too.
 */
export function serveWorkerPids(primaryPid: number): number[] {
  return execFileSync('pgrep', ['-P', String(primaryPid)], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .map(Number)
    .filter((pid) => {
      let argv: string[];
      try {
        argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      } catch {
        return false;
      }
      return argv.includes('serve') && argv.some((a) => a.endsWith('bin/facteur'));
    });
}
