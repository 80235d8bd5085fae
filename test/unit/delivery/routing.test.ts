// Routing, MX interpretation, backoff, DSN recipients and config → options: the pure parts of delivery.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRouter, parseNextHop, parseTransportMap, routeKey } from '../../../src/delivery/routing.js';
import { lookupMx, type MxResolver } from '../../../src/delivery/mx.js';
import { backoffMs } from '../../../src/delivery/scheduler.js';
import { buildDsn, wantsNotice, rfc5322Date } from '../../../src/delivery/dsn.js';
import { fromReply } from '../../../src/delivery/result.js';
import { maildirFor } from '../../../src/delivery/maildir.js';
import { deliveryOptionsFromConfig } from '../../../src/delivery/options.js';
import { loadConfig, loadSections } from '../../../src/config/load.js';
import { ConfigError } from '../../../src/lib/errors.js';

test('next hops: [host]:port skips MX, host:port does MX, unix:/path, bad ones name the option', () => {
  assert.deepEqual(parseNextHop('[127.0.0.1]:2525', 25, 'x'), { host: '127.0.0.1', port: 2525, mx: false });
  assert.deepEqual(parseNextHop('[IPv6:::1]', 25, 'x'), { host: '::1', port: 25, mx: false });
  assert.deepEqual(parseNextHop('Relay.Example:587', 25, 'x'), { host: 'relay.example', port: 587, mx: true });
  assert.deepEqual(parseNextHop('unix:/run/dovecot/lmtp', 24, 'x'), { path: '/run/dovecot/lmtp' });
  assert.throws(() => parseNextHop('unix:relative', 24, '[delivery] lmtp_target'), (e: Error) => e instanceof ConfigError && /lmtp_target/.test(e.message));
  assert.throws(() => parseNextHop('host:99999', 25, 'x'), ConfigError);
  assert.throws(() => parseNextHop('bad host', 25, 'x'), ConfigError);
});

test('transport map: exact beats .suffix beats local domains beats * beats relayhost; errors explain the syntax', () => {
  const map = parseTransportMap(['example.org = smtp:[10.0.0.1]:2525', '.example.org = lmtp:unix:/run/lmtp', 'local.test = smtp:', '* = smtp:relay.example:587', 'nope.test = error:5.7.1 Not here']);
  const r = createRouter({ transportMap: map, localDomains: ['local.test', 'mine.test'], localTransport: 'maildir', lmtpTarget: '', relayhost: '[smarthost]:25' });
  assert.equal(routeKey(r.route('EXAMPLE.org.')), 'smtp:[10.0.0.1]:2525');
  assert.equal(routeKey(r.route('sub.example.org')), 'lmtp:unix:/run/lmtp');
  assert.equal(routeKey(r.route('local.test')), 'mx:local.test', 'transport map overrides local delivery');
  assert.equal(routeKey(r.route('mine.test')), 'maildir');
  assert.equal(routeKey(r.route('gmail.com')), 'smtp:relay.example:587');
  assert.deepEqual(r.route('nope.test'), { kind: 'error', status: '5.7.1', text: 'Not here' });
  const noStar = createRouter({ transportMap: [], localDomains: [], localTransport: 'maildir', lmtpTarget: '', relayhost: '[smarthost]:2525', relayAuth: { user: 'u', pass: 'p' } });
  assert.deepEqual(noStar.route('gmail.com'), { kind: 'smtp', hop: { host: 'smarthost', port: 2525, mx: false }, auth: { user: 'u', pass: 'p' } });
  const direct = createRouter({ transportMap: [], localDomains: [], localTransport: 'maildir', lmtpTarget: '', relayhost: '' });
  assert.deepEqual(direct.route('gmail.com'), { kind: 'mx', domain: 'gmail.com' });
  for (const bad of ['example.org smtp:x', 'example.org = pigeon:x', 'x = lmtp:', '../x = maildir']) assert.throws(() => parseTransportMap([bad]), ConfigError, bad);
  assert.throws(() => createRouter({ transportMap: [], localDomains: [], localTransport: 'lmtp', lmtpTarget: '', relayhost: '' }), /lmtp_target/);
});

test('MX: preference order, implicit MX, null MX, NXDOMAIN, temporary failure, literals, junk domains', async () => {
  const res = (f: MxResolver['resolveMx']): MxResolver => ({ resolveMx: f });
  const err = (code: string) => async () => {
    throw Object.assign(new Error(code), { code });
  };
  assert.deepEqual(await lookupMx('a.test', res(async () => [{ exchange: 'b.mx.', priority: 20 }, { exchange: 'A.MX', priority: 10 }])), { kind: 'hosts', hosts: ['a.mx', 'b.mx'] });
  assert.deepEqual(await lookupMx('a.test', res(err('ENODATA'))), { kind: 'hosts', hosts: ['a.test'] });
  const nul = await lookupMx('a.test', res(async () => [{ exchange: '', priority: 0 }]));
  assert.equal(nul.kind === 'fail' && nul.status, '5.1.10');
  const nx = await lookupMx('a.test', res(err('ENOTFOUND')));
  assert.ok(nx.kind === 'fail' && nx.permanent && nx.status === '5.1.2');
  const tmp = await lookupMx('a.test', res(err('ESERVFAIL')));
  assert.ok(tmp.kind === 'fail' && !tmp.permanent && tmp.status === '4.4.3');
  assert.deepEqual(await lookupMx('[192.0.2.1]', res(err('X'))), { kind: 'hosts', hosts: ['192.0.2.1'] });
  const seen: string[] = [];
  await lookupMx('b\u00fccher.example', res(async (d) => (seen.push(d), [{ exchange: 'mx.example', priority: 1 }])));
  assert.deepEqual(seen, ['xn--bcher-kva.example'], 'IDN looked up as A-label');
  for (const junk of ['a..b', 'x y', '[notanip]', 'a.test\r\nRCPT']) assert.equal((await lookupMx(junk, res(err('X')))).kind, 'fail', junk);
});

test('backoff doubles from the initial wait up to the maximum', () => {
  const m = 60_000;
  assert.deepEqual([1, 2, 3, 4, 5, 6, 50, 5000].map((n) => backoffMs(n, 5 * m, 60 * m) / m), [5, 10, 20, 40, 60, 60, 60, 60]);
});

test('NOTIFY: default failure only, NEVER silences, SUCCESS/DELAY on request, never to the null sender', () => {
  const env = { mailFrom: 'a@x.test', rcptTo: [], receivedAt: 0 };
  assert.equal(wantsNotice(env, { address: 'b@y' }, 'failure'), true);
  assert.equal(wantsNotice(env, { address: 'b@y' }, 'success'), false);
  assert.equal(wantsNotice(env, { address: 'b@y', notify: ['NEVER'] }, 'failure'), false);
  assert.equal(wantsNotice(env, { address: 'b@y', notify: ['SUCCESS'] }, 'failure'), false);
  assert.equal(wantsNotice(env, { address: 'b@y', notify: ['success', 'DELAY'] }, 'delay'), true);
  assert.equal(wantsNotice({ ...env, mailFrom: '' }, { address: 'b@y' }, 'failure'), false);
});

test('replies: enhanced code taken only when its class matches; control characters and CRLF never reach a DSN header', () => {
  assert.equal(fromReply(0, 550, '550 5.1.1 nope').status, '5.1.1');
  assert.equal(fromReply(0, 550, '550 4.1.1 inconsistent').status, '5.0.0');
  assert.equal(fromReply(0, 451, '451 try later').state, 'deferred');
  const dsn = buildDsn({
    hostname: 'h.test',
    queueId: 'QID0000000000',
    envelope: { mailFrom: 'a@x.test', rcptTo: [{ address: 'b@y.test' }], receivedAt: 0, dsn: { envid: 'E\r\nInjected: yes' } },
    recipients: [{ address: 'b@y.test\r\nBcc: evil@z', action: 'failed', status: '5.0.0', diagnostic: '550 bad\r\nX-Evil: 1' }],
    original: Buffer.from('Subject: s\r\n\r\nbody\r\n'),
    sizeLimit: 10,
    now: 0,
  }).toString();
  assert.doesNotMatch(dsn, /^(Injected|Bcc|X-Evil):/m);
  assert.match(dsn, /Content-Type: text\/rfc822-headers/, 'original over the size limit: headers only');
  assert.equal(rfc5322Date(Date.UTC(2026, 10, 28, 9, 5, 7)), 'Sat, 28 Nov 2026 09:05:07 +0000');
});

test('maildir paths: template expansion, unsafe local parts refused', () => {
  assert.equal(maildirFor('{data}/mail/{domain}/{local}/', '/d', 'Bob.Smith@Example.ORG'), '/d/mail/example.org/bob.smith');
  for (const bad of ['../x@a.test', '.x@a.test', 'a/b@a.test', 'a@../b', 'a..b@a.test', '"q"@a.test', 'noat']) assert.equal(maildirFor('{data}/{domain}/{local}', '/d', bad), undefined, bad);
});

test('options from a loaded configuration: durations, transport map, relayhost password file', async () => {
  const sections = await loadSections();
  assert.ok(sections.some((s) => s.name === 'queue') && sections.some((s) => s.name === 'delivery'));
  const cfg = await loadConfig({ sections, text: '[server]\ndata_dir = "/srv/f"\nhostname = "mx.test"\n[queue]\nretry_initial = "1m"\nmax_lifetime = "2d"\n[delivery]\ntransport_map = ["a.test = maildir"]\n' });
  const o = deliveryOptionsFromConfig(cfg);
  assert.equal(o.retryInitialMs, 60_000);
  assert.equal(o.maxLifetimeMs, 2 * 86_400_000);
  assert.equal(o.retryMaxMs, 3_600_000);
  assert.equal(o.dkimDir, '/srv/f/dkim');
  assert.equal(o.heloName, 'mx.test');
  assert.equal(o.transportMap.length, 1);
  const noPw = await loadConfig({ sections, text: '[delivery]\nrelayhost = "[r]:587"\nrelayhost_user = "u"\n' });
  assert.throws(() => deliveryOptionsFromConfig(noPw), /relayhost_password_file/);
  await assert.rejects(loadConfig({ sections, text: '[delivery]\nstarttls = "maybe"\n' }), ConfigError);
  await assert.rejects(loadConfig({ sections, text: '[queue]\nretry_initial = "soon"\n' }), ConfigError);
});
