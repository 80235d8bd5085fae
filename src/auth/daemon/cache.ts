// Credential cache for authd (`-c`, `-t`, `-s`): remembers successful verifications only, never the password.
// Trusts nothing it stores: entries hold an HMAC-SHA256 of the password under a random per-process key, salted by login/realm/service.
import crypto from 'node:crypto';
import { nativeAddon } from '../../lib/native.js';

export interface CacheKey {
  login: string;
  realm: string;
  service: string;
}

interface Entry {
  digest: Buffer;
  /** When the backend last confirmed this password (ms). Hits never refresh it: the lifetime is absolute. */
  created: number;
}

export interface CacheStats {
  hits: number;
  misses: number;
  entries: number;
}

/** Size in bytes of one entry in upstream's table (used to turn `-s KiB` into a capacity). */
export const UPSTREAM_BUCKET_BYTES = 96;
/** Upstream default: 1711 slots of 6 buckets. */
export const DEFAULT_CAPACITY = 1711 * 6;

/** HMAC-SHA256 under one key: `digest` of a message, and whether a message `matches` a digest (constant time). */
interface Mac {
  digest(message: string): Buffer;
  matches(message: string, expected: Buffer): boolean;
}

interface DigestBinding {
  createKey(key: Buffer): object;
  digest(key: object, message: string): Buffer;
  matches(key: object, message: string, expected: Buffer): boolean;
}

/** node:crypto's HMAC: ~4 µs a call (a context fetched and allocated each time). */
function nodeMac(key: Buffer): Mac {
  const k = crypto.createSecretKey(key);
  const digest = (m: string) => crypto.createHmac('sha256', k).update(m).digest();
  return { digest, matches: (m, e) => e.length === 32 && crypto.timingSafeEqual(e, digest(m)) };
}

/** The same HMAC in C (native/authd/digest.c): the key's states computed once, ~0.5 µs a call. */
function nativeMac(b: DigestBinding, key: Buffer): Mac {
  const k = b.createKey(key);
  return { digest: (m) => b.digest(k, m), matches: (m, e) => b.matches(k, m, e) };
}

/** `auto`: the C HMAC when built, else node:crypto; both compute HMAC-SHA256 (test/unit/auth/cache.test.ts). */
export function createMac(key: Buffer, impl: 'auto' | 'native' | 'node' = 'auto'): Mac {
  if (impl !== 'node') {
    const n = nativeAddon<DigestBinding>('cache_digest');
    if ('binding' in n) return nativeMac(n.binding, key);
    if (impl === 'native') throw new Error(n.error);
  }
  return nodeMac(key);
}

export class CredentialCache {
  private readonly mac: Mac;
  private readonly entries = new Map<string, Entry>();
  private readonly ttlMs: number;
  private readonly capacity: number;
  private readonly now: () => number;
  readonly stats = { hits: 0, misses: 0 };

  constructor(opts: { ttlSeconds: number; capacity?: number; now?: () => number; mac?: 'auto' | 'native' | 'node' }) {
    this.mac = createMac(crypto.randomBytes(32), opts.mac);
    this.ttlMs = opts.ttlSeconds * 1000;
    this.capacity = Math.max(1, opts.capacity ?? DEFAULT_CAPACITY);
    this.now = opts.now ?? Date.now;
  }

  private id(k: CacheKey): string {
    // Length-prefixed (in UTF-16 code units, which fix each string as well as bytes do) so that ("a@b","","x") and
    // ("a","@b","x")-style tuples can never collide.
    return `${k.login.length}:${k.login}|${k.realm.length}:${k.realm}|${k.service.length}:${k.service}`;
  }

  /** True when this exact password was confirmed by the backend within the lifetime. */
  lookup(k: CacheKey, password: string): boolean {
    const id = this.id(k);
    const e = this.entries.get(id);
    if (!e || e.created <= this.now() - this.ttlMs) {
      if (e) this.entries.delete(id);
      this.stats.misses++;
      return false;
    }
    const hit = this.mac.matches(`${id}\0${password}`, e.digest);
    if (hit) this.stats.hits++;
    else this.stats.misses++;
    return hit;
  }

  /** Record a backend success. A new password for the same key replaces the old one at once. */
  store(k: CacheKey, password: string): void {
    const id = this.id(k);
    this.entries.delete(id);
    this.entries.set(id, { digest: this.mac.digest(`${id}\0${password}`), created: this.now() });
    while (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  /** Forget one login (all realms/services are keyed separately; this removes the exact key). */
  forget(k: CacheKey): void {
    this.entries.delete(this.id(k));
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}
