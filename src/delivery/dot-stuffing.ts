// The outbound message encoder of nodemailer's SMTPConnection (its DataStream: dot-stuffing, bare CR and bare LF made
// CRLF) with the same output found faster: nodemailer examines every byte in a JavaScript loop; here only the positions
// where something can be inserted are examined (right after a CR, at a LF, right after a LF, the first byte), found with
// Buffer.indexOf. Same inserts at the same places, same byte counters, so the same bytes on the wire: a differential
// fuzz test (test/unit/fuzz/dot-stuffing.test.ts) compares both on random chunked input. Installed once, by
// src/delivery/smtp-client.ts, on DataStream's prototype (nodemailer builds its DataStream itself, per message).
// Relies on DataStream's fields (inByteCount, outByteCount, lastByte), pinned by package-lock.
import type { TransformCallback } from 'node:stream';
import { createRequire } from 'node:module';

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const INSERT_LF = Buffer.from('\n');
const INSERT_LF_DOT = Buffer.from('\n.');
const INSERT_CR = Buffer.from('\r');
const INSERT_DOT = Buffer.from('.');

interface DataStreamState {
  inByteCount: number;
  outByteCount: number;
  /** Last byte of the previous chunk; false before the first. */
  lastByte: number | false;
  push(chunk: Buffer): boolean;
}

/** What goes before chunk[i], by nodemailer's three rules (bare CR, bare LF, dot at a line start). */
function insertAt(chunk: Buffer, i: number, lastByte: number | false): Buffer | undefined {
  const byte = chunk[i];
  const prev = i ? chunk[i - 1] : lastByte;
  if (prev === CR && byte !== LF) return byte === DOT ? INSERT_LF_DOT : INSERT_LF;
  if (byte === LF && prev !== CR) return INSERT_CR;
  if (byte === DOT && (prev === LF || prev === false)) return INSERT_DOT;
  return undefined;
}

/** DataStream's _transform, examining only the positions where the rules can apply. */
export function fastTransform(this: DataStreamState, input: Buffer | string, _encoding: BufferEncoding, done: TransformCallback): void {
  if (!input || !input.length) return done();
  const chunk = typeof input === 'string' ? Buffer.from(input) : input;
  const len = chunk.length;
  this.inByteCount += len;
  const parts: Buffer[] = [];
  let outLen = 0;
  let lastPos = 0;
  const at = (i: number) => {
    const insert = insertAt(chunk, i, this.lastByte);
    if (!insert) return;
    if (i > lastPos) {
      parts.push(chunk.subarray(lastPos, i));
      outLen += i - lastPos;
    }
    parts.push(insert);
    outLen += insert.length;
    lastPos = i;
  };
  // Position 0 depends on the previous chunk. After it, a rule can only apply at c+1 for a CR at c, and at l and l+1
  // for a LF at l: each CR or LF found gives the positions q and q+1, each examined once, in order.
  at(0);
  let next = 1; // positions below this are done
  let cr = chunk.indexOf(CR, 0);
  let lf = chunk.indexOf(LF, 0);
  while (cr !== -1 || lf !== -1) {
    const q = cr === -1 ? lf : lf === -1 ? cr : Math.min(cr, lf);
    if (q >= next) at(q);
    if (q + 1 >= next && q + 1 < len) at(q + 1);
    next = Math.max(next, q + 2);
    if (cr === q) cr = chunk.indexOf(CR, q + 1);
    if (lf === q) lf = chunk.indexOf(LF, q + 1);
  }
  if (parts.length) {
    if (lastPos < len) {
      parts.push(chunk.subarray(lastPos));
      outLen += len - lastPos;
    }
    this.outByteCount += outLen;
    this.push(Buffer.concat(parts, outLen));
  } else {
    this.outByteCount += len;
    this.push(chunk);
  }
  this.lastByte = chunk[len - 1];
  done();
}

type DataStreamClass = { prototype: { _transform: (...a: never[]) => void } };
const require = createRequire(import.meta.url);
/** nodemailer's DataStream class (the one its SMTPConnection instantiates). */
export const NodemailerDataStream = require('nodemailer/lib/smtp-connection/data-stream') as DataStreamClass;
/** nodemailer's own _transform, kept for the differential test. */
export const originalTransform = NodemailerDataStream.prototype._transform;

let installed = false;
/** Put fastTransform in place of nodemailer's byte loop (idempotent). */
export function installFastDotStuffing(): void {
  if (installed) return;
  installed = true;
  NodemailerDataStream.prototype._transform = fastTransform as unknown as DataStreamClass['prototype']['_transform'];
}
