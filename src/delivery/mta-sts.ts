// MTA-STS (RFC 8461) for direct MX delivery: fetch and cache each domain's policy with mailauth, keep only the MX hosts an
// enforcing policy names, and require verified TLS to them. Trusts DNS and the policy host's WebPKI certificate.
import dns from 'node:dns/promises';
import { getPolicy, validateMx } from 'mailauth/lib/mta-sts.js';
import type { MTASTSPolicy } from 'mailauth';
import type { Logger } from '../observability/log.js';

export type TxtResolver = (name: string, type: string) => Promise<unknown>;

export interface StsDecision {
  mode: 'enforce' | 'testing' | 'none';
  /** Hosts allowed by the policy (all of them unless enforcing). */
  hosts: string[];
  /** Hosts the policy would refuse (enforce: removed; testing: only logged). */
  mismatched: string[];
}

export class MtaSts {
  private cache = new Map<string, MTASTSPolicy>();
  constructor(
    private readonly resolver: TxtResolver = (n, t) => dns.resolve(n, t as 'TXT'),
    private readonly log?: Logger,
  ) {}

  async policy(domain: string): Promise<MTASTSPolicy> {
    const known = this.cache.get(domain);
    if (known?.expires && new Date(known.expires).getTime() > Date.now()) return known;
    const res = await getPolicy(domain, known, { resolver: this.resolver as never });
    if (res.status === 'errored') this.log?.warn({ domain, error: String((res.policy as { error?: unknown }).error ?? '') }, 'MTA-STS policy lookup failed');
    // No policy (or an error without a previous one): ask again in 10 minutes, not for every message.
    if (!res.policy.expires) res.policy.expires = new Date(Date.now() + 600_000).toISOString();
    this.cache.set(domain, res.policy);
    return res.policy;
  }

  async decide(domain: string, hosts: string[]): Promise<StsDecision> {
    const p = await this.policy(domain);
    const mode = p.mode ?? 'none';
    if (mode === 'none') return { mode, hosts, mismatched: [] };
    const ok = hosts.filter((h) => validateMx(h, p).valid);
    const mismatched = hosts.filter((h) => !ok.includes(h));
    if (mode === 'testing') {
      if (mismatched.length) this.log?.warn({ domain, mismatched }, 'MTA-STS (testing): MX hosts not in the policy');
      return { mode, hosts, mismatched };
    }
    return { mode, hosts: ok, mismatched };
  }
}
