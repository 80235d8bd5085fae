// MX lookup for direct delivery: MX records by preference, implicit MX (A/AAAA) when there are none, null MX (RFC 7505).
// Trusts the DNS resolver it is given (node:dns by default); domains are untrusted and checked first.
import dns from 'node:dns/promises';
import net from 'node:net';
import url from 'node:url';

export interface MxResolver {
  resolveMx(domain: string): Promise<{ exchange: string; priority: number }[]>;
  /** Other record types (TXT, A, AAAA) for MTA-STS; an injected resolver without it answers "not found". */
  resolve?(name: string, type: string): Promise<unknown>;
}

export type MxLookup =
  | { kind: 'hosts'; hosts: string[] }
  | { kind: 'fail'; permanent: boolean; status: string; text: string };

export const systemResolver: MxResolver = { resolveMx: (d) => dns.resolveMx(d), resolve: (n, t) => dns.resolve(n, t as 'TXT') };

export async function lookupMx(domain: string, resolver: MxResolver = systemResolver): Promise<MxLookup> {
  const lit = /^\[(?:ipv6:)?([^\]]+)\]$/i.exec(domain);
  if (lit) {
    if (net.isIP(lit[1])) return { kind: 'hosts', hosts: [lit[1]] };
    return { kind: 'fail', permanent: true, status: '5.1.2', text: `bad address literal ${domain}` };
  }
  // Internationalized domains (SMTPUTF8 mail) are looked up in their A-label form.
  if (/[^\x00-\x7f]/.test(domain)) domain = url.domainToASCII(domain) || domain;
  if (!/^[a-z0-9-]+(\.[a-z0-9-]+)*$/i.test(domain) || domain.length > 253) {
    return { kind: 'fail', permanent: true, status: '5.1.2', text: `bad destination domain ${JSON.stringify(domain)}` };
  }
  let records: { exchange: string; priority: number }[];
  try {
    records = await resolver.resolveMx(domain);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENODATA') return { kind: 'hosts', hosts: [domain] };
    if (code === 'ENOTFOUND') return { kind: 'fail', permanent: true, status: '5.1.2', text: `Host or domain name not found: ${domain} (MX lookup: NXDOMAIN)` };
    return { kind: 'fail', permanent: false, status: '4.4.3', text: `Host or domain name lookup for ${domain} failed temporarily (${code ?? 'error'})` };
  }
  if (records.length === 0) return { kind: 'hosts', hosts: [domain] };
  // RFC 7505: a single MX with an empty (root) exchange means the domain accepts no mail.
  if (records.some((r) => r.exchange === '' || r.exchange === '.')) {
    return { kind: 'fail', permanent: true, status: '5.1.10', text: `Domain ${domain} does not accept mail (null MX, RFC 7505)` };
  }
  const sorted = [...records].sort((a, b) => a.priority - b.priority || (Math.random() < 0.5 ? -1 : 1));
  return { kind: 'hosts', hosts: [...new Set(sorted.map((r) => r.exchange.replace(/\.$/, '').toLowerCase()))] };
}
