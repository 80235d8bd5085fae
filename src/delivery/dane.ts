// DANE for SMTP (RFC 7672): TLSA records, published under DNSSEC for an MX host, say which certificate or key its
// STARTTLS must present. When they apply, TLS is mandatory and the certificate must match one of them; otherwise the
// message waits (4.7.5) rather than going out to a host that could be an impostor. Only DANE-TA(2) and DANE-EE(3) are
// usable for SMTP (RFC 7672 section 3.1.3); PKIX usages 0 and 1 are ignored.
// Trusts the validating resolver's AD bit (see dnssec.ts); certificates come from the network and are only compared.
import crypto from 'node:crypto';
import type { SecureResolver } from './dnssec.js';

export interface Tlsa {
  usage: number;
  selector: number;
  mtype: number;
  data: Buffer;
}

/** What DANE says for one MX host. */
export type DaneDecision =
  /** No secure TLSA records: the host is treated as without DANE (the configured opportunistic TLS applies). */
  | { kind: 'none' }
  /** Secure TLSA records: STARTTLS required; the certificate must match one of `records` (none usable: TLS only). */
  | { kind: 'dane'; records: Tlsa[] }
  /** The TLSA lookup failed: this host must not be used now (an attacker could be hiding its records). */
  | { kind: 'fail'; text: string };

export function parseTlsa(rdata: Buffer): Tlsa | undefined {
  if (rdata.length < 4) return undefined;
  return { usage: rdata[0]!, selector: rdata[1]!, mtype: rdata[2]!, data: Buffer.from(rdata.subarray(3)) };
}

/** Usable for SMTP: DANE-TA(2) or DANE-EE(3), selector full certificate(0) or SPKI(1), matching exact(0), SHA-256(1), SHA-512(2). */
export function usable(t: Tlsa): boolean {
  return (t.usage === 2 || t.usage === 3) && (t.selector === 0 || t.selector === 1) && (t.mtype === 0 || t.mtype === 1 || t.mtype === 2);
}

/** TLSA records of `host` for SMTP on `port`, as DANE applies them (the MX lookup must have been secure). */
export async function daneFor(resolver: SecureResolver, host: string, port: number): Promise<DaneDecision> {
  let a;
  try {
    a = await resolver.query(`_${port}._tcp.${host}`, 'TLSA');
  } catch (err) {
    return { kind: 'fail', text: `TLSA lookup for ${host} failed (${(err as Error).message})` };
  }
  if (!a.secure || a.status !== 'ok') return { kind: 'none' };
  const records = a.records.map(parseTlsa).filter((t): t is Tlsa => !!t);
  return { kind: 'dane', records: records.filter(usable) };
}

function selected(cert: crypto.X509Certificate, selector: number): Buffer {
  return selector === 0 ? cert.raw : (cert.publicKey.export({ type: 'spki', format: 'der' }) as Buffer);
}

function matches(t: Tlsa, cert: crypto.X509Certificate): boolean {
  const data = selected(cert, t.selector);
  const digest = t.mtype === 0 ? data : crypto.createHash(t.mtype === 1 ? 'sha256' : 'sha512').update(data).digest();
  return digest.length === t.data.length && crypto.timingSafeEqual(digest, t.data);
}

/**
 * Does the chain the server presented (leaf first) satisfy the TLSA records? DANE-EE: the leaf matches (no name or date
 * checks, RFC 7672 3.1.1). DANE-TA: a certificate of the chain above the leaf matches, every link up to it is signed by
 * the next, the leaf is valid now and names `host` (RFC 7672 3.1.2). Returns why not, or undefined when it does.
 */
export function checkChain(records: Tlsa[], chain: crypto.X509Certificate[], host: string, now = new Date()): string | undefined {
  const leaf = chain[0];
  if (!leaf) return 'no certificate presented';
  if (records.some((t) => t.usage === 3 && matches(t, leaf))) return undefined;
  for (const t of records.filter((r) => r.usage === 2)) {
    for (let i = 1; i < chain.length; i++) {
      if (!matches(t, chain[i]!)) continue;
      let linked = true;
      for (let k = 0; k < i && linked; k++) linked = chain[k]!.checkIssued(chain[k + 1]!) && chain[k]!.verify(chain[k + 1]!.publicKey);
      if (!linked) continue;
      if (now < new Date(leaf.validFrom) || now > new Date(leaf.validTo)) return `certificate of ${host} is outside its validity dates`;
      if (!leaf.checkHost(host, { subject: 'default' })) return `certificate of ${host} does not name it (DANE-TA)`;
      return undefined;
    }
  }
  return `certificate of ${host} matches none of its ${records.length} TLSA records`;
}
