// saslauthd.conf parsing: upstream syntax and defaults, strict errors naming key and line, facteur extensions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseLdapConfig, readLdapConfig, defaultConfig, configSwitch, configInt } from '../../../src/auth/backends/ldap/config.js';
import { ConfigError } from '../../../src/lib/errors.js';

const parse = (text: string) => parseLdapConfig(text, 'test.conf');
const refuses = (text: string, re: RegExp) => assert.throws(() => parse(text), (e: unknown) => e instanceof ConfigError && re.test(e.message));

test('defaults match lak_config', () => {
  const c = parse('');
  assert.deepEqual(c.servers, ['ldap://localhost/']);
  assert.equal(c.filter, '(uid=%u)');
  assert.equal(c.authMethod, 'bind');
  assert.equal(c.scope, 'sub');
  assert.equal(c.deref, 'never');
  assert.equal(c.timeoutMs, 5000);
  assert.equal(c.timeLimit, 5);
  assert.equal(c.sizeLimit, 1);
  assert.equal(c.passwordAttr, 'userPassword');
  assert.equal(c.groupAttr, 'uniqueMember');
  assert.equal(c.groupMatchMethod, 'attr');
  assert.equal(c.startTls, false);
  assert.deepEqual(c.mailAttrs, ['mail']);
  assert.equal(c.dnCacheTtl, 60);
  assert.deepEqual({ ...defaultConfig('test.conf') }, { ...c });
});

test('a typical file: comments, blank lines, indentation, case-insensitive keys, last wins, trailing spaces kept in strings', () => {
  const c = parse(`# saslauthd.conf
   # indented comment

ldap_servers: ldap://a.example/ ldaps://b.example:636/
LDAP_Bind_DN: cn=nss,dc=picasoft,dc=net
ldap_bind_pw:    secret with spaces  
ldap_search_base: ou=people,dc=picasoft,dc=net
ldap_filter: (uid=%u)
ldap_filter: (mail=%U@%r)
ldap_scope: ONE
ldap_deref: always
ldap_auth_method: Custom
ldap_timeout: 7
ldap_time_limit: 3
ldap_start_tls: yes
ldap_default_domain: picasoft.net
ldap_mail_attrs: mail, mailAlternateAddress
`);
  assert.deepEqual(c.servers, ['ldap://a.example/', 'ldaps://b.example:636/']);
  assert.equal(c.bindDn, 'cn=nss,dc=picasoft,dc=net');
  assert.equal(c.bindPw, 'secret with spaces  ');
  assert.equal(c.filter, '(mail=%U@%r)');
  assert.equal(c.scope, 'one');
  assert.equal(c.deref, 'always');
  assert.equal(c.authMethod, 'custom');
  assert.equal(c.timeoutMs, 7000);
  assert.equal(c.timeLimit, 3);
  assert.equal(c.startTls, true);
  assert.equal(c.defaultRealm, 'picasoft.net');
  assert.deepEqual(c.mailAttrs, ['mail', 'mailAlternateAddress']);
});

test('CRLF files: the CR is not part of the value', () => {
  const c = parse('ldap_bind_dn: cn=x\r\nldap_bind_pw: pw\r\nldap_auth_method: fastbind\r\nldap_filter: uid=%u,dc=x\r\n');
  assert.equal(c.bindPw, 'pw');
  assert.equal(c.authMethod, 'fastbind');
});

test('ldap_password is an alias of ldap_bind_pw; ldap_group_search_base defaults to the search base for group filters', () => {
  const c = parse('ldap_bind_dn: cn=x\nldap_password: p\nldap_search_base: dc=x\nldap_group_match_method: filter\nldap_group_filter: (member=%D)\n');
  assert.equal(c.bindPw, 'p');
  assert.equal(c.groupSearchBase, 'dc=x');
});

test('switch and int semantics are upstream\'s', () => {
  for (const v of ['1', 'yes', 'y', 'true', 't', 'on', 'onwards']) assert.equal(configSwitch(v), true, v);
  for (const v of ['0', 'no', 'false', 'off', 'Yes', 'ON', 'TRUE', 'x', '']) assert.equal(configSwitch(v), false, v);
  assert.equal(configInt('12abc'), 12);
  assert.equal(configInt('-3'), -3);
  assert.equal(configInt('abc'), 0);
  assert.equal(configInt(' 5'), 0);
  assert.equal(parse('ldap_start_tls: Yes').startTls, false);
});

test('syntax errors name the line', () => {
  refuses('ldap_filter : (uid=%u)', /test\.conf line 1: "ldap_filter" must be followed immediately by ":"/);
  refuses('\n\nldap_filter (uid=%u)', /line 3/);
  refuses('= x', /line 1: a line must be "key: value"/);
  refuses('ldap_bind_dn:', /line 1: ldap_bind_dn: empty value/);
  refuses('ldap_bind_dn:    ', /empty value/);
});

test('unknown keys and invalid enum values are errors naming key and line', () => {
  refuses('# c\nldap_serverz: ldap://x/', /line 2: unknown key "ldap_serverz"/);
  refuses('ldap_scope: subtree', /ldap_scope: "subtree" is not a valid value; use one of sub, one, base/);
  refuses('ldap_deref: sometimes', /ldap_deref/);
  refuses('ldap_auth_method: sasl', /ldap_auth_method/);
  refuses('ldap_group_match_method: both', /ldap_group_match_method/);
  refuses('ldap_group_scope: all', /ldap_group_scope/);
});

test('features facteur does not implement are refused with the reason', () => {
  refuses('ldap_use_sasl: yes', /ldap_use_sasl: SASL binds .* not implemented/);
  assert.equal(parse('ldap_use_sasl: no\nldap_mech: DIGEST-MD5').authMethod, 'bind');
  refuses('ldap_referrals: on', /ldap_referrals: facteur does not chase referrals/);
  refuses('ldap_version: 2', /LDAPv2/);
  refuses('ldap_version: 4', /ldap_version/);
  refuses('ldap_servers: ldapi:///var/run/slapd.sock', /ldap:\/\/ and ldaps:\/\/ only/);
  refuses('ldap_servers: localhost', /not a URL/);
});

test('ldap_tls_check_peer: no is refused with an explanation; yes is accepted', () => {
  refuses('ldap_tls_check_peer: no', /always verifies .* ldap_tls_cacert_file/);
  refuses('ldap_tls_check_peer: false', /ldap_tls_check_peer/);
  assert.equal(parse('ldap_tls_check_peer: yes').startTls, false);
});

test('templates: unknown tokens, lone %, %D outside group templates, filters without parentheses', () => {
  refuses('ldap_filter: (uid=%x)', /ldap_filter: unknown token "%x"/);
  refuses('ldap_filter: (uid=100%', /lone "%"/);
  refuses('ldap_filter: (uid=%D)', /%D .* only known in group templates/);
  refuses('ldap_search_base: ou=%q,dc=x', /ldap_search_base: unknown token/);
  // A bare filter (libldap accepts it; the seed's how-to uses `cn=%u`) gets its parentheses.
  assert.equal(parse('ldap_filter: cn=%u').filter, '(cn=%u)');
  assert.equal(parse('ldap_filter: (cn=%u)').filter, '(cn=%u)');
  assert.equal(parse('ldap_group_match_method: filter\nldap_group_search_base: dc=x\nldap_group_filter: member=%D').groupFilter, '(member=%D)');
  assert.equal(parse('ldap_filter: (uid=100%%)').filter, '(uid=100%%)');
  refuses('ldap_auth_method: fastbind\nldap_filter: %u', /fastbind the filter is the user's DN/);
  refuses('ldap_group_match_method: filter\nldap_group_dn: cn=g', /needs ldap_group_filter/);
  refuses('ldap_group_filter: (member=%D)\nldap_group_search_base: dc=x', /ldap_group_match_method: filter/);
  refuses('ldap_group_match_method: filter\nldap_group_filter: (member=%D)', /needs ldap_group_search_base/);
});

test('numbers out of range and inconsistent pairs', () => {
  refuses('ldap_timeout: 0', /ldap_timeout: must be a number of seconds above 0/);
  refuses('ldap_timeout: soon', /ldap_timeout/);
  refuses('ldap_time_limit: -1', /ldap_time_limit: must be 0 or more/);
  refuses('ldap_pool_size: 0', /ldap_pool_size/);
  refuses('ldap_tls_cert: /x.pem', /ldap_tls_cert and ldap_tls_key go together/);
  refuses('ldap_bind_pw: secret', /ldap_bind_dn is empty/);
  refuses('ldap_tls_ciphers: NORMAL:-VERS-TLS1.0', /not an OpenSSL cipher list/);
  refuses('ldap_mail_attrs: mail (x)', /not an attribute name/);
});

test('the service password never appears in an error', () => {
  try {
    parse('ldap_bind_pw: hunter2-secret\nldap_scope: nope');
    assert.fail('should throw');
  } catch (e) {
    assert.ok(!(e as Error).message.includes('hunter2'));
  }
  try {
    parse('ldap_bind_pw: hunter2-secret');
    assert.fail('should throw');
  } catch (e) {
    assert.ok(!(e as Error).message.includes('hunter2'));
  }
});

test('readLdapConfig: a missing file is a ConfigError naming it', async () => {
  assert.throws(() => readLdapConfig('/nonexistent/saslauthd.conf'), (e: unknown) => e instanceof ConfigError && /\/nonexistent\/saslauthd\.conf .*ENOENT/.test((e as Error).message));
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'facteur-ldapconf-'));
  const f = path.join(dir, 'saslauthd.conf');
  await fs.writeFile(f, 'ldap_servers: ldap://127.0.0.1:3890/\n');
  assert.deepEqual(readLdapConfig(f).servers, ['ldap://127.0.0.1:3890/']);
  await fs.rm(dir, { recursive: true });
});

test('hostile input: a huge file with a binary line is refused cleanly', () => {
  refuses('ldap_filter: (uid=%u)\n\u0000\u00ff garbage', /line 2/);
  const big = 'ldap_filter: (uid=%u)\n'.repeat(20000);
  assert.equal(parse(big).filter, '(uid=%u)');
});
