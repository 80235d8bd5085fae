// LDAP backend against a real slapd: every auth method, hostile logins, injection attempts, group checks, TLS, failover, outages.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import net from 'node:net';
import { startSlapd, type Slapd, type LdapUser } from '../helpers/slapd.js';
import { freePort } from '../helpers/net.js';
import { createLdapBackend } from '../../src/auth/backends/ldap/index.js';
import type { AuthBackend, AuthResult } from '../../src/auth/types.js';

let slapd: Slapd;
let n = 0;
const backends: AuthBackend[] = [];

async function backend(conf: string): Promise<AuthBackend> {
  const file = path.join(slapd.dir, `saslauthd-${n++}.conf`);
  await fs.writeFile(file, conf);
  const b = await createLdapBackend(file, { log: () => {} });
  backends.push(b);
  return b;
}

function base(extra = '', servers?: string): string {
  return `ldap_servers: ${servers ?? slapd.url}
ldap_bind_dn: ${slapd.bindDn}
ldap_bind_pw: ${slapd.bindPw}
ldap_search_base: ${slapd.peopleDn}
ldap_filter: (uid=%u)
ldap_timeout: 3
${extra}`;
}

async function check(b: AuthBackend, login: string, password: string, opts: { realm?: string; steps?: string[] } = {}): Promise<AuthResult> {
  return b.verify({ login, password, service: 'smtp', realm: opts.realm ?? '' }, { signal: AbortSignal.timeout(10_000), explain: opts.steps ? (s) => opts.steps!.push(s) : undefined });
}

before(async () => {
  slapd = await startSlapd();
});
after(async () => {
  for (const b of backends) await b.close?.();
  await slapd?.stop();
});

const u = (login: string): LdapUser => slapd.users.find((x) => x.login === login)!;

describe('bind method', () => {
  let b: AuthBackend;
  before(async () => {
    b = await backend(base());
  });

  test('every hostile user: right password OK with addresses, wrong password NO, twice (second time from the DN cache)', async () => {
    for (const user of slapd.users) {
      for (let i = 0; i < 2; i++) {
        const good = await check(b, user.login, user.password);
        assert.equal(good.verdict, 'ok', `${user.login} (${user.scheme})`);
        assert.deepEqual(good.addresses, user.mail);
        const bad = await check(b, user.login, user.password + 'x');
        assert.deepEqual(bad, { verdict: 'fail', reason: '' }, user.login);
      }
    }
  });

  test('another user\'s password is refused', async () => {
    assert.equal((await check(b, 'alice', u('bob (builder)').password)).verdict, 'fail');
  });

  test('unknown user: NO, same reply as a wrong password', async () => {
    const steps: string[] = [];
    const r = await check(b, 'nobody', 'whatever', { steps });
    assert.deepEqual(r, { verdict: 'fail', reason: '' });
    assert.ok(steps.some((s) => s.includes('no entry found')), steps.join('\n'));
  });

  test('empty password is refused without asking the directory', async () => {
    const steps: string[] = [];
    assert.equal((await check(b, 'alice', '', { steps })).verdict, 'fail');
    assert.ok(!steps.some((s) => s.startsWith('server')), steps.join('\n'));
    assert.equal((await check(b, '', 'x')).verdict, 'fail');
  });

  test('filter injection never authenticates', async () => {
    const alice = u('alice');
    for (const login of ['*', 'al*', 'alice)(uid=*', '*)(|(uid=*', 'alice\u0000', 'bob)(description=x*', '*)(objectClass=*', 'alice)(|(objectClass=*)', '\\2a', 'star\\2a']) {
      const r = await check(b, login, alice.password);
      assert.equal(r.verdict, 'fail', JSON.stringify(login));
    }
    // `star*` is a real uid: the `*` must match only itself.
    assert.equal((await check(b, 'star*', '*')).verdict, 'ok');
    assert.equal((await check(b, 'star', '*')).verdict, 'fail');
  });

  test('explain shows the steps, never the password', async () => {
    const steps: string[] = [];
    const alice = u('alice');
    await check(b, 'alice', alice.password, { steps });
    const text = steps.join('\n');
    assert.match(text, /server ldap:\/\/127\.0\.0\.1/);
    assert.match(text, /bind as uid=alice,ou=people,dc=picasoft,dc=net: success/);
    assert.ok(!text.includes(alice.password));
  });

  test('a password change is seen at once even with a cached DN', async () => {
    const user = slapd.bulkUsers[7]!;
    assert.equal((await check(b, user.login, user.password)).verdict, 'ok');
    await slapd.modify(`dn: ${user.dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: newpass7\n`);
    assert.equal((await check(b, user.login, user.password)).verdict, 'fail');
    assert.equal((await check(b, user.login, 'newpass7')).verdict, 'ok');
  });

  test('a renamed entry is found again after the cached DN stops working', async () => {
    const user = slapd.bulkUsers[8]!;
    assert.equal((await check(b, user.login, user.password)).verdict, 'ok');
    await slapd.modify(`dn: ${user.dn}\nchangetype: modrdn\nnewrdn: cn=moved8\ndeleteoldrdn: 0\n`);
    const steps: string[] = [];
    assert.equal((await check(b, user.login, user.password, { steps })).verdict, 'ok', steps.join('\n'));
    assert.ok(steps.some((s) => s.includes('searching again')));
  });

  test('the DN cache: a repeat login only binds; ldap_dn_cache_ttl: 0 searches every time', async () => {
    const user = slapd.bulkUsers[20]!;
    const steps: string[] = [];
    await check(b, user.login, user.password);
    assert.equal((await check(b, user.login, user.password, { steps })).verdict, 'ok');
    assert.ok(steps.some((s) => s.startsWith('DN from cache')) && !steps.some((s) => s.startsWith('search')), steps.join('\n'));
    const off = await backend(base('ldap_dn_cache_ttl: 0'));
    await check(off, user.login, user.password);
    const steps2: string[] = [];
    assert.equal((await check(off, user.login, user.password, { steps: steps2 })).verdict, 'ok');
    assert.ok(!steps2.some((s) => s.startsWith('DN from cache')) && steps2.some((s) => s.startsWith('search')), steps2.join('\n'));
    // A compound filter may carry policy: searched every time, so that a change to the entry takes effect at once.
    const policy = await backend(base('ldap_filter: (&(uid=%u)(objectClass=inetOrgPerson))'));
    await check(policy, user.login, user.password);
    const steps4: string[] = [];
    assert.equal((await check(policy, user.login, user.password, { steps: steps4 })).verdict, 'ok');
    assert.ok(!steps4.some((s) => s.startsWith('DN from cache')), steps4.join('\n'));
    // A wrong password never fills the cache.
    const other = slapd.bulkUsers[21]!;
    await check(b, other.login, 'wrong');
    const steps3: string[] = [];
    await check(b, other.login, 'wrong', { steps: steps3 });
    assert.ok(!steps3.some((s) => s.startsWith('DN from cache')), steps3.join('\n'));
  });

  test('a cached DN used late in its life is looked up again in the background: a busy account never waits for a search', async () => {
    const short = await backend(base('ldap_dn_cache_ttl: 2'));
    const user = slapd.bulkUsers[22]!;
    const stepsOf = async () => {
      const steps: string[] = [];
      assert.equal((await check(short, user.login, user.password, { steps })).verdict, 'ok', steps.join('\n'));
      return steps;
    };
    const t0 = Date.now();
    assert.ok((await stepsOf()).some((s) => s.startsWith('search')));
    await new Promise((r) => setTimeout(r, 1600 - (Date.now() - t0)));
    const late = await stepsOf(); // 1.6 s into a 2 s life: answered from the cache, renewed behind it
    assert.ok(late.some((s) => s.startsWith('DN from cache')) && !late.some((s) => s.startsWith('search')), late.join('\n'));
    await new Promise((r) => setTimeout(r, 2400 - (Date.now() - t0)));
    const after = await stepsOf(); // past the first entry's end: only the renewal can answer from the cache
    assert.ok(after.some((s) => s.startsWith('DN from cache')) && !after.some((s) => s.startsWith('search')), after.join('\n'));
  });

  test('concurrent requests for many users all get their own verdict', async () => {
    const jobs = slapd.bulkUsers.slice(10, 60).flatMap((x, i) => [
      check(b, x.login, x.password).then((r) => assert.equal(r.verdict, 'ok', x.login)),
      check(b, x.login, `pass${i + 1000}`).then((r) => assert.equal(r.verdict, 'fail', x.login)),
    ]);
    await Promise.all(jobs);
  });
});

describe('fastbind, custom, realms', () => {
  test('fastbind: every hostile user binds with the DN built from the template (RFC 4514 escaping), wrong password NO', async () => {
    const b = await backend(base(`ldap_auth_method: fastbind\nldap_filter: uid=%u,${'ou=people,dc=picasoft,dc=net'}`));
    for (const user of slapd.users) {
      const good = await check(b, user.login, user.password);
      assert.equal(good.verdict, 'ok', user.login);
      assert.deepEqual(good.addresses, user.mail, user.login);
      assert.equal((await check(b, user.login, 'nope')).verdict, 'fail', user.login);
    }
  });

  test('fastbind: DN injection never authenticates', async () => {
    const b = await backend(base(`ldap_auth_method: fastbind\nldap_filter: uid=%u,ou=people,dc=picasoft,dc=net`));
    const alice = u('alice');
    for (const login of ['alice,ou=people,dc=picasoft,dc=net', 'x,cn=nss,dc=picasoft,dc=net', 'alice+cn=alice', '#616c696365', 'alice\u0000', 'alice\\2c']) {
      assert.equal((await check(b, login, alice.password)).verdict, 'fail', JSON.stringify(login));
    }
    // Note: ' alice' and 'alice ' do reach alice: uid matching ignores insignificant spaces (RFC 4518), in searches as in DNs.
    // The service account's DN cannot be reached through the template either.
    assert.equal((await check(b, 'nss', slapd.bindPw)).verdict, 'fail');
  });

  test('custom: every password scheme in the directory is checked locally', async () => {
    const b = await backend(base(`ldap_auth_method: custom\nldap_bind_dn: ${slapd.pwReaderDn}\nldap_bind_pw: ${slapd.pwReaderPw}`));
    const schemes = new Set<string>();
    for (const user of slapd.users) {
      const good = await check(b, user.login, user.password);
      assert.equal(good.verdict, 'ok', `${user.login} ${user.scheme}`);
      assert.deepEqual(good.addresses, user.mail);
      assert.equal((await check(b, user.login, user.password + ' ')).verdict, 'fail', `${user.login} ${user.scheme}`);
      schemes.add(user.scheme);
    }
    assert.deepEqual([...schemes].sort(), ['plain', '{CRYPT}', '{MD5}', '{SHA}', '{SMD5}', '{SSHA512}', '{SSHA}'].sort());
  });

  test('custom: a service account that cannot read userPassword gets NO, with the reason in explain', async () => {
    const b = await backend(base('ldap_auth_method: custom'));
    const steps: string[] = [];
    assert.equal((await check(b, 'alice', u('alice').password, { steps })).verdict, 'fail');
    assert.ok(steps.some((s) => s.includes('no readable userPassword')), steps.join('\n'));
  });

  test('realm tokens: (mail=%U@%r) with login alice realm picasoft.net; ldap_default_realm; %d and %1/%2', async () => {
    const alice = u('alice');
    const b1 = await backend(base('ldap_filter: (mail=%U@%r)'));
    assert.equal((await check(b1, 'alice', alice.password, { realm: 'picasoft.net' })).verdict, 'ok');
    assert.equal((await check(b1, 'alice', alice.password, { realm: 'example.org' })).verdict, 'fail');
    const b2 = await backend(base('ldap_filter: (mail=%u%R)\nldap_default_realm: picasoft.net'));
    assert.equal((await check(b2, 'alice', alice.password)).verdict, 'ok');
    const b3 = await backend(base('ldap_filter: (mail=%U@%2.%1)'));
    assert.equal((await check(b3, 'carol@picasoft.net', u('carol@picasoft.net').password)).verdict, 'ok');
    assert.equal((await check(b3, 'alice', alice.password, { realm: 'picasoft.net' })).verdict, 'ok');
    const b4 = await backend(base('ldap_filter: (uid=%U@%d)'));
    assert.equal((await check(b4, 'carol@picasoft.net', u('carol@picasoft.net').password)).verdict, 'ok');
  });

  test('a login that makes the search base an invalid DN: NO, and the server is not taken for down', async () => {
    const b = await backend(base('ldap_search_base: ou=%r,dc=picasoft,dc=net\nldap_filter: (uid=%U)'));
    const steps: string[] = [];
    assert.equal((await check(b, 'alice', u('alice').password, { steps })).verdict, 'fail', steps.join('\n'));
    assert.ok(steps.some((s) => /search base (is not a valid DN|does not exist)/.test(s)), steps.join('\n'));
    const steps2: string[] = [];
    assert.equal((await check(b, 'alice', u('alice').password, { realm: 'people', steps: steps2 })).verdict, 'ok', steps2.join('\n'));
    assert.ok(!steps2.some((s) => s.includes('failed recently')));
  });

  test('a filter matching several entries is refused as ambiguous (NO, not tempfail)', async () => {
    const b = await backend(base('ldap_filter: (|(uid=%u)(uid=user1))'));
    const steps: string[] = [];
    assert.equal((await check(b, 'alice', u('alice').password, { steps })).verdict, 'fail');
    assert.ok(steps.some((s) => /ambiguous/.test(s)), steps.join('\n'));
  });

  test('ldap_mail_attrs selects the address attributes', async () => {
    const b = await backend(base('ldap_mail_attrs: cn, mail'));
    const r = await check(b, 'alice', u('alice').password);
    assert.deepEqual(r.addresses?.slice().sort(), ['alice', 'alice@picasoft.net', 'alice.liddell@picasoft.net'].sort());
  });
});

describe('group check', () => {
  test('attr (compare uniqueMember): members OK, non-members NO even with the right password', async () => {
    const b = await backend(base(`ldap_group_dn: ${slapd.groupDn}`));
    for (const user of slapd.users) {
      const steps: string[] = [];
      const r = await check(b, user.login, user.password, { steps });
      assert.equal(r.verdict, user.inGroup ? 'ok' : 'fail', `${user.login}\n${steps.join('\n')}`);
      assert.equal((await check(b, user.login, 'wrong')).verdict, 'fail');
    }
  });

  test('filter method: search with %D filter-escaped', async () => {
    const b = await backend(base(`ldap_group_match_method: filter\nldap_group_search_base: ${slapd.groupsDn}\nldap_group_filter: (&(cn=mail-users)(uniqueMember=%D))`));
    for (const user of slapd.users) {
      const steps: string[] = [];
      assert.equal((await check(b, user.login, user.password, { steps })).verdict, user.inGroup ? 'ok' : 'fail', `${user.login}\n${steps.join('\n')}`);
    }
  });

  test('a group DN that does not exist: NO', async () => {
    const b = await backend(base(`ldap_group_dn: cn=nope,${slapd.groupsDn}`));
    assert.equal((await check(b, 'alice', u('alice').password)).verdict, 'fail');
  });

  test('fastbind + group check', async () => {
    const b = await backend(base(`ldap_auth_method: fastbind\nldap_filter: uid=%u,${slapd.peopleDn}\nldap_group_dn: ${slapd.groupDn}`));
    assert.equal((await check(b, 'alice', u('alice').password)).verdict, 'ok');
    assert.equal((await check(b, 'star*', '*')).verdict, 'fail');
  });
});

describe('TLS', () => {
  test('StartTLS with the CA: OK', async () => {
    const b = await backend(base(`ldap_start_tls: yes\nldap_tls_cacert_file: ${slapd.caFile}`));
    const steps: string[] = [];
    assert.equal((await check(b, 'alice', u('alice').password, { steps })).verdict, 'ok');
    assert.ok(steps.some((s) => s.includes('certificate verified')), steps.join('\n'));
    assert.equal((await check(b, 'alice', 'bad')).verdict, 'fail');
  });

  test('StartTLS without the CA: tempfail (the certificate is always verified)', async () => {
    const b = await backend(base('ldap_start_tls: yes'));
    const r = await check(b, 'alice', u('alice').password);
    assert.equal(r.verdict, 'tempfail');
    assert.match(r.reason, /^\[UNAVAILABLE\]/);
  });

  test('LDAPS with the CA (file or directory), by IP and by name: OK', async () => {
    const b1 = await backend(base(`ldap_tls_cacert_file: ${slapd.caFile}`, slapd.ldapsUrl));
    assert.equal((await check(b1, 'alice', u('alice').password)).verdict, 'ok');
    assert.equal((await check(b1, 'alice', 'bad')).verdict, 'fail');
    const dir = path.join(slapd.dir, 'cadir');
    await fs.mkdir(dir, { recursive: true });
    await fs.copyFile(slapd.caFile, path.join(dir, 'ca.pem'));
    const b2 = await backend(base(`ldap_tls_cacert_dir: ${dir}`, `ldaps://localhost:${slapd.ldapsPort}/`));
    assert.equal((await check(b2, 'josé', u('josé').password)).verdict, 'ok');
  });

  test('LDAPS without the CA: tempfail', async () => {
    const b = await backend(base('', slapd.ldapsUrl));
    const steps: string[] = [];
    const r = await check(b, 'alice', u('alice').password, { steps });
    assert.equal(r.verdict, 'tempfail', steps.join('\n'));
  });
});

describe('failover and outages', () => {
  test('first server is a dead port, second is real: OK, and the dead one is skipped afterwards', async () => {
    const dead = await freePort();
    const b = await backend(base('', `ldap://127.0.0.1:${dead}/ ${slapd.url}/`));
    const steps: string[] = [];
    assert.equal((await check(b, 'alice', u('alice').password, { steps })).verdict, 'ok');
    assert.ok(steps.some((s) => s.includes(`127.0.0.1:${dead} failed`)), steps.join('\n'));
    const steps2: string[] = [];
    assert.equal((await check(b, 'alice', u('alice').password, { steps: steps2 })).verdict, 'ok');
    assert.ok(!steps2.some((s) => s.includes(`${dead}`)), steps2.join('\n'));
  });

  test('comma-separated ldap_servers work too', async () => {
    const dead = await freePort();
    const b = await backend(base('', `ldap://127.0.0.1:${dead},${slapd.url}`));
    assert.equal((await check(b, 'alice', u('alice').password)).verdict, 'ok');
  });

  test('all servers down: tempfail, distinguishable from a wrong password', async () => {
    const b = await backend(base('', `ldap://127.0.0.1:${await freePort()}/ ldap://127.0.0.1:${await freePort()}/`));
    const r = await check(b, 'alice', u('alice').password);
    assert.deepEqual(r, { verdict: 'tempfail', reason: '[UNAVAILABLE] LDAP directory unavailable' });
    // Still tempfail when every server is in its back-off period.
    assert.equal((await check(b, 'alice', 'x')).verdict, 'tempfail');
  });

  test('a server that accepts but never answers: tempfail after ldap_timeout; next server used when there is one', async () => {
    const silent = net.createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as net.AddressInfo).port;
    try {
      const b1 = await backend(base('ldap_timeout: 1', `ldap://127.0.0.1:${port}/`));
      assert.equal((await check(b1, 'alice', u('alice').password)).verdict, 'tempfail');
      const b2 = await backend(base('ldap_timeout: 1', `ldap://127.0.0.1:${port}/ ${slapd.url}`));
      assert.equal((await check(b2, 'alice', u('alice').password)).verdict, 'ok');
      const b3 = await backend(base('ldap_timeout: 1\nldap_start_tls: on', `ldap://127.0.0.1:${port}/`));
      assert.equal((await check(b3, 'alice', u('alice').password)).verdict, 'tempfail');
    } finally {
      silent.close();
    }
  });

  test('the caller\'s deadline (abort signal) gives tempfail', async () => {
    const silent = net.createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as net.AddressInfo).port;
    try {
      const b = await backend(base('ldap_timeout: 30', `ldap://127.0.0.1:${port}/`));
      const r = await b.verify({ login: 'alice', password: 'x', service: 'smtp', realm: '' }, { signal: AbortSignal.timeout(300) });
      assert.equal(r.verdict, 'tempfail');
    } finally {
      silent.close();
    }
  });

  test('wrong service password: tempfail (directory misconfigured), not NO', async () => {
    const b = await backend(base(`ldap_bind_pw: wrong`));
    const r = await check(b, 'alice', u('alice').password);
    assert.equal(r.verdict, 'tempfail');
  });
});

describe('hostile or broken servers', () => {
  test('a server that sends garbage: tempfail, and the next server is used', async () => {
    const junk = net.createServer((sock) => {
      sock.on('error', () => {});
      sock.on('data', () => sock.write(Buffer.from('\x30\x84\xff\xff\xff\xff garbage \x00\x01\x02'.repeat(50), 'latin1')));
    });
    await new Promise<void>((r) => junk.listen(0, '127.0.0.1', r));
    const port = (junk.address() as net.AddressInfo).port;
    try {
      const b1 = await backend(base('ldap_timeout: 1', `ldap://127.0.0.1:${port}/`));
      assert.equal((await check(b1, 'alice', u('alice').password)).verdict, 'tempfail');
      const b2 = await backend(base('ldap_timeout: 1', `ldap://127.0.0.1:${port}/ ${slapd.url}`));
      assert.equal((await check(b2, 'alice', u('alice').password)).verdict, 'ok');
    } finally {
      junk.close();
    }
  });

  test('a server that closes every connection at once: tempfail', async () => {
    const rude = net.createServer((sock) => sock.destroy());
    await new Promise<void>((r) => rude.listen(0, '127.0.0.1', r));
    const port = (rude.address() as net.AddressInfo).port;
    try {
      const b = await backend(base('', `ldap://127.0.0.1:${port}/`));
      assert.equal((await check(b, 'alice', u('alice').password)).verdict, 'tempfail');
      const bt = await backend(base('ldap_start_tls: yes', `ldap://127.0.0.1:${port}/`));
      assert.equal((await check(bt, 'alice', u('alice').password)).verdict, 'tempfail');
    } finally {
      rude.close();
    }
  });

  test('reload() applies a changed saslauthd.conf', async () => {
    const file = path.join(slapd.dir, 'reload.conf');
    await fs.writeFile(file, base());
    const b = await createLdapBackend(file, { log: () => {} });
    backends.push(b);
    assert.equal((await check(b, 'alice', u('alice').password)).verdict, 'ok');
    await fs.writeFile(file, base(`ldap_group_dn: ${slapd.groupDn}`));
    await b.reload!();
    assert.equal((await check(b, 'star*', '*')).verdict, 'fail');
    assert.equal((await check(b, 'alice', u('alice').password)).verdict, 'ok');
    await fs.writeFile(file, 'ldap_scope: nonsense\n');
    await assert.rejects(b.reload!(), /ldap_scope/);
  });
});

describe('directory restarts and hangs (run last: they stop slapd)', () => {
  test('slapd restarted under pooled connections: the next requests still get OK / NO, not tempfail', async () => {
    const bBind = await backend(base());
    const bCustom = await backend(base(`ldap_auth_method: custom\nldap_bind_dn: ${slapd.pwReaderDn}\nldap_bind_pw: ${slapd.pwReaderPw}`));
    const alice = u('alice');
    for (const b of [bBind, bCustom]) assert.equal((await check(b, 'alice', alice.password)).verdict, 'ok');
    await slapd.halt();
    for (const b of [bBind, bCustom]) assert.equal((await check(b, 'alice', alice.password)).verdict, 'tempfail');
    await slapd.restart();
    for (const b of [bBind, bCustom]) {
      const steps: string[] = [];
      assert.equal((await check(b, 'alice', alice.password, { steps })).verdict, 'ok', steps.join('\n'));
      assert.equal((await check(b, 'alice', 'wrong')).verdict, 'fail');
    }
    // Connections closed while idle (not a restart seen by a failing request): also transparent.
    await check(bBind, 'bob (builder)', u('bob (builder)').password);
    await slapd.halt();
    await slapd.restart();
    assert.equal((await check(bBind, 'bob (builder)', u('bob (builder)').password)).verdict, 'ok');
  });

  test('slapd hung (SIGSTOP): tempfail after ldap_timeout; answers again after SIGCONT', async () => {
    const b = await backend(base('ldap_timeout: 1'));
    const alice = u('alice');
    assert.equal((await check(b, 'alice', alice.password)).verdict, 'ok');
    await slapd.pause();
    try {
      const r = await check(b, 'alice', alice.password);
      assert.equal(r.verdict, 'tempfail');
      const r2 = await check(b, 'josé', u('josé').password);
      assert.equal(r2.verdict, 'tempfail');
    } finally {
      slapd.resume();
    }
    assert.equal((await check(b, 'alice', alice.password)).verdict, 'ok');
    assert.equal((await check(b, 'josé', u('josé').password)).verdict, 'ok');
  });
});

describe('client certificates (a second slapd that demands one)', () => {
  let strict: Slapd;
  before(async () => {
    strict = await startSlapd({ tlsVerifyClient: 'demand' });
  });
  after(async () => {
    await strict?.stop();
  });
  const conf = (s: Slapd, extra: string) => `ldap_servers: ${s.ldapsUrl}\nldap_bind_dn: ${s.bindDn}\nldap_bind_pw: ${s.bindPw}\nldap_search_base: ${s.peopleDn}\nldap_tls_cacert_file: ${s.caFile}\nldap_timeout: 3\n${extra}`;

  test('ldap_tls_cert/ldap_tls_key are presented (LDAPS and StartTLS); without them the server refuses: tempfail', async () => {
    const alice = strict.users.find((x) => x.login === 'alice')!;
    const withCert = await backend(conf(strict, `ldap_tls_cert: ${strict.clientCert}\nldap_tls_key: ${strict.clientKey}\nldap_tls_ciphers: ECDHE+AESGCM:TLS_AES_128_GCM_SHA256`));
    assert.equal((await check(withCert, 'alice', alice.password)).verdict, 'ok');
    assert.equal((await check(withCert, 'alice', 'bad')).verdict, 'fail');
    const startTls = await backend(conf(strict, `ldap_servers: ${strict.url}\nldap_start_tls: yes\nldap_tls_cert: ${strict.clientCert}\nldap_tls_key: ${strict.clientKey}`));
    assert.equal((await check(startTls, 'alice', alice.password)).verdict, 'ok');
    const without = await backend(conf(strict, ''));
    assert.equal((await check(without, 'alice', alice.password)).verdict, 'tempfail');
  });

  test('unreadable TLS files are a ConfigError at startup, naming the key', async () => {
    for (const [extra, key] of [
      ['ldap_tls_cacert_file: /nonexistent/ca.pem', 'ldap_tls_cacert_file'],
      ['ldap_tls_cacert_dir: /nonexistent', 'ldap_tls_cacert_dir'],
      [`ldap_tls_cert: ${strict.clientCert}\nldap_tls_key: /nonexistent/key.pem`, 'ldap_tls_key'],
    ] as const) {
      const file = path.join(slapd.dir, `bad-${key}.conf`);
      await fs.writeFile(file, conf(strict, extra));
      await assert.rejects(createLdapBackend(file, { log: () => {} }), (e: Error) => e.name === 'ConfigError' && e.message.includes(key));
    }
  });
});
