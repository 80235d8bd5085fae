// createLogger writes each line synchronously: it is in the file when the call returns (nothing waits on the thread
// pool, nothing is lost if the process dies right after), and secrets under the redacted keys never reach it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { createLogger } from '../../../src/observability/log.js';
import { tempDir } from '../../helpers/net.js';

test('a line is in the log file when the call returns; the password is redacted', async () => {
  const file = path.join(await tempDir(), 'logs', 'facteur.log');
  const log = createLogger({ name: 'test', file });
  log.info({ user: 'alice', password: 'hunter2' }, 'auth ok');
  const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
  assert.equal(lines.length, 1);
  const line = JSON.parse(lines[0]) as Record<string, unknown>;
  assert.equal(line.msg, 'auth ok');
  assert.equal(line.user, 'alice');
  assert.equal(line.password, '[redacted]');
  assert.ok(!lines[0].includes('hunter2'));
});

test('a process that dies at once after logging has still written the line (stderr)', () => {
  const src = path.resolve('src/observability/log.ts');
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', '-e', `const { createLogger } = await import(${JSON.stringify(src)}); createLogger({ name: 't' }).warn('last words'); process.kill(process.pid, 'SIGKILL');`],
    { encoding: 'utf8', input: '' },
  );
  assert.equal(r.signal, 'SIGKILL');
  assert.match(r.stderr, /"msg":"last words"/);
});
