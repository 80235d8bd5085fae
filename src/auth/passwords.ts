// Password hashes: verify a plaintext against a stored hash (argon2, bcrypt, sha/md5-crypt, Dovecot/LDAP `{SCHEME}` forms) and make new argon2id hashes.
// Trusts the stored hash's format only as far as its parser checks it; comparisons are constant-time; never logs or throws with a password.
//
// Recognised forms (scheme prefixes are case-insensitive, as in Dovecot and OpenLDAP):
//   $argon2id$v=19$m=..,t=..,p=..$salt$hash, $argon2i$...   PHC strings (hash-wasm)
//   $2a$ / $2b$ / $2y$ NN $ 53 chars                           bcrypt (hash-wasm)
//   $6$[rounds=N$]salt$hash, $5$...                           sha512-crypt / sha256-crypt (Drepper's spec, implemented here)
//   $1$salt$hash                                              md5-crypt (phk's algorithm, implemented here)
//   $y$params$salt$hash                                       yescrypt, default flavour (./yescrypt.ts, from the reference spec)
//   {SSHA} {SSHA256} {SSHA512} {SMD5}                         base64(digest(password + salt) + salt)
//   {SHA} {SHA256} {SHA512} {LDAP-MD5} {PLAIN-MD5}             base64 or hex digest of the password
//   {MD5}                                                     md5-crypt when the value starts with $1$ (Dovecot), else a plain digest (OpenLDAP)
//   {PLAIN} {CLEARTEXT}                                       the password itself
//   {CRYPT} {SHA512-CRYPT} {SHA256-CRYPT} {MD5-CRYPT} {BLF-CRYPT} {ARGON2ID} {ARGON2I}   prefix removed, the value is one of the crypt forms above
// Not supported (verifyPasswordHash answers null): yescrypt flavours other than libxcrypt's default, scrypt `$7$`, traditional DES
// crypt, `{SASL}`, `{K5KEY}` and any other scheme. A malformed value of a known scheme answers false.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createRequire } from 'node:module';
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { argon2i, argon2id, bcrypt } from 'hash-wasm';
import { parseSetting, paramsProblem, yescryptCrypt } from './yescrypt.js';

/** Parameters of new hashes: OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane) — affordable per login, still memory-hard. */
export const ARGON2_PARAMS = { memorySize: 19456, iterations: 2, parallelism: 1, hashLength: 32, saltLength: 16 } as const;

/** sha-crypt rounds above this are refused (false) rather than computed: a hostile stored hash must not pin the CPU for minutes. */
export const MAX_SHA_CRYPT_ROUNDS = 2_000_000; // passlib's default is 656000, glibc's 5000
/** argon2 memory above this (KiB) is refused, for the same reason. */
export const MAX_ARGON2_MEMORY_KIB = 256 * 1024; // Dovecot's default is 64 MiB

// ---- worker pool: argon2 and bcrypt take tens of milliseconds of CPU; they run on worker threads, off the event loop ----

type HashJob =
  | { op: 'argon2id' | 'argon2i'; opts: { password: Uint8Array; salt: Uint8Array; iterations: number; parallelism: number; memorySize: number; hashLength: number } }
  | { op: 'bcrypt'; opts: { password: Uint8Array; salt: Uint8Array; costFactor: number } };

// Plain CommonJS so that the worker needs no TypeScript loader; it only calls hash-wasm.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const hw = require(workerData.hashWasm);
parentPort.on('message', (m) => {
  Promise.resolve()
    .then(() => (m.op === 'bcrypt' ? hw.bcrypt({ ...m.opts, outputType: 'encoded' }) : hw[m.op]({ ...m.opts, outputType: 'binary' })))
    .then((r) => parentPort.postMessage({ id: m.id, ok: true, r }), (e) => parentPort.postMessage({ id: m.id, ok: false, e: String((e && e.message) || e) }));
});
`;

/** Worker threads for the slow hashes; falls back to the calling thread if workers cannot start. */
class HashPool {
  private readonly workers: Array<{ w: Worker; jobs: Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }> }> = [];
  private nextId = 1;
  private broken = false;
  constructor(private readonly size: number) {}

  private spawn() {
    const hashWasm = createRequire(import.meta.url).resolve('hash-wasm');
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { hashWasm } });
    const entry = { w, jobs: new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>() };
    w.unref();
    w.on('message', (m: { id: number; ok: boolean; r?: unknown; e?: string }) => {
      const job = entry.jobs.get(m.id);
      if (!job) return;
      entry.jobs.delete(m.id);
      if (entry.jobs.size === 0) w.unref();
      if (m.ok) job.resolve(m.r);
      else job.reject(new Error(m.e ?? 'hash worker error'));
    });
    const die = (err: Error) => {
      const i = this.workers.indexOf(entry);
      if (i >= 0) this.workers.splice(i, 1);
      for (const job of entry.jobs.values()) job.reject(err);
      entry.jobs.clear();
    };
    w.on('error', die);
    w.on('exit', () => die(new Error('hash worker exited')));
    this.workers.push(entry);
    return entry;
  }

  async run(job: HashJob): Promise<unknown> {
    if (!this.broken) {
      try {
        let entry = this.workers.reduce<(typeof this.workers)[number] | undefined>((best, e) => (!best || e.jobs.size < best.jobs.size ? e : best), undefined);
        if (!entry || (entry.jobs.size > 0 && this.workers.length < this.size)) entry = this.spawn();
        const id = this.nextId++;
        const result = new Promise((resolve, reject) => entry!.jobs.set(id, { resolve, reject }));
        entry.w.ref(); // a pending job keeps the process alive (a CLI awaiting a hash must not exit)
        entry.w.postMessage({ id, ...job });
        return await result;
      } catch (err) {
        if (this.workers.length > 0) throw err;
        this.broken = true; // workers unavailable (e.g. a sandbox): compute here instead
      }
    }
    if (job.op === 'bcrypt') return bcrypt({ ...job.opts, outputType: 'encoded' });
    return (job.op === 'argon2id' ? argon2id : argon2i)({ ...job.opts, outputType: 'binary' });
  }
}

/** Up to 4 worker threads, at least 2: enough to keep the event loop free, few enough to leave cores to the rest. */
export const hashPool = new HashPool(Math.max(2, Math.min(4, os.availableParallelism?.() ?? 2)));

/** Compare two byte strings without leaking where they differ. Lengths are not secret (they come from the hash format). */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  return timingSafeEqual(a, b);
}

/** Compare secrets of possibly different lengths without leaking the length: compare their SHA-256 digests. */
function constantTimeEqualAnyLength(a: Buffer, b: Buffer): boolean {
  const da = createHash('sha256').update(a).digest();
  const db = createHash('sha256').update(b).digest();
  return timingSafeEqual(da, db) && a.length === b.length;
}

/**
 * Verify `password` against `stored`.
 * @returns true when it matches, false when it does not (or the stored value is a malformed instance of a known scheme),
 *          null when the scheme is not known to facteur.
 */
export async function verifyPasswordHash(password: string, stored: string): Promise<boolean | null> {
  const pw = Buffer.from(password, 'utf8');
  const value = stored.trim();
  const m = /^\{([A-Za-z0-9._-]+)\}(.*)$/s.exec(value);
  if (m) return verifyScheme(pw, m[1]!.toUpperCase(), m[2]!);
  return verifyCrypt(pw, value);
}

const DIGESTS: Record<string, { algo: string; len: number; salted: boolean }> = {
  SHA: { algo: 'sha1', len: 20, salted: false },
  SHA1: { algo: 'sha1', len: 20, salted: false },
  SSHA: { algo: 'sha1', len: 20, salted: true },
  SHA256: { algo: 'sha256', len: 32, salted: false },
  SSHA256: { algo: 'sha256', len: 32, salted: true },
  SHA512: { algo: 'sha512', len: 64, salted: false },
  SSHA512: { algo: 'sha512', len: 64, salted: true },
  'LDAP-MD5': { algo: 'md5', len: 16, salted: false },
  'PLAIN-MD5': { algo: 'md5', len: 16, salted: false },
  SMD5: { algo: 'md5', len: 16, salted: true },
};

const CRYPT_PREFIXES = new Set(['CRYPT', 'SHA512-CRYPT', 'SHA256-CRYPT', 'MD5-CRYPT', 'BLF-CRYPT', 'ARGON2ID', 'ARGON2I']);

async function verifyScheme(pw: Buffer, scheme: string, rest: string): Promise<boolean | null> {
  if (scheme === 'PLAIN' || scheme === 'CLEARTEXT') return constantTimeEqualAnyLength(pw, Buffer.from(rest, 'utf8'));
  if (CRYPT_PREFIXES.has(scheme)) return verifyCrypt(pw, rest.trim());
  if (scheme === 'MD5') {
    if (rest.startsWith('$1$')) return verifyCrypt(pw, rest.trim());
    return verifyDigest(pw, DIGESTS['LDAP-MD5']!, rest.trim());
  }
  const d = DIGESTS[scheme];
  if (d) return verifyDigest(pw, d, rest.trim());
  return null;
}

/** Decode a digest field: hex when it has exactly the hex length of an unsalted digest, else base64 (strict alphabet). */
function decodeDigestField(text: string, hexLen: number | null): Buffer | null {
  if (hexLen !== null && text.length === hexLen && /^[0-9a-fA-F]+$/.test(text)) return Buffer.from(text, 'hex');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) return null;
  return Buffer.from(text, 'base64');
}

function verifyDigest(pw: Buffer, d: { algo: string; len: number; salted: boolean }, text: string): boolean {
  const raw = decodeDigestField(text, d.salted ? null : d.len * 2);
  if (!raw) return false;
  if (d.salted ? raw.length <= d.len : raw.length !== d.len) return false;
  const expected = raw.subarray(0, d.len);
  const salt = raw.subarray(d.len);
  const actual = createHash(d.algo).update(pw).update(salt).digest();
  return constantTimeEqual(actual, expected);
}

async function verifyCrypt(pw: Buffer, value: string): Promise<boolean | null> {
  if (value.startsWith('$argon2id$') || value.startsWith('$argon2i$')) return verifyArgon2(pw, value);
  if (/^\$2[aby]\$/.test(value)) return verifyBcrypt(pw, value);
  if (value.startsWith('$6$')) return verifyShaCrypt(pw, value, 'sha512');
  if (value.startsWith('$5$')) return verifyShaCrypt(pw, value, 'sha256');
  if (value.startsWith('$1$')) return verifyMd5Crypt(pw, value);
  if (value.startsWith('$y$')) return verifyYescrypt(pw, value);
  return null;
}

async function verifyYescrypt(pw: Buffer, value: string): Promise<boolean | null> {
  const m = /^\$y\$[./0-9A-Za-z]+\$[./0-9A-Za-z]*\$([./0-9A-Za-z]{43})$/.exec(value);
  const parsed = m ? parseSetting(value) : null;
  if (!m || !parsed) return false;
  if (paramsProblem(parsed.params)) return null; // a flavour or size facteur does not compute
  const computed = await yescryptCrypt(pw, value);
  if (computed === null) return false;
  return constantTimeEqual(Buffer.from(computed.slice(-43)), Buffer.from(m[1]!));
}

// ---- argon2 (PHC string format) ----

function b64NoPad(buf: Uint8Array): string {
  return Buffer.from(buf).toString('base64').replace(/=+$/, '');
}

function parsePhcB64(s: string): Buffer | null {
  if (!/^[A-Za-z0-9+/]+$/.test(s)) return null;
  return Buffer.from(s, 'base64');
}

async function verifyArgon2(pw: Buffer, value: string): Promise<boolean> {
  if (pw.length === 0) return false; // hash-wasm refuses empty input; an empty password is never accepted anyway
  const m = /^\$(argon2id|argon2i)\$(?:v=(\d+)\$)?m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/.exec(value);
  if (!m) return false;
  const [, variant, version, mem, iter, par, saltB64, hashB64] = m;
  if (version !== undefined && version !== '19') return false; // hash-wasm implements version 0x13 only
  const memorySize = Number(mem);
  const iterations = Number(iter);
  const parallelism = Number(par);
  const salt = parsePhcB64(saltB64!);
  const expected = parsePhcB64(hashB64!);
  if (!salt || !expected || salt.length < 8 || expected.length < 4 || expected.length > 1024) return false;
  if (parallelism < 1 || parallelism > 255 || iterations < 1 || iterations > 64) return false;
  if (memorySize < 8 * parallelism || memorySize > MAX_ARGON2_MEMORY_KIB) return false;
  const actual = (await hashPool.run({ op: variant === 'argon2id' ? 'argon2id' : 'argon2i', opts: { password: pw, salt, iterations, parallelism, memorySize, hashLength: expected.length } })) as Uint8Array;
  return constantTimeEqual(actual, expected);
}

/** A new argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`). */
export async function hashPassword(password: string): Promise<string> {
  const p = ARGON2_PARAMS;
  const salt = randomBytes(p.saltLength);
  const out = (await hashPool.run({
    op: 'argon2id',
    opts: { password: Buffer.from(password, 'utf8'), salt, iterations: p.iterations, parallelism: p.parallelism, memorySize: p.memorySize, hashLength: p.hashLength },
  })) as Uint8Array;
  return `$argon2id$v=19$m=${p.memorySize},t=${p.iterations},p=${p.parallelism}$${b64NoPad(salt)}$${b64NoPad(out)}`;
}

// ---- bcrypt ----

const BCRYPT_ALPHABET = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function bcryptDecode(s: string, bytes: number): Buffer | null {
  const out = Buffer.alloc(bytes);
  let bits = 0;
  let acc = 0;
  let n = 0;
  for (const ch of s) {
    const v = BCRYPT_ALPHABET.indexOf(ch);
    if (v < 0) return null;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (n < bytes) out[n++] = (acc >> bits) & 0xff;
      acc &= (1 << bits) - 1;
    }
  }
  return n === bytes ? out : null;
}

async function verifyBcrypt(pw: Buffer, value: string): Promise<boolean> {
  if (pw.length === 0) return false; // hash-wasm refuses empty input; an empty password is never accepted anyway
  const m = /^\$2[aby]\$(\d\d)\$([./A-Za-z0-9]{22})([./A-Za-z0-9]{31})$/.exec(value);
  if (!m) return false;
  const cost = Number(m[1]);
  if (cost < 4 || cost > 31) return false;
  const salt = bcryptDecode(m[2]!, 16);
  if (!salt) return false;
  // bcrypt uses at most 72 bytes of the password (every implementation truncates).
  const encoded = (await hashPool.run({ op: 'bcrypt', opts: { password: pw.subarray(0, 72), salt, costFactor: cost } })) as string;
  return constantTimeEqual(Buffer.from(encoded.slice(-31)), Buffer.from(m[3]!));
}

// ---- crypt(3) base64 and the SHA/MD5 crypt algorithms ----

const CRYPT_ALPHABET = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

function b64From24(b2: number, b1: number, b0: number, n: number): string {
  let w = (b2 << 16) | (b1 << 8) | b0;
  let s = '';
  for (let i = 0; i < n; i++) {
    s += CRYPT_ALPHABET[w & 0x3f];
    w >>>= 6;
  }
  return s;
}

const SHA512_ORDER: Array<[number, number, number]> = [
  [0, 21, 42], [22, 43, 1], [44, 2, 23], [3, 24, 45], [25, 46, 4], [47, 5, 26], [6, 27, 48], [28, 49, 7], [50, 8, 29], [9, 30, 51], [31, 52, 10],
  [53, 11, 32], [12, 33, 54], [34, 55, 13], [56, 14, 35], [15, 36, 57], [37, 58, 16], [59, 17, 38], [18, 39, 60], [40, 61, 19], [62, 20, 41],
];
const SHA256_ORDER: Array<[number, number, number]> = [
  [0, 10, 20], [21, 1, 11], [12, 22, 2], [3, 13, 23], [24, 4, 14], [15, 25, 5], [6, 16, 26], [27, 7, 17], [18, 28, 8], [9, 19, 29],
];

/** Repeat `block` cyclically to `len` bytes (the P and S sequences of the spec). */
function cycle(block: Buffer, len: number): Buffer {
  const out = Buffer.alloc(len);
  for (let i = 0; i < len; i += block.length) block.copy(out, i, 0, Math.min(block.length, len - i));
  return out;
}

/** Let other requests run during a long hash: yield to the event loop every so many rounds. */
const YIELD_EVERY = 2000;
const yieldLoop = () => new Promise<void>((r) => setImmediate(r));

/**
 * SHA-crypt per Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512" (the algorithm glibc implements for `$5$`/`$6$`).
 * Returns the full crypt string, or null when the setting is malformed or asks for too many rounds.
 */
export async function shaCrypt(pw: Buffer, setting: string, algo: 'sha512' | 'sha256'): Promise<string | null> {
  const id = algo === 'sha512' ? '$6$' : '$5$';
  if (!setting.startsWith(id)) return null;
  let rest = setting.slice(3);
  let rounds = 5000;
  let customRounds = false;
  const rm = /^rounds=(\d{1,10})\$/.exec(rest);
  if (rm) {
    rounds = Math.min(Math.max(Number(rm[1]), 1000), 999_999_999);
    customRounds = true;
    rest = rest.slice(rm[0].length);
  }
  if (rounds > MAX_SHA_CRYPT_ROUNDS) return null;
  const end = rest.indexOf('$');
  const saltStr = (end < 0 ? rest : rest.slice(0, end)).slice(0, 16);
  const salt = Buffer.from(saltStr, 'latin1');
  const H = (...parts: Buffer[]) => {
    const h = createHash(algo);
    for (const p of parts) h.update(p);
    return h.digest();
  };
  const plen = pw.length;

  const B = H(pw, salt, pw);
  const a = createHash(algo).update(pw).update(salt).update(cycle(B, plen));
  for (let n = plen; n > 0; n >>= 1) a.update(n & 1 ? B : pw);
  const A = a.digest();

  const dp = createHash(algo);
  for (let i = 0; i < plen; i++) dp.update(pw);
  const P = cycle(dp.digest(), plen);

  const ds = createHash(algo);
  for (let i = 0; i < 16 + A[0]!; i++) ds.update(salt);
  const S = cycle(ds.digest(), salt.length);

  let C = A;
  for (let i = 0; i < rounds; i++) {
    const h = createHash(algo);
    h.update(i & 1 ? P : C);
    if (i % 3) h.update(S);
    if (i % 7) h.update(P);
    h.update(i & 1 ? C : P);
    C = h.digest();
    if (i % YIELD_EVERY === YIELD_EVERY - 1) await yieldLoop();
  }

  let out = '';
  if (algo === 'sha512') {
    for (const [x, y, z] of SHA512_ORDER) out += b64From24(C[x]!, C[y]!, C[z]!, 4);
    out += b64From24(0, 0, C[63]!, 2);
  } else {
    for (const [x, y, z] of SHA256_ORDER) out += b64From24(C[x]!, C[y]!, C[z]!, 4);
    out += b64From24(0, C[31]!, C[30]!, 3);
  }
  return `${id}${customRounds ? `rounds=${rounds}$` : ''}${saltStr}$${out}`;
}

async function verifyShaCrypt(pw: Buffer, value: string, algo: 'sha512' | 'sha256'): Promise<boolean> {
  const expectedLen = algo === 'sha512' ? 86 : 43;
  const m = /^\$[56]\$(?:rounds=\d{1,10}\$)?[^$:\n]{0,16}\$([./0-9A-Za-z]+)$/.exec(value);
  if (!m || m[1]!.length !== expectedLen) return false;
  const computed = await shaCrypt(pw, value, algo);
  if (computed === null) return false;
  return constantTimeEqual(Buffer.from(computed.slice(-expectedLen)), Buffer.from(m[1]!));
}

/** md5-crypt (`$1$`), Poul-Henning Kamp's FreeBSD algorithm, as glibc and Dovecot's MD5-CRYPT implement it. */
export function md5Crypt(pw: Buffer, setting: string): string | null {
  if (!setting.startsWith('$1$')) return null;
  const rest = setting.slice(3);
  const end = rest.indexOf('$');
  const saltStr = (end < 0 ? rest : rest.slice(0, end)).slice(0, 8);
  const salt = Buffer.from(saltStr, 'latin1');
  const magic = Buffer.from('$1$');
  let fin = createHash('md5').update(pw).update(salt).update(pw).digest();
  const ctx = createHash('md5').update(pw).update(magic).update(salt);
  for (let pl = pw.length; pl > 0; pl -= 16) ctx.update(fin.subarray(0, Math.min(pl, 16)));
  for (let i = pw.length; i; i >>= 1) ctx.update(i & 1 ? Buffer.from([0]) : pw.subarray(0, 1));
  fin = ctx.digest();
  for (let i = 0; i < 1000; i++) {
    const c = createHash('md5');
    c.update(i & 1 ? pw : fin);
    if (i % 3) c.update(salt);
    if (i % 7) c.update(pw);
    c.update(i & 1 ? fin : pw);
    fin = c.digest();
  }
  let out = '';
  for (const [x, y, z] of [[0, 6, 12], [1, 7, 13], [2, 8, 14], [3, 9, 15], [4, 10, 5]] as const) out += b64From24(fin[x]!, fin[y]!, fin[z]!, 4);
  out += b64From24(0, 0, fin[11]!, 2);
  return `$1$${saltStr}$${out}`;
}

function verifyMd5Crypt(pw: Buffer, value: string): boolean {
  const m = /^\$1\$[^$:\n]{0,8}\$([./0-9A-Za-z]{22})$/.exec(value);
  if (!m) return false;
  const computed = md5Crypt(pw, value);
  if (computed === null) return false;
  return constantTimeEqual(Buffer.from(computed.slice(-22)), Buffer.from(m[1]!));
}

/** A syntactically valid argon2id hash of a random password: verified for unknown users so that they cost the same time as known ones. */
let dummyHash: Promise<string> | undefined;
export function dummyPasswordHash(): Promise<string> {
  dummyHash ??= hashPassword(randomBytes(18).toString('base64'));
  return dummyHash;
}
