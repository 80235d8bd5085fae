// The benchmark report: the authd section of docs/benchmarks.md is replaced in place, the rest of the file kept;
// CPU accounting reads the process tree from /proc.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { writeSection, markdownTable, textTable, SECTION_START, SECTION_END } from '../../../bench/lib/report.js';
import { processTree, treeCpuMs, machineBusyMs, pidListeningOn } from '../../../bench/lib/procstat.js';
import { tempDir } from '../../helpers/net.js';

test('writeSection creates the file, then replaces only its own section', async () => {
  const dir = await tempDir('facteur-report-');
  const file = path.join(dir, 'benchmarks.md');
  writeSection(file, '## first');
  let text = await fs.readFile(file, 'utf8');
  assert.match(text, /^# Benchmarks/);
  assert.ok(text.includes(`${SECTION_START}\n## first\n${SECTION_END}`));
  await fs.writeFile(file, `${text}\n## smtp section by someone else\nkeep me\n`);
  writeSection(file, '## second');
  text = await fs.readFile(file, 'utf8');
  assert.ok(!text.includes('## first'));
  assert.ok(text.includes('## second'));
  assert.ok(text.includes('keep me'));
  assert.equal(text.split(SECTION_START).length, 2);
  await fs.rm(dir, { recursive: true, force: true });
});

test('tables escape pipes and align columns', () => {
  assert.equal(markdownTable(['a', 'b'], [['x|y', '1']]), '| a | b |\n| --- | ---: |\n| x\\|y | 1 |');
  assert.equal(textTable(['name', 'n'], [['ab', '10']]), 'name   n\n----  --\nab    10');
});

test('CPU time of a process tree includes its children', async () => {
  const child = spawn(process.execPath, ['-e', 'const t = Date.now(); while (Date.now() - t < 400);'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(processTree(process.pid).includes(child.pid!));
  const before = machineBusyMs();
  assert.ok(treeCpuMs(process.pid) > treeCpuMs(child.pid!) && treeCpuMs(child.pid!) > 50);
  await new Promise((r) => child.once('exit', r));
  assert.ok(machineBusyMs() >= before);
});

test('the process listening on a TCP port is found through /proc', async () => {
  const net = await import('node:net');
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as { port: number };
  assert.equal(pidListeningOn(port), process.pid);
  await new Promise((r) => srv.close(r));
  assert.equal(pidListeningOn(port), undefined);
});

test('CPU time of a process counts all its threads', async () => {
  const { Worker } = await import('node:worker_threads');
  const { readFileSync } = await import('node:fs');
  // A fixed amount of work (not a wall-clock time, so a busy machine cannot make it fail), then it waits to be told to exit.
  const w = new Worker(
    `const { parentPort } = require('node:worker_threads'); let x = 0; for (let i = 0; i < 3e8; i++) x = (x + i) % 1000003;
     parentPort.postMessage(x); parentPort.once('message', () => process.exit(0));`,
    { eval: true },
  );
  await new Promise((r) => w.once('message', r));
  const mainThreadMs = Number(readFileSync(`/proc/${process.pid}/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
  assert.ok(treeCpuMs(process.pid) - mainThreadMs > 50, 'the CPU of the worker thread is counted');
  w.postMessage('exit');
  await new Promise((r) => w.once('exit', r));
});

test('sections with different ids live side by side', async () => {
  const dir = await tempDir('facteur-report-');
  const file = path.join(dir, 'benchmarks.md');
  writeSection(file, 'one');
  writeSection(file, 'two', 'authd-slapd-log');
  writeSection(file, 'three');
  const text = await fs.readFile(file, 'utf8');
  assert.ok(text.includes('<!-- bench:authd:start -->\nthree\n<!-- bench:authd:end -->'));
  assert.ok(text.includes('<!-- bench:authd-slapd-log:start -->\ntwo\n<!-- bench:authd-slapd-log:end -->'));
  assert.ok(!text.includes('one'));
  await fs.rm(dir, { recursive: true, force: true });
});
