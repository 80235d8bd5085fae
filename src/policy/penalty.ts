// Brute-force defence: counts authentication failures per client network and per login, and says how long to delay
// a failure reply and when to refuse an address outright. Pure (injectable clock); no I/O, never sees a password.

export interface PenaltyOptions {
  /** Failures from one address (IPv4, or IPv6 /64) before failure replies start being delayed. */
  delayAfter: number;
  /** Failures from one address before it is refused without checking any password. */
  blockAfter: number;
  /** How long an address stays refused, ms. */
  blockMs: number;
  /** Failure counts decay completely after this long without a new failure, ms. */
  windowMs: number;
  /** First delay, ms; doubles with each further failure. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** Failures for one login (from any address) before its failure replies are delayed too. */
  loginDelayAfter: number;
}

export const DEFAULT_PENALTY: PenaltyOptions = {
  delayAfter: 5,
  blockAfter: 30,
  blockMs: 15 * 60_000,
  windowMs: 15 * 60_000,
  baseDelayMs: 250,
  maxDelayMs: 8_000,
  loginDelayAfter: 10,
};

interface Counter {
  failures: number;
  last: number;
  blockedUntil: number;
}

export type Admission = { allowed: true } | { allowed: false; retryAfterMs: number };

/** The network a penalty applies to: the IPv4 address, or the /64 of an IPv6 address (one customer's LAN). */
export function penaltyKey(address: string): string {
  let ip = address.split(';')[0].trim(); // saslauthd's "IP;port"
  if (ip.startsWith('::ffff:') && ip.includes('.')) ip = ip.slice(7);
  if (!ip.includes(':')) return ip;
  const [head, tail = ''] = ip.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = ip.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
  return `${groups.slice(0, 4).map((g) => parseInt(g || '0', 16).toString(16)).join(':')}::/64`;
}

export class PenaltyBox {
  private readonly byNet = new Map<string, Counter>();
  private readonly byLogin = new Map<string, Counter>();
  readonly stats = { blocked: 0, delayed: 0 };

  constructor(
    private readonly o: PenaltyOptions = DEFAULT_PENALTY,
    private readonly now: () => number = Date.now,
    private readonly maxEntries = 100_000,
  ) {}

  private get(map: Map<string, Counter>, key: string): Counter | undefined {
    const c = map.get(key);
    if (c && this.now() - c.last > this.o.windowMs && c.blockedUntil <= this.now()) {
      map.delete(key);
      return undefined;
    }
    return c;
  }

  private bump(map: Map<string, Counter>, key: string): Counter {
    const c = this.get(map, key) ?? { failures: 0, last: 0, blockedUntil: 0 };
    c.failures++;
    c.last = this.now();
    map.delete(key);
    map.set(key, c);
    if (map.size > this.maxEntries) map.delete(map.keys().next().value as string);
    return c;
  }

  /** Before checking a password: is this address refused? (No address known: always allowed.) */
  admit(address: string | undefined): Admission {
    if (!address) return { allowed: true };
    const c = this.get(this.byNet, penaltyKey(address));
    if (c && c.blockedUntil > this.now()) {
      this.stats.blocked++;
      return { allowed: false, retryAfterMs: c.blockedUntil - this.now() };
    }
    return { allowed: true };
  }

  /** After a wrong password: record it and return how long to hold the failure reply (ms). */
  failure(address: string | undefined, login: string): number {
    const l = this.bump(this.byLogin, login);
    let delay = 0;
    if (address) {
      const c = this.bump(this.byNet, penaltyKey(address));
      if (c.failures >= this.o.blockAfter) c.blockedUntil = this.now() + this.o.blockMs;
      if (c.failures > this.o.delayAfter) delay = this.delayFor(c.failures - this.o.delayAfter);
    }
    if (l.failures > this.o.loginDelayAfter) delay = Math.max(delay, this.delayFor(l.failures - this.o.loginDelayAfter));
    if (delay > 0) this.stats.delayed++;
    return delay;
  }

  /** After a success: the address's record is forgiven (a user who mistyped, then got it right). The login's is kept. */
  success(address: string | undefined): void {
    if (address) this.byNet.delete(penaltyKey(address));
  }

  private delayFor(excess: number): number {
    return Math.min(this.o.maxDelayMs, this.o.baseDelayMs * 2 ** Math.min(excess - 1, 20));
  }
}
