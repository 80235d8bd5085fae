// Client side of the saslauthd protocol: what the SMTP server (and `facteur testauth`) use to ask any saslauthd-compatible daemon.
// Trusts the daemon's reply only as far as its length prefix; every call is bounded by an AbortSignal.
import net from 'node:net';
import { encodeFields, parseReply as parseFrame } from '../protocol/frame.js';
import { parseReply, type AuthResult, type Credentials } from '../types.js';

/** Upstream libsasl caps the reply it reads at 1023 bytes. */
const MAX_REPLY = 1023;

export interface RawReply {
  /** Reply text as sent by the daemon (without its length prefix). */
  text: string;
}

/** Send one request and return the raw reply text. Rejects on transport errors (connect, EOF before reply, timeout). */
export function saslauthdRequest(socketPath: string, fields: string[], signal: AbortSignal): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Error('saslauthd request aborted before it started'));
    const sock = net.connect(socketPath);
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (err: Error | null, reply?: RawReply) => {
      if (done) return;
      done = true;
      signal.removeEventListener('abort', onAbort);
      sock.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const onAbort = () => finish(new Error('saslauthd did not answer in time'));
    signal.addEventListener('abort', onAbort, { once: true });
    sock.once('connect', () => sock.write(encodeFields(fields)));
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      const frame = parseFrame(buf);
      if (frame) {
        if (frame.text.length < 2) return finish(new Error('bad response from saslauthd'));
        finish(null, { text: frame.text.subarray(0, MAX_REPLY).toString('utf8') });
      } else if (buf.length > MAX_REPLY + 2) {
        finish(new Error('bad response from saslauthd'));
      }
    });
    sock.once('error', (err) => finish(new Error(`cannot connect to saslauthd server: ${err.message}`, { cause: err })));
    sock.once('end', () => finish(new Error(buf.length < 2 ? 'size read failed' : 'read failed')));
  });
}

/** Build the request fields: 4 for Cyrus compatibility, a 5th only when a client address is known. */
export function requestFields(c: Credentials): string[] {
  const fields = [c.login, c.password, c.service, c.realm];
  if (c.clientAddr) fields.push(c.clientAddr);
  return fields;
}

/** Verify credentials through a saslauthd socket. A daemon that cannot be reached or times out is a temporary failure. */
export async function verifyViaSocket(socketPath: string, c: Credentials, signal: AbortSignal): Promise<AuthResult> {
  try {
    const { text } = await saslauthdRequest(socketPath, requestFields(c), signal);
    return parseReply(text);
  } catch (err) {
    return { verdict: 'tempfail', reason: `[UNAVAILABLE] ${(err as Error).message}` };
  }
}
