// Queue benchmark: facteur versus Debian's Postfix, same machine, same run. (1) enqueue throughput over plain SMTP with
// the fsync guarantee and delivery held (smtp-source and the Node generator), plus facteur's raw Spool.commit rate;
// (2) end-to-end: M messages submitted, relayed to one local smtp-sink, timed until the sink has counted all M.
// Trusts the binaries it starts; every 4xx/5xx, timeout or missing message is an error. Usage: npm run bench:queue [-- --quick] [--no-doc] [--workers N]
import { spawn, spawnSync, execFile } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { freePort, waitForSocket } from '../test/helpers/net.js';
import { treeCpuMs, machineBusyMs, quietWaiter } from './lib/procstat.js';
import { machineInfo, textTable, markdownTable, writeSection } from './lib/report.js';
import { buildMessage } from './smtp/client.js';
import { startQueuePostfix, type QueuePostfix } from './queue/postfix.js';
import { Generator, exited } from './smtp/generator.js';
import { Spool } from '../src/queue/spool.js';
import { runUnderBenchLock } from './lib/lock.js';
import { takeTurns } from './lib/rounds.js';
import { FACTEUR as FACTEUR_BIN, facteurNodeFlags } from './lib/daemons.js'; // the label FACTEUR below is this bench's own

const argv = process.argv.slice(2);
// Serialize with the other benchmarks (see lib/lock.ts).
runUnderBenchLock(import.meta.filename, argv);

const run = promisify(execFile);
const QUICK = argv.includes('--quick');
/** `--e2e`: only the end-to-end cells, printed (the document is not rewritten): for trying a change quickly. */
const E2E_ONLY = argv.includes('--e2e');
const WRITE_DOC = !argv.includes('--no-doc') && !E2E_ONLY;
/** `--workers N`: facteur serve with `[server] workers = N` (its multi-process mode); its rows say so. Default 1 (key not written). */
const WORKERS = (() => {
  const i = argv.indexOf('--workers');
  if (i < 0) return 1;
  const n = Number(argv[i + 1]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--workers needs a whole number of at least 1, not ${argv[i + 1] ?? 'nothing'}`);
  return n;
})();
const FACTEUR = WORKERS > 1 ? `facteur (${WORKERS} workers)` : 'facteur';
const BODY = 10_240;
const DOMAIN = 'bench.test';
const FROM = 'sender@example.net';
const TO = `postmaster@${DOMAIN}`;
const CELL_MS = QUICK ? 3000 : 5000;
const SPOOL_N = QUICK ? 300 : 1000;
const SOURCE_N = QUICK ? 600 : 4000;
/** Rounds per enqueue cell, taking turns between the servers. */
const ROUNDS = QUICK ? 1 : 3;
const E2E_N = QUICK ? 1000 : 4000;
const E2E_SESSIONS = 16;
const E2E_WARMUP = QUICK ? 500 : 2000;
const CONCURRENCY = [8, 32];
const DEST_CONCURRENCY = 20;
const DELIVERY_CONCURRENCY = 100;
const DOC = path.resolve(import.meta.dirname, '../docs/benchmarks-queue.md');
const log = (s: string) => process.stderr.write(`${s}\n`);

async function countFiles(dir: string): Promise<number> {
  let n = 0;
  for (const e of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (e.isDirectory()) n += await countFiles(path.join(dir, e.name));
    else n++;
  }
  return n;
}

/** smtp-sink counting messages (-c prints "sess=… quit=… mesg=N\r" on stdout), in its own process. */
async function startCountingSink(): Promise<{ port: number; pid: number; count(): number; sessions(): number; stop(): Promise<void> }> {
  const port = await freePort();
  const child = spawn('/usr/sbin/smtp-sink', ['-c', '-u', 'nobody', '-h', 'sink.test', `127.0.0.1:${port}`, '256'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let last = 0;
  let sess = 0;
  let tail = '';
  child.stdout!.on('data', (d: Buffer) => {
    tail = (tail + d.toString('latin1')).slice(-200);
    const all = [...tail.matchAll(/sess=(\d+) quit=\d+ mesg=(\d+)/g)];
    if (all.length) {
      sess = Number(all[all.length - 1]![1]);
      last = Number(all[all.length - 1]![2]);
    }
  });
  child.stderr!.on('data', (d: Buffer) => log(`smtp-sink: ${d.toString().trim()}`));
  await waitForSocket(port, 5000);
  return {
    port,
    pid: child.pid!,
    count: () => last,
    sessions: () => sess,
    async stop() {
      child.kill('SIGTERM');
      await exited(child);
    },
  };
}

interface Server {
  name: string;
  port: number;
  rootPid(): number | Promise<number>;
  /** Messages sitting in the queue (facteur: active/; Postfix: hold/ or every queue). */
  queued(): Promise<number>;
  stop(): Promise<void>;
}

function facteurToml(dir: string, port: number, sinkPort?: number, inline = false, workers = WORKERS): string {
  return `[server]
data_dir = ${JSON.stringify(path.join(dir, 'data'))}
hostname = "mx.${DOMAIN}"
local_domains = [${JSON.stringify(DOMAIN)}]
log_level = "info"
max_connections = 2000
max_connections_per_ip = 2000
${workers > 1 ? `workers = ${workers}\n` : ''}
[auth]
backend = "file"
option = ${JSON.stringify(path.join(dir, 'users'))}

[inbound]
listen = ["127.0.0.1:${port}"]
# As the Postfix it is compared with (smtpd_tls_security_level = none): no STARTTLS offered, TLS is bench:smtp's matter.
starttls = false

[submission]
enabled = false

[submissions]
enabled = false

[ratelimit]
messages_per_user_per_hour = 0
recipients_per_user_per_hour = 0
connections_per_ip_per_minute = 0

[metrics]
listen = ""

[delivery]
starttls = "off"
dkim_sign = false
${inline ? 'thread = false\n' : ''}concurrency = ${DELIVERY_CONCURRENCY}
destination_concurrency = ${DEST_CONCURRENCY}
${sinkPort === undefined ? '' : `transport_map = [${JSON.stringify(`${DOMAIN} = smtp:[127.0.0.1]:${sinkPort}`)}]`}
`;
}

/** facteur: delivery off (bench/smtp/facteur-serve.ts) for the enqueue test, `facteur serve` with its scheduler for end-to-end. */
async function startFacteur(dir: string, sinkPort?: number, inline = false, workers = WORKERS): Promise<Server> {
  const port = await freePort();
  await fsp.mkdir(dir, { recursive: true });
  await fsp.writeFile(path.join(dir, 'users'), '');
  const config = path.join(dir, 'facteur.toml');
  await fsp.writeFile(config, facteurToml(dir, port, sinkPort, inline, workers));
  const logFd = fs.openSync(path.join(dir, 'facteur.log'), 'a');
  // The Node flags of bin/facteur's shebang, as in production, for both ways of starting it.
  const args =
    sinkPort === undefined
      ? [...facteurNodeFlags(), '--import', 'tsx', path.join(import.meta.dirname, 'smtp/facteur-serve.ts'), config]
      : [...facteurNodeFlags(), FACTEUR_BIN, 'serve', '--config', config];
  const proc = spawn(process.execPath, args, { stdio: ['ignore', logFd, logFd, ...(sinkPort === undefined ? ['ipc' as const] : [])] });
  fs.closeSync(logFd);
  await Promise.race([
    waitForSocket(port, 30_000),
    exited(proc).then(() => {
      throw new Error(`facteur exited ${proc.exitCode}; see ${path.join(dir, 'facteur.log')}`);
    }),
  ]);
  return {
    name: workers === WORKERS ? FACTEUR : `facteur, ${workers} workers`,
    port,
    rootPid: () => proc.pid!,
    queued: () => countFiles(path.join(dir, 'data', 'queue', 'active')),
    async stop() {
      proc.kill('SIGTERM');
      await Promise.race([exited(proc), new Promise((r) => setTimeout(r, 10_000))]);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited(proc);
    },
  };
}

async function startPostfix(dir: string, sinkPort?: number, hold = false): Promise<Server & { pf: QueuePostfix }> {
  const pf = await startQueuePostfix({ dir, port: await freePort(), domain: DOMAIN, sinkPort, hold, destinationConcurrency: DEST_CONCURRENCY, processLimit: DELIVERY_CONCURRENCY });
  return {
    name: 'Postfix',
    port: pf.port,
    pf,
    rootPid: () => pf.masterPid(),
    queued: () => pf.count(sinkPort === undefined ? ['hold'] : ['incoming', 'active', 'deferred', 'hold']),
    stop: () => pf.stop(),
  };
}

const waitForQuiet = quietWaiter(8000);

interface Row {
  test: string;
  server: string;
  clients: string;
  n: number;
  mps: number;
  errors: number;
  errorKinds: string;
  serverCpu: number;
  cpuPerMsg: number;
  machineCpu: number;
  check: string;
  extra?: string;
}

async function measure<T>(pids: number[], fn: () => Promise<T>) {
  await waitForQuiet();
  const c0 = pids.map(treeCpuMs);
  const m0 = machineBusyMs();
  const t0 = performance.now();
  const value = await fn();
  const ms = performance.now() - t0;
  const cpuMs = pids.map((p, i) => treeCpuMs(p) - c0[i]!);
  return { value, ms, cpuMs, machine: Math.round(((machineBusyMs() - m0) / ms) * 100) };
}

async function smtpSource(port: number, sessions: number, messages: number): Promise<string> {
  try {
    await run('/usr/sbin/smtp-source', ['-s', String(sessions), '-m', String(messages), '-l', String(BODY), '-f', FROM, '-t', TO, `127.0.0.1:${port}`], { timeout: 180_000 });
    return '';
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    return (e.stderr || e.message).trim().split('\n').slice(-1)[0] || 'failed';
  }
}

// ---------- (1a) Spool.commit in-process ----------
async function spoolCells(root: string): Promise<Row[]> {
  const rows: Row[] = [];
  const msg = buildMessage(FROM, TO, BODY);
  const envelope = () => ({ mailFrom: FROM, rcptTo: [{ address: TO }], receivedAt: Date.now(), clientAddress: '127.0.0.1', heloName: 'bench' });
  for (const c of [1, 8, 64]) {
    const spool = await Spool.open(path.join(root, `spool-${c}`));
    for (let i = 0; i < 20; i++) await spool.commit(envelope(), Readable.from([msg]));
    await waitForQuiet();
    const cpu0 = process.cpuUsage();
    const m0 = machineBusyMs();
    const t0 = performance.now();
    let next = 0;
    let errors = 0;
    const kinds = new Set<string>();
    await Promise.all(
      Array.from({ length: c }, async () => {
        while (next < SPOOL_N) {
          next++;
          await spool.commit(envelope(), Readable.from([msg])).catch((e: Error) => {
            errors++;
            kinds.add(e.message);
          });
        }
      }),
    );
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const cpuMs = (cpu.user + cpu.system) / 1000;
    const onDisk = (await countFiles(spool.dir + '/active')) - 20;
    rows.push({
      test: 'Spool.commit in-process (no SMTP)',
      server: 'facteur',
      clients: String(c),
      n: SPOOL_N,
      mps: (SPOOL_N - errors) / (ms / 1000),
      errors,
      errorKinds: [...kinds].join('; '),
      serverCpu: Math.round((cpuMs / ms) * 100),
      cpuPerMsg: cpuMs / SPOOL_N,
      machineCpu: Math.round(((machineBusyMs() - m0) / ms) * 100),
      check: `${onDisk} on disk`,
    });
    log(`  spool c=${c}: ${rows.at(-1)!.mps.toFixed(0)} commits/s, ${errors} errors, ${onDisk} on disk`);
    await fsp.rm(path.join(root, `spool-${c}`), { recursive: true, force: true });
  }
  return rows;
}

// ---------- (1b) enqueue over SMTP, delivery held ----------
async function enqueueCells(root: string, gen: Generator): Promise<Row[]> {
  const rows: Row[] = [];
  const fa = await startFacteur(path.join(root, 'enqueue-facteur'));
  // facteur's multi-process mode too (SO_REUSEPORT workers), as bench:smtp does: the setting to pick when one event
  // loop is the limit, which is what one message per connection finds.
  const fw = WORKERS === 1 ? await startFacteur(path.join(root, 'enqueue-facteur-workers'), undefined, false, 2) : undefined;
  const pf = await startPostfix(path.join(root, 'enqueue-postfix'));
  const servers: Server[] = fw ? [fa, fw, pf] : [fa, pf];
  try {
    for (const s of servers) {
      const w = await gen.sessions({ port: s.port, submission: false, from: FROM, to: TO, concurrency: 8, messagesPerConnection: 10, durationMs: 1500, bodyBytes: BODY, timeoutMs: 30_000 });
      // The smtp-source cells churn connections at a rate the Node generator's warm-up does not: warm that path too,
      // or facteur's first smtp-source cell measures its JIT compiling it. As many as bench:smtp and the end-to-end
      // warm-up (2,000: after 1,000, V8's compiler threads still took CPU in the first cell, 1.34 vs 0.86 ms/msg at 32).
      const failed = await smtpSource(s.port, 8, E2E_WARMUP);
      log(`  warm-up ${s.name}: ${w.ok} messages, then ${E2E_WARMUP} by smtp-source${failed ? ` (${failed})` : ''}`);
    }
    // Each cell in ROUNDS rounds taking turns between the servers (lib/rounds.ts); a row adds its server's rounds up.
    const rounds = <T>(run: (s: Server) => Promise<T>) => takeTurns(servers, ROUNDS, run);
    for (const c of CONCURRENCY) {
      const node = await rounds(async (s) => {
        const before = await s.queued();
        const m = await measure([await s.rootPid()], () => gen.sessions({ port: s.port, submission: false, from: FROM, to: TO, concurrency: c, messagesPerConnection: 10, durationMs: CELL_MS / ROUNDS, bodyBytes: BODY, timeoutMs: 30_000 }));
        return { m, onDisk: (await s.queued()) - before };
      });
      for (const s of servers) {
        const parts = node.get(s)!;
        const ok = parts.reduce((a, p) => a + p.m.value.ok, 0);
        const elapsedMs = parts.reduce((a, p) => a + p.m.value.elapsedMs, 0);
        const ms = parts.reduce((a, p) => a + p.m.ms, 0);
        const cpuMs = parts.reduce((a, p) => a + p.m.cpuMs[0]!, 0);
        const onDisk = parts.reduce((a, p) => a + p.onDisk, 0);
        const errs: Record<string, number> = {};
        for (const p of parts) for (const [k, n] of Object.entries(p.m.value.errors)) errs[k] = (errs[k] ?? 0) + n;
        const errors = Object.values(errs).reduce((a, b) => a + b, 0);
        rows.push({
          test: 'enqueue, Node generator (10 msg/conn)',
          server: s.name,
          clients: String(c),
          n: ok,
          mps: ok / (elapsedMs / 1000),
          errors: errors + Math.max(0, ok - onDisk),
          errorKinds: Object.entries(errs).map(([k, n]) => `${n}× ${k}`).join('; ') + (onDisk < ok ? ` ${ok - onDisk} acknowledged but not in the queue` : ''),
          serverCpu: Math.round((cpuMs / ms) * 100),
          cpuPerMsg: ok ? cpuMs / ok : NaN,
          machineCpu: Math.round(parts.reduce((a, p) => a + p.m.machine * p.m.ms, 0) / ms),
          check: `${onDisk} queued`,
        });
        log(`  enqueue node ${s.name} c=${c}: ${rows.at(-1)!.mps.toFixed(0)} msg/s, ${errors} errors, ${onDisk} queued`);
      }
      const perRound = Math.round(SOURCE_N / ROUNDS);
      const source = await rounds(async (s) => {
        const before = await s.queued();
        const m = await measure([await s.rootPid()], () => smtpSource(s.port, c, perRound));
        return { m, onDisk: (await s.queued()) - before };
      });
      for (const s of servers) {
        const parts = source.get(s)!;
        const failed = parts.map((p) => p.m.value).find((f) => f) ?? '';
        const n = perRound * ROUNDS;
        const ms = parts.reduce((a, p) => a + p.m.ms, 0);
        const cpuMs = parts.reduce((a, p) => a + p.m.cpuMs[0]!, 0);
        const onDisk = parts.reduce((a, p) => a + p.onDisk, 0);
        const ok = failed ? 0 : n;
        rows.push({
          test: 'enqueue, smtp-source (1 msg/conn)',
          server: s.name,
          clients: String(c),
          n,
          mps: ok / (ms / 1000),
          errors: failed ? 1 : Math.max(0, n - onDisk),
          errorKinds: failed || (onDisk < n ? `${n - onDisk} missing from the queue` : ''),
          serverCpu: Math.round((cpuMs / ms) * 100),
          cpuPerMsg: ok ? cpuMs / ok : NaN,
          machineCpu: Math.round(parts.reduce((a, p) => a + p.m.machine * p.m.ms, 0) / ms),
          check: `${onDisk} queued`,
        });
        log(`  enqueue smtp-source ${s.name} s=${c}: ${rows.at(-1)!.mps.toFixed(0)} msg/s ${failed}, ${onDisk} queued`);
      }
    }
  } finally {
    await fa.stop();
    await fw?.stop();
    await pf.stop();
  }
  return rows;
}

// ---------- (2) end to end: submit M, wait until the sink counted M ----------
/**
 * After an end-to-end or drain cell: what the sink counted, what is left in the queue, and the error columns. Stops
 * the server first, since the sink counts a session when it ends (Postfix caches connections for 2 s).
 */
async function settleAtSink(s: Server, sink: { count(): number; sessions(): number }, base: number, sess0: number, failed: string): Promise<Pick<Row, 'errors' | 'errorKinds' | 'check'> & { delivered: number }> {
  const delivered = sink.count() - base;
  // The sink counts a message at its final dot, before the server has its 250 and removes the file: a message just
  // delivered may still be in the queue for a moment. Up to 2 s for those; what is left then is really left.
  let left = await s.queued();
  for (let i = 0; i < 40 && left > 0 && delivered >= E2E_N; i++) {
    await new Promise((r) => setTimeout(r, 50));
    left = await s.queued();
  }
  await s.stop();
  await new Promise((r) => setTimeout(r, 300));
  const sessions = sink.sessions() - sess0;
  return {
    delivered,
    errors: (failed ? 1 : 0) + Math.max(0, E2E_N - delivered),
    errorKinds: [failed, delivered < E2E_N ? `${E2E_N - delivered} not delivered in time` : ''].filter(Boolean).join('; '),
    check: `${delivered} counted by the sink in ${sessions} SMTP sessions, ${left} left in queue`,
  };
}

/** End to end for facteur (delivery on its thread, the default), facteur with `[delivery] thread = false`, or Postfix. */
async function e2eCell(root: string, which: 'facteur' | 'facteur-inline' | 'Postfix'): Promise<Row> {
  const sink = await startCountingSink();
  const dir = path.join(root, `e2e-${which}`);
  const s = which === 'Postfix' ? await startPostfix(dir, sink.port) : await startFacteur(dir, sink.port, which === 'facteur-inline');
  const name = which === 'Postfix' ? which : which === 'facteur' ? FACTEUR : `${FACTEUR}, delivery on the SMTP loop`;
  try {
    // Warm-up through the whole path. 200 messages were not enough for facteur: V8 was still compiling its hot code
    // (its compiler threads then took ~0.5 ms of CPU per message in the measured run, ~0.17 ms after 2,000).
    const wfail = await smtpSource(s.port, 8, E2E_WARMUP);
    const wdeadline = Date.now() + 60_000;
    while (sink.count() < E2E_WARMUP && Date.now() < wdeadline) await new Promise((r) => setTimeout(r, 50));
    log(`  warm-up ${name}: ${sink.count()} delivered ${wfail}`);
    const base = sink.count();
    const sess0 = sink.sessions();
    let submitMs = 0;
    let failed = '';
    const m = await measure([await s.rootPid(), sink.pid], async () => {
      const t0 = performance.now();
      const src = smtpSource(s.port, E2E_SESSIONS, E2E_N).then((f) => {
        submitMs = performance.now() - t0;
        failed = f;
      });
      const deadline = Date.now() + (QUICK ? 60_000 : 120_000);
      while (sink.count() - base < E2E_N && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      await src;
    });
    const { delivered, ...settled } = await settleAtSink(s, sink, base, sess0, failed);
    const row: Row = {
      test: 'end to end: submit → smtp-sink',
      server: name,
      clients: `${E2E_SESSIONS} in, ${DEST_CONCURRENCY} out`,
      n: E2E_N,
      mps: delivered / (m.ms / 1000),
      ...settled,
      serverCpu: Math.round((m.cpuMs[0]! / m.ms) * 100),
      cpuPerMsg: delivered ? m.cpuMs[0]! / delivered : NaN,
      machineCpu: m.machine,
      extra: `submission done after ${(submitMs / 1000).toFixed(1)} s (${(E2E_N / (submitMs / 1000)).toFixed(0)} msg/s in), all delivered after ${(m.ms / 1000).toFixed(1)} s; sink CPU ${Math.round((m.cpuMs[1]! / m.ms) * 100)}%`,
    };
    log(`  e2e ${row.server}: ${row.mps.toFixed(0)} delivered msg/s; ${row.check}; ${row.extra} ${row.errorKinds}`);
    return row;
  } finally {
    await s.stop();
    await sink.stop();
  }
}

// ---------- (3) queue drain: M messages already queued, delivery released; first to last message at the sink ----------
async function drainCell(root: string, which: 'facteur' | 'Postfix'): Promise<Row> {
  const sink = await startCountingSink();
  const dir = path.join(root, `drain-${which}`);
  let s: Server;
  let failed: string;
  let release: () => Promise<void>;
  let startMs = 0;
  if (which === 'facteur') {
    // Fill the spool with delivery off, stop, then start `facteur serve` (scheduler on) over the same spool.
    const held = await startFacteur(dir);
    failed = await smtpSource(held.port, E2E_SESSIONS, E2E_N);
    await held.stop();
    s = held;
    release = async () => {
      const t = performance.now();
      s = await startFacteur(dir, sink.port);
      startMs = performance.now() - t;
    };
  } else {
    const pf = await startPostfix(dir, sink.port, true);
    failed = await smtpSource(pf.port, E2E_SESSIONS, E2E_N);
    s = pf;
    release = () => pf.pf.release();
  }
  try {
    const base = sink.count();
    const sess0 = sink.sessions();
    let first = 0;
    let last = 0;
    const t0 = performance.now();
    const releasing = release();
    const deadline = Date.now() + (QUICK ? 60_000 : 120_000);
    while (sink.count() - base < E2E_N && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
      if (!first && sink.count() > base) first = performance.now();
    }
    last = performance.now();
    await releasing;
    const { delivered, ...settled } = await settleAtSink(s, sink, base, sess0, failed);
    const ms = last - (first || last);
    const row: Row = {
      test: 'queue drain: queued → smtp-sink',
      server: which === 'facteur' ? FACTEUR : which,
      clients: `${DEST_CONCURRENCY} out`,
      n: E2E_N,
      mps: delivered > 1 && ms > 0 ? (delivered - 1) / (ms / 1000) : 0,
      ...settled,
      // CPU is not split here: facteur's figure would include its start (tsx compile, spool check), Postfix's the submission.
      serverCpu: NaN,
      cpuPerMsg: NaN,
      machineCpu: NaN,
      extra: `drain: first message at the sink ${((first - t0) / 1000).toFixed(1)} s after the release${which === 'facteur' ? ` (process start to listening: ${(startMs / 1000).toFixed(1)} s)` : ''}, the last ${(ms / 1000).toFixed(1)} s after the first`,
    };
    log(`  drain ${row.server}: ${row.mps.toFixed(0)} delivered msg/s; ${row.check}; ${row.extra} ${row.errorKinds}`);
    return row;
  } finally {
    await s.stop();
    await sink.stop();
  }
}

function versions() {
  const pf = spawnSync('/usr/sbin/postconf', ['-d', '-h', 'mail_version'], { encoding: 'utf8' }).stdout.trim();
  return { postfix: pf, node: process.version };
}

const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : '-');
const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '-');

function render(rows: Row[], started: Date, seconds: number): string {
  const info = machineInfo();
  const v = versions();
  const head = ['test', 'server', 'clients', 'messages', 'msg/s', 'errors', 'server CPU %', 'server CPU ms/msg', 'machine CPU %', 'check'];
  const body = rows.map((r) => [r.test, r.server, r.clients, String(r.n), f1(r.mps), String(r.errors), f1(r.serverCpu), f2(r.cpuPerMsg), f1(r.machineCpu), r.check]);
  const notes = rows.filter((r) => r.extra).map((r) => `- ${r.server}: ${r.extra}.`);
  const errs = rows.filter((r) => r.errors).map((r) => `- ${r.test}, ${r.server}, ${r.clients}: ${r.errorKinds}`);
  return [
    `Run ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC, ${seconds.toFixed(0)} s in all: \`npm run bench:queue${QUICK || WORKERS > 1 ? ` --${QUICK ? ' --quick' : ''}${WORKERS > 1 ? ` --workers ${WORKERS}` : ''}` : ''}\`.`,
    '',
    `- Machine: ${info.cpu}, ${info.cores} cores, ${info.ramGiB} GiB RAM, ${info.kernel}`,
    `- Node ${v.node}, Postfix ${v.postfix}; file system of ${os.tmpdir()}: ${spawnSync('stat', ['-f', '-c', '%T', os.tmpdir()], { encoding: 'utf8' }).stdout.trim()}`,
    `- Message body ${BODY} bytes (+ headers), one recipient; Node generator cells ${CELL_MS / 1000} s and smtp-source cells ${SOURCE_N} messages, each in ${ROUNDS} rounds taking turns between the servers; Spool.commit ${SPOOL_N} commits per cell; end to end ${E2E_N} messages, ${E2E_SESSIONS} smtp-source sessions.`,
    '- Receiving: no STARTTLS offered by either server (facteur `[inbound] starttls = false`, Postfix `smtpd_tls_security_level = none`); TLS is measured by bench:smtp.',
    `- Delivery settings (end to end): facteur \`concurrency = ${DELIVERY_CONCURRENCY}\`, \`destination_concurrency = ${DEST_CONCURRENCY}\`, \`starttls = "off"\`; Postfix \`default_process_limit = ${DELIVERY_CONCURRENCY}\`, \`default_destination_concurrency_limit = ${DEST_CONCURRENCY}\`, \`smtp_tls_security_level = none\`, connection cache on demand (default).`,
    '',
    markdownTable(head, body),
    '',
    'End to end and drain detail:',
    '',
    ...notes,
    '',
    errs.length ? `Errors:\n\n${errs.join('\n')}` : 'No errors: every message got its 250, is in the queue (enqueue) or was counted by the sink (end to end, drain).',
  ].join('\n');
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench:queue needs root (Postfix master and its queue directory ownership)');
  const started = new Date();
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'facteur-bench-queue-'));
  await fsp.chmod(root, 0o755);
  const rows: Row[] = [];
  const gen = await Generator.start();
  try {
    if (!E2E_ONLY) {
      log('Spool.commit in-process:');
      rows.push(...(await spoolCells(root)));
      log('enqueue over SMTP, delivery held:');
      rows.push(...(await enqueueCells(root, gen)));
    }
    log('end to end:');
    rows.push(await e2eCell(root, 'facteur'));
    if (WORKERS === 1) rows.push(await e2eCell(root, 'facteur-inline'));
    rows.push(await e2eCell(root, 'Postfix'));
    if (!E2E_ONLY) {
      log('queue drain:');
      rows.push(await drainCell(root, 'facteur'));
      rows.push(await drainCell(root, 'Postfix'));
    }
  } finally {
    await gen.stop();
    await fsp.rm(root, { recursive: true, force: true }).catch(() => undefined);
  }
  const seconds = (Date.now() - started.getTime()) / 1000;
  console.log(textTable(['test', 'server', 'clients', 'msg/s', 'errors', 'CPU ms/msg', 'check'], rows.map((r) => [r.test, r.server, r.clients, f1(r.mps), String(r.errors), f2(r.cpuPerMsg), r.check])));
  const md = render(rows, started, seconds);
  if (WRITE_DOC) {
    writeSection(DOC, md, 'queue');
    log(`wrote ${DOC}`);
  } else console.log(md);
}

await main();
