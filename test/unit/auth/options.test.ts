import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAuthdArgs, debianDefaultsToArgs, parseShellVars } from '../../../src/auth/daemon/options.js';
import { UsageError, ConfigError } from '../../../src/lib/errors.js';

test('saslauthd flags keep their meaning', () => {
  const o = parseAuthdArgs(['-a', 'LDAP', '-O', '/etc/x.conf', '-m', '/run/s', '-c', '-t', '60', '-n', '3', '-r', '-d', '-s', '128']);
  assert.equal(o.mech, 'ldap');
  assert.equal(o.mechOption, '/etc/x.conf');
  assert.equal(o.runDir, '/run/s');
  assert.equal(o.cache, true);
  assert.equal(o.cacheTtlSeconds, 60);
  assert.equal(o.threads, 3);
  assert.equal(o.realmJoin, true);
  assert.equal(o.foreground, true);
  assert.equal(o.verbose, true);
  assert.equal(o.cacheKiB, 128);
});

test('clustered and attached short options, last -O wins, positional words ignored', () => {
  const o = parseAuthdArgs(['-cd', '-arimap', '-O', 'a', '-Ob', '-m/x', 'extra']);
  assert.equal(o.mech, 'rimap');
  assert.equal(o.mechOption, 'b');
  assert.equal(o.runDir, '/x');
  assert.ok(o.cache && o.foreground);
});

test('errors as upstream: relative -m, second -a, bad -t, missing -a, negative -n', () => {
  assert.throws(() => parseAuthdArgs(['-a', 'pam', '-m', 'run']), /absolute pathname/);
  assert.throws(() => parseAuthdArgs(['-a', 'pam', '-a', 'ldap']), UsageError);
  assert.throws(() => parseAuthdArgs(['-a', 'pam', '-t', '0']), UsageError);
  assert.throws(() => parseAuthdArgs(['-a', 'pam', '-t', 'abc']), UsageError);
  assert.throws(() => parseAuthdArgs(['-c']), /no authentication mechanism/);
  assert.throws(() => parseAuthdArgs(['-a', 'pam', '-n', '-1']), UsageError);
  assert.throws(() => parseAuthdArgs(['-a', 'pam', '-T']), UsageError);
  assert.equal(parseAuthdArgs(['-a', 'pam', '-n', 'abc']).threads, 0, 'atoi');
});

const seed = `START=yes
DESC="SASL Auth. Daemon for Postfix"
NAME="saslauthd-postf"      # max. 15 char.
# Option -m sets working dir for saslauthd (contains socket)
OPTIONS="-c -m /var/spool/postfix/var/run/saslauthd"        # postfix/smtp in chroot()
MECHANISMS="ldap"
`;

test("the seed's /etc/default/saslauthd-postfix works as it is", () => {
  const vars = parseShellVars(seed);
  assert.equal(vars.get('NAME'), 'saslauthd-postf');
  assert.equal(vars.get('OPTIONS'), '-c -m /var/spool/postfix/var/run/saslauthd');
  const o = parseAuthdArgs(['--defaults', '/etc/default/saslauthd-postfix'], () => seed);
  assert.equal(o.mech, 'ldap');
  assert.equal(o.cache, true);
  assert.equal(o.runDir, '/var/spool/postfix/var/run/saslauthd');
});

test('Debian init mapping: MECH_OPTIONS, THREADS last, default OPTIONS, START, flags after --defaults override', () => {
  assert.deepEqual(debianDefaultsToArgs('MECHANISMS="rimap"\nMECH_OPTIONS="imap.example/143"\nTHREADS=5\nOPTIONS="-n 2 -m /r"'), ['-a', 'rimap', '-O', 'imap.example/143', '-n', '2', '-m', '/r', '-n', '5']);
  assert.deepEqual(debianDefaultsToArgs('MECHANISMS=pam'), ['-a', 'pam', '-c', '-m', '/var/run/saslauthd']);
  assert.throws(() => debianDefaultsToArgs('START=no\nNAME=x\nMECHANISMS=pam'), /set START=yes/);
  assert.throws(() => debianDefaultsToArgs('MECHANISMS=""'), ConfigError);
  const o = parseAuthdArgs(['--defaults', 'f', '-t', '30'], () => 'MECHANISMS="pam"\nOPTIONS="-c -m /tmp/x"');
  assert.equal(o.cacheTtlSeconds, 30);
  assert.equal(o.runDir, '/tmp/x');
});

test('shell quoting in defaults files', () => {
  const v = parseShellVars(`A='single # not comment'\nB="dq \\"x\\""\nC=plain # comment\nexport D="e"`);
  assert.equal(v.get('A'), 'single # not comment');
  assert.equal(v.get('B'), 'dq "x"');
  assert.equal(v.get('C'), 'plain');
  assert.equal(v.get('D'), 'e');
});
