// SMTP load generator for the SMTP benchmark: closed-loop sessions (optionally STARTTLS + AUTH PLAIN), several messages
// per connection, per-message latency; and a pool of idle connections held open after the greeting. Trusts nothing from
// the server: any reply other than the one expected is an error (counted by code and text), never a success.
import net from 'node:net';
import tls from 'node:tls';

export interface SessionSpec {
  port: number;
  /** STARTTLS + AUTH PLAIN (submission); otherwise plain EHLO (inbound). */
  submission: boolean;
  login?: string;
  password?: string;
  from: string;
  to: string;
  concurrency: number;
  messagesPerConnection: number;
  /** Measured phase; sessions in flight at the deadline finish their current message, no new message starts. */
  durationMs: number;
  /** Message body size in bytes (headers come on top). */
  bodyBytes: number;
  timeoutMs: number;
}

export interface SessionResult {
  elapsedMs: number;
  ok: number;
  sessions: number;
  errors: Record<string, number>;
  /** Per-message latency (MAIL FROM sent → 250 after the final dot), milliseconds, sorted. */
  latencies: number[];
  /** Session setup (connect → ready for MAIL: greeting, EHLO, STARTTLS, EHLO, AUTH), milliseconds, sorted. */
  setups: number[];
}

/** One message in wire form (dot-stuffing is unnecessary: no body line starts with '.'), ending with CRLF.CRLF. */
export function buildMessage(from: string, to: string, bodyBytes: number, n = 0): Buffer {
  const line = 'The quick brown fox jumps over the lazy dog; facteur SMTP benchmark payload line 0123456789.';
  const lines: string[] = [];
  let size = 0;
  while (size < bodyBytes) {
    const l = line.slice(0, Math.min(line.length, Math.max(1, bodyBytes - size - 2)));
    lines.push(l);
    size += l.length + 2;
  }
  const head = [
    `From: <${from}>`,
    `To: <${to}>`,
    `Subject: benchmark ${n}`,
    `Date: ${new Date().toUTCString().replace('GMT', '+0000')}`,
    `Message-ID: <bench.${process.pid}.${n}.${Date.now()}@bench.test>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
  ];
  return Buffer.from(`${head.join('\r\n')}\r\n\r\n${lines.join('\r\n')}\r\n.\r\n`, 'latin1');
}

class SmtpError extends Error {}

/** A reply reader over a socket that may be swapped for its TLS wrapper. */
class Conn {
  private buf = '';
  private waiter?: { resolve: (r: string) => void; reject: (e: Error) => void };
  private failed?: Error;
  private timer?: NodeJS.Timeout;
  sock: net.Socket;

  constructor(
    sock: net.Socket,
    private readonly timeoutMs: number,
  ) {
    this.sock = sock;
    this.attach(sock);
  }

  private attach(s: net.Socket): void {
    s.setNoDelay(true);
    s.on('data', (d: Buffer) => {
      this.buf += d.toString('latin1');
      this.pump();
    });
    s.on('error', (e) => this.fail(new SmtpError(`socket: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
    s.on('close', () => this.fail(new SmtpError('connection closed')));
  }

  private fail(e: Error): void {
    this.failed ??= e;
    const w = this.waiter;
    this.waiter = undefined;
    clearTimeout(this.timer);
    w?.reject(e);
  }

  private pump(): void {
    if (!this.waiter) return;
    // A complete reply: any continuation lines "ddd-..." then a final "ddd ..." line.
    let i = 0;
    for (;;) {
      const nl = this.buf.indexOf('\n', i);
      if (nl < 0) return;
      const sep = this.buf[i + 3];
      if (sep !== '-') {
        // The final line carries the code and the text we report.
        const last = this.buf.slice(i, nl).replace(/\r$/, '');
        this.buf = this.buf.slice(nl + 1);
        const w = this.waiter;
        this.waiter = undefined;
        clearTimeout(this.timer);
        w.resolve(last);
        return;
      }
      i = nl + 1;
    }
  }

  reply(): Promise<string> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.timer = setTimeout(() => this.fail(new SmtpError('timeout')), this.timeoutMs);
      this.pump();
    });
  }

  /** Send and expect a reply starting with `code`; anything else throws with the reply. */
  async expect(data: string | Buffer | null, code: string): Promise<void> {
    if (data !== null) this.sock.write(data);
    const r = await this.reply();
    if (!r.startsWith(code)) throw new SmtpError(r.slice(0, 60));
  }

  async starttls(): Promise<void> {
    const plain = this.sock;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    plain.removeAllListeners('error');
    const t = tls.connect({ socket: plain, rejectUnauthorized: false, servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      t.once('secureConnect', () => resolve());
      t.once('error', (e) => reject(new SmtpError(`tls: ${e.message}`)));
    });
    this.sock = t;
    this.buf = '';
    this.attach(t);
  }

  close(): void {
    clearTimeout(this.timer);
    this.sock.destroy();
  }
}

function connect(port: number, timeoutMs: number): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const t = setTimeout(() => {
      s.destroy();
      reject(new SmtpError('connect timeout'));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.removeAllListeners('error');
      resolve(new Conn(s, timeoutMs));
    });
    s.once('error', (e) => {
      clearTimeout(t);
      reject(new SmtpError(`connect: ${(e as NodeJS.ErrnoException).code ?? e.message}`));
    });
  });
}

export async function runSessions(spec: SessionSpec): Promise<SessionResult> {
  const errors: Record<string, number> = {};
  const latencies: number[] = [];
  const setups: number[] = [];
  const message = buildMessage(spec.from, spec.to, spec.bodyBytes);
  const authLine = `AUTH PLAIN ${Buffer.from(`\0${spec.login ?? ''}\0${spec.password ?? ''}`, 'utf8').toString('base64')}\r\n`;
  let ok = 0;
  let sessions = 0;
  const start = performance.now();
  const deadline = start + spec.durationMs;
  const err = (e: unknown) => {
    const k = e instanceof SmtpError ? e.message : `internal: ${(e as Error).message}`;
    errors[k] = (errors[k] ?? 0) + 1;
  };

  async function session(): Promise<void> {
    const t0 = performance.now();
    let c: Conn | undefined;
    try {
      c = await connect(spec.port, spec.timeoutMs);
      sessions++;
      await c.expect(null, '220');
      await c.expect('EHLO client.bench.test\r\n', '250');
      if (spec.submission) {
        await c.expect('STARTTLS\r\n', '220');
        await c.starttls();
        await c.expect('EHLO client.bench.test\r\n', '250');
        await c.expect(authLine, '235');
      }
      setups.push(performance.now() - t0);
      for (let i = 0; i < spec.messagesPerConnection && performance.now() < deadline; i++) {
        const m0 = performance.now();
        await c.expect(`MAIL FROM:<${spec.from}>\r\n`, '250');
        await c.expect(`RCPT TO:<${spec.to}>\r\n`, '250');
        await c.expect('DATA\r\n', '354');
        await c.expect(message, '250');
        latencies.push(performance.now() - m0);
        ok++;
      }
      c.sock.write('QUIT\r\n');
      await c.reply().catch(() => undefined);
    } catch (e) {
      err(e);
    } finally {
      c?.close();
    }
  }

  await Promise.all(
    Array.from({ length: spec.concurrency }, async () => {
      while (performance.now() < deadline) await session();
    }),
  );
  const elapsedMs = performance.now() - start;
  latencies.sort((a, b) => a - b);
  setups.sort((a, b) => a - b);
  return { elapsedMs, ok, sessions, errors, latencies, setups };
}

/** Idle connections kept open after their greeting. */
export class IdlePool {
  private conns: Conn[] = [];

  /** Open `count` connections, at most `parallel` waiting for their greeting at once; returns how many got a 220. */
  async open(port: number, count: number, parallel: number, timeoutMs: number): Promise<{ open: number; errors: Record<string, number>; ms: number }> {
    const errors: Record<string, number> = {};
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: parallel }, async () => {
        while (next < count) {
          next++;
          try {
            const c = await connect(port, timeoutMs);
            try {
              await c.expect(null, '220');
              this.conns.push(c);
            } catch (e) {
              c.close();
              throw e;
            }
          } catch (e) {
            const k = (e as Error).message;
            errors[k] = (errors[k] ?? 0) + 1;
          }
        }
      }),
    );
    return { open: this.conns.length, errors, ms: performance.now() - t0 };
  }

  /** How many are still open (the server has not closed them). */
  alive(): number {
    return this.conns.filter((c) => !c.sock.destroyed && c.sock.readyState === 'open').length;
  }

  close(): void {
    for (const c of this.conns) c.close();
    this.conns = [];
  }
}
