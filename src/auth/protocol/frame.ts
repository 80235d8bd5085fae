// The saslauthd wire format: counted strings (uint16 big-endian length + bytes), as in cyrus-sasl saslauthd/utils.c.
// Trusts nothing: every byte here comes from a socket peer; lengths are checked before anything is buffered.

/** Upstream MAX_REQ_LEN: a field longer than this gets `NO ` at once. */
export const MAX_FIELD_LEN = 256;
/** Fields of a 2.1.28 request; master adds a 5th (client address). */
export const BASE_FIELDS = 4;
export const MAX_FIELDS = 5;

export type ParseResult =
  /** More bytes are needed. `fields` counts the complete fields so far. */
  | { kind: 'need'; fields: number }
  /** A length prefix above MAX_FIELD_LEN: reply `NO ` without reading on. */
  | { kind: 'oversize' }
  /** A complete request. */
  | { kind: 'request'; fields: Buffer[] };

/**
 * Parse a request from the bytes received so far.
 * Four fields make a request when nothing follows them; when bytes follow, they must form the optional fifth field.
 * With `fourOnly`, the first four fields are the request whatever follows them (a 5th field that never completed).
 */
export function parseRequest(buf: Buffer, fourOnly = false): ParseResult {
  const fields: Buffer[] = [];
  let off = 0;
  while (fields.length < MAX_FIELDS) {
    if (fields.length === BASE_FIELDS && (fourOnly || off === buf.length)) return { kind: 'request', fields };
    if (buf.length - off < 2) return { kind: 'need', fields: fields.length };
    const len = buf.readUInt16BE(off);
    if (len > MAX_FIELD_LEN) return { kind: 'oversize' };
    if (buf.length - off - 2 < len) return { kind: 'need', fields: fields.length };
    fields.push(buf.subarray(off + 2, off + 2 + len));
    off += 2 + len;
  }
  return { kind: 'request', fields };
}

/** Encode fields as counted strings. Throws if one is longer than 65535 bytes (the format cannot carry it). */
export function encodeFields(fields: (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of fields) {
    const b = typeof f === 'string' ? Buffer.from(f, 'utf8') : f;
    if (b.length > 0xffff) throw new RangeError('saslauthd field longer than 65535 bytes');
    const head = Buffer.alloc(2);
    head.writeUInt16BE(b.length);
    parts.push(head, b);
  }
  return Buffer.concat(parts);
}

/** Parse a reply (one counted string). Returns null while incomplete. */
export function parseReply(buf: Buffer): { text: Buffer } | null {
  if (buf.length < 2) return null;
  const len = buf.readUInt16BE(0);
  if (buf.length < 2 + len) return null;
  return { text: buf.subarray(2, 2 + len) };
}

// ignoreBOM: a leading U+FEFF is kept, so that a login with and without one stay two different logins.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Decode a field the way upstream uses it: as a C string, so an embedded NUL ends it.
 * Returns null when the bytes are not valid UTF-8 (refused rather than guessed, so two different byte strings never compare equal).
 */
export function fieldToString(b: Buffer): string | null {
  const nul = b.indexOf(0);
  const bytes = nul >= 0 ? b.subarray(0, nul) : b;
  try {
    return utf8.decode(bytes);
  } catch {
    return null;
  }
}
