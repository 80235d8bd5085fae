// A small DNS client that reports whether the resolver validated an answer (the AD bit, RFC 4035), which node:dns does
// not expose; DANE (RFC 7672) needs it for the MX and TLSA lookups. Queries go over UDP with EDNS0 and the DO bit, and
// again over TCP when the answer is truncated. Trusts the resolver it asks (it must be a local validating resolver, as
// for Postfix's DANE); everything in the answer is bounds-checked, a malformed answer is an error.
import dgram from 'node:dgram';
import dns from 'node:dns';
import net from 'node:net';
import crypto from 'node:crypto';

export const DNS_TYPE = { A: 1, CNAME: 5, MX: 15, AAAA: 28, TLSA: 52 } as const;
export type DnsTypeName = keyof typeof DNS_TYPE;

export interface SecureAnswer {
  /** The resolver validated the answer (AD bit). */
  secure: boolean;
  /** NOERROR with records, NODATA (NOERROR, none of that type), NXDOMAIN; any other RCODE is thrown as an error. */
  status: 'ok' | 'nodata' | 'nxdomain';
  /** RDATA of the records of the asked type (in the answer section, owner name not checked beyond the type). */
  records: Buffer[];
}

export interface SecureResolver {
  query(name: string, type: DnsTypeName): Promise<SecureAnswer>;
}

const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];

/** The DNS query message: one question, recursion desired, EDNS0 OPT with a 1232-byte payload and the DO bit. */
export function encodeQuery(id: number, name: string, type: number): Buffer {
  const labels = name.replace(/\.$/, '').split('.').filter(Boolean);
  const qname: Buffer[] = [];
  for (const l of labels) {
    const b = Buffer.from(l, 'ascii');
    if (b.length > 63) throw new Error(`DNS label too long in ${name}`);
    qname.push(Buffer.from([b.length]), b);
  }
  qname.push(Buffer.from([0]));
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0120, 2); // RD, AD (ask for the AD bit, RFC 6840 5.7)
  header.writeUInt16BE(1, 4); // QDCOUNT
  header.writeUInt16BE(1, 10); // ARCOUNT (OPT)
  const q = Buffer.alloc(4);
  q.writeUInt16BE(type, 0);
  q.writeUInt16BE(1, 2); // IN
  // OPT RR: root name, type 41, class = UDP payload size, TTL = extended RCODE/version/flags (DO = 0x8000).
  const opt = Buffer.from([0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
  return Buffer.concat([header, ...qname, q, opt]);
}

/** Skip a (possibly compressed) name; returns the offset after it. */
function skipName(buf: Buffer, off: number): number {
  for (let hops = 0; hops < 128; hops++) {
    if (off >= buf.length) throw new Error('truncated DNS name');
    const len = buf[off]!;
    if (len === 0) return off + 1;
    if ((len & 0xc0) === 0xc0) {
      if (off + 2 > buf.length) throw new Error('truncated DNS name pointer');
      return off + 2;
    }
    if (len & 0xc0) throw new Error('bad DNS label type');
    off += 1 + len;
  }
  throw new Error('DNS name too long');
}

/** Read a (possibly compressed) name as text (for MX exchanges). */
export function readName(buf: Buffer, off: number): string {
  const labels: string[] = [];
  for (let hops = 0; hops < 128; hops++) {
    if (off >= buf.length) throw new Error('truncated DNS name');
    const len = buf[off]!;
    if (len === 0) return labels.join('.');
    if ((len & 0xc0) === 0xc0) {
      if (off + 2 > buf.length) throw new Error('truncated DNS name pointer');
      off = ((len & 0x3f) << 8) | buf[off + 1]!;
      continue;
    }
    if (len & 0xc0) throw new Error('bad DNS label type');
    if (off + 1 + len > buf.length) throw new Error('truncated DNS label');
    labels.push(buf.toString('latin1', off + 1, off + 1 + len));
    off += 1 + len;
  }
  throw new Error('DNS name loop');
}

export interface ParsedAnswer extends SecureAnswer {
  id: number;
  truncated: boolean;
  /** For MX: each record's offset in the message (names in RDATA may point elsewhere in it). */
  message: Buffer;
  offsets: number[];
}

/** Parse an answer to a query of `type`. Throws on a malformed message or an RCODE other than NOERROR/NXDOMAIN. */
export function parseAnswer(buf: Buffer, type: number): ParsedAnswer {
  if (buf.length < 12) throw new Error('DNS answer too short');
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  if (!(flags & 0x8000)) throw new Error('DNS message is not an answer');
  const truncated = Boolean(flags & 0x0200);
  const secure = Boolean(flags & 0x0020);
  const rcode = flags & 0x000f;
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6);
  let off = 12;
  for (let i = 0; i < qd; i++) off = skipName(buf, off) + 4;
  const records: Buffer[] = [];
  const offsets: number[] = [];
  for (let i = 0; i < an; i++) {
    off = skipName(buf, off);
    if (off + 10 > buf.length) throw new Error('truncated DNS record');
    const rtype = buf.readUInt16BE(off);
    const rdlen = buf.readUInt16BE(off + 8);
    off += 10;
    if (off + rdlen > buf.length) throw new Error('truncated DNS record data');
    if (rtype === type) {
      records.push(buf.subarray(off, off + rdlen));
      offsets.push(off);
    }
    off += rdlen;
  }
  if (rcode !== 0 && rcode !== 3) throw Object.assign(new Error(`DNS lookup failed: ${RCODES[rcode] ?? `RCODE ${rcode}`}`), { code: RCODES[rcode] ?? 'EDNS' });
  const status = rcode === 3 ? 'nxdomain' : records.length ? 'ok' : 'nodata';
  return { id, truncated, secure, status, records, message: buf, offsets };
}

/** Parse MX RDATA (preference, exchange) from a parsed answer. */
export function mxRecords(a: ParsedAnswer): { priority: number; exchange: string }[] {
  return a.offsets.map((o, i) => {
    if (a.records[i]!.length < 3) throw new Error('bad MX record');
    return { priority: a.message.readUInt16BE(o), exchange: readName(a.message, o + 2) };
  });
}

/** Resolver for SecureResolver: the first server of node:dns's configuration (/etc/resolv.conf) unless one is given. */
export class UdpSecureResolver implements SecureResolver {
  constructor(
    private readonly server: { host: string; port: number } = firstSystemServer(),
    private readonly timeoutMs = 5_000,
  ) {}

  /** True when the resolver is on this machine (loopback): only then is its AD bit worth trusting by default. */
  get local(): boolean {
    return net.isIP(this.server.host) !== 0 && (this.server.host.startsWith('127.') || this.server.host === '::1');
  }

  /** host, or host:port when not 53. */
  describe(): string {
    return this.server.port === 53 ? this.server.host : `${this.server.host}:${this.server.port}`;
  }

  /** The parsed answer (a ParsedAnswer: MX exchanges need the whole message). */
  async query(name: string, type: DnsTypeName): Promise<ParsedAnswer> {
    const id = crypto.randomInt(0, 0x10000);
    const q = encodeQuery(id, name, DNS_TYPE[type]);
    let a = parseAnswer(await this.udp(q, id), DNS_TYPE[type]);
    if (a.truncated) a = parseAnswer(await this.tcp(q), DNS_TYPE[type]);
    if (a.id !== id) throw new Error('DNS answer for another query');
    return a;
  }

  private udp(q: Buffer, id: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const sock = dgram.createSocket(net.isIPv6(this.server.host) ? 'udp6' : 'udp4');
      const done = (err: Error | undefined, buf?: Buffer) => {
        clearTimeout(timer);
        sock.close();
        if (err) reject(err);
        else resolve(buf!);
      };
      const timer = setTimeout(() => done(Object.assign(new Error('DNS lookup timed out'), { code: 'ETIMEOUT' })), this.timeoutMs);
      sock.on('error', (err) => done(err));
      sock.on('message', (msg, rinfo) => {
        // Only the server asked, with our query id (anything else is ignored, as a spoofing attempt would be).
        if (rinfo.port !== this.server.port || msg.length < 2 || msg.readUInt16BE(0) !== id) return;
        done(undefined, msg);
      });
      sock.send(q, this.server.port, this.server.host, (err) => err && done(err));
    });
  }

  private tcp(q: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const s = net.connect(this.server.port, this.server.host);
      const chunks: Buffer[] = [];
      let len = 0;
      const timer = setTimeout(() => s.destroy(Object.assign(new Error('DNS lookup timed out'), { code: 'ETIMEOUT' })), this.timeoutMs);
      s.on('connect', () => {
        const l = Buffer.alloc(2);
        l.writeUInt16BE(q.length);
        s.write(Buffer.concat([l, q]));
      });
      s.on('data', (d) => {
        chunks.push(d);
        len += d.length;
        const all = Buffer.concat(chunks, len);
        if (all.length >= 2 && all.length >= 2 + all.readUInt16BE(0)) {
          clearTimeout(timer);
          s.destroy();
          resolve(all.subarray(2, 2 + all.readUInt16BE(0)));
        }
      });
      s.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      s.on('close', () => {
        clearTimeout(timer);
        reject(new Error('DNS TCP connection closed before the answer'));
      });
    });
  }
}

function firstSystemServer(): { host: string; port: number } {
  const s = dns.getServers()[0] ?? '127.0.0.1';
  const m = /^\[(.+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  return m ? { host: m[1]!, port: Number(m[2]) } : { host: s, port: 53 };
}
