// `-a rimap -O host[/port]`: verify a password by logging in to an IMAP server, with upstream auth_rimap.c's conversation and replies.
// Trusts the IMAP server's verdict (that is the point); trusts nothing else it sends: 1000-byte buffers, 30 s per read, never OK unless `saslauthd OK`.
//
// -O forms:
//   host[/port]                       as upstream: split at the first '/'; port number or /etc/services name (default imap = 143);
//                                     bare IPv6 literals work (`::1/14303`), and so do bracketed ones (`[::1]/14303`, refused upstream)
//   imap://host[:port]                the same, plaintext (default 143)
//   imap+starttls://host[:port]       STARTTLS before LOGIN (default 143); the certificate is verified
//   imaps://host[:port]               implicit TLS (default 993); the certificate is verified
//   ...?ca=/path/ca.pem               (URL forms) verify against this PEM CA bundle instead of the system CAs
// The host name is resolved for every connection (upstream resolves once at start: issue #493), and every address is tried in order.
//
// Conversation (upstream, byte for byte): read the greeting (`* OK` expected); [STARTTLS]; send `saslauthd LOGIN "login" "password"`
// quoting only `"` and `\`; read until the buffer ends in LF and contains `saslauthd`; send `saslauthd LOGOUT`; close; classify:
//   saslauthd OK...  -> OK remote authentication successful
//   saslauthd NO...  -> NO remote server rejected your credentials
//   * CAPABILITY...  -> skipped
//   anything else    -> NO [ALERT] Unexpected response from remote authentication server
// Differences from upstream, all so that a broken or unreachable server is never mistaken for a wrong password
// (tempfail = `NO [UNAVAILABLE] ...`, SMTP 454 instead of 535):
//   cannot connect / DNS failure            tempfail  Couldn't contact remote authentication server
//   greeting `* NO` / `* BYE`               tempfail  The remote authentication server is currently unavailable
//   EOF, reset or 30 s silence (any stage)  tempfail  error synchronizing with remote authentication server  (upstream: NO [ALERT] ...)
//   TLS handshake or certificate failure    tempfail  TLS with the remote authentication server failed
// Unchanged (the server answered, but wrongly): a non-OK greeting such as `* PREAUTH` or garbage -> NO [ALERT] Unexpected response...;
// a greeting of 1000 bytes or more -> NO [ALERT] error synchronizing...; a reply of 1000 bytes or more -> NO [ALERT] saslauthd internal error.
// Also new: a login or password containing CR, LF or NUL is refused without contacting the server (it could inject IMAP commands).
import net from 'node:net';
import tls from 'node:tls';
import dns from 'node:dns/promises';
import fs from 'node:fs';
import { ConfigError } from '../../lib/errors.js';
import { fail, ok, tempfail, type AuthBackend, type AuthResult, type BackendFactory, type Explain, type AbortLike } from '../types.js';

/** NETWORK_IO_TIMEOUT in auth_rimap.c: each read waits at most this long. */
export const IO_TIMEOUT_MS = 30_000;
/** RESP_LEN in auth_rimap.c: replies of this many bytes or more are refused. */
export const BUF_LEN = 1000;

export const TEXT = {
  ok: 'remote authentication successful',
  rejected: 'remote server rejected your credentials',
  unexpected: '[ALERT] Unexpected response from remote authentication server',
  syncError: '[ALERT] error synchronizing with remote authentication server',
  internal: '[ALERT] saslauthd internal error',
  unavailable: 'The remote authentication server is currently unavailable',
  noContact: "Couldn't contact remote authentication server",
  syncTemp: 'error synchronizing with remote authentication server',
  tls: 'TLS with the remote authentication server failed',
} as const;

export type RimapMode = 'plain' | 'starttls' | 'tls';

export interface RimapTarget {
  host: string;
  port: number;
  mode: RimapMode;
  /** PEM CA bundle replacing the system CAs, when given. */
  ca?: Buffer;
  caFile?: string;
  /** Per-read timeout; IO_TIMEOUT_MS unless a test shortens it. */
  ioTimeoutMs?: number;
}

function servicePort(name: string): number | undefined {
  if (/^\d+$/.test(name)) {
    const n = Number(name);
    return n > 0 && n < 65536 ? n : undefined;
  }
  try {
    for (const line of fs.readFileSync('/etc/services', 'utf8').split('\n')) {
      const f = line.replace(/#.*/, '').trim().split(/\s+/);
      if (f.length >= 2 && (f[0] === name || f.slice(2).includes(name)) && f[1]!.endsWith('/tcp')) return Number(f[1]!.split('/')[0]);
    }
  } catch {
    /* no /etc/services */
  }
  return undefined;
}

/** Parse `-O` (forms in the header). Throws ConfigError naming the problem. */
export function parseRimapOption(option: string | undefined): RimapTarget {
  if (!option) throw new ConfigError("-a rimap needs -O host[/port] (or -O imaps://host:993, -O imap+starttls://host): the IMAP server to log in to");
  const urlForm = /^([a-z][a-z0-9+.-]*):\/\//i.exec(option);
  if (urlForm) {
    const scheme = urlForm[1]!.toLowerCase();
    const mode: RimapMode | undefined = scheme === 'imap' ? 'plain' : scheme === 'imaps' ? 'tls' : scheme === 'imap+starttls' ? 'starttls' : undefined;
    if (!mode) throw new ConfigError(`-O ${option}: unknown scheme '${scheme}://' (use imap://, imap+starttls:// or imaps://)`);
    let url: URL;
    try {
      url = new URL(option.replace(/^[a-z][a-z0-9+.-]*:/i, 'http:'));
    } catch {
      throw new ConfigError(`-O ${option}: not a valid URL (expected ${scheme}://host[:port][?ca=/path/ca.pem])`);
    }
    if (url.username || url.password) throw new ConfigError(`-O ${option}: no user or password belongs in the server URL`);
    if (url.pathname !== '/' && url.pathname !== '') throw new ConfigError(`-O ${option}: unexpected path '${url.pathname}'`);
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    if (!host) throw new ConfigError(`-O ${option}: no host`);
    const port = url.port ? Number(url.port) : mode === 'tls' ? 993 : 143;
    const target: RimapTarget = { host, port, mode };
    for (const [k, v] of url.searchParams) {
      if (k !== 'ca') throw new ConfigError(`-O ${option}: unknown parameter '${k}' (only ?ca=/path/ca.pem)`);
      if (mode === 'plain') throw new ConfigError(`-O ${option}: ?ca= only makes sense with imaps:// or imap+starttls://`);
      try {
        target.ca = fs.readFileSync(v);
        target.caFile = v;
      } catch (err) {
        throw new ConfigError(`-O ${option}: cannot read the CA file ${v} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { cause: err });
      }
      if (!target.ca.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigError(`-O ${option}: ${v} holds no PEM certificate`);
    }
    return target;
  }
  const slash = option.indexOf('/');
  let host = slash < 0 ? option : option.slice(0, slash);
  const portText = slash < 0 ? 'imap' : option.slice(slash + 1);
  host = host.replace(/^\[(.*)\]$/, '$1');
  if (!host || /[\s/]/.test(host)) throw new ConfigError(`-O ${option}: expected host[/port]`);
  const port = servicePort(portText);
  if (port === undefined) throw new ConfigError(`-O ${option}: unknown port or service '${portText}' (a number, or a name from /etc/services)`);
  return { host, port, mode: 'plain' };
}

/** IMAP quoted string as auth_rimap.c's qstring(): `"` and `\` get a backslash, nothing else changes. */
export function imapQuote(s: string): string {
  return `"${s.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

type ReadOutcome = 'ok' | 'eof' | 'timeout' | 'error' | 'overflow' | 'aborted';

/** Buffers what a socket receives and lets the conversation wait for a condition, one 30 s read timeout at a time. */
class Reader {
  buf = Buffer.alloc(0);
  private ended = false;
  private failed = false;
  private wake: (() => void) | undefined;
  private sock: net.Socket | undefined;
  private readonly onData = (d: Buffer) => {
    this.buf = Buffer.concat([this.buf, d]);
    this.wake?.();
  };
  private readonly onEnd = () => {
    this.ended = true;
    this.wake?.();
  };
  private readonly onError = () => {
    this.failed = true;
    this.wake?.();
  };

  attach(sock: net.Socket): void {
    this.sock = sock;
    this.ended = false;
    sock.on('data', this.onData);
    sock.on('end', this.onEnd);
    sock.on('close', this.onEnd);
    sock.on('error', this.onError);
  }

  detach(): void {
    const s = this.sock;
    if (!s) return;
    s.off('data', this.onData);
    s.off('end', this.onEnd);
    s.off('close', this.onEnd);
    s.off('error', this.onError);
    s.on('error', () => undefined);
    this.sock = undefined;
  }

  async until(done: (b: Buffer) => boolean, signal: AbortLike, timeoutMs: number): Promise<ReadOutcome> {
    for (;;) {
      // auth_rimap.c reads into a 1000-byte buffer: a full buffer is an error, checked before the end condition.
      if (this.buf.length >= BUF_LEN) return 'overflow';
      if (this.buf.length > 0 && done(this.buf)) return 'ok';
      if (signal.aborted) return 'aborted';
      if (this.failed) return 'error';
      if (this.ended) return 'eof';
      const got = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => finish(false), timeoutMs);
        const onAbort = () => finish(true);
        signal.addEventListener('abort', onAbort, { once: true });
        const finish = (v: boolean) => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          this.wake = undefined;
          resolve(v);
        };
        this.wake = () => finish(true);
      });
      if (!got) return 'timeout';
    }
  }
}

function connectTcp(address: string, port: number, signal: AbortLike, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: address, port });
    const timer = setTimeout(() => fin(new Error('connect timed out')), timeoutMs);
    const onAbort = () => fin(new Error('aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    const fin = (err?: Error) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      s.off('connect', onConnect);
      s.off('error', fin);
      if (err) {
        s.destroy();
        reject(err);
      } else resolve(s);
    };
    const onConnect = () => fin();
    s.once('connect', onConnect);
    s.once('error', fin);
  });
}

function tlsOptions(t: RimapTarget): tls.ConnectionOptions {
  const ip = net.isIP(t.host) !== 0;
  return { host: t.host, ...(ip ? {} : { servername: t.host }), ...(t.ca ? { ca: t.ca } : {}), rejectUnauthorized: true, minVersion: 'TLSv1.2' };
}

function startTls(sock: net.Socket, t: RimapTarget, signal: AbortLike): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ ...tlsOptions(t), socket: sock });
    const timer = setTimeout(() => fin(new Error('TLS handshake timed out')), t.ioTimeoutMs ?? IO_TIMEOUT_MS);
    const onAbort = () => fin(new Error('aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    const fin = (err?: Error) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      s.off('secureConnect', onSecure);
      s.off('error', fin);
      if (err) {
        s.on('error', () => undefined);
        s.destroy();
        reject(err);
      } else resolve(s);
    };
    const onSecure = () => fin();
    s.once('secureConnect', onSecure);
    s.once('error', fin);
  });
}

const endsWithLf = (b: Buffer) => b[b.length - 1] === 0x0a;

/** Classify the LOGIN reply as auth_rimap.c does, line by line. */
export function classifyReply(reply: string): AuthResult {
  for (const line of reply.split(/[\r\n]+/)) {
    if (line === '') continue;
    if (line.startsWith('saslauthd OK')) return ok(TEXT.ok);
    if (line.startsWith('saslauthd NO')) return fail(TEXT.rejected);
    if (line.startsWith('* CAPABILITY')) continue;
    return fail(TEXT.unexpected);
  }
  return fail(TEXT.unexpected);
}

/** One verification: a fresh connection, the upstream conversation, a verdict. */
export async function rimapVerify(t: RimapTarget, login: string, password: string, signal: AbortLike, explain?: Explain, log?: (m: string) => void): Promise<AuthResult> {
  if (/[\r\n\0]/.test(login) || /[\r\n\0]/.test(password)) {
    explain?.('login or password contains CR, LF or NUL: refused without asking the server');
    return fail(TEXT.unexpected);
  }
  let addresses: string[];
  try {
    addresses = net.isIP(t.host) ? [t.host] : (await dns.lookup(t.host, { all: true })).map((a) => a.address);
  } catch (err) {
    log?.(`rimap: cannot resolve ${t.host}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    explain?.(`cannot resolve ${t.host}`);
    return tempfail(TEXT.noContact);
  }
  const io = t.ioTimeoutMs ?? IO_TIMEOUT_MS;
  let raw: net.Socket | undefined;
  for (const a of addresses) {
    try {
      raw = await connectTcp(a, t.port, signal, io);
      explain?.(`connected to ${a} port ${t.port}`);
      break;
    } catch (err) {
      explain?.(`cannot connect to ${a} port ${t.port}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      if (signal.aborted) break;
    }
  }
  if (!raw) {
    log?.(`rimap: cannot connect to ${t.host} port ${t.port}`);
    return tempfail(TEXT.noContact);
  }
  let sock: net.Socket = raw;
  const reader = new Reader();
  try {
    if (t.mode === 'tls') {
      try {
        sock = await startTls(raw, t, signal);
      } catch (err) {
        explain?.(`TLS failed: ${(err as Error).message}`);
        log?.(`rimap: TLS with ${t.host} port ${t.port} failed: ${(err as Error).message}`);
        return tempfail(`${TEXT.tls}: ${(err as Error).message}`);
      }
      explain?.(`TLS established (${(sock as tls.TLSSocket).getProtocol() ?? 'TLS'})`);
    }
    reader.attach(sock);

    // 1. Greeting.
    const g = await reader.until((b) => endsWithLf(b) && b.includes(0x2a /* '*' */), signal, io);
    const greeting = reader.buf.toString('latin1');
    explain?.(`greeting: ${g === 'ok' ? greeting.split(/\r?\n/)[0]!.slice(0, 120) : g}`);
    if (g === 'overflow') return fail(TEXT.syncError);
    if (g !== 'ok') return tempfail(TEXT.syncTemp);
    if (/^\* (NO|BYE)/.test(greeting)) return tempfail(TEXT.unavailable);
    if (!greeting.startsWith('* OK')) return fail(TEXT.unexpected);
    reader.buf = Buffer.alloc(0);

    // 1b. STARTTLS.
    if (t.mode === 'starttls') {
      sock.write('saslauthd STARTTLS\r\n');
      const r = await reader.until((b) => endsWithLf(b) && /(^|\n)saslauthd /.test(b.toString('latin1')), signal, io);
      if (r === 'overflow') return fail(TEXT.internal);
      if (r !== 'ok') return tempfail(TEXT.syncTemp);
      const text = reader.buf.toString('latin1');
      const tagged = /(?:^|\n)(saslauthd [^\r\n]*)\r?\n/.exec(text);
      explain?.(`STARTTLS: ${tagged?.[1]?.slice(0, 120) ?? ''}`);
      if (!tagged || !/^saslauthd OK/.test(tagged[1]!)) return fail('[ALERT] remote authentication server refused STARTTLS');
      // Anything after the OK line was sent in clear before TLS: an injection attempt (CVE-2011-0411 style).
      if (tagged.index + tagged[0].length < text.length) return fail(TEXT.unexpected);
      reader.detach();
      reader.buf = Buffer.alloc(0);
      try {
        sock = await startTls(sock, t, signal);
      } catch (err) {
        explain?.(`TLS failed: ${(err as Error).message}`);
        log?.(`rimap: STARTTLS with ${t.host} port ${t.port} failed: ${(err as Error).message}`);
        return tempfail(`${TEXT.tls}: ${(err as Error).message}`);
      }
      explain?.(`TLS established (${(sock as tls.TLSSocket).getProtocol() ?? 'TLS'})`);
      reader.attach(sock);
    }

    // 2-3. LOGIN and its reply.
    explain?.(`sending saslauthd LOGIN ${imapQuote(login)} "<password>"`);
    sock.write(Buffer.from(`saslauthd LOGIN ${imapQuote(login)} ${imapQuote(password)}\r\n`, 'utf8'));
    const r = await reader.until((b) => endsWithLf(b) && b.includes('saslauthd'), signal, io);
    if (r === 'overflow') return fail(TEXT.internal);
    if (r !== 'ok') {
      explain?.(`no complete reply: ${r}`);
      return tempfail(TEXT.syncTemp);
    }
    // 4. LOGOUT without waiting.
    sock.write('saslauthd LOGOUT\r\n');
    const reply = reader.buf.toString('utf8');
    const verdict = classifyReply(reply);
    explain?.(`reply: ${reply.split(/\r?\n/).find((l) => l.startsWith('saslauthd'))?.slice(0, 120) ?? ''} -> ${verdict.verdict}`);
    return verdict;
  } finally {
    reader.detach();
    sock.end();
    sock.destroySoon?.();
    setTimeout(() => sock.destroy(), 1000).unref();
  }
}

export const createRimapBackend: BackendFactory = async (option, ctx) => {
  const target = parseRimapOption(option);
  ctx.log(`rimap: ${target.mode === 'tls' ? 'imaps' : target.mode === 'starttls' ? 'imap+starttls' : 'imap'} server ${target.host} port ${target.port}${target.caFile ? `, CA ${target.caFile}` : ''}`);
  const backend: AuthBackend = {
    name: 'rimap',
    async verify(creds, { signal, explain }) {
      return rimapVerify(target, creds.login, creds.password, signal, explain, ctx.log);
    },
  };
  return backend;
};
