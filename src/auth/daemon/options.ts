// Command line of `facteur authd`: saslauthd's flags (getopt "a:cdfhlm:n:O:rs:t:vV") with the same meaning,
// plus `--defaults FILE` (a Debian /etc/default/saslauthd) and a few long options of facteur's own. Trusts argv only after parsing.
import fs from 'node:fs';
import { UsageError, ConfigError } from '../../lib/errors.js';

export interface AuthdOptions {
  mech: string;
  mechOption?: string;
  runDir: string;
  cache: boolean;
  cacheTtlSeconds: number;
  cacheKiB?: number;
  /** `-n`: accepted for compatibility (saslauthd's process count); facteur is asynchronous, see maxInflight. */
  threads: number;
  realmJoin: boolean;
  foreground: boolean;
  verbose: boolean;
  showVersion: boolean;
  showHelp: boolean;
  /** Group allowed into the run directory (the MTA's group, `sasl` on Debian). */
  group?: string;
  /** Verifications running at once; more wait their turn. */
  maxInflight: number;
  /** Seconds a client has to send its whole request (upstream waits forever). */
  readTimeoutSeconds: number;
  /** Seconds a backend has to answer before the request is a temporary failure. */
  backendTimeoutSeconds: number;
  logFile?: string;
  /** Brute-force defence for requests that carry the client address. */
  penalty: boolean;
  /** host:port of the Prometheus /metrics and /health endpoint; off when undefined. */
  metricsListen?: string;
}

export const DEFAULT_RUN_DIR = '/var/run/saslauthd';

export const USAGE = `usage: facteur authd [options]

saslauthd-compatible options:
  -a mech       authentication mechanism (required): file ldap pam rimap shadow
  -O option     mechanism option (ldap: config file, default /etc/saslauthd.conf;
                rimap: host[/port] or imaps://host:port; file: users file; shadow: shadow file)
  -m dir        run directory holding the socket 'mux' and the pid file (absolute; default ${DEFAULT_RUN_DIR})
  -c            enable the credential cache (successes only, HMAC'd, never the password)
  -t seconds    cache lifetime, absolute from the last backend check (default 28800)
  -s KiB        cache size in KiB of upstream's table (default ~ 10266 entries)
  -n N          accepted for compatibility; facteur serves requests concurrently (see --max-inflight)
  -r            join login and realm as login@realm before the cache and the mechanism
  -l            accepted for compatibility (no accept lock is needed)
  -d            foreground, verbose logging to stderr
  -f            foreground
  -V            verbose logging
  -v            print version and mechanisms, then exit
  -h            this help

facteur options:
  --defaults FILE       read a Debian /etc/default/saslauthd file (START, MECHANISMS, MECH_OPTIONS, OPTIONS, THREADS)
  --group NAME          group given access to the run directory (default: sasl, when that group exists)
  --max-inflight N      verifications at once (default 256)
  --read-timeout S      seconds a client has to send its request (default 30)
  --backend-timeout S   seconds a backend has to answer (default 30)
  --log-file PATH       append logs to PATH (default: stderr)
  --metrics HOST:PORT   serve Prometheus /metrics and /health there (off by default; keep it on loopback)
  --no-penalty          turn off the brute-force defence (on by default: failures from one client address,
                        when the client sends it, are delayed then refused for 15 minutes)
`;

function defaults(): AuthdOptions {
  return {
    mech: '',
    runDir: DEFAULT_RUN_DIR,
    cache: false,
    cacheTtlSeconds: 28800,
    threads: 5,
    realmJoin: false,
    foreground: false,
    verbose: false,
    showVersion: false,
    showHelp: false,
    maxInflight: 256,
    readTimeoutSeconds: 30,
    backendTimeoutSeconds: 30,
    penalty: true,
  };
}

function positiveInt(flag: string, v: string, allowZero = false): number {
  if (!/^\d+$/.test(v)) throw new UsageError(`${flag} needs a number, got '${v}'`);
  const n = Number(v);
  if (!allowZero && n <= 0) throw new UsageError(`${flag} must be greater than 0`);
  return n;
}

const LONG_WITH_VALUE = new Set(['--metrics', '--defaults', '--group', '--max-inflight', '--read-timeout', '--backend-timeout', '--log-file']);

/** Parse authd's argv. `--defaults FILE` is expanded in place, so flags after it override the file, as on Debian. */
export function parseAuthdArgs(argv: string[], readFile: (p: string) => string = (p) => fs.readFileSync(p, 'utf8')): AuthdOptions {
  const o = defaults();
  const args = [...argv];
  let mechSeen = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq > 0 ? arg.slice(0, eq) : arg;
      if (name === '--no-penalty') {
        o.penalty = false;
        continue;
      }
      if (name === '--help') {
        o.showHelp = true;
        continue;
      }
      if (!LONG_WITH_VALUE.has(name)) throw new UsageError(`unknown option ${name}`);
      const value = eq > 0 ? arg.slice(eq + 1) : args[++i];
      if (value === undefined) throw new UsageError(`${name} needs a value`);
      switch (name) {
        case '--defaults': {
          const expanded = debianDefaultsToArgs(readFile(value), value);
          args.splice(i + 1, 0, ...expanded);
          break;
        }
        case '--group': o.group = value; break;
        case '--max-inflight': o.maxInflight = positiveInt(name, value); break;
        case '--read-timeout': o.readTimeoutSeconds = positiveInt(name, value); break;
        case '--backend-timeout': o.backendTimeoutSeconds = positiveInt(name, value); break;
        case '--log-file': o.logFile = value; break;
        case '--metrics': o.metricsListen = value; break;
      }
      continue;
    }
    if (!arg.startsWith('-') || arg === '-') continue; // upstream ignores positional arguments
    // Clustered short flags, getopt style: -cd, -m/dir, -n5
    for (let j = 1; j < arg.length; j++) {
      const f = arg[j];
      const takesValue = 'amnOst'.includes(f);
      let value: string | undefined;
      if (takesValue) {
        value = arg.length > j + 1 ? arg.slice(j + 1) : args[++i];
        if (value === undefined) throw new UsageError(`option -${f} requires an argument`);
      }
      switch (f) {
        case 'a':
          if (mechSeen) throw new UsageError('-a given twice');
          mechSeen = true;
          o.mech = value!.toLowerCase();
          break;
        case 'O': o.mechOption = value; break;
        case 'm':
          if (!value!.startsWith('/')) throw new UsageError('-m requires an absolute pathname');
          o.runDir = value!.replace(/\/+$/, '') || '/';
          break;
        case 'n': {
          if (/^-\d/.test(value!)) throw new UsageError('-n must not be negative');
          o.threads = /^\d+/.test(value!) ? parseInt(value!, 10) : 0; // atoi, as upstream
          break;
        }
        case 's': o.cacheKiB = positiveInt('-s', value!); break;
        case 't': o.cacheTtlSeconds = positiveInt('-t', value!); break;
        case 'c': o.cache = true; break;
        case 'r': o.realmJoin = true; break;
        case 'l': break;
        case 'd': o.foreground = true; o.verbose = true; break;
        case 'f': o.foreground = true; break;
        case 'V': o.verbose = true; break;
        case 'v': o.showVersion = true; break;
        case 'h': o.showHelp = true; break;
        default: throw new UsageError(`unknown option -${f}`);
      }
      if (takesValue) break;
    }
  }
  if (!o.mech && !o.showHelp && !o.showVersion) throw new UsageError('no authentication mechanism given: use -a (e.g. -a ldap)');
  return o;
}

/** Parse a shell-style KEY=VALUE file as Debian's /etc/default files are written (quotes, trailing comments). */
export function parseShellVars(text: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) continue;
    let rest = m[2];
    let value = '';
    while (rest.length && !/^\s/.test(rest)) {
      if (rest[0] === '"') {
        const end = findClosingQuote(rest);
        value += rest.slice(1, end).replace(/\\(["\\$`])/g, '$1');
        rest = rest.slice(end + 1);
      } else if (rest[0] === "'") {
        const end = rest.indexOf("'", 1);
        value += rest.slice(1, end < 0 ? undefined : end);
        rest = end < 0 ? '' : rest.slice(end + 1);
      } else if (rest[0] === '#') {
        break;
      } else {
        const m2 = /^[^\s"'#]+/.exec(rest)!;
        value += m2[0];
        rest = rest.slice(m2[0].length);
      }
    }
    vars.set(m[1], value);
  }
  return vars;
}

function findClosingQuote(s: string): number {
  for (let i = 1; i < s.length; i++) {
    if (s[i] === '\\') i++;
    else if (s[i] === '"') return i;
  }
  return s.length;
}

/**
 * Turn a Debian /etc/default/saslauthd file into saslauthd arguments, as /etc/init.d/saslauthd does:
 * `-a $MECHANISMS [-O $MECH_OPTIONS] $OPTIONS [-n $THREADS]`, OPTIONS defaulting to `-c -m /var/run/saslauthd`.
 */
export function debianDefaultsToArgs(text: string, file = '/etc/default/saslauthd'): string[] {
  const v = parseShellVars(text);
  const start = v.get('START');
  if (start !== undefined && start !== 'yes') {
    throw new ConfigError(`${file}: START=${start}: to enable ${v.get('NAME') || 'saslauthd'}, edit ${file} and set START=yes`);
  }
  const mechs = (v.get('MECHANISMS') ?? '').trim().split(/\s+/).filter(Boolean);
  if (mechs.length === 0) throw new ConfigError(`${file}: MECHANISMS is empty: set it to one of file, ldap, pam, rimap, shadow`);
  if (mechs.length > 1) throw new ConfigError(`${file}: MECHANISMS="${mechs.join(' ')}": facteur authd serves one mechanism per instance (saslauthd silently used only the first); keep one`);
  const options = (v.get('OPTIONS') ?? '').trim() || `-c -m ${DEFAULT_RUN_DIR}`;
  const optWords = options.split(/\s+/);
  const mIdx = optWords.indexOf('-m');
  if (mIdx < 0 || !optWords[mIdx + 1]) throw new ConfigError(`${file}: OPTIONS must give the run directory with -m (e.g. OPTIONS="-c -m /var/spool/postfix/var/run/saslauthd")`);
  const args = ['-a', mechs[0]];
  const mo = v.get('MECH_OPTIONS');
  if (mo) args.push('-O', mo);
  args.push(...optWords);
  const threads = v.get('THREADS');
  if (threads) args.push('-n', threads);
  return args;
}
