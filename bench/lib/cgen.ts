// Builds and runs the C load generator (bench/lib/loadgen.c) for one LoadSpec, and turns its output into a LoadResult
// with the same meaning as runLoad()'s. Trusts the program it builds; checks the shape of what it prints.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { requestPayloads, summarize, type LoadResult, type LoadSpec } from './loadgen.js';

const SOURCE = path.join(import.meta.dirname, 'loadgen.c');

/**
 * Compile loadgen.c (with the C compiler native addons are built with) into `dir`, once per source version.
 * Returns the binary's path, or throws with the compiler's message.
 */
export function buildCGenerator(dir = path.join(os.tmpdir(), 'facteur-bench-cgen')): string {
  const src = fs.readFileSync(SOURCE);
  const stamp = `${src.length}-${Math.floor(fs.statSync(SOURCE).mtimeMs)}`;
  const bin = path.join(dir, `loadgen-${stamp}`);
  if (fs.existsSync(bin)) return bin;
  fs.mkdirSync(dir, { recursive: true });
  const tmp = `${bin}.${process.pid}`;
  execFileSync(process.env.CC || 'cc', ['-O2', '-Wall', '-o', tmp, SOURCE], { stdio: ['ignore', 'ignore', 'pipe'] });
  fs.renameSync(tmp, bin);
  return bin;
}

/** The requests of a spec, as the program reads them on stdin: a count, then length-prefixed payloads (big-endian). */
function payloadStream(spec: LoadSpec): Buffer {
  const parts: Buffer[] = [u32(spec.users.length)];
  for (const p of requestPayloads(spec)) parts.push(u32(p.length), p);
  return Buffer.concat(parts);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

interface Header {
  ok: number;
  errorCount: number;
  connectRetries: number;
  elapsedMs: number;
  generatorCpuMs: number;
  errors: Record<string, number>;
}

/** Run one cell with the C generator at `bin`. */
export function runCLoad(bin: string, spec: LoadSpec): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const args = [spec.socket, String(spec.concurrency), String(spec.durationMs), String(spec.timeoutMs), String(spec.firstUser ?? 0), String(spec.rate ?? 0)];
    const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`C load generator exited with ${code}: ${err.trim()}`));
      try {
        resolve(parseOutput(Buffer.concat(out), spec.concurrency));
      } catch (e) {
        reject(e as Error);
      }
    });
    child.stdin.on('error', () => undefined); // it exits on bad arguments before reading: the exit code says why
    child.stdin.end(payloadStream(spec));
  });
}

/** The program's output: a JSON line, then `ok` little-endian doubles (latencies in ms). */
export function parseOutput(buf: Buffer, concurrency: number): LoadResult {
  const nl = buf.indexOf(0x0a);
  if (nl < 0) throw new Error('C load generator: no result line');
  const h = JSON.parse(buf.subarray(0, nl).toString('utf8')) as Header;
  for (const k of ['ok', 'errorCount', 'connectRetries', 'elapsedMs', 'generatorCpuMs'] as const) {
    if (typeof h[k] !== 'number' || !Number.isFinite(h[k]) || h[k] < 0) throw new Error(`C load generator: bad ${k}`);
  }
  const body = buf.subarray(nl + 1);
  if (body.length !== h.ok * 8) throw new Error(`C load generator: ${body.length} bytes of latencies for ${h.ok} successes`);
  const latencies = new Float64Array(h.ok);
  for (let i = 0; i < h.ok; i++) latencies[i] = body.readDoubleLE(i * 8);
  latencies.sort();
  return {
    concurrency,
    elapsedMs: h.elapsedMs,
    ok: h.ok,
    errors: h.errors,
    errorCount: h.errorCount,
    connectRetries: h.connectRetries,
    generatorCpuMs: h.generatorCpuMs,
    latencies,
    ...summarize(latencies, h.ok, h.elapsedMs),
  };
}
