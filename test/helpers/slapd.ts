// Test helper: a real OpenLDAP slapd (mdb, core/cosine/inetorgperson/nis schemas) on 127.0.0.1 with ldap:// (+StartTLS) and ldaps://, own CA.
// Loads fixtures offline with slapadd (fast: no network round trips); users have hostile logins/passwords and various password schemes.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { freePort, tempDir, waitForSocket } from './net.js';

export interface LdapUser {
  /** The `uid` attribute (what a client types as its login). */
  login: string;
  password: string;
  dn: string;
  /** The `mail` values, primary first. */
  mail: string[];
  /** Scheme of the stored userPassword (`{SSHA}`, `{SSHA512}`, `{SHA}`, `{MD5}`, `{SMD5}`, `{CRYPT}`, or `plain`). */
  scheme: string;
  /** Member of `groupDn` (uniqueMember). */
  inGroup: boolean;
}

export interface Slapd {
  /** `ldap://127.0.0.1:PORT` (plain LDAP, StartTLS available). */
  url: string;
  /** `ldaps://127.0.0.1:PORT` (also valid: `ldaps://localhost:PORT`). */
  ldapsUrl: string;
  port: number;
  ldapsPort: number;
  /** PEM of the test CA that signed the server certificate (CN localhost, SAN DNS:localhost, IP:127.0.0.1). Not in the system store. */
  caFile: string;
  /** A client certificate and key signed by the test CA (for `tlsVerifyClient: 'demand'`). */
  clientCert: string;
  clientKey: string;
  baseDn: string;
  peopleDn: string;
  /** Read-only service account: can search people and groups, cannot read userPassword. */
  bindDn: string;
  bindPw: string;
  /** Service account that may also read userPassword (for `ldap_auth_method: custom`). */
  pwReaderDn: string;
  pwReaderPw: string;
  /** Directory manager (rootdn), for tests that modify entries with ldapmodify. */
  rootDn: string;
  rootPw: string;
  /** Hostile users (spaces, quotes, backslash, `*`, parentheses, non-ASCII, `@` in the uid). */
  users: LdapUser[];
  /** user0..user99 with pass0..pass99 ({SSHA}), none in the group, mail userN@picasoft.net. */
  bulkUsers: LdapUser[];
  /** groupOfUniqueNames `cn=mail-users,ou=groups,dc=picasoft,dc=net`; members are the users with `inGroup`. */
  groupDn: string;
  groupsDn: string;
  dir: string;
  logFile: string;
  /** Run ldapmodify as the rootdn with this LDIF. */
  modify(ldif: string): Promise<void>;
  /** Stop slapd cleanly (SIGTERM), keeping its files: clients see their connections closed and new ones refused. */
  halt(): Promise<void>;
  /** Start slapd again on the same ports and database after halt(). */
  restart(): Promise<void>;
  /** SIGSTOP / SIGCONT slapd: connections are accepted by the kernel but nothing is answered. pause() resolves once
   * the kernel reports the process stopped (a signal is delivered asynchronously: on a busy machine slapd could still
   * answer a request sent right after kill()). */
  pause(): Promise<void>;
  resume(): void;
  /** Kill slapd and remove the temporary directory (idempotent). */
  stop(): Promise<void>;
}

const BASE = 'dc=picasoft,dc=net';

/** Users whose logins and passwords are hostile to naive filter building, DN building or quoting. */
const HOSTILE: Array<Omit<LdapUser, 'dn'>> = [
  { login: 'alice', password: 'correct horse battery staple', mail: ['alice@picasoft.net', 'alice.liddell@picasoft.net'], scheme: '{SSHA}', inGroup: true },
  { login: 'bob (builder)', password: 'pa"ss\\wd', mail: ['bob@picasoft.net'], scheme: '{SSHA512}', inGroup: true },
  { login: 'star*', password: '*', mail: ['star@picasoft.net'], scheme: '{SHA}', inGroup: false },
  { login: 'back\\slash "q"', password: `\\" ' \\\\ "" %s %u * )(`, mail: ['backslash@picasoft.net'], scheme: '{MD5}', inGroup: true },
  { login: 'josé', password: 'mot de passe é ü 密码', mail: ['jose@picasoft.net', 'josé@picasoft.net'], scheme: '{SMD5}', inGroup: true },
  { login: 'carol@picasoft.net', password: 'carol secret', mail: ['carol@picasoft.net'], scheme: '{CRYPT}', inGroup: true },
  { login: 'jürgen', password: ' leading and trailing space ', mail: ['jurgen@picasoft.net'], scheme: 'plain', inGroup: false },
  { login: 'dave,ou=x+cn=y', password: 'dave=pw;<>#', mail: ['dave@picasoft.net'], scheme: '{SSHA}', inGroup: false },
];

/** RFC 4514 escaping of an attribute value (helper's own copy, independent of src/). */
function dnValue(v: string): string {
  let out = '';
  for (let i = 0; i < v.length; i++) {
    const c = v[i]!;
    if (',+"\\<>;='.includes(c) || (i === 0 && (c === '#' || c === ' ')) || (i === v.length - 1 && c === ' ')) out += '\\' + c;
    else if (c === '\0') out += '\\00';
    else out += c;
  }
  return out;
}

function hashPassword(pw: string, scheme: string): string {
  const b = Buffer.from(pw, 'utf8');
  const salt = randomBytes(8);
  const d = (algo: string, ...parts: Buffer[]) => createHash(algo).update(Buffer.concat(parts)).digest();
  switch (scheme) {
    case '{SSHA}':
      return '{SSHA}' + Buffer.concat([d('sha1', b, salt), salt]).toString('base64');
    case '{SSHA512}':
      return '{SSHA512}' + Buffer.concat([d('sha512', b, salt), salt]).toString('base64');
    case '{SHA}':
      return '{SHA}' + d('sha1', b).toString('base64');
    case '{MD5}':
      return '{MD5}' + d('md5', b).toString('base64');
    case '{SMD5}':
      return '{SMD5}' + Buffer.concat([d('md5', b, salt), salt]).toString('base64');
    case '{CRYPT}':
      return '{CRYPT}' + execFileSync('openssl', ['passwd', '-6', '-stdin'], { input: pw + '\n', encoding: 'utf8' }).trim();
    case 'plain':
      return pw;
    default:
      throw new Error(`unknown scheme ${scheme}`);
  }
}

/** One LDIF line; values that are not LDIF SAFE-STRINGs are base64-encoded. */
function attr(name: string, value: string): string {
  const safe = /^[\x01-\x09\x0b\x0c\x0e-\x1f\x21-\x39\x3b\x3d-\x7f][\x01-\x09\x0b\x0c\x0e-\x7f]*$/.test(value) && !value.endsWith(' ');
  return safe ? `${name}: ${value}\n` : `${name}:: ${Buffer.from(value, 'utf8').toString('base64')}\n`;
}

function entry(dn: string, attrs: Array<[string, string]>): string {
  return attr('dn', dn) + attrs.map(([k, v]) => attr(k, v)).join('') + '\n';
}

function sh(cmd: string, args: string[], cwd?: string): void {
  execFileSync(cmd, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

async function makeCerts(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  sh('openssl', ['req', '-x509', ...ec, '-subj', '/CN=facteur LDAP test CA', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '3', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign'], dir);
  sh('openssl', ['req', '-new', ...ec, '-subj', '/CN=localhost', '-keyout', 'server.key', '-out', 'server.csr'], dir);
  await fs.writeFile(path.join(dir, 'ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  sh('openssl', ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '3', '-extfile', 'ext.cnf'], dir);
  // A client certificate from the same CA, for servers that demand one.
  sh('openssl', ['req', '-new', ...ec, '-subj', '/CN=facteur client', '-keyout', 'client.key', '-out', 'client.csr'], dir);
  await fs.writeFile(path.join(dir, 'client-ext.cnf'), 'extendedKeyUsage=clientAuth\n');
  sh('openssl', ['x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.pem', '-days', '3', '-extfile', 'client-ext.cnf'], dir);
  return { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server.key') };
}

export interface SlapdOptions {
  /** slapd's TLSVerifyClient (default `never`); `demand` refuses TLS clients without a certificate from the test CA. */
  tlsVerifyClient?: 'never' | 'allow' | 'try' | 'demand';
}

export async function startSlapd(opts: SlapdOptions = {}): Promise<Slapd> {
  const dir = await tempDir('facteur-slapd-');
  const [port, ldapsPort] = [await freePort(), await freePort()];
  const tls = await makeCerts(dir);
  const dbDir = path.join(dir, 'db');
  await fs.mkdir(dbDir);
  const peopleDn = `ou=people,${BASE}`;
  const groupsDn = `ou=groups,${BASE}`;
  const groupDn = `cn=mail-users,${groupsDn}`;
  const bindDn = `cn=nss,${BASE}`;
  const bindPw = 'rdonly';
  const pwReaderDn = `cn=pwreader,${BASE}`;
  const pwReaderPw = 'pwreader secret';
  const rootDn = `cn=admin,${BASE}`;
  const rootPw = 'admin secret';

  const conf = `# generated by test/helpers/slapd.ts
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload pw-sha2
pidfile ${dir}/slapd.pid
argsfile ${dir}/slapd.args
TLSCACertificateFile ${tls.ca}
TLSCertificateFile ${tls.cert}
TLSCertificateKeyFile ${tls.key}
TLSVerifyClient ${opts.tlsVerifyClient ?? 'never'}
loglevel stats
sizelimit 500
database mdb
maxsize 104857600
suffix "${BASE}"
rootdn "${rootDn}"
rootpw ${hashPassword(rootPw, '{SSHA}')}
directory ${dbDir}
index objectClass eq
index uid,mail,cn eq
access to attrs=userPassword
  by dn.exact="${pwReaderDn}" read
  by self read
  by anonymous auth
  by * none
access to *
  by dn.exact="${bindDn}" read
  by dn.exact="${pwReaderDn}" read
  by self read
  by anonymous auth
  by * none
`;
  const confFile = path.join(dir, 'slapd.conf');
  await fs.writeFile(confFile, conf);

  const users: LdapUser[] = HOSTILE.map((u) => ({ ...u, dn: `uid=${dnValue(u.login)},${peopleDn}` }));
  const bulkUsers: LdapUser[] = Array.from({ length: 100 }, (_, i) => ({
    login: `user${i}`,
    password: `pass${i}`,
    mail: [`user${i}@picasoft.net`],
    scheme: '{SSHA}',
    inGroup: false,
    dn: `uid=user${i},${peopleDn}`,
  }));
  let ldif = entry(BASE, [['objectClass', 'dcObject'], ['objectClass', 'organization'], ['dc', 'picasoft'], ['o', 'Picasoft']]);
  ldif += entry(peopleDn, [['objectClass', 'organizationalUnit'], ['ou', 'people']]);
  ldif += entry(groupsDn, [['objectClass', 'organizationalUnit'], ['ou', 'groups']]);
  for (const [dn, cn, pw] of [[bindDn, 'nss', bindPw], [pwReaderDn, 'pwreader', pwReaderPw]] as const) {
    ldif += entry(dn, [['objectClass', 'organizationalRole'], ['objectClass', 'simpleSecurityObject'], ['cn', cn], ['userPassword', hashPassword(pw, '{SSHA}')]]);
  }
  for (const u of [...users, ...bulkUsers]) {
    ldif += entry(u.dn, [
      ['objectClass', 'inetOrgPerson'],
      ['uid', u.login],
      ['cn', u.login],
      ['sn', u.login],
      ...u.mail.map((m): [string, string] => ['mail', m]),
      ['userPassword', hashPassword(u.password, u.scheme)],
    ]);
  }
  ldif += entry(groupDn, [['objectClass', 'groupOfUniqueNames'], ['cn', 'mail-users'], ...users.filter((u) => u.inGroup).map((u): [string, string] => ['uniqueMember', u.dn])]);
  const ldifFile = path.join(dir, 'data.ldif');
  await fs.writeFile(ldifFile, ldif);
  sh('/usr/sbin/slapadd', ['-q', '-f', confFile, '-l', ldifFile]);

  const logFile = path.join(dir, 'slapd.log');
  const log = await fs.open(logFile, 'w');
  const urls = `ldap://127.0.0.1:${port}/ ldaps://127.0.0.1:${ldapsPort}/`;
  let proc: ChildProcess;
  let exited: Promise<void>;
  let running = false;
  async function launch(): Promise<void> {
    const p = spawn('/usr/sbin/slapd', ['-d', 'stats', '-h', urls, '-f', confFile], { stdio: ['ignore', log.fd, log.fd] });
    proc = p;
    running = true;
    exited = new Promise((resolve) => p.once('exit', () => {
      running = false;
      resolve();
    }));
    try {
      await Promise.race([
        Promise.all([waitForSocket(port), waitForSocket(ldapsPort)]),
        exited.then(() => Promise.reject(new Error(`slapd exited with ${p.exitCode}; see ${logFile}`))),
      ]);
    } catch (err) {
      p.kill('SIGKILL');
      throw err;
    }
  }
  async function kill(signal: NodeJS.Signals): Promise<void> {
    if (!running) return;
    proc.kill('SIGCONT');
    proc.kill(signal);
    await exited;
  }
  try {
    await launch();
  } catch (err) {
    await log.close();
    throw err;
  }

  let stopped = false;
  return {
    url: `ldap://127.0.0.1:${port}`,
    ldapsUrl: `ldaps://127.0.0.1:${ldapsPort}`,
    port,
    ldapsPort,
    caFile: tls.ca,
    clientCert: path.join(dir, 'client.pem'),
    clientKey: path.join(dir, 'client.key'),
    baseDn: BASE,
    peopleDn,
    bindDn,
    bindPw,
    pwReaderDn,
    pwReaderPw,
    rootDn,
    rootPw,
    users,
    bulkUsers,
    groupDn,
    groupsDn,
    dir,
    logFile,
    async modify(text: string) {
      execFileSync('ldapmodify', ['-x', '-H', `ldap://127.0.0.1:${port}`, '-D', rootDn, '-w', rootPw], { input: text, stdio: ['pipe', 'ignore', 'pipe'] });
    },
    async halt() {
      await kill('SIGTERM');
    },
    async restart() {
      if (running) throw new Error('slapd is running: halt() it first');
      await launch();
    },
    async pause() {
      proc.kill('SIGSTOP');
      for (let i = 0; i < 200; i++) {
        // /proc/PID/stat: "pid (comm) STATE ..."; T = stopped by a signal.
        const stat = await fs.readFile(`/proc/${proc.pid}/stat`, 'utf8').catch(() => '');
        if (/\) T /.test(stat)) return;
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error('slapd did not stop after SIGSTOP');
    },
    resume() {
      proc.kill('SIGCONT');
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await kill('SIGKILL');
      await log.close();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}
