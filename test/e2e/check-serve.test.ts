// `facteur check --config FILE` on broken serve configurations: one problem per test, each with its one-sentence explanation.
// Real files, real openssl certificates, a real slapd, real UNIX sockets and a read-only tmpfs; the CLI for the exit codes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { tempDir, freePort } from '../helpers/net.js';
import { facteur } from '../helpers/authd.js';
import { startSlapd, type Slapd } from '../helpers/slapd.js';
import { checkServeConfig, type Finding } from '../../src/config/check.js';

let dir: string;
let slapd: Slapd;
let good: { cert: string; key: string };
const mounts: string[] = [];
const servers: net.Server[] = [];

function selfSigned(name: string, o: { cn?: string; days?: number } = {}): { cert: string; key: string } {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  const cn = o.cn ?? 'mx.test';
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', String(o.days ?? 365), '-subj', `/CN=${cn}`, '-addext', `subjectAltName=DNS:${cn}`, '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}

/** A certificate valid only in 2020 (openssl ca can set both dates; openssl 3.0's req cannot). */
async function expiredCert(): Promise<{ cert: string; key: string }> {
  const ca = path.join(dir, 'expired-ca');
  await fs.mkdir(ca);
  await fs.writeFile(path.join(ca, 'index.txt'), '');
  await fs.writeFile(path.join(ca, 'serial'), '01\n');
  await fs.writeFile(path.join(ca, 'ca.cnf'), '[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\ncopy_extensions = copy\n[p]\ncommonName = supplied\n');
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=mx.test', '-addext', 'subjectAltName=DNS:mx.test', '-keyout', 'k.pem', '-out', 'r.csr'], { cwd: ca, stdio: 'ignore' });
  execFileSync('openssl', ['ca', '-batch', '-config', 'ca.cnf', '-selfsign', '-keyfile', 'k.pem', '-in', 'r.csr', '-startdate', '20200101000000Z', '-enddate', '20201231000000Z', '-out', 'c.pem'], { cwd: ca, stdio: 'ignore' });
  return { cert: path.join(ca, 'c.pem'), key: path.join(ca, 'k.pem') };
}

let n = 0;
/** A serve configuration that passes, with per-section extra lines (later keys of the same name are not allowed in TOML: replace them). */
async function config(extra: Record<string, string> = {}, replace: Record<string, Record<string, string>> = {}): Promise<string> {
  const data = path.join(dir, `data${n}`);
  await fs.mkdir(data, { recursive: true });
  await fs.writeFile(path.join(data, 'users'), '', { mode: 0o600 });
  const base: Record<string, Record<string, string>> = {
    server: { hostname: '"mx.test"', data_dir: JSON.stringify(data), local_domains: '["example.org"]', tls_cert: JSON.stringify(good.cert), tls_key: JSON.stringify(good.key) },
    inbound: { listen: '["127.0.0.1:2525"]' },
    submission: { listen: '["127.0.0.1:2587"]' },
    submissions: { listen: '["127.0.0.1:2465"]' },
    auth: { backend: '"file"' },
    metrics: { listen: '"127.0.0.1:9925"' },
  };
  for (const [s, kv] of Object.entries(replace)) base[s] = { ...(base[s] ?? {}), ...kv };
  const sections = new Set([...Object.keys(base), ...Object.keys(extra)]);
  let text = '';
  for (const s of sections) {
    text += `[${s}]\n`;
    for (const [k, v] of Object.entries(base[s] ?? {})) text += `${k} = ${v}\n`;
    if (extra[s]) text += `${extra[s]}\n`;
  }
  const file = path.join(dir, `facteur${n++}.toml`);
  await fs.writeFile(file, text);
  return file;
}

const errors = (f: Finding[]) => f.filter((x) => x.level === 'error').map((x) => x.message);
const warnings = (f: Finding[]) => f.filter((x) => x.level === 'warning').map((x) => x.message);

/** Exactly one error, matching `re`. */
async function oneError(file: string, re: RegExp): Promise<Finding[]> {
  const f = await checkServeConfig(file);
  const e = errors(f);
  assert.equal(e.length, 1, `expected one error, got:\n${f.map((x) => `${x.level} ${x.message}`).join('\n')}`);
  assert.match(e[0], re);
  return f;
}

async function ldapConf(body: string): Promise<string> {
  const file = path.join(dir, `saslauthd-${n++}.conf`);
  await fs.writeFile(file, body);
  return file;
}

function ldapBase(o: { servers?: string; extra?: string; base?: string | null; filter?: string; pw?: string } = {}): string {
  return [
    `ldap_servers: ${o.servers ?? slapd.url}`,
    `ldap_bind_dn: ${slapd.bindDn}`,
    `ldap_bind_pw: ${o.pw ?? slapd.bindPw}`,
    o.base === null ? '' : `ldap_search_base: ${o.base ?? slapd.peopleDn}`,
    `ldap_filter: ${o.filter ?? '(uid=%u)'}`,
    o.extra ?? '',
  ].join('\n');
}

before(async () => {
  dir = await tempDir('facteur-check-serve-');
  good = selfSigned('good');
  slapd = await startSlapd();
});

after(async () => {
  for (const s of servers) s.close();
  for (const m of mounts) spawnSync('umount', [m]);
  await slapd?.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

test('a correct configuration passes: exit 0 through the CLI', async () => {
  const r = await facteur(['check', '--config', await config()]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /every key is known and valid/);
  assert.match(r.stdout, /tls_key matches the certificate/);
  assert.match(r.stdout, /tls_cert is valid for mx\.test/);
  assert.match(r.stdout, /AUTH PLAIN\/LOGIN is offered only after TLS on every listener/);
  assert.match(r.stdout, /answers and refuses a made-up user/);
  assert.match(r.stdout, /relay: only authenticated members may send to other domains/);
  assert.match(r.stdout, /no problem found/);
});

test('misspelled keys and sections: every one reported with "did you mean", exit 1', async () => {
  const file = await config({ server: 'max_recipents = 10', submision: 'enabled = true', auth: 'mech_lst = ["PLAIN"]' });
  const r = await facteur(['check', '--config', file]);
  assert.equal(r.code, 1, r.stdout);
  assert.match(r.stdout, /unknown key 'max_recipents' in \[server\] \(did you mean 'max_recipients'\?\); run 'facteur config --defaults' for the list/);
  assert.match(r.stdout, /unknown key 'mech_lst' in \[auth\] \(did you mean 'mech_list'\?\)/);
  assert.match(r.stdout, /unknown section \[submision\] \(did you mean 'submission'\?\)/);
  assert.match(r.stdout, /3 problems to fix/);
});

test('inherited property names are unknown keys too (the loader accepts them; found by the config fuzzer)', async () => {
  await oneError(await config({ server: 'constructor = 1' }), /unknown key 'constructor' in \[server\]; run 'facteur config --defaults' for the list/);
});

test('a bad value is named with its key', async () => {
  await oneError(await config({}, { server: { max_recipients: '0' } }), /\[server\] max_recipients: must be at least 1/);
});

test('unreadable certificate', async () => {
  await oneError(await config({}, { server: { tls_cert: JSON.stringify(path.join(dir, 'nope.crt')) } }), /\[server\] tls_cert .*nope\.crt cannot be read \(ENOENT\): give the path of the PEM certificate and make it readable by facteur's user/);
});

test('unreadable key', async () => {
  await oneError(await config({}, { server: { tls_key: JSON.stringify(dir) } }), /\[server\] tls_key .* cannot be read \(EISDIR\): give the path of the PEM private key/);
});

test('a file that holds no certificate', async () => {
  await oneError(await config({}, { server: { tls_cert: JSON.stringify(good.key) } }), /tls_cert .*good\.key holds no PEM certificate: give the certificate file/);
});

test('key and certificate that do not belong together', async () => {
  const other = selfSigned('other');
  await oneError(await config({}, { server: { tls_key: JSON.stringify(other.key) } }), /\[server\] tls_key .*other\.key does not belong to the certificate .*good\.crt: give the key the certificate was issued for/);
});

test('expired certificate', async () => {
  const old = await expiredCert();
  await oneError(await config({}, { server: { tls_cert: JSON.stringify(old.cert), tls_key: JSON.stringify(old.key) } }), /tls_cert .*c\.pem expired on 2020-12-31: renew it, then send facteur SIGHUP/);
});

test('certificate expiring within 14 days is a warning (exit 0)', async () => {
  const soon = selfSigned('soon', { days: 5 });
  const file = await config({}, { server: { tls_cert: JSON.stringify(soon.cert), tls_key: JSON.stringify(soon.key) } });
  const f = await checkServeConfig(file);
  assert.deepEqual(errors(f), []);
  assert.ok(warnings(f).some((w) => /tls_cert .*soon\.crt expires on \d{4}-\d\d-\d\d, in [45] days: renew it/.test(w)), warnings(f).join('\n'));
  const r = await facteur(['check', '--config', file]);
  assert.equal(r.code, 0, r.stdout);
  assert.match(r.stdout, /warning +\[server\] tls_cert/);
});

test('certificate not valid for the configured hostname', async () => {
  await oneError(await config({}, { server: { hostname: '"mail.example.org"' } }), /tls_cert .*good\.crt is not valid for the hostname mail\.example\.org \(it names DNS:mx\.test\): get a certificate for mail\.example\.org, or set \[server\] hostname/);
});

test('no certificate configured: warned about the generated self-signed one', async () => {
  const f = await checkServeConfig(await config({}, { server: { tls_cert: '""', tls_key: '""' } }));
  assert.deepEqual(errors(f), []);
  assert.ok(warnings(f).some((w) => /no \[server\] tls_cert: facteur generates a self-signed certificate/.test(w)));
});

test('a listener requiring AUTH without TLS (AUTH could only happen in clear)', async () => {
  await oneError(await config({ submission: 'starttls = false' }), /\[submission\] auth = "required" with starttls = false: facteur offers AUTH PLAIN\/LOGIN only over TLS, so nobody could log in on this listener; set starttls = true/);
});

test('open relay: a password daemon that accepts anyone', async () => {
  const sock = path.join(dir, 'yes-man.sock');
  const srv = net.createServer((c) => {
    c.once('data', () => c.end(Buffer.from([0, 2, 0x4f, 0x4b]))); // "OK" to everything
  });
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(sock, r));
  await oneError(await config({}, { auth: { backend: '"saslauthd"', saslauthd_path: JSON.stringify(sock) } }), /open relay: the daemon at \[auth\] saslauthd_path .*yes-man\.sock accepts a made-up user with a random password, so anyone can log in and send mail anywhere through facteur/);
});

test('local_domains with a wildcard', async () => {
  await oneError(await config({}, { server: { local_domains: '["*"]' } }), /local_domains entry "\*" is not a domain name \(facteur has no wildcards or networks there\): list each domain/);
});

test('auth socket missing', async () => {
  await oneError(await config({}, { auth: { backend: '"saslauthd"', saslauthd_path: JSON.stringify(path.join(dir, 'run', 'mux')) } }), /\[auth\] saslauthd_path .*run\/mux does not exist: start facteur authd \(or saslauthd\) with -m .*run, or point \[auth\] saslauthd_path at its socket/);
});

test('auth socket path naming a directory', async () => {
  await oneError(await config({}, { auth: { backend: '"saslauthd"', saslauthd_path: JSON.stringify(dir) } }), /saslauthd_path .* is a directory, not a socket: it must name the daemon's socket itself, e.g. .*\/mux/);
});

test('auth socket left behind by a dead daemon', async () => {
  const stale = path.join(dir, 'stale.sock');
  spawnSync('python3', ['-c', `import socket; s = socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(stale)})`]);
  await oneError(await config({}, { auth: { backend: '"saslauthd"', saslauthd_path: JSON.stringify(stale) } }), /nothing answers on \[auth\] saslauthd_path .*stale\.sock \(ECONNREFUSED\): the daemon is not running; start it/);
});

test('auth socket that accepts but never answers', async () => {
  const sock = path.join(dir, 'mute.sock');
  const srv = net.createServer(() => undefined);
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(sock, r));
  await oneError(await config({}, { auth: { backend: '"saslauthd"', saslauthd_path: JSON.stringify(sock) } }), /saslauthd_path .*mute\.sock accepts connections but does not answer within 5 s/);
});

test('in-process backend that cannot reach its server (the lead\'s probe)', async () => {
  await oneError(await config({}, { auth: { backend: '"rimap"', option: JSON.stringify(`127.0.0.1/${await freePort()}`) } }), /\[auth\] backend = "rimap": mechanism rimap cannot reach its backend/);
});

test('LDAP: a correct saslauthd.conf passes, with the probe', async () => {
  const file = await config({}, { auth: { backend: '"ldap"', option: JSON.stringify(await ldapConf(ldapBase())) } });
  const f = await checkServeConfig(file);
  assert.deepEqual(errors(f), []);
  const text = f.map((x) => x.message).join('\n');
  assert.match(text, /LDAP server ldap:\/\/127\.0\.0\.1:\d+ answers, accepts ldap_bind_dn .* and holds ou=people/);
  assert.match(text, /mechanism ldap answers and refuses a made-up user/);
});

test('LDAP: server unreachable', async () => {
  const dead = `ldap://127.0.0.1:${await freePort()}`;
  await oneError(await config({}, { auth: { backend: '"ldap"', option: JSON.stringify(await ldapConf(ldapBase({ servers: dead }))) } }), /LDAP server ldap:\/\/127\.0\.0\.1:\d+ is unreachable \(ECONNREFUSED\): start it, open the firewall, or fix ldap_servers/);
});

test('LDAP: TLS failure names the CA problem (no CA configured)', async () => {
  await oneError(await config({}, { auth: { backend: '"ldap"', option: JSON.stringify(await ldapConf(ldapBase({ servers: slapd.ldapsUrl }))) } }), /TLS to LDAP server ldaps:\/\/.* failed: its certificate is signed by a CA facteur does not trust \([A-Z_]+\); set ldap_tls_cacert_file to the PEM file of the CA that signed it/);
});

test('LDAP: StartTLS with the wrong CA file names that file', async () => {
  const conf = ldapBase({ extra: `ldap_start_tls: yes\nldap_tls_cacert_file: ${good.cert}` });
  await oneError(await config({}, { auth: { backend: '"ldap"', option: JSON.stringify(await ldapConf(conf)) } }), /TLS to LDAP server ldap:\/\/.* failed: its certificate is signed by a CA facteur does not trust \([A-Z_]+\); ldap_tls_cacert_file .*good\.crt does not hold that CA/);
});

test('LDAP: StartTLS with the right CA passes', async () => {
  const conf = ldapBase({ extra: `ldap_start_tls: yes\nldap_tls_cacert_file: ${slapd.caFile}` });
  const f = await checkServeConfig(await config({}, { auth: { backend: '"ldap"', option: JSON.stringify(await ldapConf(conf)) } }));
  assert.deepEqual(errors(f), []);
  assert.ok(f.some((x) => /answers over verified TLS/.test(x.message)));
});

test('LDAP: bind DN refused', async () => {
  await oneError(await config({}, { auth: { backend: '"ldap"', option: JSON.stringify(await ldapConf(ldapBase({ pw: 'wrong password' }))) } }), /LDAP server ldap:\/\/.* refused ldap_bind_dn cn=.* \(invalid credentials\): fix ldap_bind_dn or ldap_bind_pw/);
});

test('LDAP: search base empty', async () => {
  await oneError(await config({}, { auth: { backend: '"ldap"', option: JSON.stringify(await ldapConf(ldapBase({ base: null }))) } }), /ldap_search_base is empty, so searches start at the root of the directory and find no user: set it to the users' subtree/);
});

test('LDAP: search base that does not exist', async () => {
  await oneError(await config({}, { auth: { backend: '"ldap"', option: JSON.stringify(await ldapConf(ldapBase({ base: 'ou=nobody,dc=picasoft,dc=net' }))) } }), /ldap_search_base ou=nobody,dc=picasoft,dc=net does not exist on ldap:\/\/.*: set it to an existing subtree/);
});

test('LDAP: filter without %u', async () => {
  await oneError(await config({}, { auth: { backend: '"ldap"', option: JSON.stringify(await ldapConf(ldapBase({ filter: '(uid=alice)' }))) } }), /ldap_filter "\(uid=alice\)" has no %u or %U, so every login looks up the same entry: write e.g. \(uid=%u\)/);
});

test('spool directory on a read-only file system', async () => {
  const ro = path.join(dir, 'ro-spool');
  await fs.mkdir(ro);
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', ro]);
  assert.equal(r.status, 0, `mount: ${r.stderr}`);
  mounts.push(ro);
  await oneError(await config({ queue: `dir = ${JSON.stringify(ro)}` }), /the spool directory .*ro-spool is not writable \(EROFS in .*ro-spool\): give it to facteur's user on a local read-write file system, or set \[queue\] dir/);
});

test('data directory under a regular file', async () => {
  const file = path.join(dir, 'plain-file');
  await fs.writeFile(file, '');
  await oneError(await config({}, { server: { data_dir: JSON.stringify(path.join(file, 'data')) } }), /\[server\] data_dir .*plain-file\/data is not writable \(.*plain-file is not a directory\): create it and give it to facteur's user/);
});

test('Maildir root on a read-only file system', async () => {
  const ro = path.join(dir, 'ro-mail');
  await fs.mkdir(ro);
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', ro]);
  assert.equal(r.status, 0, `mount: ${r.stderr}`);
  mounts.push(ro);
  await oneError(await config({ delivery: `maildir_path = "${ro}/{domain}/{local}/"` }), /\[delivery\] maildir_path ".*ro-mail\/\{domain\}\/\{local\}\/": mailboxes cannot be created under .*ro-mail \(EROFS in .*ro-mail\): give that directory to facteur's user, or change maildir_path/);
});

test('LMTP target where nothing listens', async () => {
  const port = await freePort();
  await oneError(await config({ delivery: `local_transport = "lmtp"\nlmtp_target = "127.0.0.1:${port}"` }), new RegExp(`\\[delivery\\] lmtp_target 127\\.0\\.0\\.1:${port}: nothing answers there \\(ECONNREFUSED\\): start the LMTP server`));
});

test('sender map that does not parse', async () => {
  const map = path.join(dir, 'sender_map');
  await fs.writeFile(map, 'alice@example.org\n');
  const f = await checkServeConfig(await config({ policy: `sender_map = ${JSON.stringify(map)}` }));
  assert.equal(errors(f).length, 1, errors(f).join('\n'));
  assert.match(errors(f)[0], /^\[policy\] sender_map: /);
});

test('metrics endpoint open to the network is a warning', async () => {
  const f = await checkServeConfig(await config({}, { metrics: { listen: '"0.0.0.0:9925"' } }));
  assert.deepEqual(errors(f), []);
  assert.ok(warnings(f).some((w) => /\[metrics\] listen = "0\.0\.0\.0:9925" exposes \/metrics and \/health beyond this machine/.test(w)));
});

test('an unreadable configuration file', async () => {
  const r = await facteur(['check', '--config', path.join(dir, 'missing.toml')]);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /cannot read the configuration file .*missing\.toml \(ENOENT\): give the path of facteur's TOML file with --config/);
});

test('each listener address is tried: free is ok, in use a warning, no such interface or an unresolvable name an error', async () => {
  const free = await freePort();
  const busyServer = net.createServer();
  await new Promise<void>((r) => busyServer.listen(0, '127.0.0.1', () => r()));
  const busy = (busyServer.address() as net.AddressInfo).port;
  try {
    const f = await checkServeConfig(
      await config({}, {
        inbound: { listen: `["127.0.0.1:${free}"]` },
        submission: { listen: `["127.0.0.1:${busy}"]` },
        submissions: { listen: '["192.0.2.55:2465", "no-such-host.invalid:2465"]' },
      }),
    );
    assert.ok(f.some((x) => x.level === 'ok' && x.message === `[inbound] 127.0.0.1:${free} can be listened on`));
    assert.ok(warnings(f).includes(`[submission] 127.0.0.1:${busy} is in use now: fine if that is this facteur, running; otherwise stop the other server or change [submission] listen`), warnings(f).join('\n'));
    assert.ok(errors(f).includes('[submissions] cannot listen on 192.0.2.55:2465: no network interface of this machine has that address; change [submissions] listen'), errors(f).join('\n'));
    assert.ok(errors(f).some((e) => e.startsWith('[submissions] cannot listen on no-such-host.invalid:2465: ')), errors(f).join('\n'));
    // Tried, then let go: the free port is free again.
    const again = net.createServer();
    await new Promise<void>((resolve, reject) => {
      again.once('error', reject);
      again.listen({ port: free, host: '127.0.0.1', exclusive: true }, () => resolve());
    });
    await new Promise((r) => again.close(r));
  } finally {
    await new Promise((r) => busyServer.close(r));
  }
});

test('the workers line: SO_REUSEPORT when built; round-robin when turned off; a warning when the addon is missing; none for one process', async () => {
  const { checkWorkers } = await import('../../src/config/check.js');
  const cfg = (workers: number, reuse_port: boolean) => ({ server: { workers, reuse_port } }) as unknown as Parameters<typeof checkWorkers>[0];
  assert.deepEqual(checkWorkers(cfg(1, true)), []);
  const [built] = checkWorkers(cfg(2, true));
  assert.equal(built.level, 'ok');
  assert.match(built.message, /\[server\] workers = 2: each worker listens on its own SO_REUSEPORT socket/);
  const [off] = checkWorkers(cfg(3, false));
  assert.equal(off.level, 'ok');
  assert.match(off.message, /the primary accepts every connection and hands it to a worker \(reuse_port = false\)/);
  const [missing] = checkWorkers(cfg(2, true), 'native addon reuseport_socket not built (no such file); run npm run build:native');
  assert.equal(missing.level, 'warning');
  assert.match(missing.message, /reuseport_socket not built .*: the primary will hand each connection to a worker \(slower\)/);
});

test('the commit layer line: the C job when built; forced node:fs a warning; an unknown FACTEUR_SPOOL_COMMIT an error', async () => {
  const { checkCommitLayer } = await import('../../src/config/check.js');
  assert.equal(checkCommitLayer({}).level, 'ok');
  assert.match(checkCommitLayer({}).message, /C commit job/);
  assert.equal(checkCommitLayer({ FACTEUR_SPOOL_COMMIT: 'native' }).level, 'ok');
  assert.equal(checkCommitLayer({ FACTEUR_SPOOL_COMMIT: 'node' }).level, 'warning');
  assert.equal(checkCommitLayer({ FACTEUR_SPOOL_COMMIT: 'fast' }).level, 'error');
});
