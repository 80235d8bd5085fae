// Rate limits: messages and recipients per authenticated user per hour, connections per client network per minute,
// counted by GCRA in a pluggable store (memory, or Redis shared by several nodes). Trusts its store; never sees message content.
import crypto from 'node:crypto';
import { Redis } from 'ioredis';
import { ConfigError } from '../lib/errors.js';
import { SmtpReply } from '../mail/reply.js';
import { defineSection, type SectionValues } from '../config/schema.js';
import { durationMs } from '../config/load.js';
import { penaltyKey } from './penalty.js';
import type { Logger } from '../observability/log.js';
import type { FacteurMetrics } from '../observability/metrics.js';

/*
 * Why GCRA (the generic cell rate algorithm, a token bucket written as one timestamp):
 * - one number per key (the "theoretical arrival time"), so memory is tiny and a Redis update is one GET + one SET;
 * - exact at every instant: no burst of 2x the limit across a fixed-window boundary, no per-event log as in a sliding log;
 * - a cost per hit (several recipients at once) comes for free;
 * - a refused hit consumes nothing, so a client hammering a limit does not push its own reset further away.
 * `limit` events may arrive in a burst; after that they are admitted at the steady rate limit/window.
 */

export interface RateResult {
  allowed: boolean;
  /** Hits still allowed right now (after this one, when allowed). */
  remaining: number;
  /** When refused: ms until this hit would be allowed; 0 when allowed. */
  retryAfterMs: number;
}

/** Where counters live. `hit` records `cost` events under `key` if that keeps the key within `limit` per `windowMs`. */
export interface RateStore {
  hit(key: string, cost: number, windowMs: number, limit: number): Promise<RateResult>;
  close?(): Promise<void>;
}

const EPS = 1e-9;

function checkArgs(cost: number, windowMs: number, limit: number): void {
  if (!(Number.isFinite(cost) && cost >= 0 && Number.isFinite(windowMs) && windowMs > 0 && Number.isInteger(limit) && limit >= 1)) {
    throw new RangeError(`rate limit arguments out of range (cost ${cost}, window ${windowMs} ms, limit ${limit})`);
  }
}

/** The GCRA step, shared (as arithmetic) with the Redis script below. `tat` is the stored arrival time, or undefined. */
export function gcra(now: number, tat: number | undefined, cost: number, windowMs: number, limit: number): RateResult & { tat: number } {
  const interval = windowMs / limit;
  const base = tat === undefined || tat < now ? now : tat;
  const next = base + cost * interval;
  if (next - now > windowMs + EPS) {
    return { allowed: false, remaining: Math.max(0, Math.floor((windowMs - (base - now)) / interval + EPS)), retryAfterMs: Math.ceil(next - now - windowMs), tat: base };
  }
  return { allowed: true, remaining: Math.max(0, Math.floor((windowMs - (next - now)) / interval + EPS)), retryAfterMs: 0, tat: next };
}

/** One process's counters, with at most `maxEntries` keys (expired ones are dropped first, then the least recently hit). */
export class MemoryRateStore implements RateStore {
  private readonly tats = new Map<string, number>();

  constructor(
    private readonly now: () => number = Date.now,
    private readonly maxEntries = 100_000,
  ) {}

  async hit(key: string, cost: number, windowMs: number, limit: number): Promise<RateResult> {
    checkArgs(cost, windowMs, limit);
    const now = this.now();
    const r = gcra(now, this.tats.get(key), cost, windowMs, limit);
    if (r.allowed) {
      this.tats.delete(key); // re-insert: the Map's order is then least recently hit first
      this.tats.set(key, r.tat);
      if (this.tats.size > this.maxEntries) this.evict(now);
    }
    return { allowed: r.allowed, remaining: r.remaining, retryAfterMs: r.retryAfterMs };
  }

  private evict(now: number): void {
    for (const [k, tat] of this.tats) {
      if (this.tats.size <= this.maxEntries) return;
      if (tat <= now) this.tats.delete(k);
    }
    for (const k of this.tats.keys()) {
      if (this.tats.size <= this.maxEntries) return;
      this.tats.delete(k);
    }
  }

  get size(): number {
    return this.tats.size;
  }
}

/**
 * GCRA in one atomic Lua script. Time comes from the Redis server (TIME), so nodes with skewed clocks still agree.
 * KEYS[1] = counter key; ARGV = cost, windowMs, limit. Returns {allowed 0/1, remaining, retryAfterMs}.
 */
export const GCRA_LUA = `
local cost = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = window / limit
local stored = redis.call('GET', KEYS[1])
local base = now
if stored then
  local v = tonumber(stored)
  if v and v > now then base = v end
end
local nxt = base + cost * interval
if nxt - now > window + 1e-9 then
  local rem = math.floor((window - (base - now)) / interval + 1e-9)
  if rem < 0 then rem = 0 end
  return {0, rem, math.ceil(nxt - now - window)}
end
redis.call('SET', KEYS[1], string.format('%.3f', nxt), 'PX', math.max(1, math.ceil(nxt - now)))
local rem = math.floor((window - (nxt - now)) / interval + 1e-9)
if rem < 0 then rem = 0 end
return {1, rem, 0}
`;
const GCRA_SHA = crypto.createHash('sha1').update(GCRA_LUA).digest('hex');

export interface RedisRateStoreOptions {
  /** redis://[:password@]host:port/db or rediss:// for TLS. Never logged (it may carry a password). */
  url?: string;
  /** An existing ioredis client (not closed by `close()`); overrides `url`. */
  client?: Redis;
  /** Longest wait for one hit, ms; longer is a store error (the limiter's fail policy applies). */
  timeoutMs?: number;
  /** Called with connection errors; the message never includes the URL. */
  onError?: (err: Error) => void;
}

/** Counters in Redis, shared by every facteur node pointed at the same server: one EVALSHA round trip per hit. */
export class RedisRateStore implements RateStore {
  readonly client: Redis;
  private readonly owned: boolean;
  private readonly timeoutMs: number;
  private readyWait: Promise<void> | undefined;

  constructor(o: RedisRateStoreOptions) {
    this.timeoutMs = o.timeoutMs ?? 250;
    if (o.client) {
      this.client = o.client;
      this.owned = false;
    } else {
      if (!o.url) throw new ConfigError('ratelimit.redis_url: empty; give redis://host:6379 (or leave it empty for in-memory limits)');
      if (!/^rediss?:\/\//.test(o.url)) throw new ConfigError('ratelimit.redis_url: must start with redis:// or rediss:// (e.g. redis://127.0.0.1:6379/0)');
      this.client = new Redis(o.url, {
        // Fail fast while disconnected instead of queueing: a hit must answer within timeoutMs either way.
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        connectTimeout: 2_000,
        disconnectTimeout: 200, // at close, a dead stream would otherwise hold the process for 2 s
        retryStrategy: (times) => Math.min(times * 200, 5_000),
        lazyConnect: false,
      });
      this.owned = true;
    }
    // Without a listener ioredis prints every reconnect failure to the console.
    this.client.on('error', (err: Error) => o.onError?.(err));
  }

  async hit(key: string, cost: number, windowMs: number, limit: number): Promise<RateResult> {
    checkArgs(cost, windowMs, limit);
    const args = [String(cost), String(windowMs), String(limit)];
    const run = async (): Promise<unknown> => {
      await this.ready();
      try {
        return await this.client.evalsha(GCRA_SHA, 1, key, ...args);
      } catch (err) {
        if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
        return this.client.eval(GCRA_LUA, 1, key, ...args); // first use on this server, or after SCRIPT FLUSH / restart
      }
    };
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`rate limit store did not answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      timer.unref();
    });
    try {
      const r = (await Promise.race([run(), deadline])) as [number, number, number];
      if (!Array.isArray(r) || r.length !== 3) throw new Error('rate limit store returned an unexpected reply');
      return { allowed: r[0] === 1, remaining: Number(r[1]), retryAfterMs: Number(r[2]) };
    } finally {
      clearTimeout(timer);
    }
  }

  /** Connected: go on. (Re)connecting right now: wait for it (the hit's deadline still applies). Down between retries: fail now. */
  private async ready(): Promise<void> {
    const st = this.client.status;
    if (st === 'ready') return;
    if (st !== 'wait' && st !== 'connecting' && st !== 'connect') throw new Error(`rate limit store not connected (${st})`);
    if (st === 'wait') void this.client.connect().catch(() => undefined);
    // One waiter per connection attempt, however many hits arrive meanwhile.
    this.readyWait ??= new Promise<void>((resolve, reject) => {
      const onReady = (): void => {
        this.client.off('close', onClose);
        resolve();
      };
      const onClose = (): void => {
        this.client.off('ready', onReady);
        reject(new Error('rate limit store connection closed'));
      };
      this.client.once('ready', onReady);
      this.client.once('close', onClose);
    }).finally(() => {
      this.readyWait = undefined;
    });
    await this.readyWait;
  }

  async close(): Promise<void> {
    if (!this.owned) return;
    if (this.client.status !== 'ready') {
      this.client.disconnect(); // also cancels a pending reconnection
      return;
    }
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }
}

export type LimitName = 'messages' | 'recipients' | 'connections';

/** Events allowed per window; 0 turns a limit off. */
export interface RateLimits {
  messagesPerUserPerHour: number;
  recipientsPerUserPerHour: number;
  connectionsPerIpPerMinute: number;
}

export const DEFAULT_RATE_LIMITS: RateLimits = { messagesPerUserPerHour: 200, recipientsPerUserPerHour: 1000, connectionsPerIpPerMinute: 60 };

export interface RateDecision {
  allowed: boolean;
  limit: LimitName;
  remaining: number;
  retryAfterMs: number;
  /** The store failed and the fail policy decided. */
  degraded: boolean;
}

/** What to do when the store cannot answer: allow (default: an outage of the limit store must not stop mail) or deny (4xx). */
export type FailPolicy = 'allow' | 'deny';

export interface RateLimiterOptions {
  failPolicy?: FailPolicy;
  log?: Pick<Logger, 'warn'>;
  metrics?: Pick<FacteurMetrics, 'rateLimitRefusals' | 'rateLimitStoreErrors'>;
  /** Prefix of every store key (lets several deployments share one Redis). */
  keyPrefix?: string;
  /** Minimum ms between two "store unavailable" log lines (the others are counted). */
  logEveryMs?: number;
  now?: () => number;
}

const HOUR = 3_600_000;
const MINUTE = 60_000;

/** The subject part of a key: logins compared case-insensitively; odd or long values hashed so keys stay short and printable. */
export function subjectKey(subject: string): string {
  const s = subject.trim().toLowerCase();
  if (/^[\x21-\x7e]{1,200}$/.test(s)) return s;
  return `sha256:${crypto.createHash('sha256').update(s).digest('hex')}`;
}

export class RateLimiter {
  private limits: RateLimits;
  private readonly failPolicy: FailPolicy;
  private readonly prefix: string;
  private lastLog = -Infinity;
  private suppressed = 0;

  constructor(
    private readonly store: RateStore,
    limits: Partial<RateLimits> = {},
    private readonly o: RateLimiterOptions = {},
  ) {
    this.limits = validLimits({ ...DEFAULT_RATE_LIMITS, ...limits });
    this.failPolicy = o.failPolicy ?? 'allow';
    this.prefix = o.keyPrefix ?? 'facteur:rl:';
  }

  /** New limits (SIGHUP). Counters are kept as GCRA keeps them: the time each key is busy until; new hits use the new rate. */
  update(limits: Partial<RateLimits>): void {
    this.limits = validLimits({ ...this.limits, ...limits });
  }

  get current(): Readonly<RateLimits> {
    return this.limits;
  }

  /** At connect time, before the greeting: the client's IPv4 address or IPv6 /64. Refusal → 421 4.7.0 and close. */
  connection(ip: string): Promise<RateDecision> {
    return this.check('connections', `conn:${penaltyKey(ip)}`, 1, MINUTE, this.limits.connectionsPerIpPerMinute);
  }

  /** At MAIL FROM, for an authenticated user. Refusal → 450 4.7.1. */
  message(user: string): Promise<RateDecision> {
    return this.check('messages', `msg:${subjectKey(user)}`, 1, HOUR, this.limits.messagesPerUserPerHour);
  }

  /** At each RCPT TO (count 1), for an authenticated user. Refusal → 450 4.7.1 for that recipient. */
  recipients(user: string, count = 1): Promise<RateDecision> {
    return this.check('recipients', `rcpt:${subjectKey(user)}`, count, HOUR, this.limits.recipientsPerUserPerHour);
  }

  private async check(limit: LimitName, key: string, cost: number, windowMs: number, max: number): Promise<RateDecision> {
    if (max <= 0) return { allowed: true, limit, remaining: Infinity, retryAfterMs: 0, degraded: false };
    let r: RateResult;
    try {
      r = await this.store.hit(this.prefix + key, cost, windowMs, max);
    } catch (err) {
      this.o.metrics?.rateLimitStoreErrors.inc();
      this.logStoreError(err, limit);
      const allowed = this.failPolicy === 'allow';
      if (!allowed) this.o.metrics?.rateLimitRefusals.inc({ limit });
      return { allowed, limit, remaining: 0, retryAfterMs: allowed ? 0 : MINUTE, degraded: true };
    }
    if (!r.allowed) this.o.metrics?.rateLimitRefusals.inc({ limit });
    return { ...r, limit, degraded: false };
  }

  private logStoreError(err: unknown, limit: LimitName): void {
    const now = (this.o.now ?? Date.now)();
    if (now - this.lastLog < (this.o.logEveryMs ?? 30_000)) {
      this.suppressed++;
      return;
    }
    this.o.log?.warn(
      { limit, failPolicy: this.failPolicy, suppressed: this.suppressed, error: err instanceof Error ? err.message : String(err) },
      `rate limit store unavailable: ${this.failPolicy === 'allow' ? 'allowing' : 'refusing with 4xx'} until it answers again`,
    );
    this.lastLog = now;
    this.suppressed = 0;
  }
}

function validLimits(l: RateLimits): RateLimits {
  for (const [k, v] of Object.entries(l)) {
    if (!Number.isInteger(v) || v < 0) throw new ConfigError(`rate limit ${k}: must be a whole number >= 0 (0 turns it off), got ${String(v)}`);
  }
  return l;
}

/**
 * The SMTP reply for a decision, or undefined when it allows. The SMTP adapter sends it as is:
 * connections → 421 (then closes), messages and recipients → 450 (the client retries later).
 */
export function rateLimitReply(d: RateDecision): SmtpReply | undefined {
  if (d.allowed) return undefined;
  if (d.degraded) {
    return d.limit === 'connections'
      ? SmtpReply.temp('4.3.0', 'Rate limit service unavailable, try again later', 421)
      : SmtpReply.temp('4.3.0', 'Rate limit service unavailable, try again later', 451);
  }
  const wait = `try again in ${Math.max(1, Math.ceil(d.retryAfterMs / 1000))} seconds`;
  switch (d.limit) {
    case 'connections':
      return SmtpReply.temp('4.7.0', `Too many connections from your address, ${wait}`, 421);
    case 'messages':
      return SmtpReply.temp('4.7.1', `Message rate limit exceeded, ${wait}`, 450);
    case 'recipients':
      return SmtpReply.temp('4.7.1', `Recipient rate limit exceeded, ${wait}`, 450);
  }
}

/** Configuration of rate limits (a file in src/config/sections/ re-exports it). */
export const ratelimit = defineSection('ratelimit', 'Rate limits per user and per client address, in memory or shared through Redis', {
  messages_per_user_per_hour: { type: 'integer', default: 200, doc: 'Messages (MAIL FROM) an authenticated user may start per hour; more get 450 4.7.1; 0: no limit', check: nonNegative },
  recipients_per_user_per_hour: { type: 'integer', default: 1000, doc: 'Recipients (RCPT TO) an authenticated user may give per hour; more get 450 4.7.1; 0: no limit', check: nonNegative },
  connections_per_ip_per_minute: { type: 'integer', default: 60, doc: 'Connections per minute from one IPv4 address or IPv6 /64; more get 421 4.7.0; 0: no limit', check: nonNegative },
  redis_url: { type: 'string', default: '', doc: 'Share limits between facteur nodes through Redis (redis://host:6379/0, rediss:// for TLS); empty: in memory, per process', check: (v: unknown) => (v === '' || /^rediss?:\/\//.test(v as string) ? undefined : 'must start with redis:// or rediss:// (or be empty for in-memory limits)') },
  redis_timeout: { type: 'duration', default: '250ms', doc: 'Longest wait for Redis on one check; longer counts as Redis unavailable' },
  on_store_error: { type: 'string', default: 'allow', oneOf: ['allow', 'deny'], doc: 'Redis unavailable: allow (and log; mail keeps flowing) or deny (451/421 4.3.0 until it is back)' },
});

function nonNegative(v: unknown): string | undefined {
  return (v as number) >= 0 ? undefined : 'must be 0 (no limit) or more';
}

/** Build the limiter a config section describes. Call `close()` at shutdown. */
export function rateLimiterFromConfig(
  c: SectionValues<typeof ratelimit.params>,
  deps: { log?: Pick<Logger, 'warn'>; metrics?: RateLimiterOptions['metrics']; memoryStore?: RateStore } = {},
): { limiter: RateLimiter; store: RateStore; close: () => Promise<void> } {
  // memoryStore: where "in memory" counters live instead of this process (a multi-process server's primary, over IPC).
  const store: RateStore = c.redis_url
    ? new RedisRateStore({ url: c.redis_url, timeoutMs: durationMs(c.redis_timeout), onError: () => undefined })
    : (deps.memoryStore ?? new MemoryRateStore());
  const limiter = new RateLimiter(
    store,
    { messagesPerUserPerHour: c.messages_per_user_per_hour, recipientsPerUserPerHour: c.recipients_per_user_per_hour, connectionsPerIpPerMinute: c.connections_per_ip_per_minute },
    { failPolicy: c.on_store_error as FailPolicy, log: deps.log, metrics: deps.metrics },
  );
  return { limiter, store, close: async () => store.close?.() };
}
