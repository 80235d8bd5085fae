// The delivery scheduler: picks due messages from the spool, routes each recipient, delivers (Maildir, LMTP, SMTP),
// records per-recipient results durably, retries with backoff, and queues DSNs. Trusts the spool; nothing from the network.
import fs from 'node:fs';
import net from 'node:net';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Logger } from '../observability/log.js';
import { parseAddress } from '../mail/address.js';
import type { MessageStatus, QueueEntry, Spool } from '../queue/spool.js';
import { DkimKeys, fromDomain, signMessage } from './dkim.js';
import { downgradeTo7bit } from '../mail/downgrade.js';
import { buildDsn, dsnEnvelope, wantsNotice, type DsnRecipient } from './dsn.js';
import { deliverMaildir } from './maildir.js';
import { lookupMx, systemResolver, type MxResolver } from './mx.js';
import { MtaSts } from './mta-sts.js';
import { UdpSecureResolver, type SecureResolver } from './dnssec.js';
import { daneFor, type DaneDecision } from './dane.js';
import { systemClock, type Clock, type DeliveryOptions } from './options.js';
import { local, type RcptResult } from './result.js';
import { createRouter, routeKey, type Route } from './routing.js';
import { closeIdleSessions, sendToHost, type SmtpSessionOptions } from './smtp-client.js';

export interface DeliveryHandle {
  /** Stop scheduling, wait for deliveries in progress. */
  stop(): Promise<void>;
  /** Retry now: one message (also from deferred/) or every deferred message. */
  flush(id?: string): Promise<void>;
  /** Run every delivery due at clock.now() and wait until they (and any they cause) are done. For tests and tools. */
  tick(): Promise<void>;
}

export interface StartDeliveryArgs {
  spool: Spool;
  options: DeliveryOptions;
  log: Logger;
  clock?: Clock;
  resolver?: MxResolver;
  /** DNSSEC-aware resolver for DANE (default: the system's first name server, see options.dane). */
  secureResolver?: SecureResolver;
  /** Told of each recipient's result at each attempt (for the metrics): delivered, deferred, or bounced (failed, expired). */
  onResult?: (result: DeliveryResult) => void;
}

/** A recipient's result at one attempt, as the facteur_deliveries_total metric counts it. */
export type DeliveryResult = 'sent' | 'deferred' | 'bounced';

/** MX hosts tried per attempt, in preference order. */
const MAX_HOSTS = 5;

/** Wait before attempt n+1 after n failed attempts: initial, doubled each time, capped. */
export function backoffMs(attempts: number, initialMs: number, maxMs: number): number {
  return Math.min(maxMs, initialMs * 2 ** Math.max(0, Math.min(30, attempts - 1)));
}

class Limiter {
  private active = 0;
  private waiting: (() => void)[] = [];
  constructor(private readonly max: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((r) => this.waiting.push(r));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

/** Write a flush request the running scheduler picks up (used by `facteur queue flush`). */
export async function requestFlush(controlDir: string, id?: string): Promise<string> {
  const file = path.join(controlDir, `flush-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`);
  await fsp.writeFile(`${file}.tmp`, id ?? '*', { mode: 0o600 });
  await fsp.rename(`${file}.tmp`, file);
  return file;
}

export function startDelivery(args: StartDeliveryArgs): DeliveryHandle {
  const { spool, options: o, log } = args;
  const clock = args.clock ?? systemClock;
  const resolver = args.resolver ?? systemResolver;
  const router = createRouter(o);
  const dkim = new DkimKeys(o.dkimDir);
  const sts = new MtaSts(
    resolver.resolve
      ? (n, t) => resolver.resolve!(n, t)
      : async (n) => {
          throw Object.assign(new Error(`ENOTFOUND ${n}`), { code: 'ENOTFOUND' });
        },
    log,
  );
  // DANE: with "auto", only a resolver on this machine is trusted to have validated (its AD bit); see dnssec.ts.
  let secure: SecureResolver | undefined;
  if (o.dane !== 'off') {
    if (args.secureResolver) secure = args.secureResolver;
    else if (!args.resolver) {
      // (A caller that injects its own MX resolver and no secure one has DANE off: the two must see the same DNS.)
      const udp = new UdpSecureResolver();
      if (o.dane === 'on' || udp.local) secure = udp;
      else log.info('DANE off: the system resolver is not on this machine, so its DNSSEC validation cannot be trusted ([delivery] dane = "on" trusts it anyway)');
    }
  }
  const due = new DueQueue();
  const inflight = new Map<string, Promise<void>>();
  const destinations = new Map<string, Limiter>();
  let stopping = false;
  let timer: NodeJS.Timeout | undefined;
  let scanTimer: NodeJS.Timeout | undefined;
  let watcher: fs.FSWatcher | undefined;
  const session: SmtpSessionOptions = {
    heloName: o.heloName,
    starttls: o.starttls,
    tlsVerify: o.tlsVerify,
    tlsCa: o.tlsCa,
    connectTimeoutMs: o.connectTimeoutMs,
    timeoutMs: o.timeoutMs,
    recipientsPerTransaction: o.recipientsPerTransaction,
  };

  const limiter = (key: string) => {
    let l = destinations.get(key);
    if (!l) destinations.set(key, (l = new Limiter(o.destinationConcurrency)));
    return l;
  };

  async function scan(): Promise<void> {
    const seen = new Set<string>();
    for (const id of await spool.ids('active')) {
      seen.add(id);
      if (!due.has(id)) due.set(id, 0);
    }
    for (const id of await spool.ids('deferred')) {
      seen.add(id);
      if (!due.has(id)) due.set(id, (await spool.readStatus(id))?.nextAttempt ?? 0);
    }
    for (const id of due.keys()) if (!seen.has(id) && !inflight.has(id)) due.delete(id);
    await readControl();
  }

  async function readControl(): Promise<void> {
    const dir = spool.dirOf('control');
    let names: string[];
    try {
      names = (await fsp.readdir(dir)).filter((f) => f.startsWith('flush-') && !f.endsWith('.tmp'));
    } catch {
      return;
    }
    for (const f of names) {
      const file = path.join(dir, f);
      const what = (await fsp.readFile(file, 'utf8').catch(() => '')).trim();
      await fsp.rm(file, { force: true });
      log.info({ request: what || '*' }, 'flush requested');
      await doFlush(what && what !== '*' ? what : undefined);
    }
  }

  async function doFlush(id?: string): Promise<void> {
    const ids = id ? [id] : await spool.ids('deferred');
    for (const x of ids) {
      if (!inflight.has(x) && (await spool.locate(x)) === 'deferred') await spool.move(x, 'deferred', 'active');
      if ((await spool.locate(x)) === 'active') due.set(x, 0);
    }
    if (!id) for (const x of await spool.ids('active')) due.set(x, 0);
  }

  function schedule(): void {
    if (stopping) return;
    if (timer) clearTimeout(timer);
    timer = undefined;
    const next = due.next();
    if (next === Infinity) return;
    const wait = Math.max(0, Math.min(next - clock.now(), o.scanIntervalMs, 2 ** 31 - 1));
    timer = setTimeout(() => {
      timer = undefined;
      pump();
    }, wait);
    timer.unref();
  }

  function pump(): void {
    if (stopping) return;
    const now = clock.now();
    const ready = due.take(now, o.concurrency - inflight.size, (id) => inflight.has(id));
    for (const id of ready) {
      const p = attempt(id)
        .catch((err: unknown) => {
          log.error({ err, id }, 'delivery attempt failed; retrying later');
          due.set(id, clock.now() + o.retryInitialMs);
        })
        .finally(() => {
          inflight.delete(id);
          due.unpark(id);
          pump();
        });
      inflight.set(id, p);
    }
    schedule();
  }

  async function deliverGroup(route: Route, entry: QueueEntry, rcpts: { index: number; address: string }[], message: Buffer, signed: () => Promise<Buffer>, sevenBit: () => Promise<Buffer | undefined>): Promise<RcptResult[]> {
    if (route.kind === 'error') return rcpts.map((r) => local(r.index, route.status[0] === '4' ? 'deferred' : 'failed', route.status, `${route.status[0] === '4' ? 451 : 550} ${route.status} ${route.text}`));
    if (route.kind === 'maildir') {
      const out: RcptResult[] = [];
      for (const r of rcpts) out.push(await deliverMaildir(o, r.index, r.address, entry.envelope.mailFrom, message));
      return out;
    }
    let hosts: ({ host: string; port: number; address?: string } | { path: string })[];
    let stsEnforced = false;
    /** Per host (same order as hosts), when DANE was looked up. */
    let dane: DaneDecision[] | undefined;
    /** The hosts are MX hosts (or the domain itself): their addresses are looked up here too. */
    let resolvedByUs = false;
    if (route.kind === 'mx' || (route.kind === 'smtp' && 'host' in route.hop && route.hop.mx)) {
      const domain = route.kind === 'mx' ? route.domain : (route.hop as { host: string }).host;
      const port = route.kind === 'mx' ? o.smtpPort : (route.hop as { port: number }).port;
      const mx = await lookupMx(domain, resolver);
      if (mx.kind === 'fail') return rcpts.map((r) => local(r.index, mx.permanent ? 'failed' : 'deferred', mx.status, `${mx.permanent ? 550 : 451} ${mx.status} ${mx.text}`));
      let names = mx.hosts;
      if (route.kind === 'mx' && o.mtaSts) {
        const d = await sts.decide(domain, names);
        if (d.mode === 'enforce') {
          if (!d.hosts.length) return rcpts.map((r) => local(r.index, 'deferred', '4.7.5', `451 4.7.5 no MX host of ${domain} (${d.mismatched.join(', ')}) matches its MTA-STS policy`));
          names = d.hosts;
          stsEnforced = true;
        }
      }
      names = names.slice(0, MAX_HOSTS); // the ones tried (and so the only ones whose TLSA records matter)
      hosts = names.map((host) => ({ host, port }));
      resolvedByUs = true;
      // DANE (RFC 7672) applies to MX hosts found through a validated MX lookup (or the domain itself, when a validated
      // answer says it has no MX).
      if (route.kind === 'mx' && secure) {
        const mxSecure = await secure.query(domain, 'MX').then(
          (a) => a.secure && a.status !== 'nxdomain',
          () => false,
        );
        if (mxSecure) dane = await Promise.all(names.map((h) => daneFor(secure!, h, port)));
      }
    } else {
      hosts = [route.hop as { host: string; port: number } | { path: string }];
    }
    const lmtp = route.kind === 'lmtp';
    const msg = lmtp ? message : await signed();
    const auth = route.kind === 'smtp' ? route.auth : undefined;
    const errors: string[] = [];
    for (const [i, h] of hosts.slice(0, MAX_HOSTS).entries()) {
      let hop = h;
      const d = dane?.[i];
      if (d?.kind === 'fail') {
        errors.push(d.text);
        continue;
      }
      // An MX host's address comes from the same resolver as the MX (and TLSA) records, as in Postfix; the name stays
      // for TLS. (nodemailer would otherwise ask its own resolver, built from /etc/resolv.conf.)
      if (resolvedByUs && 'host' in hop && !net.isIP(hop.host) && resolver.resolve) {
        const name = hop.host;
        const addrs = (await resolver.resolve(name, 'A').catch(() => resolver.resolve!(name, 'AAAA').catch(() => []))) as string[];
        if (addrs.length) hop = { ...hop, address: addrs[0] };
      }
      // DANE: the TLSA records decide (RFC 7672; they take precedence over MTA-STS for this host, RFC 8461 section 2).
      // MTA-STS enforce: STARTTLS required and the certificate verified against the MX name (RFC 8461 section 4.2).
      const sessionOpts =
        d?.kind === 'dane' ? { ...session, auth, dane: d.records } : stsEnforced ? { ...session, auth, starttls: 'require' as const, tlsVerify: true } : { ...session, auth };
      const out = await sendToHost({ hop, lmtp, envelope: entry.envelope, rcpts, message: msg, sevenBit: lmtp ? async () => downgradeTo7bit(message) : sevenBit }, sessionOpts);
      if (out.connected) return out.results;
      errors.push(out.error ?? 'connection failed');
    }
    // Every host refused for its security (DANE): 4.7.5, as for MTA-STS; otherwise a routing/connection problem.
    const status = errors.length && errors.every((e) => /DANE|TLSA/.test(e)) ? '4.7.5' : '4.4.1';
    return rcpts.map((r) => local(r.index, 'deferred', status, `451 ${status} ${errors.join('; ')}`));
  }

  async function attempt(id: string): Promise<void> {
    // One read of the queue file: envelope, bytes and (read beside it) the status of earlier attempts.
    const entry = await spool.load(id);
    if (!entry || entry.state === 'hold') return;
    let statusStored = entry.statusStored;
    const st: MessageStatus = entry.status;
    const env = entry.envelope;
    const pending = st.recipients.map((r, index) => ({ ...r, index })).filter((r) => r.state === 'pending' || r.state === 'deferred');
    const message = entry.message;
    // DKIM signature: once per attempt for the message as is, and once more for its 7-bit form if a server needs it.
    const sign = async (buf: Buffer): Promise<Buffer> => {
      if (!o.dkimSign) return buf;
      const d = fromDomain(buf) ?? parseAddress(env.mailFrom)?.domain ?? (env.mailFrom === '' ? o.hostname : undefined);
      const key = d ? await dkim.find(d) : undefined;
      if (!key) return buf;
      const s = await signMessage(buf, key);
      if (s.error) log.warn({ id, domain: d, error: s.error }, 'DKIM signing failed; sending unsigned');
      return s.error ? buf : s.message;
    };
    let signedP: Promise<Buffer> | undefined;
    const signed = () => (signedP ??= sign(message));
    let sevenBitP: Promise<Buffer | undefined> | undefined;
    const sevenBit = () =>
      (sevenBitP ??= (async () => {
        const down = downgradeTo7bit(message);
        return down && sign(down);
      })());
    // Group recipients by route.
    const groups = new Map<string, { route: Route; rcpts: { index: number; address: string }[] }>();
    const results: RcptResult[] = [];
    for (const r of pending) {
      const a = parseAddress(r.address);
      if (!a) {
        results.push(local(r.index, 'failed', '5.1.3', `550 5.1.3 Bad recipient address syntax`));
        continue;
      }
      const route = router.route(a.domain);
      const key = routeKey(route);
      const g = groups.get(key) ?? { route, rcpts: [] };
      g.rcpts.push({ index: r.index, address: r.address });
      groups.set(key, g);
    }
    const started = clock.now();
    const groupResults = await Promise.all(
      [...groups.entries()].map(([key, g]) =>
        limiter(key)
          .run(() => deliverGroup(g.route, entry, g.rcpts, message, signed, sevenBit))
          .catch((err: unknown) => g.rcpts.map((r) => local(r.index, 'deferred', '4.3.0', `451 4.3.0 local error: ${(err as Error).message}`))),
      ),
    );
    for (const g of groupResults) results.push(...g);
    const now = clock.now();
    st.attempts++;
    st.lastAttempt = now;
    for (const res of results) {
      const rs = st.recipients[res.index];
      rs.state = res.state;
      rs.status = res.status;
      rs.remoteMta = res.remoteMta;
      if (res.state !== 'delivered') rs.lastError = res.reply;
      if (res.state !== 'deferred') rs.finalAt = now;
      rs.diagnosticType = res.diagnosticType;
      if (res.state === 'delivered' && res.dsnPassedOn) rs.notified = 'success'; // the next hop reports success itself
      log.info({ id, to: rs.address, status: res.state, dsn: res.status, relay: res.remoteMta, delay: (now - env.receivedAt) / 1000, reply: res.reply }, `delivery ${res.state}`);
    }
    // Expiry: still deferred after max_lifetime → give up.
    for (const rs of st.recipients) {
      if (rs.state === 'deferred' && now - env.receivedAt >= o.maxLifetimeMs) {
        rs.state = 'failed';
        rs.finalAt = now;
        rs.status = '4.4.7';
        rs.lastError = `message expired after ${Math.round((now - env.receivedAt) / 3_600_000)}h; last error: ${rs.lastError ?? 'none'}`;
        log.info({ id, to: rs.address, status: 'expired' }, 'delivery expired');
      }
    }
    // Each recipient tried in this attempt, as it ends it (a deferral that expired counts as bounced).
    if (args.onResult) for (const res of results) {
      const state = st.recipients[res.index].state;
      args.onResult(state === 'delivered' ? 'sent' : state === 'failed' ? 'bounced' : 'deferred');
    }
    const deferred = st.recipients.filter((r) => r.state === 'deferred' || r.state === 'pending');
    st.nextAttempt = now + backoffMs(st.attempts, o.retryInitialMs, o.retryMaxMs);
    st.lastError = deferred[0]?.lastError;

    // Notices to send now.
    const notices: { kind: 'failure' | 'success' | 'delay'; idx: number }[] = [];
    st.recipients.forEach((rs, idx) => {
      if (rs.notified === 'failure' || rs.notified === 'success') return;
      const p = env.rcptTo[idx];
      if (rs.state === 'failed' && wantsNotice(env, p, 'failure')) notices.push({ kind: 'failure', idx });
      else if (rs.state === 'delivered' && wantsNotice(env, p, 'success')) notices.push({ kind: 'success', idx });
      else if (rs.state === 'deferred' && !rs.notified && o.delayWarningMs > 0 && now - env.receivedAt >= o.delayWarningMs && wantsNotice(env, p, 'delay'))
        notices.push({ kind: 'delay', idx });
    });

    const allFinal = deferred.length === 0;
    if (!(allFinal && notices.length === 0)) {
      await spool.writeStatus(id, st); // results first: never deliver twice
      statusStored = true;
    }
    if (notices.length) {
      for (const kind of ['failure', 'delay', 'success'] as const) {
        const these = notices.filter((n) => n.kind === kind);
        if (!these.length) continue;
        const rcpts: DsnRecipient[] = these.map(({ idx }) => {
          const rs = st.recipients[idx];
          const isRemote = rs.remoteMta && rs.remoteMta !== 'localhost';
          return {
            address: rs.address,
            orcpt: env.rcptTo[idx].orcpt,
            action: kind === 'failure' ? 'failed' : kind === 'delay' ? 'delayed' : isRemote ? 'relayed' : 'delivered',
            status: rs.status ?? (kind === 'success' ? '2.0.0' : '4.0.0'),
            diagnostic: kind === 'success' ? undefined : rs.lastError,
            diagnosticType: rs.diagnosticType,
            remoteMta: rs.remoteMta,
            lastAttempt: now,
            willRetryUntil: kind === 'delay' ? env.receivedAt + o.maxLifetimeMs : undefined,
          };
        });
        const dsn = buildDsn({ hostname: o.hostname, queueId: id, envelope: env, recipients: rcpts, original: message, sizeLimit: o.bounceSizeLimit, now });
        const dsnId = await spool.commit(dsnEnvelope(env, now), Readable.from([dsn]));
        log.info({ id, dsn: dsnId, kind, recipients: rcpts.length }, 'delivery status notification queued');
        for (const { idx } of these) st.recipients[idx].notified = kind;
      }
      if (!allFinal) await spool.writeStatus(id, st);
    }
    if (allFinal) {
      // Not waiting for the directory fsync of the unlink: see "Removal after delivery" in docs/design.md.
      await spool.remove(id, { state: entry.state, lazy: true, status: statusStored });
      log.info({ id, attempts: st.attempts, ms: now - started }, 'removed');
      return;
    }
    if (entry.state === 'active') await spool.move(id, 'active', 'deferred');
    if ((await spool.locate(id)) === 'deferred') due.set(id, st.nextAttempt);
  }

  spool.keepCommitted(); // the first attempt of a message committed by this process reads no file
  const unsubscribe = spool.onCommit((id) => {
    due.set(id, 0);
    pump();
  });

  const ready = (async () => {
    try {
      await scan();
    } catch (err) {
      log.error({ err }, 'queue scan failed');
    }
    // Stopped during the first scan: no watcher and no timer, which would outlive stop() (and keep a thread alive).
    if (stopping) return;
    try {
      watcher = fs.watch(spool.dirOf('control'), () => {
        void readControl()
          .then(() => pump())
          .catch(() => undefined);
      });
      watcher.on('error', () => undefined);
    } catch {
      /* polling through the scan timer is enough */
    }
    const rescan = () => {
      scanTimer = setTimeout(() => {
        void scan()
          .catch((err: unknown) => log.error({ err }, 'queue scan failed'))
          .then(() => {
            pump();
            if (!stopping) rescan();
          });
      }, o.scanIntervalMs);
      scanTimer.unref();
    };
    rescan();
    pump();
  })();

  async function drain(): Promise<void> {
    while (inflight.size) await Promise.all([...inflight.values()]);
  }

  return {
    async stop() {
      stopping = true;
      unsubscribe();
      spool.keepCommitted(false);
      if (timer) clearTimeout(timer);
      if (scanTimer) clearTimeout(scanTimer);
      watcher?.close();
      await ready;
      await drain();
      closeIdleSessions();
    },
    async flush(id?: string) {
      await ready;
      await doFlush(id);
      pump();
    },
    async tick() {
      await ready;
      await scan();
      pump();
      await drain();
    },
  };
}

/**
 * Messages waiting for an attempt and when each is due: a map (the truth) plus a binary min-heap of (time, id) with
 * lazy deletion, so picking the next due messages and the next wake-up time cost O(log n) per message instead of a
 * pass over the whole queue after every attempt (a drain of Q queued messages was O(Q²)).
 */
export class DueQueue {
  private readonly at = new Map<string, number>();
  private heap: { t: number; id: string }[] = [];
  /** Due but found in flight by take(): back in the heap when that attempt ends (unpark). */
  private readonly parked = new Set<string>();

  get size(): number {
    return this.at.size;
  }
  has(id: string): boolean {
    return this.at.has(id);
  }
  get(id: string): number | undefined {
    return this.at.get(id);
  }
  keys(): IterableIterator<string> {
    return this.at.keys();
  }
  set(id: string, t: number): void {
    this.at.set(id, t);
    this.parked.delete(id);
    this.push({ t, id });
    if (this.heap.length > 64 + 2 * this.at.size) this.rebuild();
  }
  delete(id: string): void {
    this.at.delete(id);
    this.parked.delete(id);
  }
  /** The earliest due time of a message not parked, or Infinity. */
  next(): number {
    this.dropStale();
    return this.heap[0]?.t ?? Infinity;
  }
  /** Remove and return up to `free` ids due by `now`, earliest first; ids that are `busy` stay queued (parked). */
  take(now: number, free: number, busy: (id: string) => boolean): string[] {
    const out: string[] = [];
    while (out.length < free) {
      this.dropStale();
      const top = this.heap[0];
      if (!top || top.t > now) break;
      this.pop();
      if (busy(top.id)) this.parked.add(top.id);
      else {
        this.at.delete(top.id);
        out.push(top.id);
      }
    }
    return out;
  }
  /** An attempt of `id` ended: if it became due again meanwhile, it can be taken again. */
  unpark(id: string): void {
    if (!this.parked.delete(id)) return;
    const t = this.at.get(id);
    if (t !== undefined) this.push({ t, id });
  }

  private stale(e: { t: number; id: string }): boolean {
    return this.at.get(e.id) !== e.t || this.parked.has(e.id);
  }
  private dropStale(): void {
    while (this.heap.length && this.stale(this.heap[0])) this.pop();
  }
  private rebuild(): void {
    this.heap = [];
    for (const [id, t] of this.at) if (!this.parked.has(id)) this.push({ t, id });
  }
  private push(e: { t: number; id: string }): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p].t <= e.t) break;
      h[i] = h[p];
      i = p;
    }
    h[i] = e;
  }
  private pop(): void {
    const h = this.heap;
    const last = h.pop()!;
    if (!h.length) return;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const c = l + 1 < h.length && h[l + 1].t < h[l].t ? l + 1 : l;
      if (h[c].t >= last.t) break;
      h[i] = h[c];
      i = c;
    }
    h[i] = last;
  }
}
