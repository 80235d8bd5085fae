// Cut a byte string into chunks the way a network might deliver it, for parsers that must not depend on the cuts.

/** `buf` cut at the given fractions of its length (offsets floored, deduplicated, sorted; 0 and the end ignored). */
export function cutAt(buf: Buffer, fractions: number[]): Buffer[] {
  const offsets = [...new Set(fractions.map((f) => Math.floor(f * buf.length)))].filter((o) => o > 0 && o < buf.length).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const o of offsets) {
    out.push(buf.subarray(prev, o));
    prev = o;
  }
  out.push(buf.subarray(prev));
  return out;
}
