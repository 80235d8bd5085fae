// Parses saslauthd.conf (`-a ldap -O FILE`) with upstream lak_config_read's syntax and lak_config's defaults, but strictly.
// Trusts the file's owner (it holds the service password); validates every key and value, and never echoes ldap_bind_pw.
//
// Syntax (as upstream): `key: value`; the key is [A-Za-z0-9_-]+ (case-insensitive) IMMEDIATELY followed by `:`; the value is the
// rest of the line after leading whitespace (trailing spaces kept: they may belong to a password); `#` after optional whitespace
// starts a comment line; blank lines are skipped; an empty value is an error (as upstream); the last occurrence of a key wins.
// Switches: first character 1/y/t or prefix `on` = true (case-sensitive, as upstream). Ints: leading [-]digits, else 0.
// Stricter than 2.1.28 (which silently ignores them; master refuses them too): unknown keys and invalid enum values are errors
// naming the key and line. Also refused, each with the reason: keys facteur does not implement (ldap_use_sasl: yes, ldap_referrals: on,
// ldap_version: 2, ldapi:// servers), `ldap_tls_check_peer: no` (certificates are always verified), unknown `%` tokens in templates.
// Accepted and ignored: ldap_restart, ldap_debug, ldap_size_limit (exactly one entry must match anyway), the SASL bind keys when
// ldap_use_sasl is off.
// One deviation for CRLF files: a trailing CR is removed from every value (upstream keeps it, which silently breaks the value).
// facteur extensions (not in upstream): ldap_mail_attrs (attributes returned as the user's addresses, default `mail`),
// ldap_dn_cache_ttl (seconds a login→DN mapping is remembered, default 60, 0 = off; only for single-equality filters like (uid=%u)),
// ldap_pool_size (service connections per server, default 4; user-bind connections: up to 16 times that).
import fs from 'node:fs';
import tls from 'node:tls';
import { ConfigError } from '../../../lib/errors.js';
import { checkTemplate } from './tokens.js';

export type Scope = 'sub' | 'one' | 'base';
export type Deref = 'never' | 'search' | 'find' | 'always';

export interface LdapConfig {
  /** Source file, for messages. */
  file: string;
  servers: string[];
  bindDn: string;
  bindPw: string;
  version: 3;
  searchBase: string;
  filter: string;
  passwordAttr: string;
  scope: Scope;
  deref: Deref;
  referrals: false;
  restart: boolean;
  defaultRealm: string;
  authMethod: 'bind' | 'custom' | 'fastbind';
  groupDn: string;
  groupAttr: string;
  groupMatchMethod: 'attr' | 'filter';
  groupFilter: string;
  groupSearchBase: string;
  groupScope: Scope;
  /** ldap_timeout in milliseconds: connect timeout and per-operation timeout. */
  timeoutMs: number;
  /** Server-side search time limit, seconds (0 = none). */
  timeLimit: number;
  /** Parsed for compatibility only: the user search always asks for 2 entries, and a login matching more than 1 is refused (as upstream). */
  sizeLimit: number;
  debug: number;
  startTls: boolean;
  tlsCacertFile?: string;
  tlsCacertDir?: string;
  tlsCiphers?: string;
  tlsCert?: string;
  tlsKey?: string;
  /** facteur extension: attributes whose values are the user's mail addresses. */
  mailAttrs: string[];
  /** facteur extension: seconds a login→DN mapping is reused (0 disables). */
  dnCacheTtl: number;
  /** facteur extension: connections kept per kind (service searches, user binds). */
  poolSize: number;
}

export function defaultConfig(file = '(defaults)'): LdapConfig {
  return {
    file,
    servers: ['ldap://localhost/'],
    bindDn: '',
    bindPw: '',
    version: 3,
    searchBase: '',
    filter: '(uid=%u)',
    passwordAttr: 'userPassword',
    scope: 'sub',
    deref: 'never',
    referrals: false,
    restart: true,
    defaultRealm: '',
    authMethod: 'bind',
    groupDn: '',
    groupAttr: 'uniqueMember',
    groupMatchMethod: 'attr',
    groupFilter: '',
    groupSearchBase: '',
    groupScope: 'sub',
    timeoutMs: 5000,
    timeLimit: 5,
    sizeLimit: 1,
    debug: 0,
    startTls: false,
    mailAttrs: ['mail'],
    dnCacheTtl: 60,
    poolSize: 4,
  };
}

/** lak_config_switch. */
export function configSwitch(v: string): boolean {
  const c = v[0];
  if (c === '0' || c === 'n' || c === 'f' || (c === 'o' && v[1] === 'f')) return false;
  return c === '1' || c === 'y' || c === 't' || (c === 'o' && v[1] === 'n');
}

/** lak_config_int: atoi when the value starts with a digit or `-digit`, else 0. */
export function configInt(v: string): number {
  const m = /^-?\d+/.exec(v);
  if (!m) return 0;
  const n = Number(m[0]);
  return Number.isSafeInteger(n) ? n : n > 0 ? Number.MAX_SAFE_INTEGER : Number.MIN_SAFE_INTEGER;
}

type Setter = (c: LdapConfig, v: string, where: string) => void;

function enumOf<T extends string>(key: string, values: readonly T[], set: (c: LdapConfig, v: T) => void): Setter {
  return (c, v, where) => {
    const t = v.trimEnd().toLowerCase();
    const hit = values.find((x) => x === t);
    if (!hit) throw new ConfigError(`${where}: ${key}: "${v.trimEnd()}" is not a valid value; use one of ${values.join(', ')}`);
    set(c, hit);
  };
}

function nonNegative(key: string, set: (c: LdapConfig, n: number) => void): Setter {
  return (c, v, where) => {
    const n = configInt(v);
    if (n < 0) throw new ConfigError(`${where}: ${key}: must be 0 or more (got ${n})`);
    set(c, n);
  };
}

function splitList(v: string): string[] {
  return v.split(/[\s,]+/).filter((s) => s.length > 0);
}

const SETTERS: Record<string, Setter> = {
  ldap_servers: (c, v, where) => {
    const list = splitList(v);
    for (const u of list) {
      let url: URL;
      try {
        url = new URL(u);
      } catch {
        throw new ConfigError(`${where}: ldap_servers: "${u}" is not a URL; write ldap://host[:port]/ or ldaps://host[:port]/`);
      }
      if (url.protocol !== 'ldap:' && url.protocol !== 'ldaps:') {
        throw new ConfigError(`${where}: ldap_servers: "${u}": facteur supports ldap:// and ldaps:// only (not ${url.protocol}//); use ldap://127.0.0.1/ instead of ldapi://`);
      }
      if (!url.hostname) throw new ConfigError(`${where}: ldap_servers: "${u}" has no host name; write ldap://localhost/`);
    }
    c.servers = list;
  },
  ldap_bind_dn: (c, v) => (c.bindDn = v),
  ldap_bind_pw: (c, v) => (c.bindPw = v),
  ldap_password: (c, v) => (c.bindPw = v),
  ldap_version: (c, v, where) => {
    const n = configInt(v);
    if (n === 2) throw new ConfigError(`${where}: ldap_version: 2 is not supported (LDAPv2 is historic, RFC 3494); remove the line or write ldap_version: 3`);
    if (n !== 3) throw new ConfigError(`${where}: ldap_version: "${v.trimEnd()}" is not a valid value; use 3`);
  },
  ldap_search_base: (c, v) => (c.searchBase = v),
  ldap_filter: (c, v) => (c.filter = v),
  ldap_password_attr: (c, v) => (c.passwordAttr = v.trimEnd()),
  ldap_scope: enumOf('ldap_scope', ['sub', 'one', 'base'] as const, (c, v) => (c.scope = v)),
  ldap_deref: enumOf('ldap_deref', ['never', 'search', 'find', 'always'] as const, (c, v) => (c.deref = v)),
  ldap_referrals: (c, v, where) => {
    if (configSwitch(v)) throw new ConfigError(`${where}: ldap_referrals: facteur does not chase referrals (it would send the service password to a server named by the directory); remove the line or set it to no`);
  },
  ldap_restart: (c, v) => (c.restart = configSwitch(v)),
  ldap_default_realm: (c, v) => (c.defaultRealm = v),
  ldap_default_domain: (c, v) => (c.defaultRealm = v),
  ldap_auth_method: enumOf('ldap_auth_method', ['bind', 'custom', 'fastbind'] as const, (c, v) => (c.authMethod = v)),
  ldap_group_dn: (c, v) => (c.groupDn = v),
  ldap_group_attr: (c, v) => (c.groupAttr = v.trimEnd()),
  ldap_group_match_method: enumOf('ldap_group_match_method', ['attr', 'filter'] as const, (c, v) => (c.groupMatchMethod = v)),
  ldap_group_filter: (c, v) => (c.groupFilter = v),
  ldap_group_search_base: (c, v) => (c.groupSearchBase = v),
  ldap_group_scope: enumOf('ldap_group_scope', ['sub', 'one', 'base'] as const, (c, v) => (c.groupScope = v)),
  ldap_timeout: (c, v, where) => {
    const n = configInt(v);
    if (n <= 0) throw new ConfigError(`${where}: ldap_timeout: must be a number of seconds above 0 (got "${v.trimEnd()}")`);
    c.timeoutMs = Math.min(n, 3600) * 1000;
  },
  ldap_time_limit: nonNegative('ldap_time_limit', (c, n) => (c.timeLimit = n)),
  ldap_size_limit: nonNegative('ldap_size_limit', (c, n) => (c.sizeLimit = n)),
  ldap_debug: (c, v) => (c.debug = configInt(v)),
  ldap_start_tls: (c, v) => (c.startTls = configSwitch(v)),
  ldap_tls_check_peer: (c, v, where) => {
    if (!configSwitch(v)) {
      throw new ConfigError(
        `${where}: ldap_tls_check_peer: "no" is refused: facteur always verifies the directory's certificate, because an unverified ` +
          'connection lets anyone on the path read every password; give the CA that signed it with ldap_tls_cacert_file instead',
      );
    }
  },
  ldap_tls_cacert_file: (c, v) => (c.tlsCacertFile = v.trimEnd()),
  ldap_tls_cacert_dir: (c, v) => (c.tlsCacertDir = v.trimEnd()),
  ldap_tls_ciphers: (c, v) => (c.tlsCiphers = v.trimEnd()),
  ldap_tls_cert: (c, v) => (c.tlsCert = v.trimEnd()),
  ldap_tls_key: (c, v) => (c.tlsKey = v.trimEnd()),
  ldap_use_sasl: (c, v, where) => {
    if (configSwitch(v)) throw new ConfigError(`${where}: ldap_use_sasl: SASL binds to the directory are not implemented by facteur; use simple binds (ldap_auth_method: bind) over TLS`);
  },
  // SASL bind parameters: only used with ldap_use_sasl, which facteur refuses; accepted so that existing files still load.
  ldap_id: () => {},
  ldap_sasl_authc_id: () => {},
  ldap_authz_id: () => {},
  ldap_sasl_authz_id: () => {},
  ldap_mech: () => {},
  ldap_sasl_mech: () => {},
  ldap_realm: () => {},
  ldap_sasl_realm: () => {},
  ldap_sasl_secprops: () => {},
  // facteur extensions
  ldap_mail_attrs: (c, v, where) => {
    const list = splitList(v);
    for (const a of list) if (!/^[A-Za-z][A-Za-z0-9-]*(;[A-Za-z0-9-]+)*$/.test(a)) throw new ConfigError(`${where}: ldap_mail_attrs: "${a}" is not an attribute name`);
    c.mailAttrs = list;
  },
  ldap_dn_cache_ttl: nonNegative('ldap_dn_cache_ttl', (c, n) => (c.dnCacheTtl = Math.min(n, 3600))),
  ldap_pool_size: (c, v, where) => {
    const n = configInt(v);
    if (n < 1 || n > 64) throw new ConfigError(`${where}: ldap_pool_size: must be between 1 and 64 (got "${v.trimEnd()}")`);
    c.poolSize = n;
  },
};

export const KNOWN_KEYS = Object.keys(SETTERS);

/** Parse the text of a saslauthd.conf. Throws ConfigError naming the file, line and key. */
export function parseLdapConfig(text: string, file = 'saslauthd.conf'): LdapConfig {
  const c = defaultConfig(file);
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.replace(/\r$/, '');
    const where = `${file} line ${i + 1}`;
    const body = raw.replace(/^\s+/, '');
    if (body === '' || body.startsWith('#')) continue;
    const m = /^([A-Za-z0-9_-]*)(.?)/.exec(body)!;
    const key = m[1]!.toLowerCase();
    if (m[2] !== ':') {
      const hint = key ? `"${key}" must be followed immediately by ":" (write "${key}: value")` : 'a line must be "key: value"';
      throw new ConfigError(`${where}: ${hint}`);
    }
    const value = body.slice(m[0].length).replace(/^\s+/, '');
    if (value === '') throw new ConfigError(`${where}: ${key}: empty value; remove the line to keep the default`);
    const setter = Object.hasOwn(SETTERS, key) ? SETTERS[key] : undefined; // never an inherited name (constructor, __proto__)
    if (!setter) throw new ConfigError(`${where}: unknown key "${key}"; see saslauthd's LDAP_SASLAUTHD for the valid keys`);
    setter(c, value, where);
  }
  if (c.groupFilter && c.searchBase && !c.groupSearchBase) c.groupSearchBase = c.searchBase;
  validate(c);
  return c;
}

function validate(c: LdapConfig): void {
  const f = c.file;
  checkTemplate(c.filter, 'ldap_filter', f);
  checkTemplate(c.searchBase, 'ldap_search_base', f);
  checkTemplate(c.groupDn, 'ldap_group_dn', f, true);
  checkTemplate(c.groupFilter, 'ldap_group_filter', f, true);
  checkTemplate(c.groupSearchBase, 'ldap_group_search_base', f, true);
  // libldap accepts a bare `attr=value` filter (the seed's `ldap_filter: cn=%u`, upstream's old default `uid=%u`): add the parentheses.
  if (c.authMethod !== 'fastbind' && !c.filter.trimStart().startsWith('(')) c.filter = `(${c.filter.trim()})`;
  if (c.groupFilter && !c.groupFilter.trimStart().startsWith('(')) c.groupFilter = `(${c.groupFilter.trim()})`;
  if (c.authMethod === 'fastbind' && !c.filter.includes('=')) {
    throw new ConfigError(`${f}: ldap_filter: with ldap_auth_method: fastbind the filter is the user's DN, e.g. uid=%U,ou=people,dc=example,dc=org`);
  }
  if (c.groupMatchMethod === 'filter' && c.groupDn && !c.groupFilter) {
    throw new ConfigError(`${f}: ldap_group_match_method: filter needs ldap_group_filter (e.g. (uniqueMember=%D))`);
  }
  if (c.groupMatchMethod === 'attr' && c.groupFilter && !c.groupDn) {
    throw new ConfigError(`${f}: ldap_group_filter is set but ldap_group_match_method is attr (the default): add ldap_group_match_method: filter, or use ldap_group_dn`);
  }
  if (c.groupMatchMethod === 'filter' && c.groupFilter && !c.groupSearchBase) {
    throw new ConfigError(`${f}: ldap_group_filter needs ldap_group_search_base (or ldap_search_base)`);
  }
  if ((c.tlsCert === undefined) !== (c.tlsKey === undefined)) {
    throw new ConfigError(`${f}: ldap_tls_cert and ldap_tls_key go together: give both or neither`);
  }
  if (c.bindPw && !c.bindDn) throw new ConfigError(`${f}: ldap_bind_pw is set but ldap_bind_dn is empty; set ldap_bind_dn or remove the password`);
  if (c.tlsCiphers) {
    try {
      tls.createSecureContext({ ciphers: c.tlsCiphers });
    } catch {
      throw new ConfigError(`${f}: ldap_tls_ciphers: "${c.tlsCiphers}" is not an OpenSSL cipher list (GnuTLS priority strings are not accepted), e.g. ECDHE+AESGCM`);
    }
  }
}

/** Read and parse a saslauthd.conf file. */
export function readLdapConfig(file: string): LdapConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read the LDAP configuration ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); give its path with -O`, { cause: err });
  }
  return parseLdapConfig(text, file);
}
