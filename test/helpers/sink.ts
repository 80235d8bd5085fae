// Test helper: Postfix's smtp-sink as a remote MX on 127.0.0.1 (accept, 4xx or 5xx modes), dumping each message to a file.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { freePort, tempDir, waitForSocket } from './net.js';

export interface SinkOptions {
  /** accept everything; `tempfail`/`permfail` reject the listed commands (default RCPT) with 450/500-class replies. */
  mode?: 'accept' | 'tempfail' | 'permfail';
  commands?: string;
  /** Extra smtp-sink flags, e.g. ['-N'] (no DSN) or ['-8'] (no 8BITMIME). */
  args?: string[];
  lmtp?: boolean;
  /** Listen on this UNIX socket path instead of a TCP port. */
  unixPath?: string;
  softReply?: string;
  hardReply?: string;
}

export interface Sink {
  port: number;
  dumpDir: string;
  /** Dumped transactions (each file: smtp-sink's X-* headers, Received, then the message). */
  messages(): Promise<{ file: string; text: string }[]>;
  waitForMessages(n: number, timeoutMs?: number): Promise<{ file: string; text: string }[]>;
  stop(): Promise<void>;
}

export async function startSink(o: SinkOptions = {}): Promise<Sink> {
  const port = await freePort();
  const dumpDir = await tempDir('facteur-sink-');
  await fs.chmod(dumpDir, 0o777);
  const args = ['-u', 'nobody', '-h', 'sink.test', '-d', `${dumpDir}/%Y%m%d%H%M%S.`];
  if (o.lmtp) args.push('-L');
  if (o.mode === 'tempfail') args.push('-r', o.commands ?? 'RCPT');
  if (o.mode === 'permfail') args.push('-f', o.commands ?? 'RCPT');
  if (o.softReply) args.push('-b', o.softReply);
  if (o.hardReply) args.push('-B', o.hardReply);
  args.push(...(o.args ?? []), o.unixPath ? `unix:${o.unixPath}` : `127.0.0.1:${port}`, '64');
  const child: ChildProcess = spawn('/usr/sbin/smtp-sink', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    await waitForSocket(o.unixPath ?? port, 5000);
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`smtp-sink did not start: ${stderr}`, { cause: err });
  }
  // smtp-sink creates a transaction's dump file at its start and writes it as the message arrives: a file it still holds
  // open is a message in progress (reading it could see half a message), so only the closed ones count. The listing
  // comes first: a file listed and not open afterwards was closed, complete.
  const stillOpen = async (): Promise<Set<string>> => {
    const dir = `/proc/${child.pid}/fd`;
    const fds = await fs.readdir(dir).catch(() => [] as string[]);
    return new Set(await Promise.all(fds.map((fd) => fs.readlink(path.join(dir, fd)).catch(() => ''))));
  };
  const messages = async () => {
    const out: { file: string; text: string }[] = [];
    const names = (await fs.readdir(dumpDir)).sort();
    const open = await stillOpen();
    for (const f of names) {
      const file = path.join(dumpDir, f);
      if (open.has(file)) continue;
      out.push({ file, text: await fs.readFile(file, 'utf8') });
    }
    return out;
  };
  return {
    port,
    dumpDir,
    messages,
    async waitForMessages(n: number, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const m = await messages();
        if (m.length >= n) return m;
        if (Date.now() > deadline) throw new Error(`smtp-sink got ${m.length} messages, expected ${n}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      if (child.exitCode !== null) return;
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await done;
    },
  };
}
