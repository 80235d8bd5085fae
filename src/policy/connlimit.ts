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

// --- Several processes (`[server] workers`): the same ceilings, held by the primary, lent to the workers in blocks. ---
//
// Asking the primary for every connection costs two IPC messages and a third to give the place back (~200 µs of CPU
// per connection over both processes, measured with one message per connection). Instead a worker is lent places for an
// address, a block at a time while the limits are far, one at a time near them; it admits connections from that address
// on its own while it holds a free place, and gives places back when it has more than a block free or none used for a
// moment. The ceilings stay exact: the primary counts every place lent as taken, and before refusing it recalls the
// free places the workers hold (the asking one included).

/** Places lent at once while the limits are far (and the most a worker keeps free for one address). */
export const LEASE_BLOCK = 8;

/** The primary's books: places lent to each worker, per address. */
export class LeaseLedger {
  private total = 0;
  private readonly perIp = new Map<string, number>();
  private readonly byWorker = new Map<number, Map<string, number>>();
  constructor(
    private readonly maxTotal: number,
    private readonly maxPerIp: number,
    private readonly workers: number,
  ) {}

  /** Lend places for `ip` to `worker`: how many (0 when a limit is reached). A block only while the limits are far. */
  lend(worker: number, ip: string): number {
    const room = Math.min(this.maxTotal - this.total, this.maxPerIp - (this.perIp.get(ip) ?? 0));
    if (room <= 0) return 0;
    const n = room >= LEASE_BLOCK * (this.workers + 1) ? LEASE_BLOCK : 1;
    this.total += n;
    this.perIp.set(ip, (this.perIp.get(ip) ?? 0) + n);
    let mine = this.byWorker.get(worker);
    if (!mine) this.byWorker.set(worker, (mine = new Map()));
    mine.set(ip, (mine.get(ip) ?? 0) + n);
    return n;
  }

  /** Places given back by a worker (never more than it was lent). */
  giveBack(worker: number, ip: string, n: number): void {
    const mine = this.byWorker.get(worker);
    const held = mine?.get(ip) ?? 0;
    const k = Math.min(n, held);
    if (k <= 0) return;
    if (held - k === 0) mine!.delete(ip);
    else mine!.set(ip, held - k);
    this.total -= k;
    const left = (this.perIp.get(ip) ?? 0) - k;
    if (left <= 0) this.perIp.delete(ip);
    else this.perIp.set(ip, left);
  }

  /** A worker is gone: everything lent to it comes back. */
  dropWorker(worker: number): void {
    for (const [ip, n] of this.byWorker.get(worker) ?? []) this.giveBack(worker, ip, n);
    this.byWorker.delete(worker);
  }

  /**
   * Where free places for a connection from `ip` could be found: the workers holding places for `ip` when the
   * per-address ceiling is the one reached (scope: that address), every holder when it is the overall one (scope
   * undefined: any address). The asking worker is among them: it may hold free places for other addresses.
   */
  holders(ip: string): { workers: number[]; scope: string | undefined } {
    const overall = this.total >= this.maxTotal;
    const workers = [...this.byWorker].filter(([, m]) => m.size > 0 && (overall || m.has(ip))).map(([w]) => w);
    return { workers, scope: overall ? undefined : ip };
  }

  /** Places lent out (all workers). */
  get size(): number {
    return this.total;
  }
}

/**
 * The primary's answer to a worker asking for places for `ip`: lent at once if a ceiling allows, otherwise after taking
 * back the free places the workers hold (`recall` asks one worker and settles when it has answered or is gone).
 */
export async function lendOrRecall(ledger: LeaseLedger, worker: number, ip: string, recall: (worker: number, scope: string | undefined) => Promise<void>): Promise<number> {
  const n = ledger.lend(worker, ip);
  if (n > 0) return n;
  const { workers, scope } = ledger.holders(ip);
  if (!workers.length) return 0;
  await Promise.all(workers.map((w) => recall(w, scope)));
  return ledger.lend(worker, ip);
}

/** How a worker's LeasedAdmission talks to the primary. */
export interface LeaseChannel {
  /** Ask for places for `ip`: how many were lent (0: refused). Rejects when the primary does not answer. */
  borrow(ip: string): Promise<number>;
  /** Give places back (unasked). */
  giveBack(returns: [ip: string, n: number][]): void;
}

/** How long a worker keeps free places for an address none of its connections uses any more. */
export const LEASE_IDLE_MS = 1_000;

interface Held {
  lent: number;
  used: number;
  idle?: NodeJS.Timeout;
}

/** A worker's side: admits from the places it holds, borrows when it has none free for that address. */
export class LeasedAdmission {
  private readonly held = new Map<string, Held>();
  constructor(private readonly channel: LeaseChannel) {}

  acquire(ip: string): (() => void) | undefined | Promise<(() => void) | undefined> {
    const h = this.held.get(ip);
    if (h && h.used < h.lent) return this.take(ip, h);
    return this.channel.borrow(ip).then((n) => {
      if (n <= 0) return undefined;
      let g = this.held.get(ip);
      if (!g) this.held.set(ip, (g = { lent: 0, used: 0 }));
      g.lent += n;
      return this.take(ip, g);
    });
  }

  private take(ip: string, h: Held): () => void {
    h.used++;
    if (h.idle) clearTimeout(h.idle);
    h.idle = undefined;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      h.used--;
      this.settle(ip, h);
    };
  }

  /** After a release: keep at most a block free; none used for LEASE_IDLE_MS, give everything back. */
  private settle(ip: string, h: Held): void {
    const extra = h.lent - h.used - LEASE_BLOCK;
    if (extra > 0) this.giveBack([[ip, this.shrink(ip, h, extra)]]);
    if (h.used === 0 && !h.idle) {
      h.idle = setTimeout(() => {
        h.idle = undefined;
        if (h.used === 0 && this.held.get(ip) === h) this.giveBack([[ip, this.shrink(ip, h, h.lent - h.used)]]);
      }, LEASE_IDLE_MS);
      h.idle.unref();
    }
  }

  private shrink(ip: string, h: Held, n: number): number {
    h.lent -= n;
    if (h.lent === 0 && h.used === 0) {
      if (h.idle) clearTimeout(h.idle);
      this.held.delete(ip);
    }
    return n;
  }

  private giveBack(returns: [string, number][]): void {
    const r = returns.filter(([, n]) => n > 0);
    if (r.length) this.channel.giveBack(r);
  }

  /** The primary needs places back: the free ones for `ip`, or every free one (ip undefined). Returned to the caller. */
  recall(ip?: string): [string, number][] {
    const out: [string, number][] = [];
    for (const [k, h] of [...this.held]) {
      if (ip !== undefined && k !== ip) continue;
      const free = h.lent - h.used;
      if (free > 0) out.push([k, this.shrink(k, h, free)]);
    }
    return out;
  }
}
