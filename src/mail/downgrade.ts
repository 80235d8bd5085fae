// 8-bit to 7-bit conversion of a MIME message (RFC 6152 section 3: a server that does not announce 8BITMIME must not
// receive 8-bit data; the sender converts or returns the message). Every body part that holds 8-bit bytes is re-encoded
// as quoted-printable (RFC 2045 6.7) and its Content-Transfer-Encoding header set accordingly; parts already 7-bit are
// left byte for byte. What cannot be converted without changing its meaning (8-bit bytes in a header, a "binary"
// part, an 8-bit preamble, a broken multipart) makes the conversion fail: the caller bounces the message instead.
// Pure function over untrusted bytes (the message comes from a client); bounded recursion.

import { isAscii } from 'node:buffer';

const CRLF = Buffer.from('\r\n');
const MAX_DEPTH = 20;

/** Does the message hold any byte above 0x7f (whatever its envelope declared)? Native scan, no copy. */
export function has8bit(b: Buffer): boolean {
  return !isAscii(b);
}

/** Split a part into its header block (with its final CRLF, without the empty line) and its body. */
function splitPart(part: Buffer): { head: Buffer; body: Buffer; sep: boolean } {
  if (part.subarray(0, 2).equals(CRLF)) return { head: Buffer.alloc(0), body: part.subarray(2), sep: true };
  const i = part.indexOf('\r\n\r\n');
  if (i < 0) return { head: part, body: Buffer.alloc(0), sep: false };
  return { head: part.subarray(0, i + 2), body: part.subarray(i + 4), sep: true };
}

/** The unfolded value of the first header `name` (ASCII headers only). */
function headerValue(head: string, name: string): string | undefined {
  const re = new RegExp(`^${name}[ \\t]*:([^\\r\\n]*(?:\\r\\n[ \\t][^\\r\\n]*)*)`, 'im');
  const m = re.exec(head);
  return m ? m[1]!.replace(/\r\n/g, '').trim() : undefined;
}

function param(value: string, key: string): string | undefined {
  const m = new RegExp(`;\\s*${key}\\s*=\\s*(?:"((?:[^"\\\\]|\\\\.)*)"|([^;\\s]+))`, 'i').exec(value);
  return m ? (m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]) : undefined;
}

/** Set Content-Transfer-Encoding in a header block (replacing every existing one). */
function withEncoding(head: string, cte: string): string {
  const without = head.replace(/^Content-Transfer-Encoding[ \t]*:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*/gim, '');
  return `${without}Content-Transfer-Encoding: ${cte}\r\n`;
}

/** Quoted-printable (RFC 2045 6.7): CRLF line breaks kept as hard breaks, lines of at most 76 characters. */
export function quotedPrintable(body: Buffer): Buffer {
  const out: string[] = [];
  let start = 0;
  for (;;) {
    const nl = body.indexOf(CRLF, start);
    const line = body.subarray(start, nl < 0 ? body.length : nl);
    let cur = '';
    const lines: string[] = [];
    for (let i = 0; i < line.length; i++) {
      const c = line[i]!;
      const last = i === line.length - 1;
      const lit = (c >= 33 && c <= 126 && c !== 61) || ((c === 32 || c === 9) && !last);
      const enc = lit ? String.fromCharCode(c) : `=${c.toString(16).toUpperCase().padStart(2, '0')}`;
      if (cur.length + enc.length > 75) {
        lines.push(`${cur}=`);
        cur = '';
      }
      cur += enc;
    }
    lines.push(cur);
    out.push(lines.join('\r\n'));
    if (nl < 0) break;
    start = nl + 2;
  }
  return Buffer.from(out.join('\r\n'), 'latin1');
}

/** Convert one entity (header block + body); undefined when it cannot be converted faithfully. */
function convert(part: Buffer, depth: number, defaultType: string): Buffer | undefined {
  if (!has8bit(part)) return part;
  if (depth > MAX_DEPTH) return undefined;
  const { head, body, sep } = splitPart(part);
  if (has8bit(head)) return undefined; // 8-bit headers need SMTPUTF8 or RFC 2047, not a transfer encoding
  const headText = head.toString('latin1');
  const type = (headerValue(headText, 'Content-Type') ?? defaultType).toLowerCase();
  const cte = (headerValue(headText, 'Content-Transfer-Encoding') ?? '7bit').toLowerCase();
  if (!sep) return undefined;
  if (type.startsWith('multipart/')) {
    const boundary = param(headerValue(headText, 'Content-Type') ?? '', 'boundary');
    if (!boundary || (cte !== '7bit' && cte !== '8bit')) return undefined;
    const parts = multipartRanges(body, boundary);
    if (!parts) return undefined;
    const childType = type.startsWith('multipart/digest') ? 'message/rfc822' : 'text/plain';
    // The body is kept byte for byte (delimiters, preamble, epilogue) except the parts, each replaced by its conversion.
    const chunks: Buffer[] = [Buffer.from(withEncoding(headText, '7bit'), 'latin1'), CRLF];
    let at = 0;
    for (const [from, to] of parts) {
      const c = convert(body.subarray(from, to), depth + 1, childType);
      if (!c) return undefined;
      chunks.push(body.subarray(at, from), c);
      at = to;
    }
    const rest = body.subarray(at);
    if (has8bit(rest) || has8bit(body.subarray(0, parts[0]![0]))) return undefined; // 8-bit preamble or epilogue
    chunks.push(rest);
    return Buffer.concat(chunks);
  }
  if (type.startsWith('message/rfc822') || type.startsWith('message/global')) {
    if (type.startsWith('message/global')) return undefined; // its headers may be 8-bit by definition
    const inner = convert(body, depth + 1, 'text/plain');
    return inner ? Buffer.concat([Buffer.from(withEncoding(headText, '7bit'), 'latin1'), CRLF, inner]) : undefined;
  }
  if (cte === 'binary' || cte === 'base64' || cte === 'quoted-printable') return undefined; // 8-bit where none may be
  return Buffer.concat([Buffer.from(withEncoding(headText, 'quoted-printable'), 'latin1'), CRLF, quotedPrintable(body)]);
}

/** Byte ranges of a multipart body's parts (RFC 2046 5.1.1); undefined without a closing delimiter. */
function multipartRanges(body: Buffer, boundary: string): [number, number][] | undefined {
  const delim = `--${boundary}`;
  const ranges: [number, number][] = [];
  let partStart = -1;
  for (let pos = 0; pos <= body.length; ) {
    const nl = body.indexOf(CRLF, pos);
    const end = nl < 0 ? body.length : nl;
    const line = body.toString('latin1', pos, Math.min(end, pos + delim.length + 80)).replace(/[ \t]+$/, '');
    if (line === delim || line === `${delim}--`) {
      // A part ends at the CRLF before the delimiter line (that CRLF belongs to the delimiter).
      if (partStart >= 0) ranges.push([partStart, Math.max(partStart, pos - 2)]);
      if (line !== delim) return ranges.length ? ranges : undefined;
      partStart = nl < 0 ? body.length : nl + 2;
    }
    if (nl < 0) break;
    pos = nl + 2;
  }
  return undefined;
}

/**
 * The message converted to 7-bit, or undefined when it cannot be converted faithfully (the caller returns it to the
 * sender with 5.6.3). A message without MIME headers is text/plain (RFC 2045 5.2).
 */
export function downgradeTo7bit(message: Buffer): Buffer | undefined {
  if (!has8bit(message)) return message;
  const { head } = splitPart(message);
  const text = head.toString('latin1');
  // Not MIME yet: say it is, and that the charset of its 8-bit text is not known (RFC 1428), before encoding it.
  let extra = '';
  if (headerValue(text, 'MIME-Version') === undefined) extra += 'MIME-Version: 1.0\r\n';
  if (headerValue(text, 'Content-Type') === undefined) extra += 'Content-Type: text/plain; charset=unknown-8bit\r\n';
  return convert(extra ? Buffer.concat([head, Buffer.from(extra), message.subarray(head.length)]) : message, 0, 'text/plain');
}
