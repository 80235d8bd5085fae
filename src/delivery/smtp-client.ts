// Outbound SMTP and LMTP with nodemailer's SMTPConnection: EHLO/LHLO, opportunistic STARTTLS, optional AUTH,
// several recipients per transaction, one result per recipient. Trusts nothing the remote server says beyond its reply codes.
import crypto from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { Envelope } from '../queue/types.js';
import { cleanReply, fromReply, local, type RcptResult } from './result.js';
import { checkChain, type Tlsa } from './dane.js';
import { has8bit } from '../mail/downgrade.js';
import { installFastDotStuffing } from './dot-stuffing.js';

installFastDotStuffing(); // nodemailer's message encoder, same output without its byte-by-byte loop

export interface SmtpSessionOptions {
  heloName: string;
  starttls: 'opportunistic' | 'require' | 'off';
  tlsVerify: boolean;
  tlsCa?: string;
  connectTimeoutMs: number;
  timeoutMs: number;
  recipientsPerTransaction: number;
  auth?: { user: string; pass: string };
  /** DANE applies to this host (RFC 7672): STARTTLS required, and the certificate must match one of these TLSA
   * records (none usable: encryption required, no authentication). */
  dane?: Tlsa[];
}

export interface SendJob {
  /** `address`: connect there instead of resolving `host` (which still names the server for TLS). */
  hop: { host: string; port: number; address?: string } | { path: string };
  lmtp: boolean;
  envelope: Envelope;
  /** Recipients of this job, with their index in envelope.rcptTo. */
  rcpts: { index: number; address: string }[];
  message: Buffer;
  /** The message converted to 7-bit (and signed again), for a server without 8BITMIME; undefined: not convertible. */
  sevenBit?: () => Promise<Buffer | undefined>;
}

export interface SendOutcome {
  /** False when no SMTP session could be set up with this host (try the next MX). */
  connected: boolean;
  /** Why the session could not be set up. */
  error?: string;
  results: RcptResult[];
}

type NmError = Error & { code?: string; command?: string; response?: string; responseCode?: number; recipient?: string; rejectedErrors?: NmError[] };
interface NmInfo {
  accepted: string[];
  rejected: string[];
  rejectedErrors?: NmError[];
  response?: string;
}

function hopName(hop: SendJob['hop']): string {
  return 'path' in hop ? `unix:${hop.path}` : `${hop.host}[${hop.port}]`;
}

async function connectUnix(p: string, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(p);
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect to ${p} timed out`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

/** One SMTP/LMTP session; nodemailer reports connection-level failures through events, so every wait also ends when the
 * connection fails or closes. */
class Session {
  closed = false;
  messages = 0;
  extensions: string[] = [];
  readonly failed: Promise<never>;
  private failure: (err: NmError) => void = () => undefined;
  constructor(
    readonly conn: SMTPConnection,
    readonly remote: string,
  ) {
    this.failed = new Promise<never>((_, reject) => {
      this.failure = reject;
    });
    this.failed.catch(() => undefined);
    conn.on('error', (err: NmError) => this.failure(err));
    conn.on('end', () => {
      this.closed = true;
      this.failure(Object.assign(new Error(`connection to ${remote} closed`), { code: 'ECONNECTION' }));
    });
  }
  wait<T>(fn: (cb: (err?: NmError | null, v?: T) => void) => void): Promise<T> {
    return Promise.race([new Promise<T>((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v as T)))), this.failed]);
  }
  quit(): void {
    try {
      if (!this.closed) this.conn.quit();
    } catch {
      /* already gone */
    }
    setTimeout(() => this.conn.close(), 1000).unref();
  }
}

type Opened = { session: Session } | { outcome: SendOutcome };

async function openSession(job: SendJob, o: SmtpSessionOptions): Promise<Opened> {
  const remote = 'path' in job.hop ? job.hop.path : job.hop.host;
  let socket: net.Socket | undefined;
  if ('path' in job.hop) {
    try {
      socket = await connectUnix(job.hop.path, o.connectTimeoutMs);
    } catch (err) {
      return { outcome: { connected: false, error: `connect to ${hopName(job.hop)}: ${(err as Error).message}`, results: [] } };
    }
  }
  const conn = new SMTPConnection({
    ...('path' in job.hop ? { connection: socket } : { host: job.hop.address ?? job.hop.host, port: job.hop.port }),
    name: o.heloName,
    lmtp: job.lmtp,
    secure: false,
    ignoreTLS: !o.dane && o.starttls === 'off',
    requireTLS: !!o.dane || o.starttls === 'require',
    opportunisticTLS: !o.dane && o.starttls === 'opportunistic',
    // With DANE the TLSA records, not the CAs, decide (checked below once STARTTLS is done).
    tls: { rejectUnauthorized: o.dane ? false : o.tlsVerify, ca: o.tlsCa ? [...tls.rootCertificates, o.tlsCa] : undefined, servername: 'path' in job.hop || net.isIP(job.hop.host) ? undefined : job.hop.host },
    connectionTimeout: o.connectTimeoutMs,
    greetingTimeout: o.connectTimeoutMs,
    socketTimeout: o.timeoutMs,
    allowInternalNetworkInterfaces: true,
    logger: false,
  });
  const s = new Session(conn, remote);
  try {
    await s.wait<void>((cb) => conn.connect((err) => cb(err as NmError | undefined)));
  } catch (err) {
    s.quit();
    const e = err as NmError;
    // A 5xx greeting (RFC 5321 554) is a permanent refusal from this host; anything else (EHLO, STARTTLS, TLS
    // required but not offered, network): try the next host, and keep the mail if none works.
    if (e.command === 'CONN' && e.responseCode && e.responseCode >= 500) return { outcome: { connected: true, results: job.rcpts.map((r) => fromReply(r.index, e.responseCode, e.response, remote)) } };
    // Under DANE a host without STARTTLS (or whose TLS fails) is refused for its security: say so.
    const daneTls = o.dane && (e.code === 'ETLS' || /\bTLS\b|STARTTLS|SSL|certificate/.test(e.message)) ? 'DANE requires STARTTLS (the host publishes TLSA records), which failed: ' : '';
    return { outcome: { connected: false, error: `${hopName(job.hop)}: ${daneTls}${cleanReply(e.response || e.message)}`, results: [] } };
  }
  if (o.dane?.length && 'host' in job.hop) {
    const why = checkChain(o.dane, peerChain(conn), job.hop.host);
    if (why) {
      s.quit();
      return { outcome: { connected: false, error: `${hopName(job.hop)}: DANE: ${why}`, results: [] } };
    }
  }
  if (o.auth) {
    try {
      await s.wait<void>((cb) => conn.login({ user: o.auth!.user, pass: o.auth!.pass }, (err) => cb(err as NmError | null)));
    } catch (err) {
      s.quit();
      const e = err as NmError;
      // Our credentials are wrong or the relay refuses them: an operator problem, so keep the mail (defer).
      return { outcome: { connected: false, error: `${hopName(job.hop)}: authentication failed: ${cleanReply(e.response || e.code || 'error')}`, results: [] } };
    }
  }
  s.extensions = (conn as unknown as { _supportedExtensions?: string[] })._supportedExtensions ?? [];
  return { session: s };
}

/** The certificates the server presented after STARTTLS, leaf first. */
function peerChain(conn: SMTPConnection): crypto.X509Certificate[] {
  const sock = (conn as unknown as { _socket?: tls.TLSSocket })._socket;
  if (!sock || typeof sock.getPeerCertificate !== 'function') return [];
  const out: crypto.X509Certificate[] = [];
  const seen = new Set<string>();
  for (let c: tls.DetailedPeerCertificate | undefined = sock.getPeerCertificate(true); c?.raw && !seen.has(c.fingerprint256); c = c.issuerCertificate) {
    seen.add(c.fingerprint256);
    out.push(new crypto.X509Certificate(c.raw));
  }
  return out;
}

// Connection reuse: after a message, a healthy session waits a little for the next message to the same next hop.
const idle = new Map<string, { session: Session; timer: NodeJS.Timeout }[]>();
const REUSE_IDLE_MS = 2000;
const REUSE_MAX_MESSAGES = 100;

function poolKey(job: SendJob, o: SmtpSessionOptions): string {
  const h = (v: string | undefined) => (v ? crypto.createHash('sha256').update(v).digest('hex') : '');
  // Everything that shapes the session's security is in the key: a session is reused only under the same terms.
  const dane = o.dane ? `dane:${h(JSON.stringify(o.dane.map((t) => [t.usage, t.selector, t.mtype, t.data.toString('hex')])))}` : '';
  return JSON.stringify([hopName(job.hop), job.lmtp, o.heloName, o.starttls, o.tlsVerify, h(o.tlsCa), o.auth?.user ?? '', h(o.auth?.pass), dane]);
}

function takeIdle(key: string): Session | undefined {
  const list = idle.get(key);
  while (list?.length) {
    const { session, timer } = list.pop()!;
    clearTimeout(timer);
    if (!session.closed) return session;
  }
  return undefined;
}

function putIdle(key: string, s: Session): void {
  if (s.closed || s.messages >= REUSE_MAX_MESSAGES) return s.quit();
  const list = idle.get(key) ?? [];
  const timer = setTimeout(() => {
    const i = list.findIndex((x) => x.session === s);
    if (i >= 0) list.splice(i, 1);
    s.quit();
  }, REUSE_IDLE_MS);
  timer.unref();
  list.push({ session: s, timer });
  idle.set(key, list);
}

/** Close every idle cached session (scheduler stop). */
export function closeIdleSessions(): void {
  for (const list of idle.values()) for (const { session, timer } of list.splice(0)) {
    clearTimeout(timer);
    session.quit();
  }
}

/** Deliver one message's recipients for one host, reusing a cached session to it when there is one. */
export async function sendToHost(job: SendJob, o: SmtpSessionOptions): Promise<SendOutcome> {
  const key = poolKey(job, o);
  let s = takeIdle(key);
  // A cached session must still answer RSET; otherwise (closed by the server meanwhile) open a fresh one.
  if (s && !(await s.wait<void>((cb) => s!.conn.reset((err) => cb(err as NmError | undefined))).then(() => true, () => false))) {
    s.quit();
    s = undefined;
  }
  if (!s) {
    const opened = await openSession(job, o);
    if ('outcome' in opened) return opened.outcome;
    s = opened.session;
  }
  const remote = s.remote;
  if (job.envelope.smtputf8 && !s.extensions.includes('SMTPUTF8')) {
    putIdle(key, s);
    return {
      connected: true,
      results: job.rcpts.map((r) => local(r.index, 'failed', '5.6.7', `554 5.6.7 ${remote} does not support SMTPUTF8, which this message needs (RFC 6531)`, remote)),
    };
  }
  // RFC 6152: no 8-bit data to a server that does not announce 8BITMIME: converted to 7-bit, or returned (5.6.3).
  // (8-bit content is looked for in the bytes too: many clients send it without declaring BODY=8BITMIME.)
  let message = job.message;
  let eightBit = Boolean(job.envelope.body8bit || job.envelope.smtputf8) || has8bit(message);
  if (eightBit && !job.envelope.smtputf8 && !s.extensions.includes('8BITMIME')) {
    const down = job.sevenBit ? await job.sevenBit() : undefined;
    if (!down) {
      putIdle(key, s);
      return {
        connected: true,
        results: job.rcpts.map((r) => local(r.index, 'failed', '5.6.3', `554 5.6.3 ${remote} does not support 8BITMIME, and this message cannot be converted to 7-bit (RFC 6152)`, remote)),
      };
    }
    message = down;
    eightBit = false;
  }
  // Group by DSN parameters (nodemailer applies NOTIFY/ORCPT to every RCPT of a transaction), then by size.
  const groups = new Map<string, SendJob['rcpts']>();
  for (const r of job.rcpts) {
    const p = job.envelope.rcptTo[r.index];
    const k = `${(p.notify ?? []).join(',')}|${p.orcpt ?? ''}`;
    const g = groups.get(k) ?? [];
    g.push(r);
    groups.set(k, g);
  }
  const batches: SendJob['rcpts'][] = [];
  for (const g of groups.values()) for (let i = 0; i < g.length; i += o.recipientsPerTransaction) batches.push(g.slice(i, i + o.recipientsPerTransaction));
  const results: RcptResult[] = [];
  let first = true;
  let healthy = true;
  for (const batch of batches) {
    if (s.closed || !healthy) {
      for (const r of batch) results.push(local(r.index, 'deferred', '4.4.2', `connection to ${remote} lost`, remote));
      continue;
    }
    if (!first) {
      const ok = await s.wait<void>((cb) => s!.conn.reset((err) => cb(err as NmError | undefined))).then(
        () => true,
        () => false,
      );
      if (!ok) {
        healthy = false;
        for (const r of batch) results.push(local(r.index, 'deferred', '4.4.2', `RSET refused by ${remote}`, remote));
        continue;
      }
    }
    first = false;
    const out = await sendBatch(s.conn, { ...job, message }, eightBit, batch, remote, s.failed, s.extensions);
    s.messages++;
    if (out.broken) healthy = false;
    results.push(...out.results);
  }
  if (healthy && !s.closed) putIdle(key, s);
  else s.quit();
  return { connected: true, results };
}

async function sendBatch(conn: SMTPConnection, job: SendJob, eightBit: boolean, batch: SendJob['rcpts'], remote: string, failed: Promise<never>, extensions: string[]): Promise<{ results: RcptResult[]; broken: boolean }> {
  const p = job.envelope.rcptTo[batch[0].index];
  const dsn =
    job.envelope.dsn || p.notify || p.orcpt
      ? {
          ret: job.envelope.dsn?.ret,
          envid: job.envelope.dsn?.envid,
          notify: p.notify,
          orcpt: p.orcpt,
        }
      : undefined;
  const byAddr = new Map<string, number[]>();
  for (const r of batch) {
    const k = r.address.trim();
    byAddr.set(k, [...(byAddr.get(k) ?? []), r.index]);
  }
  const take = (addr: string | undefined): number | undefined => {
    const l = addr ? byAddr.get(addr.trim()) : undefined;
    return l?.shift();
  };
  const envelope = {
    from: job.envelope.mailFrom,
    to: batch.map((r) => r.address),
    size: job.message.length,
    use8BitMime: eightBit,
    dsn,
  };
  try {
    const info = await Promise.race([
      new Promise<NmInfo>((resolve, reject) => conn.send(envelope, job.message, (err, inf) => (err ? reject(err) : resolve(inf as unknown as NmInfo)))),
      failed,
    ]);
    const out: RcptResult[] = [];
    for (const e of info.rejectedErrors ?? []) {
      const i = take(e.recipient);
      if (i !== undefined) out.push(fromReply(i, e.responseCode, e.response, remote));
    }
    const dsnPassedOn = !job.lmtp && extensions.includes('DSN');
    for (const a of info.accepted) {
      const i = take(a);
      if (i !== undefined) out.push({ ...fromReply(i, 250, job.lmtp ? `250 2.0.0 delivered (LMTP)` : info.response, remote), dsnPassedOn });
    }
    // Anything not accounted for (should not happen): keep it for a retry rather than guess.
    for (const l of byAddr.values()) for (const i of l) out.push(local(i, 'deferred', '4.4.2', `no reply recorded for this recipient from ${remote}`, remote));
    return { results: out, broken: false };
  } catch (err) {
    const e = err as NmError;
    if (e.rejectedErrors?.length) {
      const out: RcptResult[] = [];
      for (const re of e.rejectedErrors) {
        const i = take(re.recipient);
        if (i !== undefined) out.push(fromReply(i, re.responseCode, re.response, remote));
      }
      for (const l of byAddr.values()) for (const i of l) out.push(fromReply(i, e.responseCode, e.response, remote));
      return { results: out, broken: e.responseCode === 421 };
    }
    if (e.responseCode) return { results: batch.map((r) => fromReply(r.index, e.responseCode, e.response, remote)), broken: e.responseCode === 421 };
    return { results: batch.map((r) => local(r.index, 'deferred', '4.4.2', `${remote}: ${e.message}`, remote)), broken: true };
  }
}
