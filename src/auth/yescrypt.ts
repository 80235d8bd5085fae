// yescrypt (`$y$`, Debian 12's default for /etc/shadow), written from the published reference specification (yescrypt-ref.c):
// the crypt-string encoding, PBKDF2/HMAC-SHA256 framing, pwxform S-boxes, Salsa20/2 and /8 block mixing. Verify-only, RW defaults.
// Trusts nothing in the setting string: every parameter is bounded before any memory is allocated; yields to the event loop while it works.
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';

const ITOA64 = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const atoi64 = (ch: string | undefined): number => {
  const v = ch === undefined ? -1 : ITOA64.indexOf(ch);
  return v < 0 ? 64 : v;
};

// Flags (yescrypt.h).
const YESCRYPT_RW = 0x002;
const YESCRYPT_RW_FLAVOR_MASK = 0x3fc;
const YESCRYPT_PREHASH = 0x10000000;
/** RW | ROUNDS_6 | GATHER_4 | SIMPLE_2 | SBOX_12K: the only flavour libxcrypt and Debian produce, and the only one implemented here. */
export const YESCRYPT_DEFAULTS = 0xb6;

/** Refuse settings that would need more memory than this (Debian's default `j9T` needs 16 MiB). */
export const MAX_YESCRYPT_BYTES = 256 * 1024 * 1024;
const MAX_T = 16;

// pwxform parameters for the default flavour.
const PWXsimple = 2;
const PWXgather = 4;
const PWXrounds = 6;
const Swidth = 8;
const PWXwords = (PWXgather * PWXsimple * 8) / 4; // 16
const Swords = (3 * (1 << Swidth) * PWXsimple * 8) / 4; // 3072
const Smask = ((1 << Swidth) - 1) * PWXsimple * 8; // 0xff0
const SboxBlocks = (Swords * 4) / 128; // 96

export interface YescryptParams {
  flags: number;
  N: number;
  r: number;
  p: number;
  t: number;
}

/** decode64_uint32: the variable-length parameter encoding. Returns [value, next index] or null. */
function decodeUint32(s: string, i: number, min: number): [number, number] | null {
  let start = 0;
  let end = 47;
  let chars = 1;
  let bits = 0;
  let c = atoi64(s[i++]);
  if (c > 63) return null;
  let dst = min;
  while (c > end) {
    dst += (end + 1 - start) * 2 ** bits;
    start = end + 1;
    end = start + Math.floor((62 - end) / 2);
    chars++;
    bits += 6;
  }
  dst += (c - start) * 2 ** bits;
  while (--chars) {
    c = atoi64(s[i++]);
    if (c > 63) return null;
    bits -= 6;
    dst += c * 2 ** bits;
  }
  return dst > 0xffffffff ? null : [dst, i];
}

/** decode64: little-endian groups of up to 4 characters into up to 3 bytes; the whole string must decode. */
export function decode64(s: string, maxLen: number): Buffer | null {
  const out: number[] = [];
  let pos = 0;
  while (pos < s.length) {
    let value = 0;
    let bits = 0;
    while (pos < s.length) {
      const c = atoi64(s[pos]);
      if (c > 63) return null;
      pos++;
      value |= c << bits;
      bits += 6;
      if (bits >= 24) break;
    }
    if (bits < 12) return null;
    for (;;) {
      if (out.length >= maxLen) return null;
      out.push(value & 0xff);
      value >>>= 8;
      bits -= 8;
      if (bits < 8) {
        if (value) return null;
        break;
      }
    }
  }
  return Buffer.from(out);
}

export function encode64(src: Uint8Array): string {
  let out = '';
  for (let i = 0; i < src.length; ) {
    let value = 0;
    let bits = 0;
    do {
      value |= src[i++]! << bits;
      bits += 8;
    } while (bits < 24 && i < src.length);
    for (let b = 0; b < bits; b += 6) {
      out += ITOA64[value & 0x3f];
      value >>>= 6;
    }
  }
  return out;
}

/** Parse `$y$<params>$<salt>[$<hash>]`. */
export function parseSetting(setting: string): { params: YescryptParams; prefix: string; salt: Buffer; saltStr: string } | null {
  if (!setting.startsWith('$y$')) return null;
  let i = 3;
  const fl = decodeUint32(setting, i, 0);
  if (!fl) return null;
  const [flavor] = fl;
  i = fl[1];
  let flags: number;
  if (flavor < YESCRYPT_RW) flags = flavor;
  else if (flavor <= YESCRYPT_RW + (YESCRYPT_RW_FLAVOR_MASK >> 2)) flags = YESCRYPT_RW + ((flavor - YESCRYPT_RW) << 2);
  else return null;
  const nl = decodeUint32(setting, i, 1);
  if (!nl || nl[0] > 63) return null;
  const N = 2 ** nl[0];
  i = nl[1];
  const rr = decodeUint32(setting, i, 1);
  if (!rr) return null;
  const r = rr[0];
  i = rr[1];
  let p = 1;
  let t = 0;
  if (setting[i] !== '$') {
    const hv = decodeUint32(setting, i, 1);
    if (!hv) return null;
    const have = hv[0];
    i = hv[1];
    if (have & 1) {
      const v = decodeUint32(setting, i, 2);
      if (!v) return null;
      [p, i] = v;
    }
    if (have & 2) {
      const v = decodeUint32(setting, i, 1);
      if (!v) return null;
      [t, i] = v;
    }
    // g (hash upgrades) and NROM (ROM) are not supported, as in the reference's yescrypt_kdf for g.
    if (have & ~3) return null;
  }
  if (setting[i++] !== '$') return null;
  const prefix = setting.slice(0, i);
  const rest = setting.slice(i);
  const last = rest.lastIndexOf('$');
  const saltStr = last < 0 ? rest : rest.slice(0, last);
  const salt = decode64(saltStr, 64);
  if (!salt) return null;
  return { params: { flags, N, r, p, t }, prefix, salt, saltStr };
}

// ---- the core (yescrypt-ref.c), on Uint32Array words in little-endian order ----

const R = (a: number, b: number) => (a << b) | (a >>> (32 - b));

function salsa20(B: Uint32Array, off: number, rounds: number, x: Uint32Array): void {
  for (let i = 0; i < 16; i++) x[(i * 5) % 16] = B[off + i];
  for (let i = 0; i < rounds; i += 2) {
    x[4] ^= R((x[0] + x[12]) | 0, 7); x[8] ^= R((x[4] + x[0]) | 0, 9);
    x[12] ^= R((x[8] + x[4]) | 0, 13); x[0] ^= R((x[12] + x[8]) | 0, 18);
    x[9] ^= R((x[5] + x[1]) | 0, 7); x[13] ^= R((x[9] + x[5]) | 0, 9);
    x[1] ^= R((x[13] + x[9]) | 0, 13); x[5] ^= R((x[1] + x[13]) | 0, 18);
    x[14] ^= R((x[10] + x[6]) | 0, 7); x[2] ^= R((x[14] + x[10]) | 0, 9);
    x[6] ^= R((x[2] + x[14]) | 0, 13); x[10] ^= R((x[6] + x[2]) | 0, 18);
    x[3] ^= R((x[15] + x[11]) | 0, 7); x[7] ^= R((x[3] + x[15]) | 0, 9);
    x[11] ^= R((x[7] + x[3]) | 0, 13); x[15] ^= R((x[11] + x[7]) | 0, 18);
    x[1] ^= R((x[0] + x[3]) | 0, 7); x[2] ^= R((x[1] + x[0]) | 0, 9);
    x[3] ^= R((x[2] + x[1]) | 0, 13); x[0] ^= R((x[3] + x[2]) | 0, 18);
    x[6] ^= R((x[5] + x[4]) | 0, 7); x[7] ^= R((x[6] + x[5]) | 0, 9);
    x[4] ^= R((x[7] + x[6]) | 0, 13); x[5] ^= R((x[4] + x[7]) | 0, 18);
    x[11] ^= R((x[10] + x[9]) | 0, 7); x[8] ^= R((x[11] + x[10]) | 0, 9);
    x[9] ^= R((x[8] + x[11]) | 0, 13); x[10] ^= R((x[9] + x[8]) | 0, 18);
    x[12] ^= R((x[15] + x[14]) | 0, 7); x[13] ^= R((x[12] + x[15]) | 0, 9);
    x[14] ^= R((x[13] + x[12]) | 0, 13); x[15] ^= R((x[14] + x[13]) | 0, 18);
  }
  for (let i = 0; i < 16; i++) B[off + i] = (B[off + i] + x[(i * 5) % 16]) >>> 0;
}

function blockmixSalsa8(B: Uint32Array, off: number, Y: Uint32Array, r: number, x: Uint32Array): void {
  const X = new Uint32Array(16);
  X.set(B.subarray(off + (2 * r - 1) * 16, off + 2 * r * 16));
  for (let i = 0; i < 2 * r; i++) {
    for (let k = 0; k < 16; k++) X[k]! ^= B[off + i * 16 + k]!;
    salsa20(X, 0, 8, x);
    Y.set(X, i * 16);
  }
  for (let i = 0; i < r; i++) B.set(Y.subarray(i * 2 * 16, i * 2 * 16 + 16), off + i * 16);
  for (let i = 0; i < r; i++) B.set(Y.subarray((i * 2 + 1) * 16, (i * 2 + 1) * 16 + 16), off + (i + r) * 16);
}

interface Pwx {
  S: Uint32Array;
  S0: number;
  S1: number;
  S2: number;
  w: number;
}

/** pwxform on the 16 words at B[off]: 64-bit multiply-add-xor with S-box lookups, then rotate the S-boxes. */
function pwxform(B: Uint32Array, off: number, ctx: Pwx): void {
  const S = ctx.S;
  const S0 = ctx.S0;
  const S1 = ctx.S1;
  const S2 = ctx.S2;
  let w = ctx.w;
  for (let i = 0; i < PWXrounds; i++) {
    for (let j = 0; j < PWXgather; j++) {
      const jo = off + j * PWXsimple * 2;
      const p0 = S0 + ((B[jo]! & Smask) >>> 2);
      const p1 = S1 + ((B[jo + 1]! & Smask) >>> 2);
      for (let k = 0; k < PWXsimple; k++) {
        const xl = B[jo + k * 2]!;
        const xh = B[jo + k * 2 + 1]!;
        // (xh * xl) as 64 bits: the low word from Math.imul, the high word from 16-bit limbs.
        const a0 = xl & 0xffff;
        const a1 = xl >>> 16;
        const b0 = xh & 0xffff;
        const b1 = xh >>> 16;
        const m1 = a0 * b1;
        const m2 = a1 * b0;
        const t = ((a0 * b0) >>> 16) + (m1 & 0xffff) + (m2 & 0xffff);
        const hi = a1 * b1 + (m1 >>> 16) + (m2 >>> 16) + (t >>> 16);
        const lo = Math.imul(xl, xh) >>> 0;
        // + S0 entry (64-bit add), then xor S1 entry.
        const sl = lo + S[p0 + k * 2]!;
        const sh = hi + S[p0 + k * 2 + 1]! + (sl > 0xffffffff ? 1 : 0);
        const rl = (sl ^ S[p1 + k * 2]!) >>> 0;
        const rh = (sh ^ S[p1 + k * 2 + 1]!) >>> 0;
        B[jo + k * 2] = rl;
        B[jo + k * 2 + 1] = rh;
        if (i !== 0 && i !== PWXrounds - 1) {
          S[S2 + w * 2] = rl;
          S[S2 + w * 2 + 1] = rh;
          w++;
        }
      }
    }
  }
  ctx.S0 = S2;
  ctx.S1 = S0;
  ctx.S2 = S1;
  ctx.w = w & ((1 << Swidth) * PWXsimple - 1);
}

function blockmixPwxform(B: Uint32Array, off: number, Y: Uint32Array, ctx: Pwx, r: number, x: Uint32Array): void {
  const r1 = (128 * r) / (PWXwords * 4);
  Y.set(B.subarray(off + (r1 - 1) * PWXwords, off + r1 * PWXwords));
  for (let i = 0; i < r1; i++) {
    if (r1 > 1) for (let k = 0; k < PWXwords; k++) Y[k]! ^= B[off + i * PWXwords + k]!;
    pwxform(Y, 0, ctx);
    B.set(Y.subarray(0, PWXwords), off + i * PWXwords);
  }
  let i = ((r1 - 1) * PWXwords * 4) / 64;
  salsa20(B, off + i * 16, 2, x);
  for (i++; i < 2 * r; i++) {
    for (let k = 0; k < 16; k++) B[off + i * 16 + k]! ^= B[off + (i - 1) * 16 + k]!;
    salsa20(B, off + i * 16, 2, x);
  }
}

/** Low 32 bits of Integerify: enough, since N is at most 2^32 here. */
const integerify = (X: Uint32Array, r: number) => X[(2 * r - 1) * 16]!;
const p2floor = (x: number) => 2 ** Math.floor(Math.log2(x));
function wrap(x: number, i: number): number {
  const n = p2floor(i);
  return (x & (n - 1)) + (i - n);
}

const YIELD_EVERY = 128;
const yieldLoop = () => new Promise<void>((res) => setImmediate(res));

class Mixer {
  readonly x = new Uint32Array(16);
  constructor(readonly r: number) {}

  private load(B: Uint32Array, off: number, X: Uint32Array, r: number) {
    for (let k = 0; k < 2 * r; k++) for (let i = 0; i < 16; i++) X[k * 16 + i] = B[off + k * 16 + ((i * 5) % 16)]!;
  }
  private store(B: Uint32Array, off: number, X: Uint32Array, r: number) {
    for (let k = 0; k < 2 * r; k++) for (let i = 0; i < 16; i++) B[off + k * 16 + ((i * 5) % 16)] = X[k * 16 + i]!;
  }

  async smix1(B: Uint32Array, off: number, r: number, N: number, rw: boolean, V: Uint32Array, voff: number, ctx: Pwx | null): Promise<void> {
    const s = 32 * r;
    const X = new Uint32Array(s);
    const Y = new Uint32Array(s);
    this.load(B, off, X, r);
    for (let i = 0; i < N; i++) {
      V.set(X, voff + i * s);
      if (rw && i > 1) {
        const j = wrap(integerify(X, r), i);
        for (let k = 0; k < s; k++) X[k]! ^= V[voff + j * s + k]!;
      }
      if (ctx) blockmixPwxform(X, 0, Y, ctx, r, this.x);
      else blockmixSalsa8(X, 0, Y, r, this.x);
      if (i % YIELD_EVERY === YIELD_EVERY - 1) await yieldLoop();
    }
    this.store(B, off, X, r);
  }

  async smix2(B: Uint32Array, off: number, r: number, N: number, Nloop: number, rw: boolean, V: Uint32Array, voff: number, ctx: Pwx | null): Promise<void> {
    const s = 32 * r;
    const X = new Uint32Array(s);
    const Y = new Uint32Array(s);
    this.load(B, off, X, r);
    for (let i = 0; i < Nloop; i++) {
      const j = integerify(X, r) & (N - 1);
      const vo = voff + j * s;
      for (let k = 0; k < s; k++) X[k]! ^= V[vo + k]!;
      if (rw) V.set(X, vo);
      if (ctx) blockmixPwxform(X, 0, Y, ctx, r, this.x);
      else blockmixSalsa8(X, 0, Y, r, this.x);
      if (i % YIELD_EVERY === YIELD_EVERY - 1) await yieldLoop();
    }
    this.store(B, off, X, r);
  }
}

const toWords = (buf: Buffer) => {
  const w = new Uint32Array(buf.length / 4);
  for (let i = 0; i < w.length; i++) w[i] = buf.readUInt32LE(i * 4);
  return w;
};
const toBytes = (w: Uint32Array, off = 0, n = w.length - off) => {
  const b = Buffer.alloc(n * 4);
  for (let i = 0; i < n; i++) b.writeUInt32LE(w[off + i]!, i * 4);
  return b;
};

/** yescrypt_kdf_body for the RW default flavour, 32-byte output. */
async function kdfBody(passwd: Buffer, salt: Buffer, flags: number, N: number, r: number, p: number, t: number): Promise<Buffer> {
  const s = 32 * r;
  // "yescrypt-prehash" for the pre-hashing pass, else its first 8 bytes "yescrypt".
  let pw: Buffer = createHmac('sha256', flags & YESCRYPT_PREHASH ? 'yescrypt-prehash' : 'yescrypt').update(passwd).digest();
  const Bbytes = pbkdf2Sync(pw, salt, 1, 128 * r * p, 'sha256');
  const B = toWords(Bbytes);
  pw = Buffer.from(Bbytes.subarray(0, 32));
  const V = new Uint32Array(s * N);
  const mixer = new Mixer(r);

  // smix
  let Nchunk = Math.floor(N / p);
  let NloopAll = Nchunk;
  if (t <= 1) {
    if (t) NloopAll *= 2;
    NloopAll = Math.floor((NloopAll + 2) / 3);
  } else NloopAll *= t - 1;
  let NloopRw = Math.floor(NloopAll / p);
  Nchunk -= Nchunk % 2;
  NloopAll += NloopAll % 2;
  NloopRw += NloopRw % 2;
  const ctxs: Pwx[] = [];
  for (let i = 0, Vchunk = 0; i < p; i++, Vchunk += Nchunk) {
    const Np = i < p - 1 ? Nchunk : N - Vchunk;
    const boff = i * s;
    const S = new Uint32Array(Swords);
    await mixer.smix1(B, boff, 1, SboxBlocks, false, S, 0, null);
    const ctx: Pwx = { S, S2: 0, S1: (1 << Swidth) * PWXsimple * 2, S0: 2 * (1 << Swidth) * PWXsimple * 2, w: 0 };
    ctxs.push(ctx);
    if (i === 0) pw = createHmac('sha256', toBytes(B, boff + s - 16, 16)).update(pw).digest();
    await mixer.smix1(B, boff, r, Np, true, V, Vchunk * s, ctx);
    await mixer.smix2(B, boff, r, p2floor(Np), NloopRw, true, V, Vchunk * s, ctx);
  }
  for (let i = 0; i < p; i++) await mixer.smix2(B, i * s, r, N, NloopAll - NloopRw, false, V, 0, ctxs[i]!);

  const dk = pbkdf2Sync(pw, toBytes(B), 1, 32, 'sha256');
  if (flags & YESCRYPT_PREHASH) return dk;
  const clientKey = createHmac('sha256', dk).update('Client Key').digest();
  return createHash('sha256').update(clientKey).digest();
}

/** Why these parameters are refused, or undefined when they can be computed. */
export function paramsProblem(pr: YescryptParams): string | undefined {
  if (pr.flags !== YESCRYPT_DEFAULTS) return 'only the default yescrypt flavour (RW, 6 rounds, gather 4, simple 2, 12 KiB S-boxes) is supported';
  if (pr.N < 2 || pr.r < 1 || pr.p < 1 || pr.t > MAX_T) return 'parameters out of range';
  if (pr.N / pr.p <= 1 || pr.r * 128 < PWXwords * 4) return 'parameters out of range';
  if (128 * pr.r * pr.N + 128 * pr.r * pr.p + Swords * 4 * pr.p > MAX_YESCRYPT_BYTES) return 'needs too much memory';
  return undefined;
}

/**
 * Compute the full crypt string for `password` and a `$y$` setting (or full hash), as crypt(3) would.
 * Returns null for malformed or unsupported settings.
 */
export async function yescryptCrypt(password: Buffer, setting: string): Promise<string | null> {
  const parsed = parseSetting(setting);
  if (!parsed || paramsProblem(parsed.params)) return null;
  const { flags, N, r, p, t } = parsed.params;
  let passwd = password;
  if (p >= 1 && N / p >= 0x100 && (N / p) * r >= 0x20000) {
    passwd = await kdfBody(passwd, parsed.salt, flags | YESCRYPT_PREHASH, N / 64, r, p, 0);
  }
  const hash = await kdfBody(passwd, parsed.salt, flags, N, r, p, t);
  return `${parsed.prefix}${parsed.saltStr}$${encode64(hash)}`;
}
