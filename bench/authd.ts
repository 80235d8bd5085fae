// Benchmark: facteur authd against the real Cyrus saslauthd, side by side in one run, on the same slapd, users and load.
// Trusts the daemons only as far as their replies: every reply must be OK, errors are counted and shown, never hidden.
//
// npm run bench:authd [-- --quick] [--duration S] [--warmup S] [--concurrency 1,8,64]
//                     [--scenarios calibration,ldap,ldap-cache,ldap-remote,rimap,rimap-cache,file,file-cache]
//                     [--cyrus-n 5,16] [--rounds 3] [--generators 1] [--generator c|node] [--tail] [--slapd-log] [--section ID] [--profile DIR] [--write | --no-write]
// Full run (every scenario but rimap-cache): ~6 minutes; --quick (calibration and the three LDAP scenarios, 1.5 s cells,
// not written to docs unless --write): ~1-2 minutes. docs/benchmarks.md is rewritten between its bench:authd markers.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { fork, spawn } from 'node:child_process';
import { freePort, waitForSocket } from '../test/helpers/net.js';
import { Generator, type GeneratorKind } from './lib/generator.js';
import { mergeResults, oneRequest, percentile, type LoadResult, type LoadUser } from './lib/loadgen.js';
import { encodeFields } from '../src/auth/protocol/frame.js';
import { startCyrus, startFacteur, startNull, type RunningDaemon } from './lib/daemons.js';
import { machineBusyMs, pidListeningOn, treeCpuMs } from './lib/procstat.js';
import { machineInfo, markdownTable, textTable, writeSection, type MachineInfo } from './lib/report.js';
import { runUnderBenchLock } from './lib/lock.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const DOC = path.join(ROOT, 'docs/benchmarks.md');
const USER_COUNT = 100;
const SERVICE = 'smtp';
const REQUEST_TIMEOUT_MS = 30_000;

interface Flags {
  quick: boolean;
  durationMs: number;
  warmupMs: number;
  /** The measured time of a cell is split into this many rounds, the daemons of a scenario taking turns. */
  rounds: number;
  /** The flags as given, for the report. */
  argv: string[];
  /** Marker id of the docs/benchmarks.md section written (`authd`, or `authd-slapd-log` with --slapd-log). */
  section: string;
  /** Keep the slapd test helper's per-operation logging (`-d stats`) instead of restarting slapd quietly. */
  slapdLog: boolean;
  /** Load generator processes (one is lighter on a 2-core machine; more help on bigger ones). */
  generators: number;
  /** `c`: bench/lib/loadgen.c (default); `node`: bench/lib/loadgen-child.ts, the generator of earlier runs. */
  generator: GeneratorKind;
  /** Print more percentiles of each cell on the console (the report keeps p50 and p99). */
  tail: boolean;
  concurrency: number[];
  scenarios: string[];
  cyrusN: number[];
  profileDir?: string;
  write: boolean;
}

/** Percentiles printed by --tail. */
const TAIL = [50, 90, 95, 98, 99, 99.5, 99.9];

const ALL_SCENARIOS = ['calibration', 'ldap', 'ldap-cache', 'ldap-remote', 'rimap', 'rimap-cache', 'file', 'file-cache'];
// rimap-cache measures the same thing as ldap-cache (cache hits never reach the backend): on request only.
const DEFAULT_SCENARIOS = ALL_SCENARIOS.filter((s) => s !== 'rimap-cache');

function parseFlags(argv: string[]): Flags {
  const f: Flags = { quick: false, durationMs: 4000, warmupMs: 500, rounds: 3, generators: 1, generator: 'c', tail: false, slapdLog: false, section: '', argv, concurrency: [1, 8, 64], scenarios: DEFAULT_SCENARIOS, cyrusN: [5, 16], write: true };
  let explicitWrite: boolean | undefined;
  const list = (v: string | undefined, name: string) => {
    if (!v) throw new Error(`${name} needs a value`);
    return v.split(',').map((s) => s.trim()).filter(Boolean);
  };
  const nums = (v: string | undefined, name: string) =>
    list(v, name).map((s) => {
      const n = Number(s);
      if (!Number.isInteger(n) || n <= 0) throw new Error(`${name}: '${s}' is not a positive integer`);
      return n;
    });
  const seconds = (v: string | undefined, name: string) => {
    const n = Number(v);
    if (!v || !(n > 0)) throw new Error(`${name} needs a number of seconds`);
    return n * 1000;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--quick': f.quick = true; f.durationMs = 1500; f.warmupMs = 300; f.rounds = 1; break;
      case '--duration': f.durationMs = seconds(argv[++i], a); break;
      case '--warmup': f.warmupMs = seconds(argv[++i], a); break;
      case '--rounds': f.rounds = nums(argv[++i], a)[0]; break;
      case '--slapd-log': f.slapdLog = true; break;
      case '--tail': f.tail = true; break;
      case '--section': f.section = list(argv[++i], a)[0]; break;
      case '--generators': f.generators = nums(argv[++i], a)[0]; break;
      case '--generator': {
        const k = list(argv[++i], a)[0];
        if (k !== 'c' && k !== 'node') throw new Error(`${a}: expected c or node, got ${k}`);
        f.generator = k;
        break;
      }
      case '--concurrency': f.concurrency = nums(argv[++i], a); break;
      case '--scenarios': f.scenarios = list(argv[++i], a); break;
      case '--cyrus-n': f.cyrusN = nums(argv[++i], a); break;
      case '--profile': f.profileDir = path.resolve(list(argv[++i], a)[0]); break;
      case '--write': explicitWrite = true; break;
      case '--no-write': explicitWrite = false; break;
      case '-h': case '--help':
        process.stdout.write(`usage: npm run bench:authd -- [--quick] [--duration S] [--warmup S] [--concurrency 1,8,64]\n` +
          `       [--scenarios ${ALL_SCENARIOS.join(',')}] [--cyrus-n 5,16] [--rounds N] [--generators N] [--generator c|node] [--tail] [--slapd-log] [--section ID] [--profile DIR] [--write|--no-write]\n`);
        process.exit(0);
      // falls through (unreachable)
      default: throw new Error(`unknown option ${a}`);
    }
  }
  // A quick look is the LDAP comparison: rimap waits on Dovecot (~1 s per cell at 64 clients) and the users file costs
  // ~20 s of argon2id hashing and verification before its first cell.
  if (f.quick && !argv.includes('--scenarios')) f.scenarios = f.scenarios.filter((s) => !s.startsWith('file') && !s.startsWith('rimap'));
  for (const s of f.scenarios) if (!ALL_SCENARIOS.includes(s)) throw new Error(`unknown scenario ${s} (known: ${ALL_SCENARIOS.join(', ')})`);
  if (!/^[a-z0-9-]*$/.test(f.section)) throw new Error('--section: letters, digits and - only');
  f.section ||= f.slapdLog ? 'authd-slapd-log' : 'authd';
  // Quick or profiled runs are for looking, not for the record, unless asked.
  f.write = explicitWrite ?? !(f.quick || f.profileDir);
  return f;
}

/** How to start one daemon configuration. */
interface DaemonSpec {
  label: string;
  /** `facteur-alt`: a facteur variant shown for information (the targets compare the default `facteur` row). */
  kind: 'facteur' | 'facteur-alt' | 'cyrus' | 'null';
  args: string[];
  env?: Record<string, string>;
}

/** facteur's socket served by node:net instead of the C layer (src/auth/daemon/listener.ts), for comparison. */
const NODE_NET = { FACTEUR_AUTHD_SOCKET_LAYER: 'node' };

interface Cell {
  scenario: string;
  daemon: string;
  kind: DaemonSpec['kind'];
  result: LoadResult;
  daemonCpuMs: number;
  backendCpuMs?: number;
  /** CPU used meanwhile by processes outside the benchmark (other work on the machine: noise). */
  otherCpuMs?: number;
}

interface ScenarioEnv {
  title: string;
  /** One line on what is measured. */
  note: string;
  daemons: DaemonSpec[];
  users: LoadUser[];
  /** Process whose CPU time is reported per authentication (slapd, dovecot), if any. */
  backendPid?: number;
  backendName?: string;
  /** Target ratio facteur / best Cyrus, when the issue sets one. */
  target?: number;
  /** Client counts above this are not run (64 clients queueing for a 10/s backend only measure the queue). */
  maxConcurrency?: number;
}

type Skipped = { skipped: string };

const bulkUsers = (): LoadUser[] => Array.from({ length: USER_COUNT }, (_, i) => ({ login: `user${i}`, password: `pass${i}` }));
/** Dovecot stores mail under domain/local, so its users carry a domain. */
const rimapUsers = (): LoadUser[] => bulkUsers().map((u) => ({ ...u, login: `${u.login}@bench.test` }));

/** Import a module by path without making the type checker depend on it (helpers and backends land separately). */
async function optionalImport<T>(rel: string): Promise<T | Skipped> {
  const file = path.join(ROOT, rel);
  if (!fs.existsSync(file)) return { skipped: `${rel} is not there yet` };
  return (await import(pathToFileURL(file).href)) as T;
}

interface SlapdHandle {
  url: string;
  port: number;
  baseDn: string;
  bindDn: string;
  bindPw: string;
  stop(): Promise<void>;
}

/**
 * The test helper runs slapd with `-d stats` and `loglevel stats`: several log lines per operation, written by slapd
 * itself, a cost per operation that a production directory (Debian ships `loglevel none`) does not pay. Restart the same
 * slapd (same configuration, database and URLs) with logging off. `--slapd-log` keeps the helper's logging instead.
 */
async function restartSlapdQuietly(port: number): Promise<{ pid: number; stop(): Promise<void> }> {
  const pid = pidListeningOn(port);
  if (!pid) throw new Error(`no process listens on port ${port}`);
  const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  const at = (flag: string) => argv[argv.indexOf(flag) + 1];
  const conf = at('-f');
  const urls = at('-h');
  if (!conf || !urls) throw new Error(`cannot read slapd's -f and -h from its command line: ${argv.join(' ')}`);
  const quietConf = `${conf}.bench`;
  await fsp.writeFile(quietConf, (await fsp.readFile(conf, 'utf8')).replace(/^loglevel\s.*$/gm, 'loglevel none'));
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 200 && fs.existsSync(`/proc/${pid}`) && !fs.readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z'); i++) {
    await new Promise((r) => setTimeout(r, 25));
  }
  // `-d 0`: stay in the foreground (our child), no debug output.
  const proc = spawn('/usr/sbin/slapd', ['-d', '0', '-h', urls, '-f', quietConf], { stdio: 'ignore' });
  const ports = urls.split(/\s+/).filter(Boolean).map((u) => Number(new URL(u).port));
  for (const p of ports) await waitForSocket(p, 15_000);
  return {
    pid: proc.pid!,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
    },
  };
}

/** One-way delay of the ldap-remote scenario. */
const REMOTE_ONE_WAY_MS = 1;

async function startDelayProxy(targetPort: number, oneWayMs: number): Promise<{ port: number; stop(): Promise<void> }> {
  const port = await freePort();
  const proc = fork(path.join(import.meta.dirname, 'lib/delay-proxy.ts'), [String(port), '127.0.0.1', String(targetPort), String(oneWayMs)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  await new Promise<void>((resolve, reject) => {
    proc.once('message', () => resolve());
    proc.once('exit', (code) => reject(new Error(`delay proxy exited with ${code}`)));
  });
  return {
    port,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
    },
  };
}

function cyrusVariants(f: Flags, base: string[]): DaemonSpec[] {
  return f.cyrusN.map((n) => ({ label: `Cyrus -n ${n}`, kind: 'cyrus' as const, args: [...base, '-n', String(n)] }));
}

/** Start (once) everything a scenario family needs and describe the daemons to compare. */
class Environments {
  private slapd?: SlapdHandle | Skipped;
  private slapdPid?: number;
  private proxy?: { port: number; stop(): Promise<void> };
  private dovecot?: { port: number; stop(): Promise<void> } | Skipped;
  private usersFile?: string | Skipped;
  private readonly cleanups: (() => Promise<void>)[] = [];
  constructor(private readonly dir: string, private readonly f: Flags) {}

  private async ldapConf(): Promise<{ conf: string; noDnCacheConf: string; remoteConf: string; pid?: number } | Skipped> {
    if (!this.slapd) {
      const helper = await optionalImport<{ startSlapd: () => Promise<SlapdHandle> }>('test/helpers/slapd.ts');
      if ('skipped' in helper) this.slapd = helper;
      else if (!fs.existsSync(path.join(ROOT, 'src/auth/backends/ldap/index.ts'))) this.slapd = { skipped: 'src/auth/backends/ldap/ is not there yet' };
      else {
        const s = await helper.startSlapd();
        this.cleanups.push(() => s.stop());
        if (!this.f.slapdLog) {
          const quiet = await restartSlapdQuietly(s.port);
          this.cleanups.push(() => quiet.stop());
          this.slapdPid = quiet.pid;
        } else {
          this.slapdPid = pidListeningOn(s.port);
        }
        this.slapd = s;
      }
    }
    if ('skipped' in this.slapd) return this.slapd;
    const s = this.slapd;
    const conf = path.join(this.dir, 'saslauthd.conf');
    // The seed's saslauthd.conf shape, read by both daemons.
    const lines = [`ldap_servers: ${s.url}`, `ldap_bind_dn: ${s.bindDn}`, `ldap_bind_pw: ${s.bindPw}`, `ldap_search_base: ${s.baseDn}`, 'ldap_filter: (uid=%u)'];
    await fsp.writeFile(conf, `${lines.join('\n')}\n`, { mode: 0o600 });
    // facteur remembers login → DN for ldap_dn_cache_ttl (60 s by default), then only binds; this variant searches every time, like Cyrus.
    const noDnCacheConf = path.join(this.dir, 'saslauthd-no-dn-cache.conf');
    await fsp.writeFile(noDnCacheConf, `${[...lines, 'ldap_dn_cache_ttl: 0'].join('\n')}\n`, { mode: 0o600 });
    // The same directory behind a proxy that delays each direction: a directory on another host.
    if (!this.proxy) {
      this.proxy = await startDelayProxy(s.port, REMOTE_ONE_WAY_MS);
      const p = this.proxy;
      this.cleanups.push(() => p.stop());
    }
    const remoteConf = path.join(this.dir, 'saslauthd-remote.conf');
    await fsp.writeFile(remoteConf, `${[`ldap_servers: ldap://127.0.0.1:${this.proxy.port}`, ...lines.slice(1)].join('\n')}\n`, { mode: 0o600 });
    return { conf, noDnCacheConf, remoteConf, pid: this.slapdPid };
  }

  private async rimapServer(): Promise<{ port: number; pid?: number } | Skipped> {
    if (!this.dovecot) {
      type Helper = { startDovecot: (o: { users: Record<string, string> }) => Promise<{ imapPort: number; stop(): Promise<void> }> };
      const helper = await optionalImport<Helper>('test/helpers/dovecot.ts');
      if ('skipped' in helper) this.dovecot = helper;
      else if (!fs.existsSync(path.join(ROOT, 'src/auth/backends/rimap.ts'))) this.dovecot = { skipped: 'src/auth/backends/rimap.ts is not there yet' };
      else {
        const d = await helper.startDovecot({ users: Object.fromEntries(rimapUsers().map((u) => [u.login, u.password])) });
        this.dovecot = { port: d.imapPort, stop: () => d.stop() };
        this.cleanups.push(() => d.stop());
      }
    }
    if ('skipped' in this.dovecot) return this.dovecot;
    // Dovecot's master process: its CPU time includes the login and imap processes it forks (children are summed).
    return { port: this.dovecot.port, pid: pidListeningOn(this.dovecot.port) };
  }

  private async users(): Promise<string | Skipped> {
    if (this.usersFile) return this.usersFile;
    if (!fs.existsSync(path.join(ROOT, 'src/auth/backends/file.ts'))) return (this.usersFile = { skipped: 'src/auth/backends/file.ts is not there yet' });
    const file = path.join(this.dir, 'users');
    // The same hashing and line format as `facteur user add` (argon2id PHC strings), without 100 process start-ups.
    const { hashPassword } = await import('../src/auth/passwords.js');
    const { formatLine, FILE_HEADER } = await import('../src/auth/backends/usersfile/format.js');
    const lines = [...FILE_HEADER];
    for (const u of bulkUsers()) lines.push(formatLine({ login: u.login, hash: await hashPassword(u.password), addresses: [] }));
    await fsp.writeFile(file, `${lines.join('\n')}\n`, { mode: 0o600 });
    return (this.usersFile = file);
  }

  async get(name: string): Promise<ScenarioEnv | Skipped> {
    const cache = name.endsWith('-cache');
    const c = cache ? ['-c'] : [];
    const facteur = (args: string[]): DaemonSpec => ({ label: cache ? 'facteur -c' : 'facteur', kind: 'facteur', args: [...args, ...c, '--no-penalty'] });
    switch (name) {
      case 'calibration':
        return {
          title: 'Calibration: load generator + facteur socket layer, instant in-memory backend',
          note: 'the ceiling of this machine for one-request-per-connection clients; every real cell is below it',
          daemons: [
            { label: 'null backend', kind: 'null', args: [] },
            { label: 'null backend, node:net socket', kind: 'null', args: [], env: NODE_NET },
          ],
          users: bulkUsers(),
        };
      case 'ldap':
      case 'ldap-cache': {
        const l = await this.ldapConf();
        if ('skipped' in l) return l;
        return {
          title: cache ? 'LDAP, credential cache on (-c): all users cached before measuring' : 'LDAP, cache off: every request reaches slapd',
          note: cache ? 'cache hits only; the directory is idle' : 'the directory does the work; slapd CPU per authentication shows who asks it less',
          daemons: [
            facteur(['-a', 'ldap', '-O', l.conf]),
            ...(cache ? [] : [{ ...facteur(['-a', 'ldap', '-O', l.noDnCacheConf]), label: 'facteur, no DN cache', kind: 'facteur-alt' as const }]),
            { ...facteur(['-a', 'ldap', '-O', l.conf]), label: `facteur${cache ? ' -c' : ''}, node:net socket`, kind: 'facteur-alt' as const, env: NODE_NET },
            ...cyrusVariants(this.f, ['-a', 'ldap', '-O', l.conf, ...c]),
          ],
          users: bulkUsers(),
          backendPid: l.pid,
          backendName: 'slapd',
          target: cache ? 1 : 1.5,
        };
      }
      case 'ldap-remote': {
        const l = await this.ldapConf();
        if ('skipped' in l) return l;
        return {
          title: `LDAP on another host (${2 * REMOTE_ONE_WAY_MS} ms round trip), cache off`,
          note:
            `the same slapd behind a proxy (\`bench/lib/delay-proxy.ts\`) that delays each direction by ${REMOTE_ONE_WAY_MS} ms, as a directory on another machine would; ` +
            'every LDAP operation now costs a round trip, so the number of operations per login matters more than their CPU',
          daemons: [
            facteur(['-a', 'ldap', '-O', l.remoteConf]),
            ...cyrusVariants(this.f, ['-a', 'ldap', '-O', l.remoteConf]),
          ],
          users: bulkUsers(),
          backendPid: l.pid,
          backendName: 'slapd',
          target: 1.5,
        };
      }
      case 'rimap':
      case 'rimap-cache': {
        const r = await this.rimapServer();
        if ('skipped' in r) return r;
        return {
          title: cache ? 'rimap against Dovecot, cache on (-c)' : 'rimap against Dovecot, cache off',
          note: 'one IMAP connection and LOGIN per request; Dovecot verifies SHA512-CRYPT hashes',
          daemons: [facteur(['-a', 'rimap', '-O', `127.0.0.1/${r.port}`]), ...cyrusVariants(this.f, ['-a', 'rimap', '-O', `127.0.0.1/${r.port}`, ...c])],
          users: rimapUsers(),
          backendPid: r.pid,
          backendName: 'dovecot',
        };
      }
      case 'file':
      case 'file-cache': {
        const u = await this.users();
        if (typeof u !== 'string') return u;
        return {
          title: cache ? 'Users file (argon2id), cache on (-c)' : 'Users file (argon2id), cache off: one argon2id verification per request',
          note: cache
            ? 'no Cyrus equivalent (its sasldb stores plaintext passwords); facteur alone, all users cached before measuring'
            : 'no Cyrus equivalent (its sasldb stores plaintext passwords); facteur alone. Argon2id (m=19 MiB, t=2) is meant to be slow: this is the verification rate of the machine',
          daemons: [facteur(['-a', 'file', '-O', u])],
          users: bulkUsers(),
          maxConcurrency: cache ? undefined : 8,
        };
      }
    }
    return { skipped: `unknown scenario ${name}` };
  }

  async close(): Promise<void> {
    for (const c of this.cleanups.reverse()) await c().catch(() => undefined);
  }
}

async function startDaemon(spec: DaemonSpec, runDir: string, f: Flags, users: number): Promise<RunningDaemon> {
  if (spec.kind === 'null') return startNull(spec.label, runDir, users, spec.env);
  if (spec.kind === 'cyrus') return startCyrus(spec.label, runDir, spec.args);
  const nodeArgs = f.profileDir ? ['--cpu-prof', '--cpu-prof-dir', f.profileDir] : [];
  return startFacteur(spec.label, runDir, spec.args, nodeArgs, spec.env);
}

/** Every user must get OK with the right password and NO with a wrong one, or the numbers would mean nothing. Also warms caches. */
async function sanityCheck(d: RunningDaemon, users: LoadUser[]): Promise<void> {
  const ask = (u: LoadUser) => oneRequest(d.socket, encodeFields([u.login, u.password, SERVICE, '']), REQUEST_TIMEOUT_MS);
  for (const u of users) {
    const reply = await ask(u);
    if (!reply.startsWith('OK')) throw new Error(`${d.label}: ${u.login} with the right password got '${reply}'`);
  }
  for (const u of [users[0], users[users.length - 1]]) {
    const reply = await ask({ login: u.login, password: `${u.password}-wrong` });
    if (!reply.startsWith('NO')) throw new Error(`${d.label}: ${u.login} with a wrong password got '${reply}'`);
  }
}

const fmtRate = (r: number) => (Number.isFinite(r) ? r.toFixed(r >= 100 ? 0 : 1) : '-');
const fmtMs = (ms: number) => (Number.isFinite(ms) ? (ms >= 10 ? ms.toFixed(1) : ms.toFixed(2)) : '-');
const fmtUs = (ms: number | undefined, n: number) => (ms === undefined || n === 0 ? '-' : `${Math.round((ms * 1000) / n)}`);
const fmtRatio = (x: number) => (Number.isFinite(x) ? `${x.toFixed(2)}×` : '-');

function errorsText(r: LoadResult): string {
  if (r.errorCount === 0) return r.connectRetries ? `0 (${r.connectRetries} EAGAIN retries)` : '0';
  const kinds = Object.entries(r.errors).map(([k, v]) => `${v} ${k}`).join('; ');
  return `${r.errorCount}: ${kinds}`;
}

interface ScenarioOutcome {
  name: string;
  env?: ScenarioEnv;
  skipped?: string;
  cells: Cell[];
  failures: string[];
  /** Scenarios with a target, C generator: each daemon at the same fixed rate, per client count. */
  equalLoad?: EqualLoad[];
}

/** One client count's equal-load pass: facteur and the Cyrus variants offered the same requests per second. */
interface EqualLoad {
  concurrency: number;
  rate: number;
  /** Whose closed-loop rate it is a share of. */
  basis: string;
  results: { daemon: string; result: LoadResult }[];
}

/** The equal-load pass offers this share of the best Cyrus's closed-loop rate (below its saturation). */
const EQUAL_LOAD_SHARE = 0.8;

function equalLoadLines(passes: EqualLoad[] = []): string[] {
  const out: string[] = [];
  for (const e of passes) {
    // In the scenario's order of daemons: facteur first.
    const fmt = (r: EqualLoad['results'][number]) =>
      `${r.daemon} ${fmtMs(r.result.p50)} / ${fmtMs(r.result.p99)}${r.result.errorCount ? ` (${r.result.errorCount} errors)` : ''}`;
    out.push(
      `${e.concurrency} client${e.concurrency > 1 ? 's' : ''} at equal load, ${fmtRate(e.rate)} auth/s offered (${Math.round(EQUAL_LOAD_SHARE * 100)} % of ${e.basis}'s rate), ` +
        `p50 / p99 ms: ${e.results.map(fmt).join(', ')}`,
    );
  }
  return out;
}

function scenarioRows(o: ScenarioOutcome, concurrency: number[]): { head: string[]; rows: string[][] } {
  const backend = o.env?.backendName;
  const head = [
    'clients', 'daemon', 'auth/s', 'p50 ms', 'p99 ms', 'errors', 'daemon CPU µs/auth', ...(backend ? [`${backend} CPU µs/auth`] : []),
    'generator CPU', 'others CPU', 'facteur ÷ this',
  ];
  const pct = (ms: number | undefined, r: LoadResult) => (ms === undefined ? '-' : `${((100 * ms) / r.elapsedMs).toFixed(0)}%`);
  const rows: string[][] = [];
  for (const c of concurrency) {
    const cells = o.cells.filter((x) => x.result.concurrency === c);
    const fac = cells.find((x) => x.kind === 'facteur');
    for (const x of cells) {
      const r = x.result;
      rows.push([
        String(c),
        x.daemon,
        fmtRate(r.rate),
        fmtMs(r.p50),
        fmtMs(r.p99),
        errorsText(r),
        fmtUs(x.daemonCpuMs, r.ok),
        ...(backend ? [fmtUs(x.backendCpuMs, r.ok)] : []),
        pct(r.generatorCpuMs, r),
        pct(x.otherCpuMs, r),
        fac && x.kind !== 'facteur' ? fmtRatio(fac.result.rate / r.rate) : '',
      ]);
    }
  }
  return { head, rows };
}

/** The issue's targets, cell by cell: throughput ratio against the best Cyrus configuration, and p99 no worse than it. */
/** The Cyrus configuration with the highest rate at `c` clients: what facteur is compared with. */
function bestCyrus(cells: Cell[], c: number): Cell | undefined {
  return cells.filter((x) => x.result.concurrency === c && x.kind === 'cyrus').sort((a, b) => b.result.rate - a.result.rate)[0];
}

function verdicts(o: ScenarioOutcome, concurrency: number[]): string[] {
  if (!o.env?.target) return [];
  const out: string[] = [];
  for (const c of concurrency) {
    const fac = o.cells.find((x) => x.result.concurrency === c && x.kind === 'facteur');
    const cyrus = bestCyrus(o.cells, c);
    if (!fac || !cyrus) continue;
    const ratio = fac.result.rate / cyrus.result.rate;
    const p99ok = fac.result.p99 <= cyrus.result.p99;
    const clean = fac.result.errorCount === 0;
    const met = ratio >= o.env.target && p99ok && clean;
    out.push(
      `${c} client${c > 1 ? 's' : ''}: facteur ${fmtRatio(ratio)} the best Cyrus (${cyrus.daemon}; target ≥ ${o.env.target}×), ` +
        `p99 ${fmtMs(fac.result.p99)} vs ${fmtMs(cyrus.result.p99)} ms${clean ? '' : `, ${fac.result.errorCount} errors`} → ${met ? 'target met' : 'target MISSED'}`,
    );
  }
  return out;
}

function markdown(m: MachineInfo, f: Flags, outcomes: ScenarioOutcome[], started: Date, totalS: number): string {
  const parts: string[] = [];
  parts.push(`## authd: facteur vs Cyrus saslauthd${f.slapdLog ? ", slapd logging every operation (the test helper's -d stats)" : ''}`);
  parts.push(
    [
      `Run on ${started.toISOString().replace(/\.\d+Z$/, 'Z')} with \`npm run bench:authd${f.argv.length ? ` -- ${f.argv.join(' ')}` : ''}\` (${Math.round(totalS)} s in all).`,
      '',
      `- Machine: ${m.cpu}, ${m.cores} cores, ${m.ramGiB} GiB RAM, ${m.kernel}`,
      `- Node ${m.node}; Cyrus ${m.cyrus} (Debian sasl2-bin); OpenLDAP ${m.slapd}${m.dovecot ? `; Dovecot ${m.dovecot}` : ''}`,
      `- Each cell: ${f.warmupMs / 1000} s warm-up, then ${f.durationMs / 1000} s measured` +
        `${f.rounds > 1 ? ` in ${f.rounds} rounds: the daemons of a scenario all run at once and take turns round after round, so that other activity on the machine falls on each alike` : ''}.`,
      `- Load: C clients in a closed loop, one request per connection (as Postfix's libsasl does), users user0…user${USER_COUNT - 1} in turn, ` +
        `service \`${SERVICE}\`, empty realm. Only \`OK\` replies count; anything else is an error and is shown. Before its cells, each daemon must ` +
        'answer OK for every user and NO for wrong passwords (this also fills the caches in the cache-on scenarios).',
      (f.generator === 'c'
        ? `- The load generator is ${f.generators === 1 ? 'a separate C program' : `${f.generators} separate C processes`} (\`bench/lib/loadgen.c\`, one epoll loop, built at the start of the run), ` +
          'like the C clients that use saslauthd (Postfix\'s libsasl). Runs before 2026-11-29 used a Node generator (`--generator node`), which cost ~100 µs ' +
          'of CPU per request and added its own garbage-collection pauses to both daemons\' latencies. '
        : `- The load generator is ${f.generators === 1 ? 'a separate Node process' : `${f.generators} separate Node processes`} (\`bench/lib/loadgen-child.ts\`, \`--generator node\`); `) +
        'The backend server, the daemon and the generator share the same cores, as on a real mail host. The calibration scenario shows the ceiling ' +
        'this puts on any daemon here; a cell whose generator CPU nears 100% is limited by the generator, not the daemon.',
      '- Cyrus listens with a small queue (`SOCKET_BACKLOG`); when it is full, a C client blocks in `connect()`. The generator\'s connects do not ' +
        'block, so a refused connect (EAGAIN) waits its turn in a FIFO and retries when one of our requests completes (or after 5 ms); the retries are counted and shown.',
      `- slapd: the test helper's (\`test/helpers/slapd.ts\`: mdb, 100 users with {SSHA} passwords), ${
        f.slapdLog ? 'logging every operation (`-d stats`) as the helper starts it' : 'restarted with logging off (`loglevel none`, as Debian ships it; `--slapd-log` keeps the helper\'s `-d stats`)'
      }. The service account binds, then \`ldap_filter: (uid=%u)\` under the base DN.`,
      '- Both daemons run as in production: facteur `authd -f` started as installed (`bin/facteur`, with its shebang\'s Node flags; no per-request logging), Cyrus detached without `-d`. Same saslauthd.conf for both.',
      '- CPU columns: run time of the daemon (all its processes) and of the backend server (with the processes it forked) during the measured ' +
        'phase, divided by successful authentications. "Others" is CPU used meanwhile by processes outside the benchmark, as a share of one core: noise.',
    ].join('\n'),
  );
  const cells = outcomes.flatMap((o) => o.cells);
  const busy = cells.reduce((a, c) => a + (c.otherCpuMs ?? 0), 0) / Math.max(1, cells.reduce((a, c) => a + c.result.elapsedMs, 0));
  if (busy > 0.2) {
    parts.push(
      `**The machine was busy:** other processes used on average ${Math.round(busy * 100)}% of a core (of ${m.cores}) while these cells ran. ` +
        'Absolute numbers are lower and noisier than on an idle host; compare the rows of one table (they were measured in alternation), not separate runs, ' +
        'and prefer the CPU-per-authentication columns, which depend much less on the load.',
    );
  }
  for (const o of outcomes) {
    if (o.skipped) {
      parts.push(`### ${o.name}\n\nNot run: ${o.skipped}.`);
      continue;
    }
    const { head, rows } = scenarioRows(o, f.concurrency);
    const v = verdicts(o, f.concurrency);
    parts.push(
      [
        `### ${o.env!.title}`,
        '',
        `${o.env!.note[0].toUpperCase()}${o.env!.note.slice(1)}.`,
        '',
        markdownTable(head, rows),
        ...(v.length ? ['', ...v.map((l) => `- ${l}`)] : []),
        ...(o.equalLoad?.length
          ? [
              '',
              'The same daemons offered the same fixed rate (open loop: each client sends on a schedule, and a reply counts from when its ' +
                'request was due), below the best Cyrus\'s saturation: the latency each gives at equal work, where the closed loop above ' +
                'gives the faster daemon more requests to answer.',
              '',
              ...equalLoadLines(o.equalLoad).map((l) => `- ${l}`),
            ]
          : []),
        ...(o.failures.length ? ['', ...o.failures.map((l) => `- **Failed:** ${l}`)] : []),
      ].join('\n'),
    );
  }
  return parts.join('\n\n');
}

async function main(): Promise<number> {
  const f = parseFlags(process.argv.slice(2));
  runUnderBenchLock(import.meta.filename, process.argv.slice(2)); // one benchmark at a time (lib/lock.ts)
  const started = new Date();
  const t0 = performance.now();
  const m = machineInfo();
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'facteur-bench-'));
  if (f.profileDir) await fsp.mkdir(f.profileDir, { recursive: true });
  process.stdout.write(`facteur authd benchmark: ${m.cpu}, ${m.cores} cores, Node ${m.node}, ${m.cyrus}\n`);
  process.stdout.write(`cells: ${f.warmupMs / 1000} s warm-up + ${f.durationMs / 1000} s measured; clients ${f.concurrency.join(', ')}; scenarios ${f.scenarios.join(', ')}\n\n`);
  const envs = new Environments(dir, f);
  const gen = await Generator.start(f.generators, f.generator);
  const outcomes: ScenarioOutcome[] = [];
  let daemonSeq = 0;
  try {
    for (const name of f.scenarios) {
      const env = await envs.get(name).catch((err: Error) => ({ skipped: `setup failed: ${err.message}` }));
      if ('skipped' in env) {
        process.stdout.write(`## ${name}: skipped (${env.skipped})\n\n`);
        outcomes.push({ name, skipped: env.skipped, cells: [], failures: [] });
        continue;
      }
      process.stdout.write(`## ${name}: ${env.title}\n`);
      const outcome: ScenarioOutcome = { name, env, cells: [], failures: [] };
      outcomes.push(outcome);
      // All daemons of a scenario run at once (idle ones cost nothing) and take turns, round after round, so that
      // whatever else the machine does at the time falls on each of them alike.
      const running: RunningDaemon[] = [];
      const kinds = new Map<RunningDaemon, DaemonSpec>();
      try {
        for (const spec of env.daemons) {
          try {
            const d = await startDaemon(spec, path.join(dir, `run${++daemonSeq}`), f, env.users.length);
            running.push(d);
            kinds.set(d, spec);
            await sanityCheck(d, env.users);
          } catch (err) {
            const last = running.at(-1);
            const msg = `${spec.label}: ${(err as Error).message}`;
            outcome.failures.push(msg);
            process.stdout.write(`  FAILED ${msg}\n`);
            if (last && kinds.get(last) === spec) {
              if (last.stderr()) process.stdout.write(`  daemon stderr:\n${last.stderr().split('\n').slice(-10).join('\n')}\n`);
              running.pop();
              await last.stop();
            }
          }
        }
        for (const c of f.concurrency) {
          if (env.maxConcurrency && c > env.maxConcurrency) continue;
          const base = { concurrency: c, users: env.users, service: SERVICE, realm: '', timeoutMs: REQUEST_TIMEOUT_MS };
          for (const d of running) await gen.run({ ...base, socket: d.socket, durationMs: f.warmupMs });
          const parts = new Map<RunningDaemon, { results: LoadResult[]; daemonCpuMs: number; backendCpuMs: number; otherCpuMs: number }>();
          for (const d of running) parts.set(d, { results: [], daemonCpuMs: 0, backendCpuMs: 0, otherCpuMs: 0 });
          for (let round = 0; round < f.rounds; round++) {
            // Rotate the order each round.
            const order = running.map((_, i) => running[(i + round) % running.length]);
            for (const d of order) {
              const p = parts.get(d)!;
              const dc0 = treeCpuMs(d.pid);
              const bc0 = env.backendPid ? treeCpuMs(env.backendPid) : 0;
              const m0 = machineBusyMs();
              const r = await gen.run({ ...base, socket: d.socket, durationMs: f.durationMs / f.rounds });
              const dc = treeCpuMs(d.pid) - dc0;
              const bc = env.backendPid ? treeCpuMs(env.backendPid) - bc0 : 0;
              p.results.push(r);
              p.daemonCpuMs += dc;
              p.backendCpuMs += bc;
              p.otherCpuMs += machineBusyMs() - m0 - dc - bc - r.generatorCpuMs;
            }
          }
          for (const d of running) {
            const p = parts.get(d)!;
            const spec = kinds.get(d)!;
            const result = mergeResults(p.results, c, 'sequential');
            const cell: Cell = {
              scenario: name,
              daemon: spec.label,
              kind: spec.kind,
              result,
              daemonCpuMs: p.daemonCpuMs,
              backendCpuMs: env.backendPid ? p.backendCpuMs : undefined,
              otherCpuMs: Math.max(0, p.otherCpuMs),
            };
            outcome.cells.push(cell);
            const pct = (ms: number) => `${((100 * ms) / result.elapsedMs).toFixed(0)}%`;
            process.stdout.write(
              `  ${spec.label.padEnd(14)} C=${String(c).padStart(3)}  ${fmtRate(result.rate).padStart(7)} auth/s  p50 ${fmtMs(result.p50)} ms  p99 ${fmtMs(result.p99)} ms  ` +
                `errors ${errorsText(result)}  daemon ${fmtUs(cell.daemonCpuMs, result.ok)} µs/auth` +
                `${env.backendName ? `  ${env.backendName} ${fmtUs(cell.backendCpuMs, result.ok)} µs/auth` : ''}  CPU: generator ${pct(result.generatorCpuMs)}, others ${pct(cell.otherCpuMs ?? 0)}\n`,
            );
            if (f.tail) process.stdout.write(`    tail (ms): ${TAIL.map((q) => `p${q} ${fmtMs(percentile(result.latencies, q))}`).join('  ')}\n`);
          }
          if (env.target && gen.kind === 'c') {
            const best = bestCyrus(outcome.cells, c);
            const compared = running.filter((d) => ['facteur', 'cyrus'].includes(kinds.get(d)!.kind));
            if (best && best.result.rate > 0) {
              const e: EqualLoad = { concurrency: c, rate: EQUAL_LOAD_SHARE * best.result.rate, basis: best.daemon, results: [] };
              for (const d of compared) {
                const r = await gen.run({ ...base, socket: d.socket, durationMs: f.durationMs / f.rounds, rate: e.rate });
                e.results.push({ daemon: kinds.get(d)!.label, result: r });
              }
              (outcome.equalLoad ??= []).push(e);
            }
          }
        }
      } finally {
        for (const d of running) await d.stop();
      }
      const { head, rows } = scenarioRows(outcome, f.concurrency);
      process.stdout.write(`\n${textTable(head, rows)}\n`);
      for (const l of verdicts(outcome, f.concurrency)) process.stdout.write(`  ${l}\n`);
      for (const l of equalLoadLines(outcome.equalLoad)) process.stdout.write(`  ${l}\n`);
      process.stdout.write('\n');
    }
  } finally {
    await gen.stop();
    await envs.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
  const totalS = (performance.now() - t0) / 1000;
  if (f.write) {
    writeSection(DOC, markdown(m, f, outcomes, started, totalS), f.section);
    process.stdout.write(`wrote ${path.relative(process.cwd(), DOC)}\n`);
  }
  if (f.profileDir) process.stdout.write(`CPU profiles of facteur authd: ${f.profileDir}/*.cpuprofile (open in Chrome DevTools or speedscope)\n`);
  process.stdout.write(`done in ${totalS.toFixed(0)} s\n`);
  const anyFailure = outcomes.some((o) => o.failures.length > 0 || o.cells.some((c) => c.result.errorCount > 0));
  return anyFailure ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`bench:authd: ${err.message}\n`);
    process.exit(2);
  },
);
