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

  test('concurrent requests for many users all get their own verdict', async () => {
    const jobs = slapd.bulkUsers.slice(10, 60).flatMap((x, i) => [
      check(b, x.login, x.password).then((r) => assert.equal(r.verdict, 'ok', x.login)),
      check(b, x.login, `pass${i + 1000}`).then((r) => assert.equal(r.verdict, 'fail', x.login)),
    ]);
    await Promise.all(jobs);
  });
});
