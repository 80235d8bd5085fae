// Random identifiers from the CSPRNG, drawn from a block fetched 4 KB at a time: one getrandom call per few hundred ids
// instead of one each (crypto.randomBytes does not pool). For names and ids that must not repeat or be guessed, not keys.
import crypto from 'node:crypto';

const BLOCK = 4096;
let pool = Buffer.alloc(0);
let pos = 0;

function take(n: number): number {
  if (pos + n > pool.length) {
    pool = crypto.randomBytes(BLOCK);
    pos = 0;
  }
  pos += n;
  return pos - n;
}

/** n random bytes as 2n lowercase hex digits. */
export function randomHex(n: number): string {
  const at = take(n);
  return pool.toString('hex', at, at + n);
}

/** 80 random bits as 16 base-32 digits (0-9a-v), the shape of smtp-server's own session ids. */
export function sessionId(): string {
  const at = take(10);
  const hi = pool.readUIntBE(at, 5);
  const lo = pool.readUIntBE(at + 5, 5);
  return hi.toString(32).padStart(8, '0') + lo.toString(32).padStart(8, '0');
}
