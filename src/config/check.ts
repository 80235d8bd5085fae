// `facteur check --config FILE`: the serve configuration and the environment it needs (keys, TLS files, listeners, relay,
// auth backend or socket, LDAP directory, spool and LMTP target), each problem as one sentence with its fix. Reads files, probes sockets.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { parse as parseToml, stringify as stringifyToml } from 'smol-toml';
import { Client, InvalidCredentialsError, NoSuchObjectError, ResultCodeError } from 'ldapts';
import { loadConfig, loadSections, type ConfigValues } from './load.js';
import type { Section } from './schema.js';
import { checkAuthd, type Finding } from '../auth/check.js';
import { parseAuthdArgs } from '../auth/daemon/options.js';
import { loadCyrusSaslConfig } from '../auth/client/index.js';
import { saslauthdRequest, requestFields } from '../auth/client/saslauthd.js';
import { readLdapConfig, type LdapConfig } from '../auth/backends/ldap/config.js';
import { DEFAULT_CONFIG_FILE as LDAP_DEFAULT_FILE } from '../auth/backends/ldap/index.js';
import { parseSenderMap } from '../policy/sender.js';
import { parseListen } from '../observability/http.js';
import { queueDirFromConfig } from '../delivery/index.js';
import { commitLayer } from '../queue/spool.js';
import { reusePortUnavailable } from '../smtp/reuseport.js';
import { listenError, listenersFromConfig } from '../smtp/server.js';
import { workerCount } from '../cli/cluster/primary.js';
import { UdpSecureResolver } from '../delivery/dnssec.js';
import { unbracketed } from '../lib/host.js';

export type { Finding };

const ok = (message: string): Finding => ({ level: 'ok', message });
const warn = (message: string): Finding => ({ level: 'warning', message });
const error = (message: string): Finding => ({ level: 'error', message });

/** A certificate expiring sooner than this is a warning. */
export const EXPIRY_WARNING_DAYS = 14;
/** Longest wait for any network probe (socket, LDAP server, LMTP target). */
const PROBE_TIMEOUT_MS = 5000;

export interface CheckServeOptions {
  env?: NodeJS.ProcessEnv;
  /** "Now", for the certificate expiry checks (tests). */
  now?: Date;
  sections?: Section[];
}

const codeOf = (err: unknown): string => (err as NodeJS.ErrnoException)?.code ?? (err as Error)?.message ?? String(err);

/** Check a serve configuration file and everything it points at. Never throws for a configuration problem: it reports it. */
export async function checkServeConfig(file: string, o: CheckServeOptions = {}): Promise<Finding[]> {
  const f: Finding[] = [];
  const env = o.env ?? process.env;
  const sections = o.sections ?? (await loadSections());
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    return [error(`cannot read the configuration file ${file} (${codeOf(err)}): give the path of facteur's TOML file with --config`)];
  }
  const cfg = await loadEveryKey(text, file, env, sections, f);
  if (!cfg) return f;
  f.push(...checkTls(cfg, o.now ?? new Date()));
  f.push(...checkListeners(cfg));
  f.push(...(await checkListenAddresses(cfg)));
  f.push(...(await checkAuth(cfg)));
  f.push(...(await checkDirectories(cfg)));
  f.push(checkCommitLayer(env));
  f.push(...checkWorkers(cfg));
  f.push(...(await checkDelivery(cfg)));
  if (cfg.delivery) f.push(...checkDane(cfg));
  f.push(...(await checkPolicyFiles(cfg)));
  return f;
}

/**
 * Load the file like `serve` does, but report every bad key rather than the first: each key is validated alone by the loader
 * (so its messages, "did you mean" included, are the ones `serve` would print), bad ones are dropped, the rest loaded together.
 */
async function loadEveryKey(text: string, file: string, env: NodeJS.ProcessEnv, sections: Section[], f: Finding[]): Promise<ConfigValues | undefined> {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (err) {
    // The loader's own message (first line of the TOML error).
    try {
      await loadConfig({ text, file, sections });
    } catch (e) {
      f.push(error(`${(e as Error).message}: fix the syntax at that line`));
      return undefined;
    }
    f.push(error(`${file}: not valid TOML: ${(err as Error).message.split('\n')[0]}`));
    return undefined;
  }
  const clean: Record<string, Record<string, unknown>> = {};
  let bad = 0;
  const tryOne = async (part: Record<string, unknown>): Promise<boolean> => {
    try {
      await loadConfig({ text: stringifyToml(part), file, sections, env: {} });
      return true;
    } catch (err) {
      f.push(error((err as Error).message));
      bad++;
      return false;
    }
  };
  for (const [name, body] of Object.entries(doc)) {
    if (typeof body !== 'object' || body === null || Array.isArray(body) || !sections.some((s) => s.name === name)) {
      await tryOne({ [name]: body });
      continue;
    }
    const section = sections.find((s) => s.name === name)!;
    for (const [key, value] of Object.entries(body as Record<string, unknown>)) {
      if (!Object.hasOwn(section.params, key) && key in section.params) {
        // The loader looks keys up with a plain index, so inherited names (constructor, toString) slip through it.
        f.push(error(`${file}: unknown key '${key}' in [${name}]; run 'facteur config --defaults' for the list`));
        bad++;
        continue;
      }
      if (await tryOne({ [name]: { [key]: value } })) (clean[name] ??= {})[key] = value;
    }
  }
  try {
    const cfg = await loadConfig({ text: stringifyToml(clean), file, sections, env });
    if (!bad) f.push(ok(`${file}: every key is known and valid`));
    return cfg;
  } catch (err) {
    // Only the environment can fail here (the file's keys were each valid).
    f.push(error(`${(err as Error).message}: fix or unset that environment variable`));
    return undefined;
  }
}

/**
 * With [server] workers > 1: how the workers share the listeners: each on its own SO_REUSEPORT socket (native/net),
 * or through the primary (reuse_port = false, or the addon not built: a warning, since it costs the primary CPU per
 * connection). `unavailable` is reusePortUnavailable()'s answer (tests pass their own).
 */
export function checkWorkers(cfg: ConfigValues, unavailable: string | undefined = reusePortUnavailable()): Finding[] {
  const n = workerCount(cfg);
  if (n <= 1) return [];
  if (!cfg.server.reuse_port) return [ok(`[server] workers = ${n}: the primary accepts every connection and hands it to a worker (reuse_port = false)`)];
  if (unavailable) return [warn(`[server] workers = ${n} with reuse_port, but ${unavailable}: the primary will hand each connection to a worker (slower)`)];
  return [ok(`[server] workers = ${n}: each worker listens on its own SO_REUSEPORT socket (native/net)`)];
}

/** Which code writes queue files (src/queue/spool.ts commitLayer()): the C job when built and not turned off. */
export function checkCommitLayer(env: NodeJS.ProcessEnv): Finding {
  const wanted = env.FACTEUR_SPOOL_COMMIT;
  if (wanted !== undefined && !['native', 'node', 'auto'].includes(wanted)) return error(`FACTEUR_SPOOL_COMMIT=${wanted}: use native, node or auto (or unset it)`);
  let c;
  try {
    c = commitLayer(wanted);
  } catch (err) {
    return error(`${(err as Error).message}: serve would not start`);
  }
  if (c.layer === 'native') return ok('queue commits use the C commit job (native/spool, built by npm install)');
  if (wanted === 'node') return warn('FACTEUR_SPOOL_COMMIT=node: queue commits make their file calls on the event loop; unset it unless you are comparing the two');
  return warn(`${c.why}: queue commits will make their file calls on the event loop (slower); run npm run build:native (it needs python3, make and a C compiler)`);
}

function hostnameOf(cfg: ConfigValues): string {
  return (cfg.server.hostname as string) || os.hostname();
}

/** tls_cert/tls_key: readable, a certificate and a key, a matching pair, in date, valid for the hostname. */
export function checkTls(cfg: ConfigValues, now: Date): Finding[] {
  const certFile = cfg.server.tls_cert as string;
  const keyFile = cfg.server.tls_key as string;
  if (!certFile && !keyFile) {
    return [warn('no [server] tls_cert: facteur generates a self-signed certificate that mail clients will warn about; set tls_cert and tls_key to a real certificate (e.g. from Let\'s Encrypt)')];
  }
  if (!certFile || !keyFile) return [error('[server] tls_cert and tls_key go together: set both, or neither for a generated self-signed certificate')];
  const f: Finding[] = [];
  let certPem: Buffer | undefined;
  let keyPem: Buffer | undefined;
  try {
    certPem = fs.readFileSync(certFile);
  } catch (err) {
    f.push(error(`[server] tls_cert ${certFile} cannot be read (${codeOf(err)}): give the path of the PEM certificate and make it readable by facteur's user`));
  }
  try {
    keyPem = fs.readFileSync(keyFile);
  } catch (err) {
    f.push(error(`[server] tls_key ${keyFile} cannot be read (${codeOf(err)}): give the path of the PEM private key and make it readable by facteur's user (mode 0640, group facteur)`));
  }
  let cert: crypto.X509Certificate | undefined;
  let key: crypto.KeyObject | undefined;
  if (certPem) {
    try {
      cert = new crypto.X509Certificate(certPem);
    } catch {
      f.push(error(`[server] tls_cert ${certFile} holds no PEM certificate: give the certificate file (-----BEGIN CERTIFICATE-----), e.g. fullchain.pem`));
    }
  }
  if (keyPem) {
    try {
      key = crypto.createPrivateKey(keyPem);
    } catch {
      f.push(error(`[server] tls_key ${keyFile} holds no usable private key (or one protected by a passphrase): give the unencrypted PEM key, e.g. privkey.pem`));
    }
  }
  if (!cert) return f;
  if (key && !cert.checkPrivateKey(key)) {
    f.push(error(`[server] tls_key ${keyFile} does not belong to the certificate ${certFile}: give the key the certificate was issued for (compare 'openssl x509 -pubkey' with 'openssl pkey -pubout')`));
  } else if (key) f.push(ok(`[server] tls_key matches the certificate ${certFile}`));
  const from = new Date(cert.validFrom);
  const to = new Date(cert.validTo);
  const days = Math.floor((to.getTime() - now.getTime()) / 86_400_000);
  if (to <= now) f.push(error(`[server] tls_cert ${certFile} expired on ${to.toISOString().slice(0, 10)}: renew it, then send facteur SIGHUP (systemctl reload facteur) to load the new one`));
  else if (from > now) f.push(error(`[server] tls_cert ${certFile} is not valid before ${from.toISOString()}: check the machine's clock or the certificate`));
  else if (days < EXPIRY_WARNING_DAYS) f.push(warn(`[server] tls_cert ${certFile} expires on ${to.toISOString().slice(0, 10)}, in ${days} day${days === 1 ? '' : 's'}: renew it, then send facteur SIGHUP (systemctl reload facteur)`));
  else f.push(ok(`[server] tls_cert is valid until ${to.toISOString().slice(0, 10)}`));
  const host = hostnameOf(cfg);
  if (cert.checkHost(host) === undefined && (net.isIP(host) === 0 || cert.checkIP(host) === undefined)) {
    const names = cert.subjectAltName ?? cert.subject.replace(/\n/g, ', ');
    f.push(error(`[server] tls_cert ${certFile} is not valid for the hostname ${host} (it names ${names}): get a certificate for ${host}, or set [server] hostname to a name it covers`));
  } else f.push(ok(`[server] tls_cert is valid for ${host}`));
  return f;
}

const LISTENERS = ['inbound', 'submission', 'submissions'] as const;

/** AUTH only over TLS, no listener where AUTH is required but impossible, at least one listener, what port 25 accepts. */
export function checkListeners(cfg: ConfigValues): Finding[] {
  const f: Finding[] = [];
  const enabled = LISTENERS.filter((k) => cfg[k].enabled);
  if (!enabled.length) return [error('no listener enabled: set enabled = true in [inbound], [submission] or [submissions]')];
  let clear = 0;
  for (const k of enabled) {
    const l = cfg[k];
    if (l.auth === 'required' && k !== 'submissions' && !l.starttls) {
      clear++;
      f.push(error(`[${k}] auth = "required" with starttls = false: facteur offers AUTH PLAIN/LOGIN only over TLS, so nobody could log in on this listener; set starttls = true (or use [submissions], implicit TLS)`));
    }
  }
  if (!clear) f.push(ok('AUTH PLAIN/LOGIN is offered only after TLS on every listener (facteur has no setting that sends passwords in clear)'));
  const domains = cfg.server.local_domains as string[];
  for (const d of domains) {
    if (!/^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.?$/.test(d)) {
      f.push(error(`[server] local_domains entry "${d}" is not a domain name (facteur has no wildcards or networks there): list each domain you receive mail for`));
    }
  }
  if (enabled.includes('inbound') && domains.length === 0) {
    f.push(warn('[inbound] is enabled but [server] local_domains is empty, so port 25 refuses every recipient: list your domains, or set enabled = false in [inbound]'));
  }
  return f;
}

/**
 * Can each listener's address be listened on? Tried for real (listen, then close at once) with serve's own error
 * sentences. In use is a warning, not an error: it is what a check run beside the running facteur finds.
 */
export async function checkListenAddresses(cfg: ConfigValues): Promise<Finding[]> {
  let listeners;
  try {
    listeners = listenersFromConfig(cfg);
  } catch {
    return []; // none enabled: checkListeners says so
  }
  const f: Finding[] = [];
  for (const l of listeners) {
    if (l.port === 0) continue; // any free port: nothing to check
    const addr = `${l.host}:${l.port}`;
    const err = await tryListen(unbracketed(l.host), l.port);
    if (!err) f.push(ok(`[${l.kind}] ${addr} can be listened on`));
    else if (err.code === 'EADDRINUSE') f.push(warn(`[${l.kind}] ${addr} is in use now: fine if that is this facteur, running; otherwise stop the other server or change [${l.kind}] listen`));
    else f.push(error(listenError(l, err).message));
  }
  return f;
}

function tryListen(host: string, port: number): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => resolve(err));
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(undefined)));
  });
}

/** The auth backend: socket (facteur authd / saslauthd) or in-process; a made-up user must be refused, or facteur is an open relay. */
async function checkAuth(cfg: ConfigValues): Promise<Finding[]> {
  const a = cfg.auth;
  if (a.cyrus_config) {
    let cy;
    try {
      cy = await loadCyrusSaslConfig(a.cyrus_config as string);
    } catch (err) {
      return [error(`[auth] cyrus_config: ${(err as Error).message}: fix the file or empty cyrus_config`)];
    }
    if (!cy.pwcheck_method.includes('saslauthd')) {
      return [error(`[auth] cyrus_config ${a.cyrus_config}: pwcheck_method is "${cy.pwcheck_method.join(' ')}"; facteur supports only saslauthd: set pwcheck_method: saslauthd`)];
    }
    return checkSocket(cy.saslauthd_path, `saslauthd_path in ${a.cyrus_config}`);
  }
  const backend = a.backend as string;
  if (backend === 'saslauthd') return checkSocket(a.saslauthd_path as string, '[auth] saslauthd_path');
  let option = (a.option as string) || undefined;
  if (backend === 'file' && !option) {
    option = path.join(path.resolve(cfg.server.data_dir as string), 'users');
    if (!fs.existsSync(option)) return [ok(`[auth] users file ${option} does not exist yet: serve creates it empty; add users with 'facteur user add --file ${option} LOGIN'`)];
  }
  const f: Finding[] = [];
  if (backend === 'ldap') {
    const ldap = await checkLdap(option || LDAP_DEFAULT_FILE);
    f.push(...ldap);
    if (ldap.some((x) => x.level === 'error')) return f;
  }
  // The lead's probe (src/auth/check.ts): loads the backend, asks for a made-up user with a random password.
  const runDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'facteur-check-'));
  try {
    const opts = parseAuthdArgs(['-a', backend, ...(option ? ['-O', option] : []), '-m', runDir, '-f']);
    opts.backendTimeoutSeconds = Math.max(1, Math.ceil(PROBE_TIMEOUT_MS / 1000));
    const probe = await checkAuthd(opts);
    for (const p of probe) f.push({ ...p, message: `[auth] backend = "${backend}": ${p.message}` });
    if (probe.some((p) => /accepted a made-up user/.test(p.message))) f.push(openRelay(`[auth] backend = "${backend}"`));
    else if (probe.some((p) => /refuses a made-up user/.test(p.message))) f.push(relayClosed());
  } catch (err) {
    f.push(error(`[auth] backend = "${backend}": ${(err as Error).message}`));
  } finally {
    await fsp.rm(runDir, { recursive: true, force: true });
  }
  return f;
}

const openRelay = (who: string): Finding =>
  error(`open relay: ${who} accepts a made-up user with a random password, so anyone can log in and send mail anywhere through facteur; fix the backend before opening the ports`);
const relayClosed = (): Finding => ok('relay: only authenticated members may send to other domains (facteur trusts no network address)');

/** A saslauthd socket: present, a socket, answering, refusing a made-up user. */
async function checkSocket(p: string, what: string): Promise<Finding[]> {
  let st: fs.Stats;
  try {
    st = await fsp.stat(p);
  } catch (err) {
    const dir = path.dirname(p);
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [error(`${what} ${p} does not exist: start facteur authd (or saslauthd) with -m ${dir}, or point ${what.replace(/ in .*/, '')} at its socket`)];
    return [error(`${what} ${p} cannot be reached (${codeOf(err)}): give facteur's user access to ${dir} (e.g. adduser facteur sasl)`)];
  }
  if (!st.isSocket()) {
    const kind = st.isDirectory() ? 'a directory' : st.isFile() ? 'a regular file' : 'not a socket';
    const hint = st.isDirectory() ? `, e.g. ${path.join(p, 'mux')}` : '';
    return [error(`${what} ${p} is ${kind}, not a socket: it must name the daemon's socket itself${hint}`)];
  }
  const probe = { login: `facteur-check-${crypto.randomBytes(6).toString('hex')}`, password: crypto.randomBytes(12).toString('hex'), service: 'smtp', realm: '' };
  try {
    const { text } = await saslauthdRequest(p, requestFields(probe), AbortSignal.timeout(PROBE_TIMEOUT_MS));
    if (text.startsWith('OK')) return [openRelay(`the daemon at ${what} ${p}`)];
    if (/\[UNAVAILABLE\]|Couldn't contact|unavailable/.test(text)) return [error(`the daemon at ${what} ${p} cannot reach its own backend ("${text}"): check that daemon's configuration (facteur check --authd ...)`)];
    return [ok(`the daemon at ${what} ${p} answers and refuses a made-up user`), relayClosed()];
  } catch (err) {
    const m = (err as Error).message;
    if (/did not answer in time/.test(m)) return [error(`${what} ${p} accepts connections but does not answer within ${PROBE_TIMEOUT_MS / 1000} s: check the daemon's log, or restart it`)];
    return [error(`nothing answers on ${what} ${p} (${codeOf((err as Error).cause ?? err)}): the daemon is not running; start it (systemctl start facteur-authd or saslauthd)`)];
  }
}

/** The LDAP configuration an in-process `ldap` backend reads, and a connection + service bind to each server. */
async function checkLdap(file: string): Promise<Finding[]> {
  let cfg: LdapConfig;
  try {
    cfg = readLdapConfig(file);
  } catch (err) {
    return [error(`[auth] option: ${(err as Error).message}`)];
  }
  const f: Finding[] = [];
  const tokens = cfg.filter.replace(/%%/g, '');
  if (!/%[uU]/.test(tokens)) {
    f.push(error(`${file}: ldap_filter "${cfg.filter}" has no %u or %U, so every login looks up the same entry: write e.g. ${cfg.authMethod === 'fastbind' ? 'uid=%U,ou=people,dc=example,dc=org' : '(uid=%u)'}`));
  }
  const staticBase = cfg.searchBase && !cfg.searchBase.includes('%');
  if (cfg.authMethod !== 'fastbind' && !cfg.searchBase) {
    f.push(error(`${file}: ldap_search_base is empty, so searches start at the root of the directory and find no user: set it to the users' subtree, e.g. ldap_search_base: ou=people,dc=example,dc=org`));
  }
  let tlsOptions: import('node:tls').ConnectionOptions;
  try {
    tlsOptions = ldapTlsOptions(cfg);
  } catch (err) {
    f.push(error(`${file}: ${(err as Error).message}`));
    return f;
  }
  for (const url of cfg.servers) {
    // ldapts speaks TLS from the start whenever tlsOptions are given: only for ldaps:// (StartTLS gets them below).
    const client = new Client({ url, tlsOptions: url.startsWith('ldaps:') ? tlsOptions : undefined, connectTimeout: Math.min(cfg.timeoutMs, PROBE_TIMEOUT_MS), timeout: Math.min(cfg.timeoutMs, PROBE_TIMEOUT_MS) });
    let step = 'connect';
    try {
      if (cfg.startTls) {
        step = 'starttls';
        await client.startTLS(tlsOptions);
      }
      step = 'bind';
      if (cfg.bindDn) await client.bind(cfg.bindDn, cfg.bindPw);
      if (staticBase && cfg.authMethod !== 'fastbind') {
        step = 'search';
        await client.search(cfg.searchBase, { scope: 'base', attributes: ['1.1'], sizeLimit: 1 });
      }
      f.push(ok(`LDAP server ${url} answers${cfg.startTls || url.startsWith('ldaps:') ? ' over verified TLS' : ''}${cfg.bindDn ? `, accepts ldap_bind_dn ${cfg.bindDn}` : ''}${staticBase ? ` and holds ${cfg.searchBase}` : ''}`));
    } catch (err) {
      f.push(error(ldapProblem(file, cfg, url, step, err)));
    } finally {
      await client.unbind().catch(() => {});
    }
  }
  return f;
}

function ldapTlsOptions(cfg: LdapConfig): import('node:tls').ConnectionOptions {
  const o: import('node:tls').ConnectionOptions = { rejectUnauthorized: true };
  const ca: Buffer[] = [];
  const read = (p: string, key: string): Buffer => {
    try {
      return fs.readFileSync(p);
    } catch (err) {
      throw new Error(`${key} ${p} cannot be read (${codeOf(err)}): give the path of a PEM file readable by facteur`, { cause: err });
    }
  };
  if (cfg.tlsCacertFile) ca.push(read(cfg.tlsCacertFile, 'ldap_tls_cacert_file'));
  if (cfg.tlsCacertDir) {
    for (const n of fs.existsSync(cfg.tlsCacertDir) ? fs.readdirSync(cfg.tlsCacertDir) : []) {
      const p = path.join(cfg.tlsCacertDir, n);
      if (fs.statSync(p).isFile()) ca.push(fs.readFileSync(p));
    }
  }
  if (ca.length) o.ca = ca;
  if (cfg.tlsCert && cfg.tlsKey) {
    o.cert = read(cfg.tlsCert, 'ldap_tls_cert');
    o.key = read(cfg.tlsKey, 'ldap_tls_key');
  }
  if (cfg.tlsCiphers) o.ciphers = cfg.tlsCiphers;
  return o;
}

const UNTRUSTED_CA = new Set(['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_GET_ISSUER_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_SIGNATURE_FAILURE']);
const UNREACHABLE = new Set(['ECONNREFUSED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNRESET']);

/** One sentence for an LDAP connection, TLS or bind failure, naming the CA problem when there is one. */
function ldapProblem(file: string, cfg: LdapConfig, url: string, step: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException)?.code ?? '';
  if (UNTRUSTED_CA.has(code)) {
    const fix = cfg.tlsCacertFile || cfg.tlsCacertDir
      ? `${cfg.tlsCacertFile ? `ldap_tls_cacert_file ${cfg.tlsCacertFile}` : `ldap_tls_cacert_dir ${cfg.tlsCacertDir}`} does not hold that CA: point it at the CA that signed the server's certificate`
      : 'set ldap_tls_cacert_file to the PEM file of the CA that signed it';
    return `TLS to LDAP server ${url} failed: its certificate is signed by a CA facteur does not trust (${code}); ${fix} (in ${file})`;
  }
  if (code === 'CERT_HAS_EXPIRED') return `TLS to LDAP server ${url} failed: the server's certificate has expired (${code}); renew it on the LDAP server`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `TLS to LDAP server ${url} failed: its certificate does not name that host (${code}); use in ldap_servers (${file}) a name the certificate was issued for`;
  if (err instanceof InvalidCredentialsError) return `LDAP server ${url} refused ldap_bind_dn ${cfg.bindDn} (invalid credentials): fix ldap_bind_dn or ldap_bind_pw in ${file}`;
  if (err instanceof NoSuchObjectError && step === 'search') return `ldap_search_base ${cfg.searchBase} does not exist on ${url}: set it to an existing subtree in ${file} (check with ldapsearch -x -H ${url} -b '${cfg.searchBase}' -s base)`;
  if (UNREACHABLE.has(code) || /timeout|timed out/i.test(String((err as Error)?.message)) || step === 'connect') {
    return `LDAP server ${url} is unreachable (${code || (err as Error)?.message}): start it, open the firewall, or fix ldap_servers in ${file}`;
  }
  if (step === 'starttls') return `StartTLS to LDAP server ${url} failed (${code || (err as Error)?.message}): enable TLS on the server, or use ldaps:// in ldap_servers (${file})`;
  const what = err instanceof ResultCodeError ? `${err.constructor.name}, code ${err.code}` : code || (err as Error)?.message;
  return `LDAP server ${url} failed at ${step} (${what}): check ${file} and the server's log`;
}

/** Can facteur's user create files here (a real probe: catches read-only mounts, and root's permission bypass does not hide them)? */
async function writable(dir: string): Promise<string | undefined> {
  let target = path.resolve(dir);
  while (!fs.existsSync(target)) {
    const up = path.dirname(target);
    if (up === target) break;
    target = up;
  }
  try {
    if (!(await fsp.stat(target)).isDirectory()) return `${target} is not a directory`;
    const probe = path.join(target, `.facteur-check-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
    await fsp.writeFile(probe, '');
    await fsp.unlink(probe);
    return undefined;
  } catch (err) {
    return `${codeOf(err)} in ${target}`;
  }
}

async function checkDirectories(cfg: ConfigValues): Promise<Finding[]> {
  const f: Finding[] = [];
  const dataDir = path.resolve(cfg.server.data_dir as string);
  const queueDir = path.resolve(queueDirFromConfig(cfg as Record<string, Record<string, unknown>>));
  const d = await writable(dataDir);
  if (d) f.push(error(`[server] data_dir ${dataDir} is not writable (${d}): create it and give it to facteur's user (install -d -o facteur -m 0750 ${dataDir}), or choose another data_dir`));
  const q = queueDir === path.join(dataDir, 'queue') && d ? undefined : await writable(queueDir);
  if (q) f.push(error(`the spool directory ${queueDir} is not writable (${q}): give it to facteur's user on a local read-write file system, or set [queue] dir`));
  if (!d && !q) f.push(ok(`data directory ${dataDir} and spool ${queueDir} are writable`));
  return f;
}

/** Connect to a UNIX socket path or host:port, bounded. */
function connectOnce(target: { path: string } | { host: string; port: number }): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = 'path' in target ? net.connect(target.path) : net.connect(target.port, target.host);
    const timer = setTimeout(() => {
      s.destroy();
      resolve('no answer in time');
    }, PROBE_TIMEOUT_MS);
    s.once('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolve(undefined);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      resolve(codeOf(err));
    });
  });
}

/** Whether DANE will apply, and why not: it depends on where the system resolver is (see src/delivery/dnssec.ts). */
export function checkDane(cfg: ConfigValues, resolver = new UdpSecureResolver()): Finding[] {
  const mode = (cfg.delivery?.dane as string | undefined) ?? 'auto';
  if (mode === 'off') return [];
  const where = resolver.describe();
  if (mode === 'on') return [ok(`[delivery] dane = "on": DANE applies with the DNSSEC validation of the resolver ${where}; make sure it validates and the path to it cannot be tampered with`)];
  if (resolver.local) return [ok(`[delivery] DANE is on: the system resolver ${where} is on this machine (it must validate DNSSEC, as unbound does)`)];
  return [warn(`[delivery] DANE stays off: the system resolver ${where} is not on this machine, so its DNSSEC answers cannot be trusted; install a validating resolver (apt install unbound, nameserver 127.0.0.1 in /etc/resolv.conf) or set dane = "off" to say it is intended`)];
}

async function checkDelivery(cfg: ConfigValues): Promise<Finding[]> {
  const d = cfg.delivery;
  if (!d) return [];
  if (d.local_transport === 'maildir') {
    // The fixed part of the template (before the first {domain}/{local}) must be creatable by facteur.
    const template = (d.maildir_path as string) || '{data}/mail/{domain}/{local}/';
    const fixed = template.replaceAll('{data}', path.resolve(cfg.server.data_dir as string)).split(/\{(?:domain|local)\}/)[0];
    const root = path.resolve(fixed.endsWith('/') ? fixed : path.dirname(fixed));
    const dataDir = path.resolve(cfg.server.data_dir as string);
    if (root === dataDir || root.startsWith(dataDir + path.sep)) return []; // covered by the data_dir check
    const problem = await writable(root);
    return problem ? [error(`[delivery] maildir_path "${template}": mailboxes cannot be created under ${root} (${problem}): give that directory to facteur's user, or change maildir_path`)] : [];
  }
  if (d.local_transport !== 'lmtp') return [];
  const t = (d.lmtp_target as string).trim();
  if (!t) return [error('[delivery] local_transport = "lmtp" but lmtp_target is empty: set it to "unix:/path/to/socket" or "host:port" of the LMTP server (Dovecot)')];
  if (t.startsWith('unix:')) {
    const p = t.slice(5);
    let st: fs.Stats;
    try {
      st = await fsp.stat(p);
    } catch (err) {
      return [error(`[delivery] lmtp_target ${t}: ${p} cannot be reached (${codeOf(err)}): start the LMTP server (Dovecot's lmtp service) or fix lmtp_target`)];
    }
    if (!st.isSocket()) return [error(`[delivery] lmtp_target ${t}: ${p} is not a socket: name the LMTP server's socket itself`)];
    const e = await connectOnce({ path: p });
    return e ? [error(`[delivery] lmtp_target ${t}: nothing answers there (${e}): start the LMTP server (Dovecot's lmtp service) or fix lmtp_target`)] : [ok(`[delivery] the LMTP server at ${t} accepts connections`)];
  }
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(t);
  if (!m) return [error(`[delivery] lmtp_target "${t}" is neither "unix:/path" nor "host:port": write e.g. "unix:/run/dovecot/lmtp" or "127.0.0.1:24"`)];
  const e = await connectOnce({ host: unbracketed(m[1]), port: Number(m[2]) });
  return e ? [error(`[delivery] lmtp_target ${t}: nothing answers there (${e}): start the LMTP server (Dovecot's lmtp service) or fix lmtp_target`)] : [ok(`[delivery] the LMTP server at ${t} accepts connections`)];
}

async function checkPolicyFiles(cfg: ConfigValues): Promise<Finding[]> {
  const f: Finding[] = [];
  const map = cfg.policy.sender_map as string;
  if (map) {
    try {
      parseSenderMap(await fsp.readFile(map, 'utf8'), map);
      f.push(ok(`[policy] sender_map ${map} reads correctly`));
    } catch (err) {
      f.push(error(`[policy] sender_map: ${(err as Error).message}`));
    }
  }
  const listen = cfg.metrics?.listen as string | undefined;
  const hp = listen ? parseListen(listen) : undefined;
  if (hp && !['127.0.0.1', '::1', 'localhost'].includes(unbracketed(hp.host))) {
    f.push(warn(`[metrics] listen = "${listen}" exposes /metrics and /health beyond this machine: bind it to 127.0.0.1, or restrict the port with a firewall`));
  }
  return f;
}
