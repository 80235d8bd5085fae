// `-a ldap -O /etc/saslauthd.conf`: verify passwords against an LDAP directory (saslauthd's auth_ldap/lak), on ldapts.
// Trusts the directory's verdict only after checking it: binds are awaited and their result codes classified; TLS certificates are always verified.
//
// Methods (ldap_auth_method):
//   bind      search the user's entry with the service account (pooled, multiplexed connections), then bind as the user's DN on a
//             separate pooled connection (never the service one, so concurrent requests never see each other's identity)
//   fastbind  bind as the DN built from ldap_filter (no search); addresses are read from the user's own entry afterwards
//   custom    read ldap_password_attr with the service account and compare locally (src/auth/passwords.ts: {SSHA} {SSHA512} {SHA}
//             {MD5} {SMD5} {CRYPT} ... ; an unprefixed value is compared as plaintext; an unknown {SCHEME} never matches)
// Then the optional group check (ldap_group_dn + compare, or ldap_group_filter + search).
// Verdicts: wrong password, unknown user, ambiguous login, not in the group -> `NO` (nothing said about which).
// Directory down, timeout, TLS failure, busy/unavailable server, service bind refused -> tempfail `NO [UNAVAILABLE] ...`.
// An empty password is always refused before any I/O (an LDAP simple bind with an empty password is an "unauthenticated bind" that
// many servers answer with success). Logins, realms and services with control characters are refused.
// Servers are tried in the order of ldap_servers; one that fails is skipped for 10 s (unless all are failing).
// Speed: a login->DN mapping is remembered ldap_dn_cache_ttl seconds (facteur extension, default 60): a repeat login needs only the
// user bind. The bind always happens; when it fails with a remembered DN, the search is done again before answering NO. Only for
// filters that merely name the user, like (uid=%u): a compound filter may carry policy (mailEnabled=TRUE...) and is searched every time.
import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';
import path from 'node:path';
import { timingSafeEqual, createHash } from 'node:crypto';
import {
  Client,
  FilterParser,
  ResultCodeError,
  InvalidCredentialsError,
  InvalidDNSyntaxError,
  InsufficientAccessError,
  InappropriateAuthError,
  UnwillingToPerformError,
  NoSuchObjectError,
  NoSuchAttributeError,
  UndefinedTypeError,
  SizeLimitExceededError,
  type Entry,
} from 'ldapts';
import { ConfigError } from '../../../lib/errors.js';
import { unbracketed } from '../../../lib/host.js';
import { verifyPasswordHash } from '../../passwords.js';
import { fail, ok, tempfail, type AuthBackend, type AuthResult, type BackendFactory, type Credentials, type Explain, type VerifyOptions, type AbortLike } from '../../types.js';
import { readLdapConfig, type LdapConfig } from './config.js';
import { expand, type TokenValues } from './tokens.js';

export const DEFAULT_CONFIG_FILE = '/etc/saslauthd.conf';
/** A server that failed is skipped this long (unless every server is failing). */
const SERVER_BACKOFF_MS = 10_000;
/** Bound on the login->DN cache. */
const DN_CACHE_MAX = 10_000;
/** User-bind connections per server (busy or idle) = ldap_pool_size * this; further binds wait for a free one. */
const USER_CONN_FACTOR = 16;

/** The directory (or the way to it) failed: try the next server, answer tempfail if none works. */
class ServerTrouble extends Error {
  /** The connection was found closed (e.g. by the server while idle): worth one retry on a new connection. Timeouts are not. */
  readonly closed: boolean;
  constructor(message: string, opts: { cause?: unknown; closed?: boolean } = {}) {
    super(message, { cause: opts.cause });
    this.closed = opts.closed ?? false;
  }
}

const CLOSED = /Connection closed|not reconnecting|Socket connection not established|ECONNRESET|EPIPE/;

class Aborted extends Error {}

interface Server {
  url: string;
  host: string;
  secure: boolean;
  downUntil: number;
  svc: Conn[];
  idleUser: Conn[];
  /** User-bind connections in use. */
  userActive: number;
  userWaiters: Array<{ wake: () => void; gone: boolean }>;
}

class Conn {
  inflight = 0;
  dead = false;
  used = false;
  constructor(
    readonly client: Client,
    readonly server: Server,
  ) {}
  alive(): boolean {
    return !this.dead && this.client.isConnected;
  }
  kill(): void {
    if (this.dead) return;
    this.dead = true;
    this.client.unbind().catch(() => {});
  }
}

interface DnCacheEntry {
  dn: string;
  addresses: string[];
  expires: number;
}

/** A cached DN used by a login once this share of its lifetime has passed is looked up again in the background. */
const DN_REFRESH_AFTER = 0.75;
/** The abort signal of work nobody waits for (bounded by ldapts's per-operation ldap_timeout instead). */
const NEVER_ABORTED: AbortLike = { aborted: false, addEventListener() {}, removeEventListener() {} };

const CONTROL = /[\0-\x1f\x7f]/;

function errText(err: unknown): string {
  if (err instanceof ResultCodeError) return `${err.constructor.name} (code ${err.code})`;
  const e = err as NodeJS.ErrnoException;
  return e?.code ? `${e.code}` : String(e?.message ?? err);
}

function loadPem(file: string, key: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new ConfigError(`${key}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { cause: err });
  }
}

/** TLS options shared by ldaps:// and StartTLS: verification is never turned off. */
function tlsOptionsFor(cfg: LdapConfig): tls.ConnectionOptions {
  const o: tls.ConnectionOptions = { rejectUnauthorized: true };
  const cas: Buffer[] = [];
  if (cfg.tlsCacertFile) cas.push(loadPem(cfg.tlsCacertFile, 'ldap_tls_cacert_file'));
  if (cfg.tlsCacertDir) {
    let names: string[];
    try {
      names = fs.readdirSync(cfg.tlsCacertDir);
    } catch (err) {
      throw new ConfigError(`ldap_tls_cacert_dir: cannot read ${cfg.tlsCacertDir} (${(err as NodeJS.ErrnoException).code ?? ''})`, { cause: err });
    }
    for (const n of names.sort()) {
      const p = path.join(cfg.tlsCacertDir, n);
      try {
        if (!fs.statSync(p).isFile()) continue;
        const pem = fs.readFileSync(p);
        if (pem.includes('-----BEGIN CERTIFICATE-----')) cas.push(pem);
      } catch {
        // unreadable entries of a CA directory are skipped, as OpenSSL does
      }
    }
    if (cas.length === 0) throw new ConfigError(`ldap_tls_cacert_dir: ${cfg.tlsCacertDir} holds no PEM certificate`);
  }
  if (cas.length) o.ca = cas;
  if (cfg.tlsCert && cfg.tlsKey) {
    o.cert = loadPem(cfg.tlsCert, 'ldap_tls_cert');
    o.key = loadPem(cfg.tlsKey, 'ldap_tls_key');
  }
  if (cfg.tlsCiphers) o.ciphers = cfg.tlsCiphers;
  try {
    tls.createSecureContext(o);
  } catch (err) {
    throw new ConfigError(`ldap_tls_*: the CA, certificate or key files cannot be used (${(err as Error).message})`, { cause: err });
  }
  return o;
}

function firstValues(entry: Entry, names: string[]): string[] {
  const out: string[] = [];
  const wanted = new Set(names.map((n) => n.toLowerCase()));
  for (const [k, v] of Object.entries(entry)) {
    if (k === 'dn' || !wanted.has(k.toLowerCase())) continue;
    for (const x of Array.isArray(v) ? v : [v]) if (typeof x === 'string' && x !== '') out.push(x);
  }
  return out;
}

function constantTimeEq(a: string, b: string): boolean {
  const da = createHash('sha256').update(a, 'utf8').digest();
  const db = createHash('sha256').update(b, 'utf8').digest();
  return timingSafeEqual(da, db) && a === b;
}

/** What an abort must stop: the connection an operation runs on, or a place in a queue. */
interface Killable {
  kill(): void;
}

const noop = (): void => {};

/**
 * One verification in progress. The caller's signal is hooked once per request (not once per LDAP operation), and the
 * operation awaited at the time is remembered, so that an abort kills its connection and fails it at once.
 * `explain` is undefined unless someone reads the steps: callers write `req.explain?.(...)`, which builds no string then.
 */
class Req {
  private current: Killable | undefined;
  private rejectCurrent: ((err: Error) => void) | undefined;
  private hooked = false;
  constructor(
    readonly signal: AbortLike,
    readonly explain: Explain | undefined,
  ) {}

  get aborted(): boolean {
    return this.signal.aborted;
  }

  private readonly onAbort = (): void => {
    const target = this.current;
    const reject = this.rejectCurrent;
    this.current = undefined;
    this.rejectCurrent = undefined;
    target?.kill();
    reject?.(new Aborted('aborted'));
  };

  /** Wait for `p`, work that runs on `target`; if the request is aborted meanwhile, `target` is killed and Aborted thrown. */
  wait<T>(target: Killable, p: Promise<T>): Promise<T> {
    if (this.signal.aborted) {
      target.kill();
      p.catch(noop);
      return Promise.reject(new Aborted('aborted'));
    }
    if (!this.hooked) {
      this.hooked = true;
      this.signal.addEventListener('abort', this.onAbort, { once: true });
    }
    return new Promise<T>((resolve, reject) => {
      this.current = target;
      this.rejectCurrent = reject;
      p.then(
        (v) => {
          this.settled(target);
          resolve(v);
        },
        (err: unknown) => {
          this.settled(target);
          reject(err);
        },
      );
    });
  }

  private settled(target: Killable): void {
    if (this.current !== target) return;
    this.current = undefined;
    this.rejectCurrent = undefined;
  }

  /** The request is over: unhook from the caller's signal (which may outlive it). */
  done(): void {
    if (this.hooked) this.signal.removeEventListener('abort', this.onAbort);
  }
}

/** A place in a server's queue for a user-bind connection; killing it (abort) gives the place up. */
class Waiter implements Killable {
  gone = false;
  wake: () => void = noop;
  kill(): void {
    this.gone = true;
  }
}

/** Where fastbind collects the mail addresses read from the user's own entry after the bind. */
interface SelfRead {
  addresses?: string[];
}

/** Bind result codes that mean "not this password / not this user": a bare NO, the server is fine. */
function isRefusal(err: unknown): boolean {
  return (
    err instanceof InvalidCredentialsError ||
    err instanceof InvalidDNSyntaxError ||
    err instanceof InsufficientAccessError ||
    err instanceof InappropriateAuthError ||
    err instanceof UnwillingToPerformError ||
    err instanceof NoSuchObjectError
  );
}

export class LdapBackend implements AuthBackend {
  readonly name = 'ldap';
  private servers: Server[] = [];
  private tlsOpts: tls.ConnectionOptions = {};
  private dnCache = new Map<string, DnCacheEntry>();
  /** Keys whose DN is being looked up again in the background; the generation changes when the configuration does. */
  private readonly refreshing = new Set<string>();
  private dnCacheGen = 0;
  /** The DN cache is used only when the filter merely names the user (one equality assertion): a compound filter may encode policy
   *  (`(&(uid=%u)(mailEnabled=TRUE))`) that a cached DN would skip, and the check must never be weakened. */
  private dnCacheOn = false;
  /** A group check is configured (ldap_group_dn with the attr method, or ldap_group_filter with the filter method). */
  private groupOn = false;
  private closed = false;

  constructor(
    private cfg: LdapConfig,
    private readonly file: string,
    private readonly log: (m: string) => void,
  ) {
    this.apply(cfg);
  }

  private apply(cfg: LdapConfig): void {
    this.tlsOpts = tlsOptionsFor(cfg);
    this.cfg = cfg;
    this.dnCacheOn = cfg.dnCacheTtl > 0 && /^\(\s*[A-Za-z0-9][A-Za-z0-9.;-]*\s*=[^()&|!]*\)$/.test(cfg.filter.trim());
    this.groupOn = cfg.groupMatchMethod === 'attr' ? !!cfg.groupDn : !!cfg.groupFilter;
    this.servers = cfg.servers.map((u) => {
      const url = new URL(u);
      const host = unbracketed(url.hostname);
      return { url: `${url.protocol}//${url.host}`, host, secure: url.protocol === 'ldaps:', downUntil: 0, svc: [], idleUser: [], userActive: 0, userWaiters: [] };
    });
    this.dnCache.clear();
    this.dnCacheGen++;
  }

  async reload(): Promise<void> {
    const cfg = loadConfig(this.file);
    const old = this.servers;
    this.apply(cfg);
    for (const s of old) for (const c of [...s.svc, ...s.idleUser]) c.kill();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const s of this.servers) {
      for (const c of [...s.svc, ...s.idleUser]) c.kill();
      s.svc = [];
      s.idleUser = [];
    }
  }

  async verify(creds: Credentials, opts: VerifyOptions): Promise<AuthResult> {
    const explain = opts.explain;
    if (creds.login === '') {
      explain?.('empty login: refused');
      return fail();
    }
    if (creds.password === '') {
      explain?.('empty password: refused without asking the directory (it would be an LDAP unauthenticated bind)');
      return fail();
    }
    if (CONTROL.test(creds.login) || CONTROL.test(creds.realm) || CONTROL.test(creds.service)) {
      explain?.('login, realm or service contains control characters: refused');
      return fail();
    }
    if (this.closed) return tempfail('LDAP backend is shut down');
    const vals: TokenValues = { login: creds.login, realm: creds.realm || this.cfg.defaultRealm, service: creds.service };
    const req = new Req(opts.signal, explain);
    const servers = this.servers;
    const now = Date.now();
    // Servers that failed recently are skipped, unless every server did.
    let anyUp = false;
    for (const s of servers) {
      if (s.downUntil <= now) {
        anyUp = true;
        break;
      }
    }
    if (!anyUp) explain?.('every server failed recently: trying them all again');
    let last = '';
    try {
      for (const server of servers) {
        if (anyUp && server.downUntil > now) continue;
        if (req.aborted) break;
        explain?.(`server ${server.url}${server.secure ? ' (LDAPS)' : this.cfg.startTls ? ' (StartTLS)' : ''}`);
        try {
          const r = await this.attempt(server, vals, creds.password, req);
          server.downUntil = 0;
          return r;
        } catch (err) {
          if (err instanceof Aborted || req.aborted) {
            explain?.('aborted: the request ran out of time');
            return tempfail('LDAP directory did not answer in time');
          }
          if (!(err instanceof ServerTrouble)) {
            // The server answered, but with an error that says nothing about the password (e.g. the service account may not
            // search): not a reason to call the server down (a hostile login must not steer requests away from it), nor a NO.
            explain?.(`server ${server.url} answered ${errText(err)}`);
            this.log(`LDAP server ${server.url}: ${errText(err)} (check the configuration and the service account's access)`);
            return tempfail('LDAP directory error');
          }
          explain?.(`server ${server.url} failed: ${err.message}`);
          this.log(`LDAP server ${server.url} failed: ${err.message}`);
          server.downUntil = Date.now() + SERVER_BACKOFF_MS;
          last = err.message;
        }
      }
    } finally {
      req.done();
    }
    if (req.aborted) return tempfail('LDAP directory did not answer in time');
    return tempfail(last ? 'LDAP directory unavailable' : 'no LDAP server configured');
  }

  private async attempt(server: Server, vals: TokenValues, password: string, req: Req): Promise<AuthResult> {
    const cfg = this.cfg;
    const explain = req.explain;
    if (cfg.authMethod === 'bind' && this.dnCacheOn) {
      // The cache key is what the search base and filter are made of (they are a function of these values and the
      // configuration, and a reload empties the cache), so a repeat login needs no template expansion.
      const key = `${vals.login}\0${vals.realm}\0${vals.service}`;
      const cached = this.cacheGet(key);
      if (cached) {
        explain?.(`DN from cache: ${cached.dn}`);
        if (await this.userBind(server, cached.dn, password, req)) {
          if (this.groupOn && !(await this.groupCheck(server, cached.dn, vals, req))) return fail();
          if (cached.expires - Date.now() < cfg.dnCacheTtl * 1000 * (1 - DN_REFRESH_AFTER)) this.refreshDn(server, key, vals, cached.dn);
          return ok('', cached.addresses);
        }
        this.dnCache.delete(key);
        explain?.('bind with the cached DN failed: searching again');
      }
      const found = await this.searchAndBind(server, vals, password, req, cached?.dn);
      if (!found) return fail();
      this.cachePut(key, { dn: found.dn, addresses: found.addresses, expires: Date.now() + cfg.dnCacheTtl * 1000 });
      if (this.groupOn && !(await this.groupCheck(server, found.dn, vals, req))) return fail();
      return ok('', found.addresses);
    }

    if (cfg.authMethod === 'fastbind') {
      const dn = expand(cfg.filter, vals, 'dn');
      explain?.(`fastbind: DN ${dn}`);
      const self: SelfRead = {};
      if (!(await this.userBind(server, dn, password, req, self))) return fail();
      if (this.groupOn && !(await this.groupCheck(server, dn, vals, req))) return fail();
      return ok('', self.addresses);
    }

    if (cfg.authMethod === 'custom') {
      const base = expand(cfg.searchBase, vals, 'dn');
      const filter = expand(cfg.filter, vals, 'filter');
      const entry = await this.findUser(server, base, filter, [cfg.passwordAttr, ...cfg.mailAttrs], req);
      if (!entry) return fail();
      const stored = firstValues(entry, [cfg.passwordAttr]);
      if (!stored.length) {
        explain?.(`entry has no readable ${cfg.passwordAttr} (check the service account's access)`);
        return fail();
      }
      let match = false;
      for (const s of stored) if (await checkStored(password, s, explain)) match = true;
      explain?.(`password compare (${cfg.passwordAttr}): ${match ? 'match' : 'no match'}`);
      if (!match) return fail();
      if (this.groupOn && !(await this.groupCheck(server, entry.dn, vals, req))) return fail();
      return ok('', firstValues(entry, cfg.mailAttrs));
    }

    // bind, searching every time
    const found = await this.searchAndBind(server, vals, password, req, undefined);
    if (!found) return fail();
    if (this.groupOn && !(await this.groupCheck(server, found.dn, vals, req))) return fail();
    return ok('', found.addresses);
  }

  /** Search the user's entry, then bind as it. null: unknown, ambiguous, or wrong password (also when the DN found is `refusedDn`, just refused). */
  private async searchAndBind(server: Server, vals: TokenValues, password: string, req: Req, refusedDn: string | undefined): Promise<{ dn: string; addresses: string[] } | null> {
    const cfg = this.cfg;
    const entry = await this.findLogin(server, vals, req);
    if (!entry) return null;
    const dn = entry.dn;
    if (refusedDn === dn) return null;
    if (!(await this.userBind(server, dn, password, req))) return null;
    return { dn, addresses: firstValues(entry, cfg.mailAttrs) };
  }

  /**
   * Look a cached login→DN mapping up again after a login used it late in its life, off that login's path, so that a
   * busy account does not pay a search every ldap_dn_cache_ttl (the search was the slowest 1 % of logins). The entry is
   * renewed only when the search finds the same DN, else dropped (the next login searches); errors leave it to expire.
   * The password is still checked by a bind at every login: only the mapping is renewed.
   */
  private refreshDn(server: Server, key: string, vals: TokenValues, dn: string): void {
    if (this.refreshing.has(key) || this.closed) return;
    this.refreshing.add(key);
    const cfg = this.cfg;
    const gen = this.dnCacheGen;
    const req = new Req(NEVER_ABORTED, undefined);
    this.findLogin(server, vals, req)
      .then(
        (entry) => {
          if (gen !== this.dnCacheGen || this.closed) return;
          if (entry?.dn === dn) this.cachePut(key, { dn, addresses: firstValues(entry, cfg.mailAttrs), expires: Date.now() + cfg.dnCacheTtl * 1000 });
          else this.dnCache.delete(key);
        },
        () => undefined,
      )
      .finally(() => {
        req.done();
        this.refreshing.delete(key);
      });
  }

  private cacheGet(key: string): DnCacheEntry | undefined {
    const e = this.dnCache.get(key);
    if (!e) return undefined;
    if (e.expires <= Date.now()) {
      this.dnCache.delete(key);
      return undefined;
    }
    return e;
  }

  private cachePut(key: string, e: DnCacheEntry): void {
    this.dnCache.delete(key);
    this.dnCache.set(key, e);
    while (this.dnCache.size > DN_CACHE_MAX) this.dnCache.delete(this.dnCache.keys().next().value!);
  }

  /** The entry ldap_search_base and ldap_filter name for this login, with its mail addresses. null = not found (or ambiguous). */
  private findLogin(server: Server, vals: TokenValues, req: Req): Promise<Entry | null> {
    const cfg = this.cfg;
    return this.findUser(server, expand(cfg.searchBase, vals, 'dn'), expand(cfg.filter, vals, 'filter'), cfg.mailAttrs, req);
  }

  /** Search the user's entry with the service account. null = not found (or ambiguous). */
  private async findUser(server: Server, base: string, filter: string, attributes: string[], req: Req): Promise<Entry | null> {
    const cfg = this.cfg;
    const explain = req.explain;
    explain?.(`search base "${base}" scope ${cfg.scope} filter ${filter}`);
    let entries: Entry[];
    try {
      entries = await this.withService(server, req, async (c) => {
        const r = await c.client.search(base, {
          scope: cfg.scope,
          filter,
          attributes: attributes.length ? attributes : ['1.1'],
          sizeLimit: 2, // exactly one entry must match (ldapts hides sizeLimitExceeded: ask for 2 to see a duplicate)
          timeLimit: cfg.timeLimit,
          derefAliases: cfg.deref,
        });
        return r.searchEntries;
      });
    } catch (err) {
      if (err instanceof NoSuchObjectError || err instanceof InvalidDNSyntaxError) {
        explain?.(`search base ${err instanceof NoSuchObjectError ? 'does not exist' : 'is not a valid DN'}: user not found`);
        return null;
      }
      if (err instanceof SizeLimitExceededError) {
        explain?.('more entries than ldap_size_limit match: ambiguous login refused');
        return null;
      }
      throw err;
    }
    if (entries.length === 0) {
      explain?.('no entry found');
      return null;
    }
    if (entries.length > 1) {
      explain?.(`${entries.length} entries found: ambiguous login refused`);
      return null;
    }
    explain?.(`found DN ${entries[0]!.dn}`);
    return entries[0]!;
  }

  /**
   * Bind as the user on a pooled user connection: true when the directory accepts the password.
   * With `self` (fastbind), the mail attributes of the bound entry are then read into it.
   * No closure per call: this is the whole work of a login whose DN is cached.
   */
  private async userBind(server: Server, dn: string, password: string, req: Req, self?: SelfRead): Promise<boolean> {
    const max = this.cfg.poolSize * USER_CONN_FACTOR;
    while (server.userActive >= max) {
      const w = new Waiter();
      const woken = new Promise<void>((resolve) => (w.wake = resolve));
      server.userWaiters.push(w);
      try {
        await req.wait(w, woken);
      } catch (err) {
        w.gone = true;
        throw err;
      }
    }
    server.userActive++;
    try {
      let conn: Conn | undefined;
      while (server.idleUser.length) {
        const c = server.idleUser.pop()!;
        if (c.alive()) {
          conn = c;
          break;
        }
        c.kill();
      }
      if (conn) {
        try {
          return await this.bindOn(server, conn, dn, password, req, self, max);
        } catch (err) {
          // A pooled connection may have been closed by the server while idle: one retry on a new connection.
          if (!(err instanceof ServerTrouble && err.closed && !req.aborted)) throw err;
        }
      }
      return await this.bindOn(server, await this.open(server, req), dn, password, req, self, max);
    } finally {
      server.userActive--;
      for (let w = server.userWaiters.shift(); w; w = server.userWaiters.shift()) {
        if (w.gone) continue;
        w.wake();
        break;
      }
    }
  }

  /** One user bind on `c`; afterwards `c` goes back to the idle pool, or is closed if it cannot be trusted for the next one. */
  private async bindOn(server: Server, c: Conn, dn: string, password: string, req: Req, self: SelfRead | undefined, max: number): Promise<boolean> {
    const explain = req.explain;
    let bound = true;
    try {
      try {
        await this.run(c, req, c.client.bind(dn, password));
      } catch (err) {
        if (!isRefusal(err)) throw err;
        explain?.(`bind as ${dn}: refused (${errText(err)})`);
        bound = false;
      }
      if (bound) {
        explain?.(`bind as ${dn}: success`);
        if (self && this.cfg.mailAttrs.length) {
          try {
            const r = await this.run(c, req, c.client.search(dn, { scope: 'base', filter: '(objectClass=*)', attributes: this.cfg.mailAttrs, sizeLimit: 1, timeLimit: this.cfg.timeLimit }));
            if (r.searchEntries[0]) self.addresses = firstValues(r.searchEntries[0], this.cfg.mailAttrs);
          } catch (err) {
            // Any answer of the directory (even one that says it is busy) only means no addresses; a broken connection fails the request.
            const code = err instanceof ServerTrouble ? err.cause : err;
            if (!(code instanceof ResultCodeError)) throw err;
            explain?.(`reading the user's own addresses failed (${errText(code)}): none returned`);
          }
        }
      }
    } catch (err) {
      // Whatever went wrong, this connection's state is unknown: it is not pooled again.
      c.kill();
      throw err;
    }
    if (c.alive() && !this.closed && server.idleUser.length < max && this.servers.includes(server)) server.idleUser.push(c);
    else c.kill();
    return bound;
  }

  private async groupCheck(server: Server, userDn: string, vals: TokenValues, req: Req): Promise<boolean> {
    const cfg = this.cfg;
    const explain = req.explain;
    const v = { ...vals, dn: userDn };
    if (cfg.groupMatchMethod === 'attr') {
      if (!cfg.groupDn) return true;
      const groupDn = expand(cfg.groupDn, v, 'dn');
      try {
        const member = await this.withService(server, req, (c) => c.client.compare(groupDn, cfg.groupAttr, userDn));
        explain?.(`group check: compare ${groupDn} ${cfg.groupAttr}=${userDn}: ${member ? 'member' : 'not a member'}`);
        return member;
      } catch (err) {
        if (err instanceof NoSuchObjectError || err instanceof NoSuchAttributeError || err instanceof UndefinedTypeError || err instanceof InvalidDNSyntaxError) {
          explain?.(`group check: ${groupDn}: ${errText(err)}: not a member`);
          return false;
        }
        throw err;
      }
    }
    if (!cfg.groupFilter) return true;
    const base = expand(cfg.groupSearchBase, v, 'dn');
    const filter = expand(cfg.groupFilter, v, 'filter');
    try {
      const n = await this.withService(server, req, async (c) => {
        const r = await c.client.search(base, { scope: cfg.groupScope, filter, attributes: ['1.1'], sizeLimit: 1, timeLimit: cfg.timeLimit, derefAliases: cfg.deref });
        return r.searchEntries.length;
      });
      explain?.(`group check: search "${base}" ${filter}: ${n ? 'member' : 'not a member'}`);
      return n > 0;
    } catch (err) {
      if (err instanceof SizeLimitExceededError) {
        explain?.(`group check: search "${base}" ${filter}: several entries: member`);
        return true;
      }
      if (err instanceof NoSuchObjectError || err instanceof InvalidDNSyntaxError) {
        explain?.(`group check: base "${base}" does not exist: not a member`);
        return false;
      }
      throw err;
    }
  }

  // ---- connections ----

  /** Open one connection: TCP (or TLS for ldaps://), then StartTLS when configured. Never reconnects silently afterwards. */
  private async open(server: Server, req: Req): Promise<Conn> {
    const cfg = this.cfg;
    let opened = false;
    // One socket per Client: if it closes, ldapts would silently reconnect (in clear text after StartTLS); refuse instead.
    const once = <F extends (...a: never[]) => net.Socket>(fn: F): F =>
      ((...a: Parameters<F>) => {
        if (opened) throw new Error('LDAP connection closed (not reconnecting)');
        opened = true;
        const sock = fn(...a);
        sock.setNoDelay(true);
        return sock;
      }) as F;
    const servername = net.isIP(server.host) ? undefined : server.host;
    const client = new Client({
      url: server.url,
      timeout: cfg.timeoutMs,
      connectTimeout: cfg.timeoutMs,
      strictDN: false,
      ...(server.secure
        ? { tlsOptions: { ...this.tlsOpts, servername }, createSecureConnection: once(tls.connect) }
        : { createConnection: once(net.connect) }),
    });
    const conn = new Conn(client, server);
    if (cfg.startTls && !server.secure) {
      // ldaps:// connects (TCP + TLS, under connectTimeout) on the first operation; StartTLS is done here, before anything else.
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${cfg.timeoutMs} ms`)), cfg.timeoutMs);
      });
      try {
        await req.wait(conn, Promise.race([client.startTLS({ ...this.tlsOpts, host: server.host, servername }), timeout]));
      } catch (err) {
        conn.kill();
        if (err instanceof Aborted) throw err;
        throw new ServerTrouble(`StartTLS failed: ${errText(err)}`, { cause: err });
      } finally {
        clearTimeout(timer);
      }
      req.explain?.(`StartTLS with ${server.url}: certificate verified`);
    }
    return conn;
  }

  private async newService(server: Server, req: Req): Promise<Conn> {
    const conn = await this.open(server, req);
    conn.inflight++;
    try {
      if (this.cfg.bindDn || this.cfg.bindPw) await req.wait(conn, conn.client.bind(this.cfg.bindDn, this.cfg.bindPw));
      // Anonymous service: no bind at all (an LDAPv3 connection starts anonymous).
    } catch (err) {
      conn.kill();
      if (err instanceof Aborted) throw err;
      if (err instanceof ResultCodeError) throw new ServerTrouble(`service bind as ${this.cfg.bindDn} refused: ${errText(err)} (check ldap_bind_dn/ldap_bind_pw)`, { cause: err });
      throw new ServerTrouble(`connection failed: ${errText(err)}`, { cause: err });
    } finally {
      conn.inflight--;
    }
    return conn;
  }

  private async withService<T>(server: Server, req: Req, fn: (c: Conn) => Promise<T>): Promise<T> {
    // Drop connections that died (kept: fresh ones not used yet, which connect on their first operation).
    let svc = server.svc;
    for (const c of svc) {
      if (c.dead || (c.used && !c.alive())) {
        svc = svc.filter((x) => !x.dead && (x.alive() || !x.used));
        server.svc = svc;
        break;
      }
    }
    let conn: Conn | undefined;
    let best: Conn | undefined;
    for (const c of svc) if (!best || c.inflight < best.inflight) best = c;
    if (best && (best.inflight === 0 || svc.length >= this.cfg.poolSize)) conn = best;
    let fresh = false;
    if (!conn) {
      conn = await this.newService(server, req);
      server.svc.push(conn);
      fresh = true;
    }
    try {
      return await this.run(conn, req, fn(conn));
    } catch (err) {
      if (err instanceof ServerTrouble && err.closed && !fresh && !req.aborted) {
        // A pooled connection may have been closed by the server while idle: one retry on a new connection.
        const c2 = await this.newService(server, req);
        server.svc.push(c2);
        return this.run(c2, req, fn(c2));
      }
      throw err;
    }
  }

  /** Wait for `p`, an exchange on `conn`: a non-LDAP error (socket, timeout) kills the connection and becomes ServerTrouble. */
  private async run<T>(conn: Conn, req: Req, p: Promise<T>): Promise<T> {
    conn.inflight++;
    conn.used = true;
    try {
      return await req.wait(conn, p);
    } catch (err) {
      if (err instanceof Aborted) throw err;
      if (err instanceof ResultCodeError) {
        if (isServerSide(err)) throw new ServerTrouble(`server answered ${errText(err)}`, { cause: err });
        throw err;
      }
      conn.kill();
      if (err instanceof ServerTrouble) throw err;
      throw new ServerTrouble(`connection failed: ${errText(err)}`, { cause: err, closed: CLOSED.test(errText(err)) });
    } finally {
      conn.inflight--;
    }
  }
}

/** Result codes that say the server (not the user) has a problem. */
function isServerSide(err: ResultCodeError): boolean {
  // 3 timeLimitExceeded, 11 adminLimitExceeded, 51 busy, 52 unavailable, 80 other, 1 operationsError, 2 protocolError
  return [1, 2, 3, 11, 51, 52, 80].includes(err.code);
}

async function checkStored(password: string, stored: string, explain: Explain | undefined): Promise<boolean> {
  const v = await verifyPasswordHash(password, stored);
  if (v !== null) return v;
  const scheme = /^\{([^}]*)\}/.exec(stored);
  if (scheme) {
    explain?.(`password scheme {${scheme[1]}} is not supported: no match`);
    return false;
  }
  // No scheme: upstream compares the plaintext.
  return constantTimeEq(password, stored);
}

function loadConfig(file: string): LdapConfig {
  const cfg = readLdapConfig(file);
  // The expanded filter must parse whatever the login is (hostile values are escaped): check with sample values.
  const sample: TokenValues = { login: 'a*b(c)\\d@e.f', realm: 'r', service: 's', dn: 'cn=x' };
  for (const [key, tpl] of [['ldap_filter', cfg.authMethod === 'fastbind' ? '' : cfg.filter], ['ldap_group_filter', cfg.groupFilter]] as const) {
    if (!tpl) continue;
    try {
      FilterParser.parseString(expand(tpl, sample, 'filter'));
    } catch (err) {
      throw new ConfigError(`${file}: ${key}: "${tpl}" is not a valid LDAP filter (${(err as Error).message})`, { cause: err });
    }
  }
  return cfg;
}

export const createLdapBackend: BackendFactory = async (option, ctx) => {
  const file = option || DEFAULT_CONFIG_FILE;
  const cfg = loadConfig(file);
  const backend = new LdapBackend(cfg, file, ctx.log);
  ctx.log(`LDAP: ${cfg.servers.join(' ')} method ${cfg.authMethod}${cfg.startTls ? ' StartTLS' : ''}${cfg.groupDn || cfg.groupFilter ? ' with group check' : ''}`);
  return backend;
};
