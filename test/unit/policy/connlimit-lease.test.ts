import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LEASE_BLOCK, LeaseLedger, LeasedAdmission, lendOrRecall } from '../../../src/policy/connlimit.js';

/** A primary and its workers in one process; every message crosses an asynchronous hop, as over IPC. */
function cluster(maxTotal: number, maxPerIp: number, workers: number) {
  const ledger = new LeaseLedger(maxTotal, maxPerIp, workers);
  const hop = () => new Promise<void>((r) => setImmediate(r));
  const stats = { borrows: 0, returns: 0, recalls: 0 };
  const admissions: LeasedAdmission[] = [];
  for (let id = 0; id < workers; id++) {
    admissions.push(
      new LeasedAdmission({
        async borrow(ip) {
          stats.borrows++;
          await hop();
          const n = await lendOrRecall(ledger, id, ip, async (other, scope) => {
            stats.recalls++;
            await hop();
            for (const [k, n] of admissions[other]!.recall(scope)) ledger.giveBack(other, k, n);
          });
          await hop();
          return n;
        },
        giveBack(returns) {
          stats.returns++;
          for (const [ip, n] of returns) ledger.giveBack(id, ip, n);
        },
      }),
    );
  }
  return { ledger, admissions, stats };
}

test('a lone address with room to spare: most connections are admitted without asking the primary', async () => {
  const { admissions, stats, ledger } = cluster(1000, 1000, 2);
  const releases: (() => void)[] = [];
  for (let i = 0; i < 100; i++) {
    const r = await admissions[i % 2]!.acquire('192.0.2.1');
    assert.ok(r);
    releases.push(r);
    if (releases.length > 4) releases.shift()!();
  }
  assert.ok(stats.borrows <= 4, `borrows: ${stats.borrows}`);
  assert.ok(ledger.size <= 4 + 2 * LEASE_BLOCK, `lent: ${ledger.size}`);
});

test('near a ceiling places are lent one at a time, and a place free in one worker is recalled for another', async () => {
  const { admissions, stats } = cluster(1000, 3, 2);
  const a = await admissions[0]!.acquire('192.0.2.1');
  const b = await admissions[0]!.acquire('192.0.2.1');
  const c = await admissions[1]!.acquire('192.0.2.1');
  assert.ok(a && b && c);
  assert.equal(await admissions[1]!.acquire('192.0.2.1'), undefined, 'the 4th is refused');
  a();
  // Worker 0 keeps its free place for a moment; worker 1 gets it through a recall.
  const d = await admissions[1]!.acquire('192.0.2.1');
  assert.ok(d, 'the freed place is used by the other worker');
  assert.ok(stats.recalls >= 1);
  assert.equal(await admissions[0]!.acquire('192.0.2.1'), undefined, 'full again');
});

test('the overall ceiling recalls free places held for other addresses', async () => {
  const { admissions } = cluster(2, 10, 2);
  const a = await admissions[0]!.acquire('192.0.2.1');
  const b = await admissions[1]!.acquire('192.0.2.2');
  assert.ok(a && b);
  assert.equal(await admissions[1]!.acquire('192.0.2.3'), undefined);
  a();
  assert.ok(await admissions[1]!.acquire('192.0.2.3'), 'place freed for .1 in worker 0 goes to .3 in worker 1');
});

test('a dead worker gives back everything it was lent', () => {
  const ledger = new LeaseLedger(1000, 1000, 2);
  assert.equal(ledger.lend(0, '192.0.2.1'), LEASE_BLOCK);
  assert.equal(ledger.lend(1, '192.0.2.1'), LEASE_BLOCK);
  ledger.giveBack(1, '192.0.2.1', 99); // never more than lent
  assert.equal(ledger.size, LEASE_BLOCK);
  ledger.dropWorker(0);
  assert.equal(ledger.size, 0);
});

test('exact ceilings over workers (property): refused only when a ceiling is really reached, never over it', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 30 }),
      fc.integer({ min: 1, max: 12 }),
      fc.integer({ min: 1, max: 3 }),
      fc.array(fc.record({ release: fc.boolean(), worker: fc.nat(2), ip: fc.constantFrom('a', 'b', 'c'), pick: fc.nat() }), { maxLength: 80 }),
      async (maxTotal, maxPerIp, workers, ops) => {
        const { admissions } = cluster(maxTotal, maxPerIp, workers);
        const open: { ip: string; release: () => void }[] = [];
        for (const op of ops) {
          if (op.release && open.length) {
            const [c] = open.splice(op.pick % open.length, 1);
            c!.release();
            continue;
          }
          const usedIp = open.filter((c) => c.ip === op.ip).length;
          const r = await admissions[op.worker % workers]!.acquire(op.ip);
          const shouldAdmit = open.length < maxTotal && usedIp < maxPerIp;
          assert.equal(!!r, shouldAdmit, `total ${open.length}/${maxTotal}, ${op.ip} ${usedIp}/${maxPerIp}`);
          if (r) open.push({ ip: op.ip, release: r });
        }
      },
    ),
    { numRuns: 200 },
  );
});
