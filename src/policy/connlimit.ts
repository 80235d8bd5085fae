// Connection admission: a ceiling on simultaneous connections overall and per client address.
// Pure counters; trusts the address the socket reports.

export class ConnectionLimiter {
  private total = 0;
  private readonly perIp = new Map<string, number>();
  constructor(
    private readonly maxTotal: number,
    private readonly maxPerIp: number,
  ) {}

  /** Try to admit a connection; returns a release function, or undefined when a limit is reached. */
  acquire(ip: string): (() => void) | undefined {
    const n = this.perIp.get(ip) ?? 0;
    if (this.total >= this.maxTotal || n >= this.maxPerIp) return undefined;
    this.total++;
    this.perIp.set(ip, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.total--;
      const m = (this.perIp.get(ip) ?? 1) - 1;
      if (m <= 0) this.perIp.delete(ip);
      else this.perIp.set(ip, m);
    };
  }

  get size(): number {
    return this.total;
  }
}
