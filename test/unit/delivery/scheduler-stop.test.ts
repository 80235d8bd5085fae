// The scheduler's stop() while its first scan of the spool is still running: nothing may be left behind (a watcher or
// timer started after stop() would keep the delivery thread, and so `facteur serve`, from exiting).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Spool } from '../../../src/queue/spool.js';
import { startDelivery } from '../../../src/delivery/scheduler.js';
import { defaultDeliveryOptions } from '../../../src/delivery/options.js';
import { createLogger } from '../../../src/observability/log.js';
import { tempDir } from '../../helpers/net.js';

// If the test fails, a watcher was leaked: close it so this file still ends instead of hanging the run.
after(() => {
  const handles = (process as unknown as { _getActiveHandles(): { close?: () => void; constructor: { name: string } }[] })._getActiveHandles();
  for (const h of handles) if (h.constructor.name === 'FSWatcher' || h.constructor.name === 'FSEvent') h.close?.();
});

const watchers = () => process.getActiveResourcesInfo().filter((r) => r === 'FSEventWrap').length;

test('stop() during the first scan: no control-directory watcher is left running', async () => {
  const data = await tempDir('facteur-sched-stop-');
  const spool = await Spool.open(path.join(data, 'queue'));
  const options = defaultDeliveryOptions(data, { hostname: 'mx.test', dane: 'off', mtaSts: false, scanIntervalMs: 3_600_000 });
  const before = watchers();
  // Control: left to start, the scheduler watches the control directory.
  const running = startDelivery({ spool, options, log: createLogger({ name: 'test', level: 'silent' }) });
  await running.tick();
  assert.equal(watchers(), before + 1, 'a started scheduler watches control/');
  await running.stop();
  await new Promise((r) => setTimeout(r, 50)); // a closed handle leaves the list on the next loop turn
  assert.equal(watchers(), before);
  // Stopped in the same turn as it started: its first scan is still in flight.
  const early = startDelivery({ spool, options, log: createLogger({ name: 'test', level: 'silent' }) });
  await early.stop();
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(watchers(), before, 'nothing started after stop()');
  await spool.close();
});
