// End to end: rate limits shared by two facteur "nodes" through a real redis-server, EVALSHA use, and the fail policy
// when Redis dies mid-test.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { startRedis, type RedisInstance } from '../helpers/redis.js';
import { freePort } from '../helpers/net.js';
import { RedisRateStore, RateLimiter, rateLimitReply, rateLimiterFromConfig } from '../../src/policy/ratelimit.js';
import { createMetrics } from '../../src/observability/metrics.js';

const HOUR = 3_600_000;
let redis: RedisInstance;
let admin: Redis;
const stores: RedisRateStore[] = [];

function node(timeoutMs = 1_000): RedisRateStore {
  const s = new RedisRateStore({ url: redis.url, timeoutMs });
  stores.push(s);
  return s;
}

async function commandStats(): Promise<Record<string, number>> {
  const info = await admin.info('commandstats');
  const out: Record<string, number> = {};
  for (const m of info.matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)) out[m[1]] = Number(m[2]);
  return out;
}

/** Poll until fn() is true; the bound only guards against a hang, it is not what the test asserts. */
async function until(fn: () => Promise<boolean>, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  redis = await startRedis();
  admin = new Redis(redis.url, { lazyConnect: true, retryStrategy: (n) => Math.min(n * 100, 1_000) });
  admin.on('error', () => undefined);
  await admin.connect();
});

after(async () => {
  for (const s of stores) await s.close();
  admin.disconnect();
  await redis.stop();
});

describe('RedisRateStore against a real redis-server', () => {
  it('two nodes share one limit', async () => {
    const a = new RateLimiter(node(), { messagesPerUserPerHour: 5 });
    const b = new RateLimiter(node(), { messagesPerUserPerHour: 5 });
    const got: boolean[] = [];
    for (const l of [a, a, a, b, b, a, b]) got.push((await l.message('alice@example.org')).allowed);
    assert.deepEqual(got, [true, true, true, true, true, false, false]);
    const d = await b.message('ALICE@example.org');
    assert.equal(d.allowed, false);
    assert.ok(d.retryAfterMs > 0 && d.retryAfterMs <= HOUR / 5, `retryAfterMs ${d.retryAfterMs}`);
    assert.match(rateLimitReply(d)!.toString(), /^450 4\.7\.1 Message rate limit exceeded, try again in \d+ seconds$/);
    assert.equal((await a.message('bob@example.org')).allowed, true);
  });

  it('is atomic: 60 concurrent hits from two nodes admit exactly the limit', async () => {
    const a = new RateLimiter(node(), { recipientsPerUserPerHour: 25 });
    const b = new RateLimiter(node(), { recipientsPerUserPerHour: 25 });
    const results = await Promise.all(Array.from({ length: 60 }, (_, i) => (i % 2 ? a : b).recipients('carol')));
    assert.equal(results.filter((r) => r.allowed).length, 25);
    assert.ok(results.every((r) => !r.degraded));
  });

  it('uses EVALSHA (one round trip) and recovers by itself after SCRIPT FLUSH', async () => {
    const s = node();
    await s.hit('facteur:test:sha', 1, 60_000, 100); // loads the script if this server never saw it
    const before = await commandStats();
    for (let i = 0; i < 10; i++) await s.hit('facteur:test:sha', 1, 60_000, 100);
    const mid = await commandStats();
    assert.equal(mid.evalsha - before.evalsha, 10);
    assert.equal(mid.eval ?? 0, before.eval ?? 0);
    await admin.script('FLUSH');
    const r = await s.hit('facteur:test:sha', 1, 60_000, 100);
    assert.equal(r.allowed, true);
    assert.equal(r.remaining, 100 - 12);
    const after = await commandStats();
    assert.equal((after.eval ?? 0) - (mid.eval ?? 0), 1);
  });

  it('keys expire by themselves (memory in Redis stays bounded)', async () => {
    const l = new RateLimiter(node(), { connectionsPerIpPerMinute: 10 }, { keyPrefix: 'facteur:ttl:' });
    await l.connection('2001:db8:5::1');
    const keys = await admin.keys('facteur:ttl:*');
    assert.deepEqual(keys, ['facteur:ttl:conn:2001:db8:5:0::/64']);
    const ttl = await admin.pttl(keys[0]);
    assert.ok(ttl > 0 && ttl <= 6_000, `pttl ${ttl}`); // one slot of 60 s / 10
  });

  it('hostile logins become safe keys: CRLF, spaces, 64 KiB, NUL', async () => {
    const l = new RateLimiter(node(), { messagesPerUserPerHour: 1 }, { keyPrefix: 'facteur:hostile:' });
    const logins = ['x\r\nFLUSHALL\r\n', 'a b', 'é'.repeat(32_768), 'nul\0nul', '*', '{slot}'];
    for (const login of logins) {
      assert.equal((await l.message(login)).allowed, true, JSON.stringify(login.slice(0, 20)));
      assert.equal((await l.message(login)).allowed, false);
    }
    const keys = await admin.keys('facteur:hostile:*');
    assert.equal(keys.length, logins.length);
    for (const k of keys) assert.ok(k.length < 100 && /^[\x21-\x7e]+$/.test(k), k);
    assert.ok((await admin.dbsize()) > keys.length); // the earlier tests' keys are still there: nothing was flushed
  });
});

describe('Redis down', () => {
  it('unreachable from the start: the default policy allows (degraded) without waiting past the timeout', async () => {
    const port = await freePort(); // nothing listens there
    const metrics = createMetrics({ defaultMetrics: false });
    const warnings: string[] = [];
    const { limiter, close } = rateLimiterFromConfig(
      { messages_per_user_per_hour: 1, recipients_per_user_per_hour: 1, connections_per_ip_per_minute: 1, redis_url: `redis://:s3cret@127.0.0.1:${port}/0`, redis_timeout: '200ms', on_store_error: 'allow' },
      { metrics, log: { warn: (o: unknown, msg: string) => warnings.push(`${JSON.stringify(o)} ${msg}`) } as never },
    );
    try {
      for (let i = 0; i < 3; i++) {
        const d = await limiter.message('alice');
        assert.deepEqual([d.allowed, d.degraded], [true, true]);
      }
      assert.match(await metrics.text(), /^facteur_ratelimit_store_errors_total 3$/m);
      assert.equal(warnings.length, 1);
      assert.doesNotMatch(warnings[0], /s3cret/); // the URL (and its password) never reaches the log
    } finally {
      await close();
    }
  });

  it('killed mid-test: allow policy lets mail through, deny policy answers 4xx, both recover when it is back', async () => {
    const allowStore = node(300);
    const denyStore = node(300);
    const allow = new RateLimiter(allowStore, { messagesPerUserPerHour: 2 }, { keyPrefix: 'facteur:kill:' });
    const deny = new RateLimiter(denyStore, { messagesPerUserPerHour: 2 }, { keyPrefix: 'facteur:kill:', failPolicy: 'deny' });
    assert.equal((await allow.message('dave')).allowed, true);
    assert.equal((await deny.message('dave')).allowed, true);
    assert.equal((await allow.message('dave')).allowed, false); // the shared limit of 2 is used up

    await redis.kill();

    const a = await allow.message('dave');
    assert.deepEqual([a.allowed, a.degraded], [true, true]);
    assert.equal(rateLimitReply(a), undefined);
    const d = await deny.message('dave');
    assert.deepEqual([d.allowed, d.degraded], [false, true]);
    assert.equal(rateLimitReply(d)!.toString(), '451 4.3.0 Rate limit service unavailable, try again later');
    const c = await deny.connection('192.0.2.9');
    assert.equal(rateLimitReply(c)!.toString(), '421 4.3.0 Rate limit service unavailable, try again later');

    await redis.restart(); // empty: nothing was persisted (--save '' --appendonly no)
    await until(async () => !(await allow.message('erin')).degraded, 'allow node reconnects');
    await until(async () => !(await deny.message('frank')).degraded, 'deny node reconnects');
    const back = await deny.message('dave');
    assert.deepEqual([back.allowed, back.degraded], [true, false]);
  });
});
