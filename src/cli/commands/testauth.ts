// `facteur testauth`: testsaslauthd's flags and exact output, plus --explain (every step of one verification, never the password).
// Trusts argv; talks to the socket only through the saslauthd client.
import fs from 'node:fs';
import { saslauthdRequest, requestFields } from '../../auth/client/saslauthd.js';
import { parseReply } from '../../auth/types.js';
import { parseAuthdArgs, DEFAULT_RUN_DIR } from '../../auth/daemon/options.js';
import { createBackend, SOCKET_NAME } from '../../auth/daemon/run.js';
import { createLogger } from '../../observability/log.js';

const USAGE = `usage: facteur testauth -u user -p pass [-r realm] [-s servicename] [-f socket path] [-R repeatnum] [-a clientaddr]
       facteur testauth --explain -u user -p pass [-s service] [-r realm] [-f socket] (-a mech [-O option] | --defaults /etc/default/saslauthd)

  -p -   read the password from standard input (one line)
  --explain   check the socket, then run the mechanism in this process and print each step
`;

interface Args {
  user?: string;
  pass?: string;
  realm: string;
  service: string;
  socket?: string;
  repeat: number;
  clientAddr: string;
  explain: boolean;
  daemonArgs: string[];
}

function parse(argv: string[]): Args | null {
  const a: Args = { realm: '', service: 'imap', repeat: 1, clientAddr: '', explain: false, daemonArgs: [] };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i];
    const next = () => argv[++i];
    switch (f) {
      case '-u': a.user = next(); break;
      case '-p': a.pass = next(); break;
      case '-r': a.realm = next() ?? ''; break;
      case '-s': a.service = next() ?? 'imap'; break;
      case '-f': a.socket = next(); break;
      case '-R': a.repeat = Math.max(1, parseInt(next() ?? '1', 10) || 1); break; // atoi; 0 becomes 1
      case '--explain': a.explain = true; break;
      case '-a':
        if (a.explain || argv.includes('--explain')) a.daemonArgs.push('-a', next());
        else a.clientAddr = next() ?? '';
        break;
      case '-O': case '--defaults': a.daemonArgs.push(f, next()); break;
      case '-h': case '--help': return null;
      default: return null;
    }
  }
  if (a.user === undefined || a.pass === undefined) return null;
  return a;
}

export async function run(argv: string[]): Promise<number> {
  const a = parse(argv);
  if (!a) {
    process.stderr.write(USAGE);
    return 1;
  }
  if (a.pass === '-') a.pass = fs.readFileSync(0, 'utf8').split(/\r?\n/)[0];
  if (a.explain) return explain(a);
  const socket = a.socket ?? `${DEFAULT_RUN_DIR}/${SOCKET_NAME}`;
  let status = 0;
  for (let i = 0; i < a.repeat; i++) {
    process.stdout.write(`${i}: `);
    try {
      const fields = requestFields({ login: a.user!, password: a.pass!, service: a.service, realm: a.realm, clientAddr: a.clientAddr });
      const { text } = await saslauthdRequest(socket, fields, AbortSignal.timeout(60_000));
      if (text.startsWith('OK')) {
        process.stdout.write('OK "Success."\n');
        status = 0;
      } else {
        process.stdout.write('NO "authentication failed"\n');
        status = 255;
      }
    } catch (err) {
      const msg = (err as Error).message;
      const cause = (err as { cause?: NodeJS.ErrnoException }).cause;
      process.stderr.write(cause?.syscall === 'connect' ? `connect() : ${cause.code === 'ENOENT' ? 'No such file or directory' : cause.code === 'ECONNREFUSED' ? 'Connection refused' : cause.message}\n` : `${msg}\n`);
      status = 255;
    }
  }
  return status;
}

async function explain(a: Args): Promise<number> {
  const out = (s: string) => process.stdout.write(`${s}\n`);
  const login = a.user!;
  out(`request: login="${login}" realm="${a.realm}" service="${a.service}" password=(${[...a.pass!].length} characters, not shown)`);
  let socketVerdict: string | undefined;
  let o;
  try {
    o = a.daemonArgs.length ? parseAuthdArgs([...a.daemonArgs, '-f']) : undefined;
  } catch (err) {
    out(`configuration: ${(err as Error).message}`);
    return 1;
  }
  const socket = a.socket ?? `${o?.runDir ?? DEFAULT_RUN_DIR}/${SOCKET_NAME}`;
  out(`socket: ${socket}`);
  try {
    const st = fs.statSync(socket);
    out(`socket: exists (${st.isSocket() ? 'a socket' : 'NOT a socket'}, mode ${(st.mode & 0o777).toString(8)})`);
    const { text } = await saslauthdRequest(socket, requestFields({ login, password: a.pass!, service: a.service, realm: a.realm }), AbortSignal.timeout(30_000));
    const r = parseReply(text);
    socketVerdict = r.verdict;
    out(`socket: daemon replied "${text}" (${r.verdict === 'ok' ? 'accepted' : r.verdict === 'tempfail' ? 'temporary failure: the backend is unavailable' : 'rejected'})`);
  } catch (err) {
    out(`socket: ${(err as Error).message}: is the daemon running with -m ${socket.replace(/\/mux$/, '')}? Can this user enter the directory (group)?`);
  }
  if (!o) {
    out('backend: not examined (give -a MECH [-O OPTION] or --defaults FILE to run the mechanism here and see each step)');
    return socketVerdict === 'ok' ? 0 : 255;
  }
  const log = createLogger({ name: 'testauth', level: 'silent' });
  out(`backend: ${o.mech}${o.mechOption ? ` (-O ${o.mechOption})` : ''}`);
  let backend;
  try {
    backend = await createBackend(o.mech, o.mechOption, log);
  } catch (err) {
    out(`backend: ${(err as Error).message}`);
    return 1;
  }
  const creds = { login: o.realmJoin && a.realm ? `${login}@${a.realm}` : login, password: a.pass!, service: a.service, realm: a.realm };
  if (creds.login !== login) out(`-r: login becomes "${creds.login}"`);
  out(`cache: ${o.cache ? `on in the daemon (${o.cacheTtlSeconds} s); this check bypasses it` : 'off'}`);
  try {
    const r = await backend.verify(creds, { signal: AbortSignal.timeout(o.backendTimeoutSeconds * 1000), explain: (step) => out(`  ${step}`) });
    out(`result: ${r.verdict.toUpperCase()}${r.reason ? ` (${r.reason})` : ''}`);
    if (r.addresses?.length) out(`addresses: ${r.addresses.join(', ')}`);
    if (socketVerdict && socketVerdict !== r.verdict) out(`note: the daemon answered ${socketVerdict} but this check says ${r.verdict}: is the daemon using the same configuration (restart or SIGHUP it)?`);
    return r.verdict === 'ok' ? 0 : 255;
  } finally {
    await backend.close?.();
  }
}
