// Password hash verification against hashes made at run time by the real tools (doveadm, slappasswd, openssl) and the published sha-crypt vectors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { verifyPasswordHash, hashPassword, shaCrypt, md5Crypt, MAX_SHA_CRYPT_ROUNDS } from '../../../src/auth/passwords.js';

const PASSWORDS = ['x', 'correct horse battery staple', 'pa"ss\\wd {x}', 'mot de passe é ü 密码', 'a'.repeat(100)];

const doveadm = (scheme: string, pw: string) => execFileSync('doveadm', ['pw', '-s', scheme, '-p', pw], { encoding: 'utf8' }).trim();
const slappasswd = (scheme: string, pw: string) => execFileSync('slappasswd', ['-h', scheme, '-s', pw], { encoding: 'utf8' }).trim();
const openssl = (flag: string, pw: string) => execFileSync('openssl', ['passwd', flag, '-stdin'], { input: pw, encoding: 'utf8' }).trim();

const DOVEADM_SCHEMES = [
  'SHA512-CRYPT', 'SHA256-CRYPT', 'MD5-CRYPT', 'SSHA', 'SSHA256', 'SSHA512', 'SHA', 'SHA256', 'SHA512', 'MD5', 'SMD5', 'PLAIN', 'CLEARTEXT',
  'PLAIN-MD5', 'LDAP-MD5', 'ARGON2ID', 'ARGON2I', 'BLF-CRYPT', 'CRYPT',
];

for (const scheme of DOVEADM_SCHEMES) {
  test(`doveadm pw -s ${scheme}: right password true, wrong false`, async () => {
    // bcrypt only uses 72 bytes and argon2 is slow: two passwords are enough for those.
    const pws = /BLF|^CRYPT|ARGON/.test(scheme) ? PASSWORDS.slice(2, 4) : PASSWORDS;
    for (const pw of pws) {
      const h = doveadm(scheme, pw);
      assert.equal(await verifyPasswordHash(pw, h), true, `${scheme} ${h}`);
      assert.equal(await verifyPasswordHash(pw + '!', h), false, `${scheme} ${h}`);
      assert.equal(await verifyPasswordHash('', h), false);
      // Scheme prefixes are case-insensitive.
      const lower = h.replace(/^\{[^}]+\}/, (s) => s.toLowerCase());
      assert.equal(await verifyPasswordHash(pw, lower), true);
    }
  });
}

for (const scheme of ['{SSHA}', '{SHA}', '{MD5}', '{SMD5}']) {
  test(`slappasswd -h ${scheme}`, async () => {
    for (const pw of PASSWORDS) {
      const h = slappasswd(scheme, pw);
      assert.equal(await verifyPasswordHash(pw, h), true, h);
      assert.equal(await verifyPasswordHash(pw.slice(0, -1), h), false, h);
    }
  });
}

for (const flag of ['-6', '-5', '-1']) {
  test(`openssl passwd ${flag} (crypt(3) format, no prefix)`, async () => {
    for (const pw of PASSWORDS) {
      const h = openssl(flag, pw);
      assert.equal(await verifyPasswordHash(pw, h), true, h);
      assert.equal(await verifyPasswordHash(pw + ' ', h), false, h);
      assert.equal(await verifyPasswordHash(pw, `{CRYPT}${h}`), true, h);
    }
  });
}

test('sha-crypt: published vectors (Drepper spec) including custom and clamped rounds', async () => {
  const vectors: Array<[string, string, 'sha512' | 'sha256', string]> = [
    ['Hello world!', '$6$saltstring', 'sha512', '$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1'],
    ['Hello world!', '$5$saltstring', 'sha256', '$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5'],
    ['Hello world!', '$6$rounds=10000$saltstringsaltstring', 'sha512', '$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.'],
    ['This is just a test', '$5$rounds=5000$toolongsaltstring', 'sha256', '$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5'],
    ['the minimum number is still observed', '$6$rounds=10$roundstoolow', 'sha512', '$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX.'],
  ];
  for (const [pw, setting, algo, expected] of vectors) {
    assert.equal(await shaCrypt(Buffer.from(pw), setting, algo), expected);
    assert.equal(await verifyPasswordHash(pw, expected), true);
  }
  assert.equal(md5Crypt(Buffer.from('x y'), '$1$UXPI60nS'), '$1$UXPI60nS$wZsqejumhqeJMb6kCGbgS.');
});

/** libxcrypt's crypt(3) through Python's crypt module (Debian 12's python3), as /etc/shadow hashes are made. */
const libxcrypt = (pw: string, setting: string) =>
  execFileSync('python3', ['-W', 'ignore', '-c', 'import crypt,sys; print(crypt.crypt(sys.stdin.read(), sys.argv[1]))', setting], { input: pw, encoding: 'utf8' }).trim();

test('yescrypt ($y$): published-by-libxcrypt vectors, and hashes made at run time by libxcrypt', async () => {
  assert.equal(await verifyPasswordHash('pw', '$y$j75$F5Jx5fExrKuPp53xLKQ..1$6z8bJ9aRId.8ArLYSYDplRF69XwusC3CguNEDPO713.'), true);
  assert.equal(await verifyPasswordHash('pw', '$y$j9T$F5Jx5fExrKuPp53xLKQ..1$U4SOHmDd8SvW5vCUKSMR6N835VPwFAtgYNhQ9mFFeL5'), true);
  assert.equal(await verifyPasswordHash('pW', '$y$j9T$F5Jx5fExrKuPp53xLKQ..1$U4SOHmDd8SvW5vCUKSMR6N835VPwFAtgYNhQ9mFFeL5'), false);
  // Cheaper costs than the default (to keep the test short), p=2 and t=1 settings, hostile passwords, random salts; made by libxcrypt.
  const settings = ['$y$j75$', '$y$j8T..$', '$y$j7T/.$'];
  for (const [i, setting] of settings.entries()) {
    const pw = PASSWORDS[(i + 2) % PASSWORDS.length]!;
    const salt = execFileSync('python3', ['-W', 'ignore', '-c', `import crypt; print(crypt.mksalt(crypt.METHOD_SHA512)[3:])`], { encoding: 'utf8' }).trim().slice(0, 16);
    const h = libxcrypt(pw, `${setting}${salt}$`);
    assert.match(h, /^\$y\$/, `${setting}: ${h}`);
    assert.equal(await verifyPasswordHash(pw, h), true, h);
    assert.equal(await verifyPasswordHash(`${pw}x`, h), false, h);
    if (i === 0) assert.equal(await verifyPasswordHash(pw, `{CRYPT}${h}`), true, h);
  }
});

test('hashPassword makes argon2id PHC strings that verify, with a fresh salt each time', async () => {
  const a = await hashPassword('pa"ss\\wd é');
  const b = await hashPassword('pa"ss\\wd é');
  assert.match(a, /^\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/);
  assert.notEqual(a, b);
  assert.equal(await verifyPasswordHash('pa"ss\\wd é', a), true);
  assert.equal(await verifyPasswordHash('pa"ss\\wd e', a), false);
  // Dovecot can read what we write.
  const out = execFileSync('doveadm', ['pw', '-t', `{ARGON2ID}${a}`, '-p', 'pa"ss\\wd é'], { encoding: 'utf8' });
  assert.match(out, /verified/);
});

test('unknown schemes answer null; malformed values of known schemes answer false', async () => {
  for (const h of ['$y$/9T$F5Jx5fExrKuPp53xLKQ..1$U4SOHmDd8SvW5vCUKSMR6N835VPwFAtgYNhQ9mFFeL5', '{SASL}bob@EXAMPLE', '{K5KEY}', 'abXyZ12345678', 'plaintext', '', '$7$xx', '{NOPE}x']) {
    assert.equal(await verifyPasswordHash('x', h), null, h);
  }
  const malformed = [
    '{SSHA}not base64!!', '{SSHA}', '{SHA}AAAA', '{SHA256}zz', '$6$salt$tooshort', '$6$salt$' + '!'.repeat(86), '$5$$',
    '$2y$05$short', '$2y$99$' + 'a'.repeat(53), '$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g', '$argon2id$v=16$m=65536,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2g',
    '$argon2id$v=19$m=99999999,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2g', '$1$salt$short', '{MD5}$1$abc$',
    `$6$rounds=${MAX_SHA_CRYPT_ROUNDS + 1}$salt$${'a'.repeat(86)}`,
    '$y$j9T$abc$def', '$y$j9T$F5Jx5fExrKuPp53xLKQ..1$short', '$y$j9T$!!$U4SOHmDd8SvW5vCUKSMR6N835VPwFAtgYNhQ9mFFeL5',
  ];
  for (const h of malformed) assert.equal(await verifyPasswordHash('x', h), false, h);
});

test('a password longer than 72 bytes: bcrypt compares the first 72 bytes, like every bcrypt', async () => {
  const pw = 'b'.repeat(80);
  const h = doveadm('BLF-CRYPT', pw);
  assert.equal(await verifyPasswordHash(pw, h), true);
  assert.equal(await verifyPasswordHash('b'.repeat(72) + 'c', h), true);
  assert.equal(await verifyPasswordHash('b'.repeat(71), h), false);
});

test('argon2 and bcrypt run on worker threads: the event loop keeps turning during a verification', async () => {
  const h = doveadm('ARGON2ID', 'slow one'); // 64 MiB, 3 passes
  let turns = 0;
  let done = false;
  const spin = () => {
    if (done) return;
    turns++;
    setImmediate(spin);
  };
  setImmediate(spin);
  const results = await Promise.all([verifyPasswordHash('slow one', h), verifyPasswordHash('slow two', h), verifyPasswordHash('x', doveadm('BLF-CRYPT', 'x'))]);
  done = true;
  assert.deepEqual(results, [true, false, true]);
  assert.ok(turns > 10, `event loop turned ${turns} times`);
});
