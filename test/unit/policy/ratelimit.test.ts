// Unit tests of the rate limits: GCRA arithmetic under a fake clock, bounded memory, the limiter's fail policy, SMTP replies.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  gcra,
  MemoryRateStore,
  RateLimiter,
  rateLimitReply,
  subjectKey,
  ratelimit,
  rateLimiterFromConfig,
  type RateStore,
  type RateDecision,
} from '../../../src/policy/ratelimit.js';
import { createMetrics } from '../../../src/observability/metrics.js';
import { loadConfig } from '../../../src/config/load.js';
import { ConfigError } from '../../../src/lib/errors.js';

function clock(start = 1_700_000_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

const MIN = 60_000;
const HOUR = 3_600_000;

describe('MemoryRateStore (GCRA)', () => {
  it('allows a burst of `limit`, then refuses with the time until the next slot', async () => {
    const c = clock();
    const s = new MemoryRateStore(c.now);
    const got = [];
    for (let i = 0; i < 4; i++) got.push(await s.hit('k', 1, MIN, 3));
    assert.deepEqual(got.map((r) => r.allowed), [true, true, true, false]);
    assert.deepEqual(got.map((r) => r.remaining), [2, 1, 0, 0]);
    assert.equal(got[3].retryAfterMs, 20_000); // one slot every 60 s / 3
    c.advance(19_999);
    assert.equal((await s.hit('k', 1, MIN, 3)).allowed, false);
    c.advance(1);
    assert.equal((await s.hit('k', 1, MIN, 3)).allowed, true);
    assert.equal((await s.hit('k', 1, MIN, 3)).allowed, false);
  });

  it('a refused hit consumes nothing: hammering does not push the reset further away', async () => {
    const c = clock();
    const s = new MemoryRateStore(c.now);
    for (let i = 0; i < 2; i++) await s.hit('k', 1, MIN, 2);
    for (let i = 0; i < 1000; i++) assert.equal((await s.hit('k', 1, MIN, 2)).allowed, false);
    c.advance(30_000);
    assert.equal((await s.hit('k', 1, MIN, 2)).allowed, true);
  });

  it('the quota comes back completely after a full window of silence, and no more', async () => {
    const c = clock();
    const s = new MemoryRateStore(c.now);
    for (let i = 0; i < 5; i++) assert.ok((await s.hit('k', 1, HOUR, 5)).allowed);
    c.advance(10 * HOUR);
    let n = 0;
    while ((await s.hit('k', 1, HOUR, 5)).allowed) n++;
    assert.equal(n, 5);
  });

  it('counts a cost of several events at once, and refuses a cost that does not fit', async () => {
    const c = clock();
    const s = new MemoryRateStore(c.now);
    assert.deepEqual(await s.hit('r', 7, HOUR, 10), { allowed: true, remaining: 3, retryAfterMs: 0 });
    const r = await s.hit('r', 4, HOUR, 10);
    assert.equal(r.allowed, false);
    assert.equal(r.remaining, 3);
    assert.equal(r.retryAfterMs, HOUR / 10); // one more slot frees in 6 minutes
    assert.equal((await s.hit('r', 3, HOUR, 10)).allowed, true);
  });

  it('keys are independent', async () => {
    const s = new MemoryRateStore(clock().now);
    assert.equal((await s.hit('a', 1, MIN, 1)).allowed, true);
    assert.equal((await s.hit('a', 1, MIN, 1)).allowed, false);
    assert.equal((await s.hit('b', 1, MIN, 1)).allowed, true);
  });

  it('rejects nonsensical arguments instead of counting them', async () => {
    const s = new MemoryRateStore(clock().now);
    await assert.rejects(s.hit('k', 1, 0, 3), RangeError);
    await assert.rejects(s.hit('k', 1, MIN, 0), RangeError);
    await assert.rejects(s.hit('k', -1, MIN, 3), RangeError);
    await assert.rejects(s.hit('k', Number.NaN, MIN, 3), RangeError);
    await assert.rejects(s.hit('k', 1, MIN, 2.5), RangeError);
  });

  it('memory stays bounded under a flood of distinct keys, dropping expired keys before live ones', async () => {
    const c = clock();
    const s = new MemoryRateStore(c.now, 100);
    await s.hit('busy', 1, HOUR, 2);
    await s.hit('busy', 1, HOUR, 2); // full for an hour, and the oldest entry
    for (let i = 0; i < 10_000; i++) {
      c.advance(3);
      await s.hit(`flood-${i}`, 1, 10, 5); // each expires 2 ms after its hit
    }
    assert.ok(s.size <= 100, `size ${s.size}`);
    assert.equal((await s.hit('busy', 1, HOUR, 2)).allowed, false); // plain LRU would have dropped it
  });

  it('memory stays bounded even when every key is live (least recently hit dropped)', async () => {
    const s = new MemoryRateStore(clock().now, 50);
    for (let i = 0; i < 5_000; i++) await s.hit(`live-${i}`, 1, HOUR, 5);
    assert.equal(s.size, 50);
    assert.equal((await s.hit('live-4999', 1, HOUR, 1)).allowed, false);
  });

  it('property: at most limit + elapsed/interval hits ever pass; remaining and retryAfter stay consistent', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 50 }),
        fc.integer({ min: 1_000, max: 3_600_000 }),
        fc.array(fc.integer({ min: 0, max: 600_000 }), { minLength: 1, maxLength: 200 }),
        (limit, windowMs, gaps) => {
          let now = 0;
          let tat: number | undefined;
          let allowed = 0;
          for (const g of gaps) {
            now += g;
            const r = gcra(now, tat, 1, windowMs, limit);
            if (r.allowed) allowed++;
            tat = r.tat;
            assert.ok(allowed <= limit + Math.floor((now * limit) / windowMs) + 1e-9, `allowed ${allowed} at ${now}`);
            assert.ok(r.remaining >= 0 && r.remaining <= limit);
            assert.ok(r.allowed ? r.retryAfterMs === 0 : r.retryAfterMs > 0);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

class BrokenStore implements RateStore {
  calls = 0;
  async hit(): Promise<never> {
    this.calls++;
    throw new Error('connect ECONNREFUSED 127.0.0.1:6379');
  }
}

describe('RateLimiter', () => {
  it('applies the three named limits with their windows', async () => {
    const c = clock();
    const rl = new RateLimiter(new MemoryRateStore(c.now), { messagesPerUserPerHour: 2, recipientsPerUserPerHour: 3, connectionsPerIpPerMinute: 1 });
    assert.equal((await rl.message('alice')).allowed, true);
    assert.equal((await rl.message('alice')).allowed, true);
    const m = await rl.message('alice');
    assert.deepEqual([m.allowed, m.limit, m.degraded], [false, 'messages', false]);
    assert.equal(m.retryAfterMs, HOUR / 2);
    assert.equal((await rl.message('bob')).allowed, true);

    assert.equal((await rl.recipients('alice', 3)).allowed, true);
    assert.equal((await rl.recipients('alice')).limit, 'recipients');
    assert.equal((await rl.recipients('alice')).allowed, false);

    assert.equal((await rl.connection('192.0.2.1')).allowed, true);
    const cn = await rl.connection('192.0.2.1');
    assert.deepEqual([cn.allowed, cn.limit, cn.retryAfterMs], [false, 'connections', MIN]);
    c.advance(MIN);
    assert.equal((await rl.connection('192.0.2.1')).allowed, true);
  });

  it('logins are compared case-insensitively, so Alice and alice share one quota', async () => {
    const rl = new RateLimiter(new MemoryRateStore(clock().now), { messagesPerUserPerHour: 1 });
    assert.equal((await rl.message('Alice@Example.org')).allowed, true);
    assert.equal((await rl.message(' alice@example.ORG')).allowed, false);
  });

  it('IPv6 clients are counted per /64, IPv4-mapped addresses as IPv4, and saslauthd "IP;port" forms too', async () => {
    const rl = new RateLimiter(new MemoryRateStore(clock().now), { connectionsPerIpPerMinute: 1 });
    assert.equal((await rl.connection('2001:db8:1:2::1')).allowed, true);
    assert.equal((await rl.connection('2001:db8:1:2:ffff:ffff:ffff:ffff')).allowed, false);
    assert.equal((await rl.connection('2001:db8:1:3::1')).allowed, true);
    assert.equal((await rl.connection('::ffff:198.51.100.7')).allowed, true);
    assert.equal((await rl.connection('198.51.100.7')).allowed, false);
    assert.equal((await rl.connection('198.51.100.7;2525')).allowed, false);
  });

  it('a limit of 0 is off and never touches the store', async () => {
    const broken = new BrokenStore();
    const rl = new RateLimiter(broken, { messagesPerUserPerHour: 0, recipientsPerUserPerHour: 0, connectionsPerIpPerMinute: 0 });
    for (let i = 0; i < 10; i++) assert.equal((await rl.message('a')).allowed, true);
    assert.equal((await rl.connection('192.0.2.1')).allowed, true);
    assert.equal(broken.calls, 0);
  });

  it('store down, default policy: allows, marks the decision degraded, counts the error, logs once per period', async () => {
    const c = clock();
    const lines: unknown[][] = [];
    const metrics = createMetrics({ defaultMetrics: false });
    const rl = new RateLimiter(new BrokenStore(), {}, { log: { warn: (...a: unknown[]) => lines.push(a) } as never, metrics, now: c.now, logEveryMs: 10_000 });
    for (let i = 0; i < 5; i++) {
      const d = await rl.message('alice');
      assert.deepEqual([d.allowed, d.degraded], [true, true]);
      assert.equal(rateLimitReply(d), undefined);
    }
    assert.equal(lines.length, 1);
    c.advance(10_000);
    await rl.connection('192.0.2.1');
    assert.equal(lines.length, 2);
    assert.equal((lines[1][0] as { suppressed: number }).suppressed, 4);
    const text = await metrics.text();
    assert.match(text, /^facteur_ratelimit_store_errors_total 6$/m);
    assert.doesNotMatch(text, /^facteur_ratelimit_refusals_total\{/m);
  });

  it('store down, deny policy: refuses with a temporary 4.3.0 reply', async () => {
    const rl = new RateLimiter(new BrokenStore(), {}, { failPolicy: 'deny' });
    const m = await rl.message('alice');
    assert.deepEqual([m.allowed, m.degraded], [false, true]);
    assert.equal(rateLimitReply(m)!.toString(), '451 4.3.0 Rate limit service unavailable, try again later');
    assert.equal(rateLimitReply(await rl.connection('192.0.2.1'))!.toString(), '421 4.3.0 Rate limit service unavailable, try again later');
  });

  it('counts refusals by limit in the metrics', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const rl = new RateLimiter(new MemoryRateStore(clock().now), { recipientsPerUserPerHour: 1 }, { metrics });
    await rl.recipients('a');
    await rl.recipients('a');
    await rl.recipients('a');
    assert.match(await metrics.text(), /^facteur_ratelimit_refusals_total\{limit="recipients"\} 2$/m);
  });

  it('update() changes limits on reload and keeps the counters (as the time each key is busy until); bad limits are a ConfigError naming the limit', async () => {
    const c = clock();
    const rl = new RateLimiter(new MemoryRateStore(c.now), { messagesPerUserPerHour: 1 });
    await rl.message('a');
    assert.equal((await rl.message('a')).allowed, false); // next slot in 60 min at 1/h
    rl.update({ messagesPerUserPerHour: 3 });
    assert.equal(rl.current.messagesPerUserPerHour, 3);
    // The key stays busy until the time the old rate gave (kept), but slots now come every 20 min.
    assert.equal((await rl.message('a')).retryAfterMs, 20 * MIN);
    c.advance(20 * MIN);
    assert.equal((await rl.message('a')).allowed, true);
    assert.throws(() => rl.update({ messagesPerUserPerHour: -1 }), (e: unknown) => e instanceof ConfigError && /messagesPerUserPerHour/.test(e.message));
    assert.throws(() => new RateLimiter(new MemoryRateStore(), { connectionsPerIpPerMinute: 1.5 }), ConfigError);
  });
});

describe('rateLimitReply', () => {
  const d = (limit: RateDecision['limit'], retryAfterMs: number): RateDecision => ({ allowed: false, limit, remaining: 0, retryAfterMs, degraded: false });
  it('maps each refusal to the SMTP reply the adapter sends', () => {
    assert.equal(rateLimitReply(d('connections', 1_500))!.toString(), '421 4.7.0 Too many connections from your address, try again in 2 seconds');
    assert.equal(rateLimitReply(d('messages', 18_000))!.toString(), '450 4.7.1 Message rate limit exceeded, try again in 18 seconds');
    assert.equal(rateLimitReply(d('recipients', 1))!.toString(), '450 4.7.1 Recipient rate limit exceeded, try again in 1 seconds');
    assert.equal(rateLimitReply({ ...d('messages', 0), allowed: true }), undefined);
  });
});

describe('subjectKey (hostile logins)', () => {
  it('keeps plain logins readable, hashes anything with spaces, control characters, non-ASCII or excess length', () => {
    assert.equal(subjectKey('Alice@Example.org'), 'alice@example.org');
    for (const bad of ['a\r\nFLUSHALL', 'a b', 'é', 'x'.repeat(10_000), '', '\0']) {
      const k = subjectKey(bad);
      assert.match(k, /^sha256:[0-9a-f]{64}$/);
    }
    assert.notEqual(subjectKey('a b'), subjectKey('a  b'));
  });
});

describe('ratelimit configuration section', () => {
  it('has the documented defaults, takes environment overrides, and explains a bad redis_url', async () => {
    const c = await loadConfig({ sections: [ratelimit], env: {} });
    assert.deepEqual(c.ratelimit, {
      messages_per_user_per_hour: 200,
      recipients_per_user_per_hour: 1000,
      connections_per_ip_per_minute: 60,
      redis_url: '',
      redis_timeout: '250ms',
      on_store_error: 'allow',
    });
    const e = await loadConfig({ sections: [ratelimit], env: { FACTEUR_RATELIMIT_MESSAGES_PER_USER_PER_HOUR: '5' } });
    assert.equal(e.ratelimit.messages_per_user_per_hour, 5);
    await assert.rejects(loadConfig({ sections: [ratelimit], text: '[ratelimit]\nredis_url = "localhost:6379"\n', env: {} }), /redis_url: must start with redis:\/\//);
    await assert.rejects(loadConfig({ sections: [ratelimit], text: '[ratelimit]\non_store_error = "block"\n', env: {} }), /on_store_error/);
  });

  it('builds an in-memory limiter when no Redis is configured', async () => {
    const c = await loadConfig({ sections: [ratelimit], text: '[ratelimit]\nmessages_per_user_per_hour = 1\n', env: {} });
    const { limiter, store } = rateLimiterFromConfig(c.ratelimit as never);
    assert.ok(store instanceof MemoryRateStore);
    assert.equal((await limiter.message('a')).allowed, true);
    assert.equal((await limiter.message('a')).allowed, false);
  });
});
