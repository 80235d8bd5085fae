// Token expansion and escaping: upstream token semantics, RFC 4515 filter escaping and RFC 4514 DN escaping of every substituted value.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FilterParser, EqualityFilter, AndFilter } from 'ldapts';
import { expand, escapeFilterValue, escapeDnValue } from '../../../src/auth/backends/ldap/tokens.js';

const v = (login: string, realm = '', service = 'smtp', dn?: string) => ({ login, realm, service, dn });

test('tokens per upstream', () => {
  const x = v('joe@mail.example.com', 'realm.org', 'imap');
  assert.equal(expand('%%|%u|%U|%d|%r|%R|%s', x, 'filter'), '%|joe@mail.example.com|joe|mail.example.com|realm.org|@realm.org|imap');
  assert.equal(expand('%1.%2.%3.%4', x, 'filter'), 'com.example.mail.');
  assert.equal(expand('%9', x, 'filter'), '');
  // Without @ in the login: %U is the login, %d is empty, %1..%9 come from the realm.
  const y = v('joe', 'picasoft.net');
  assert.equal(expand('%U|%d|%1|%2|%3', y, 'filter'), 'joe||net|picasoft|');
  assert.equal(expand('%R', v('joe', ''), 'filter'), '');
  // Only the first @ splits.
  assert.equal(expand('%U|%d', v('a@b@c'), 'filter'), 'a|b@c');
  // Unknown tokens emit nothing; a trailing lone % is kept.
  assert.equal(expand('a%qb%', y, 'filter'), 'ab%');
  // %D: raw in a DN template, escaped in a filter template.
  assert.equal(expand('%D', v('x', '', 's', 'uid=a\\2a,dc=x'), 'dn'), 'uid=a\\2a,dc=x');
  assert.equal(expand('(member=%D)', v('x', '', 's', 'uid=a*(b),dc=x'), 'filter'), '(member=uid=a\\2a\\28b\\29,dc=x)');
  assert.equal(expand('%D', v('x'), 'filter'), '');
});

test('RFC 4515 escaping covers NUL, parentheses, star and backslash', () => {
  assert.equal(escapeFilterValue('a*b(c)d\\e\0f'), 'a\\2ab\\28c\\29d\\5ce\\00f');
  assert.equal(escapeFilterValue('josé ü 密码'), 'josé ü 密码');
  assert.equal(expand('(uid=%u)', v('bob)(description=x*'), 'filter'), '(uid=bob\\29\\28description=x\\2a)');
  assert.equal(expand('(uid=%u)', v('*'), 'filter'), '(uid=\\2a)');
  assert.equal(expand('(uid=%u)', v(')('), 'filter'), '(uid=\\29\\28)');
  assert.equal(expand('(uid=%u)', v('a\0'), 'filter'), '(uid=a\\00)');
  assert.equal(expand('(uid=%u)', v('\\2a'), 'filter'), '(uid=\\5c2a)');
});

test('RFC 4514 escaping in DN context', () => {
  assert.equal(escapeDnValue('a,b+c"d\\e<f>g;h=i'), 'a\\,b\\+c\\"d\\\\e\\<f\\>g\\;h\\=i');
  assert.equal(escapeDnValue('#x'), '\\#x');
  assert.equal(escapeDnValue(' x '), '\\ x\\ ');
  assert.equal(escapeDnValue('x#y z'), 'x#y z');
  assert.equal(escapeDnValue('a\0b'), 'a\\00b');
  assert.equal(expand('uid=%U,ou=people,dc=x', v('alice,ou=admins@x'), 'dn'), 'uid=alice\\,ou\\=admins,ou=people,dc=x');
  assert.equal(expand('ou=%d,dc=x', v('a@b,dc=evil'), 'dn'), 'ou=b\\,dc\\=evil,dc=x');
});

test('property: any login yields exactly one equality assertion whose value is the login (no injection)', () => {
  fc.assert(
    fc.property(fc.string({ unit: 'grapheme', maxLength: 40 }), (login) => {
      const f = FilterParser.parseString(expand('(uid=%u)', v(login), 'filter'));
      assert.ok(f instanceof EqualityFilter);
      assert.equal(f.attribute, 'uid');
      assert.equal(String(f.value), login);
    }),
    { numRuns: 500 },
  );
});

test('property: a two-token filter keeps its structure for any login and realm', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 30 }), fc.string({ maxLength: 30 }), (login, realm) => {
      const f = FilterParser.parseString(expand('(&(uid=%U)(o=%r))', v(login, realm), 'filter'));
      assert.ok(f instanceof AndFilter);
      assert.equal(f.filters.length, 2);
    }),
    { numRuns: 300 },
  );
});

test('property: DN escaping never adds an RDN or attribute', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 40 }), (login) => {
      const dn = expand('uid=%u,dc=x', v(login), 'dn');
      // Unescaped separators: after removing escape pairs, exactly one ',' and two '=' remain.
      const stripped = dn.replace(/\\(?:[0-9a-fA-F]{2}|.)/gs, '');
      assert.equal((stripped.match(/,/g) ?? []).length, 1);
      assert.equal((stripped.match(/=/g) ?? []).length, 2);
      assert.equal((stripped.match(/\+/g) ?? []).length, 0);
    }),
    { numRuns: 500 },
  );
});
