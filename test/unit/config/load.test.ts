import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig, loadSections, renderDefaults, durationMs, distance } from '../../../src/config/load.js';
import { ConfigError } from '../../../src/lib/errors.js';

test('defaults for every declared section, including ones owned by other parts', async () => {
  const c = await loadConfig();
  assert.equal(c.server.max_message_size, 26214400);
  assert.deepEqual(c.submission.listen, ['0.0.0.0:587']);
  assert.equal(c.inbound.auth, 'none');
  assert.ok(c.queue && c.delivery, 'queue and delivery sections are picked up from src/config/sections/');
});

test('TOML values override defaults; environment overrides TOML', async () => {
  const c = await loadConfig({
    text: '[server]\nlocal_domains = ["a.test"]\nmax_recipients = 7\n[policy]\nfrom_header_check = "allow"\n',
    env: { FACTEUR_SERVER_MAX_RECIPIENTS: '9', FACTEUR_SERVER_LOCAL_DOMAINS: 'b.test, c.test', FACTEUR_SERVER_VRFY: 'yes', FACTEUR_CONFIG: '/x', FACTEUR_NOT_A_SECTION_KEY: '1' },
  });
  assert.equal(c.server.max_recipients, 9);
  assert.deepEqual(c.server.local_domains, ['b.test', 'c.test']);
  assert.equal(c.server.vrfy, true);
  assert.equal(c.policy.from_header_check, 'allow');
});

test('errors name the key, say what is expected, and suggest a near name', async () => {
  const bad = async (text: string, re: RegExp, env: NodeJS.ProcessEnv = {}) => assert.rejects(loadConfig({ text, file: 'f.toml', env }), (e: Error) => e instanceof ConfigError && re.test(e.message));
  await bad('[server]\nmax_mesage_size = 1\n', /f\.toml: unknown key 'max_mesage_size' in \[server\] \(did you mean 'max_message_size'\?\)/);
  await bad('[servr]\n', /unknown section \[servr\] \(did you mean 'server'\?\)/);
  await bad('[server]\nmax_recipients = "ten"\n', /\[server\] max_recipients: expected an integer/);
  await bad('[server]\nmax_recipients = 0\n', /must be at least 1/);
  await bad('[server]\ntimeout = "5 minutes"\n', /not a duration/);
  await bad('[submission]\nlisten = ["587"]\n', /"587" is not "host:port"/);
  await bad('[auth]\nmech_list = ["CRAM-MD5"]\n', /only PLAIN and LOGIN/);
  await bad('server = 1\n', /must be a table/);
  await bad('[server\n', /not valid TOML/);
  await bad('', /environment FACTEUR_SERVER_MAX_RECIPIENTS: expected an integer/, { FACTEUR_SERVER_MAX_RECIPIENTS: 'lots' });
});

test('renderDefaults: every key once, with its doc, as parseable TOML', async () => {
  const sections = await loadSections();
  const text = renderDefaults(sections);
  const c = await loadConfig({ text, sections });
  for (const s of sections) for (const k of Object.keys(s.params)) assert.deepEqual(c[s.name][k], s.params[k].default, `${s.name}.${k}`);
});

test('durations and distances', () => {
  assert.equal(durationMs('5m'), 300_000);
  assert.equal(durationMs('250ms'), 250);
  assert.equal(durationMs('2'), 2000);
  assert.equal(durationMs(3), 3000);
  assert.equal(distance('kitten', 'sitting'), 3);
});
