import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkDane } from '../../../src/config/check.js';
import { UdpSecureResolver } from '../../../src/delivery/dnssec.js';
import type { ConfigValues } from '../../../src/config/load.js';

const cfg = (dane: string) => ({ delivery: { dane } }) as unknown as ConfigValues;

test('the config check says whether DANE applies, from where the system resolver is', () => {
  const local = new UdpSecureResolver({ host: '127.0.0.1', port: 53 });
  const remote = new UdpSecureResolver({ host: '192.0.2.53', port: 53 });
  assert.deepEqual(checkDane(cfg('off'), remote), []);
  const [on] = checkDane(cfg('auto'), local);
  assert.equal(on!.level, 'ok');
  assert.match(on!.message, /DANE is on: the system resolver 127\.0\.0\.1 is on this machine/);
  const [off] = checkDane(cfg('auto'), remote);
  assert.equal(off!.level, 'warning');
  assert.match(off!.message, /DANE stays off: the system resolver 192\.0\.2\.53 is not on this machine.*apt install unbound/);
  const [forced] = checkDane(cfg('on'), new UdpSecureResolver({ host: '192.0.2.53', port: 5353 }));
  assert.match(forced!.message, /dane = "on": DANE applies with the DNSSEC validation of the resolver 192\.0\.2\.53:5353/);
  assert.ok(new UdpSecureResolver({ host: '::1', port: 53 }).local);
});
