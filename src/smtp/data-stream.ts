// smtp-server's input parser (SMTPStream) with a faster DATA phase: the engine looks at every byte of a message in a
// JavaScript loop to find the dots that start a line (the end marker "\r\n.\r\n" and dot-stuffing "\n.."); here the
// search jumps from one "\n." to the next with Buffer.indexOf (native code). Same decisions in the same order, so the
// same bytes reach the message stream and the same bytes are left for the commands after the final dot: a differential
// fuzz test (test/unit/fuzz/data-stream.test.ts) feeds both parsers the same messages cut into random chunks.
// Why: the byte loop was ~3 % of the SMTP event loop for 10 KB messages and grows with the message (~1-2 ms per MB).
// Relies on SMTPStream's data-mode fields and helpers (_dataStream, _lastBytes, _atDataStart, _countDataBytes,
// _endDataMode), pinned by package-lock; everything else is the engine's own.
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';

const LF_DOT = Buffer.from('\n.');
const END_MARKER = Buffer.from('\r\n.\r\n');

interface DataModeInternals {
  _endDataMode(chunk: Buffer | false, remainder: Buffer, done: () => void): void;
}

export class FastDataStream extends SMTPStream {
  override _feedDataStream(input: Buffer, done: Parameters<SMTPStream['_feedDataStream']>[1]): void {
    const out = this._dataStream!;
    let chunk = input;
    // The last bytes of the previous chunk may begin a dot line or the end marker: searched again with this chunk.
    if (this._lastBytes && this._lastBytes.length) {
      chunk = Buffer.concat([this._lastBytes, chunk]);
      this._lastBytes = false;
    }
    const self = this as unknown as DataModeInternals;
    // A message whose first line is the lone dot is empty. Only before any byte of it was consumed: once a leading
    // escape dot has been stripped, a "." at the start of the next chunk is content (no command can be smuggled in by
    // choosing where TCP cuts the stream).
    if (this._atDataStart && chunk.length >= 3 && chunk[0] === 0x2e && chunk[1] === 0x0d && chunk[2] === 0x0a) {
      self._endDataMode(false, chunk.subarray(3), done);
      return;
    }
    if (this._atDataStart && chunk.length >= 2 && chunk[0] === 0x2e && chunk[1] === 0x2e) {
      chunk = chunk.subarray(1); // the first line's escape dot
      this._atDataStart = false;
    }
    const len = chunk.length;
    // Each dot that starts a line, after at least two bytes and before the last two (those wait for the next chunk).
    for (let lf = chunk.indexOf(LF_DOT, 1); lf !== -1 && lf + 1 < len - 2; lf = chunk.indexOf(LF_DOT, lf + 1)) {
      const dot = lf + 1;
      if (chunk.compare(END_MARKER, 0, END_MARKER.length, dot - 2, dot + 3) === 0) {
        // The message ends before the marker's dot (its CRLF belongs to the message); the rest is commands.
        const body = chunk.subarray(0, dot);
        this._countDataBytes(body.length);
        self._endDataMode(body, chunk.subarray(dot + 3), done);
        return;
      }
      if (chunk[dot + 1] === 0x2e) {
        // Dot-stuffing: emit up to the escape dot, go on after it (on the next turn of the loop, as the engine does).
        const head = chunk.subarray(0, dot);
        this._countDataBytes(head.length);
        if (out.writable) out.write(head);
        const rest = chunk.subarray(dot + 1);
        setImmediate(() => this._feedDataStream(rest, done));
        return;
      }
    }
    // No decision possible yet: keep the last 4 bytes (a marker may straddle chunks), emit the rest.
    this._lastBytes = chunk.length < 4 ? chunk : chunk.subarray(chunk.length - 4);
    if (this._lastBytes.length >= chunk.length) return done();
    const emit = chunk.subarray(0, chunk.length - this._lastBytes.length);
    this._countDataBytes(emit.length);
    if (!out.writable) return done();
    if (out.write(emit) || out.destroyed) return done();
    // Wait for the application to read, or to destroy the stream (which never drains, only closes).
    const resume = () => {
      out.removeListener('drain', resume);
      out.removeListener('close', resume);
      done();
    };
    out.once('drain', resume);
    out.once('close', resume);
  }
}
