// Fuzz: the configuration parsers with random and near-valid inputs. Property: each gives a value or its documented error
// class (ConfigError, or UsageError for command lines), never another exception. Parsers: the TOML loader (file and
// FACTEUR_* environment), the Cyrus SASL smtpd.conf parser, Debian /etc/default/saslauthd (shell variables), authd's argv.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { loadConfig, loadSections } from '../../../src/config/load.js';
import type { Section } from '../../../src/config/schema.js';
import { parseCyrusSaslConfig } from '../../../src/auth/client/index.js';
import { parseShellVars, debianDefaultsToArgs, parseAuthdArgs } from '../../../src/auth/daemon/options.js';
import { parseLdapConfig, KNOWN_KEYS as LDAP_KEYS } from '../../../src/auth/backends/ldap/config.js';
import { ConfigError, UsageError } from '../../../src/lib/errors.js';

let sections: Section[];
let names: string[];
let keys: string[];

before(async () => {
  sections = await loadSections();
  names = sections.map((s) => s.name);
  keys = [...new Set(sections.flatMap((s) => Object.keys(s.params)))];
});

/** Run `fn`; a thrown error must be one of `allowed` (anything else fails the property with the error's stack). */
function onlyThrows(fn: () => unknown, ...allowed: (new (...a: never[]) => Error)[]): void {
  try {
    fn();
  } catch (err) {
    if (allowed.some((c) => err instanceof c)) return;
    assert.fail(`unexpected ${(err as Error)?.constructor?.name}: ${(err as Error)?.stack ?? String(err)}`);
  }
}

async function onlyRejects(fn: () => Promise<unknown>, ...allowed: (new (...a: never[]) => Error)[]): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if (allowed.some((c) => err instanceof c)) return;
    assert.fail(`unexpected ${(err as Error)?.constructor?.name}: ${(err as Error)?.stack ?? String(err)}`);
  }
}

const TOML_VALUES = ['"str"', "'lit'", '""', '123', '-1', '0', '1e400', '0x10', '1_000', '3.5', 'true', 'false', 'inf', 'nan', '-inf', '[1, "a"]', '[]', '["PLAIN", "LOGIN"]', '["x"', '{ a = 1 }', '1979-05-27T07:32:00Z', '1979-05-27', '07:32:00', '"""multi\nline"""', '9999999999999999999999', '"30s"', '"5m"', '"1.5h"', '"-3s"', '"0.0.0.0:25"', '"[::]:587"', '"host:99999"', '"reject"', '"none"', '"required"', '"\\u0000"', '"\\x"', '= 1'];

const tomlText = () => {
  const section = fc.oneof(fc.constantFrom(...names), fc.string({ maxLength: 12 }), fc.constantFrom('server.sub', '"quoted"', 'auth.option', '[aot]'));
  const key = fc.oneof(fc.constantFrom(...keys), fc.string({ maxLength: 12 }), fc.constantFrom('a.b', '"k"', 'server', '__proto__', 'constructor'));
  const value = fc.oneof(fc.constantFrom(...TOML_VALUES), fc.string({ maxLength: 20 }).map((s) => JSON.stringify(s)), fc.integer().map(String), fc.double().map(String));
  const line = fc.oneof(
    { weight: 2, arbitrary: section.map((s) => `[${s}]`) },
    { weight: 6, arbitrary: fc.tuple(key, value).map(([k, v]) => `${k} = ${v}`) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
    { weight: 1, arbitrary: fc.constantFrom('# comment', '', '[[x]]', 'key', '= value', '[server]\n[server]') },
  );
  return fc.array(line, { maxLength: 15 }).map((l) => l.join('\n'));
};

test('TOML loader: random and near-valid files give a configuration or a ConfigError', async () => {
  await fc.assert(
    fc.asyncProperty(fc.oneof(tomlText(), fc.string({ unit: 'binary', maxLength: 200 })), async (text) => {
      await onlyRejects(() => loadConfig({ text, file: 'fuzz.toml', sections, env: {} }), ConfigError);
    }),
    { numRuns: 3000, interruptAfterTimeLimit: 8_000, markInterruptAsFailure: false },
  );
});

test('TOML loader: random FACTEUR_* environment overrides give a configuration or a ConfigError', async () => {
  const envName = fc.oneof(
    fc.tuple(fc.constantFrom(...names), fc.constantFrom(...keys)).map(([s, k]) => `FACTEUR_${s}_${k}`.toUpperCase()),
    fc.string({ maxLength: 20 }).map((s) => `FACTEUR_${s}`),
  );
  const envValue = fc.oneof(fc.constantFrom('', '0', '-1', 'yes', 'no', 'TRUE', '30s', '1e3', '99999999999999999999', 'a,b,,c', ' ', '0x10', 'PLAIN'), fc.string({ maxLength: 20 }));
  await fc.assert(
    fc.asyncProperty(fc.dictionary(envName, envValue, { maxKeys: 6 }), async (env) => {
      await onlyRejects(() => loadConfig({ text: '', file: 'fuzz.toml', sections, env }), ConfigError);
    }),
    { numRuns: 2000, interruptAfterTimeLimit: 5_000, markInterruptAsFailure: false },
  );
});

const cyrusText = () => {
  const key = fc.oneof(fc.constantFrom('pwcheck_method', 'mech_list', 'saslauthd_path', 'log_level', 'auxprop_plugin', 'sql_engine', 'PWCHECK_METHOD', 'unknown_key'), fc.string({ maxLength: 12 }));
  const line = fc.oneof(
    { weight: 5, arbitrary: fc.tuple(key, fc.constantFrom(':', ' :', ': ', '=', ''), fc.string({ maxLength: 30 })).map(([k, s, v]) => `${k}${s}${v}`) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
    { weight: 1, arbitrary: fc.constantFrom('# comment', '', '\r', '   ') },
  );
  return fc.tuple(fc.array(line, { maxLength: 10 }), fc.constantFrom('\n', '\r\n')).map(([l, eol]) => l.join(eol));
};

test('Cyrus SASL smtpd.conf parser: a value or a ConfigError', () => {
  fc.assert(
    fc.property(fc.oneof(cyrusText(), fc.string({ unit: 'binary', maxLength: 200 })), (text) => {
      onlyThrows(() => {
        const c = parseCyrusSaslConfig(text, 'smtpd.conf');
        assert.ok(Array.isArray(c.pwcheck_method) && Array.isArray(c.mech_list) && typeof c.saslauthd_path === 'string');
      }, ConfigError);
    }),
    { numRuns: 5000, interruptAfterTimeLimit: 5_000, markInterruptAsFailure: false },
  );
});

const shellText = () => {
  const name = fc.oneof(fc.constantFrom('START', 'MECHANISMS', 'MECH_OPTIONS', 'OPTIONS', 'THREADS', 'NAME', 'DESC', 'export START'), fc.string({ maxLength: 10 }));
  const value = fc.oneof(
    fc.constantFrom('yes', 'no', '"ldap"', "'pam'", '"file rimap"', '"-c -m /var/run/saslauthd"', '"-c"', '"-m"', '"unterminated', "'unterminated", '"a\\"b"', 'a#b', '"" # c', '5', '-1', '"-m /x -m"', '"\\$HOME"'),
    fc.string({ maxLength: 30 }),
  );
  const line = fc.oneof({ weight: 5, arbitrary: fc.tuple(name, value).map(([n, v]) => `${n}=${v}`) }, { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) });
  return fc.array(line, { maxLength: 10 }).map((l) => l.join('\n'));
};

test('Debian defaults: parseShellVars never throws; debianDefaultsToArgs gives arguments or a ConfigError', () => {
  fc.assert(
    fc.property(fc.oneof(shellText(), fc.string({ unit: 'binary', maxLength: 200 })), (text) => {
      const vars = parseShellVars(text);
      assert.ok(vars instanceof Map);
      onlyThrows(() => {
        const args = debianDefaultsToArgs(text, '/etc/default/saslauthd');
        assert.ok(args.every((a) => typeof a === 'string'));
      }, ConfigError);
    }),
    { numRuns: 5000, interruptAfterTimeLimit: 5_000, markInterruptAsFailure: false },
  );
});

test('authd command line (including --defaults files): options, or a UsageError/ConfigError', () => {
  const word = fc.oneof(
    fc.constantFrom('-a', 'ldap', 'pam', '-O', '/etc/saslauthd.conf', '-m', '/run/x', 'relative', '-n', '5', '-n-1', '-t', '0', '-s', '99999999999', '-c', '-cd', '-r', '-f', '-v', '-h', '-V', '-l', '-x', '-', '--', '--group', '--group=sasl', '--max-inflight', '--max-inflight=0', '--read-timeout', '--backend-timeout=-1', '--defaults', '--defaults=/d', '--no-penalty', '--metrics', '--help', '--nope', '-amnOst', '-m/'),
    fc.string({ maxLength: 10 }),
  );
  fc.assert(
    fc.property(fc.array(word, { maxLength: 10 }), shellText(), (argv, defaults) => {
      onlyThrows(() => parseAuthdArgs(argv, () => defaults), UsageError, ConfigError);
    }),
    { numRuns: 5000, interruptAfterTimeLimit: 5_000, markInterruptAsFailure: false },
  );
});

test('saslauthd.conf (LDAP) parser, used read-only: a configuration or a ConfigError', () => {
  const key = fc.oneof(fc.constantFrom(...LDAP_KEYS), fc.string({ maxLength: 12 }));
  const value = fc.oneof(
    fc.constantFrom('ldap://127.0.0.1/', 'ldaps://[::1]:636 ldap://x', 'ldapi:///', 'not a url', '(uid=%u)', '(uid=%x)', 'uid=%U,dc=x', '%', '%%', '%D', 'yes', 'no', 'on', 'off', '0', '-1', '99999999999999999999', 'bind', 'fastbind', 'custom', 'sub', 'one', 'base', 'filter', 'attr', 'ECDHE+AESGCM', 'NORMAL:-VERS-TLS1.0', '/nonexistent/ca.pem', ' trailing ', '(uid=%u'),
    fc.string({ maxLength: 30 }),
  );
  const line = fc.oneof(
    { weight: 5, arbitrary: fc.tuple(key, fc.constantFrom(':', ': ', ' :', ''), value).map(([k, s, v]) => `${k}${s}${v}`) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
    { weight: 1, arbitrary: fc.constantFrom('# comment', '', '   ', '\r') },
  );
  fc.assert(
    fc.property(fc.array(line, { maxLength: 12 }).map((l) => l.join('\n')), (text) => {
      onlyThrows(() => parseLdapConfig(text, 'saslauthd.conf'), ConfigError);
    }),
    { numRuns: 5000, interruptAfterTimeLimit: 5_000, markInterruptAsFailure: false },
  );
});

test('regression (found by fuzzing): inherited property names are unknown keys, never setters or parameters', async () => {
  for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
    assert.throws(() => parseLdapConfig(`${name}: x`, 'saslauthd.conf'), ConfigError, `saslauthd.conf ${name}`);
  }
  const { loadConfigFile } = await import('../../../src/config/load.js');
  const fs = await import('node:fs/promises');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'facteur-fuzz-reg-'));
  try {
    for (const name of ['constructor', 'toString', '__proto__']) {
      const file = path.join(dir, 'f.toml');
      await fs.writeFile(file, `[server]\n${name} = 1\n`);
      await assert.rejects(loadConfigFile(file, {}), ConfigError, `facteur.toml ${name}`);
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
