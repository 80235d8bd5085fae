// Child-process entry of the SMTP load generator: runs the jobs its parent sends over IPC (sessions, idle pool).
// Trusts its parent (bench/smtp.ts) for the jobs; runs apart so the generator's CPU is not the orchestrator's.
import { runSessions, IdlePool, type SessionSpec } from './client.js';

export type JobBody =
  | { kind: 'sessions'; spec: SessionSpec }
  | { kind: 'idle-open'; port: number; count: number; parallel: number; timeoutMs: number }
  | { kind: 'idle-alive' }
  | { kind: 'idle-close' };
type Job = JobBody & { id: number };

const pool = new IdlePool();

async function handle(job: Job): Promise<unknown> {
  switch (job.kind) {
    case 'sessions':
      return runSessions(job.spec);
    case 'idle-open':
      return pool.open(job.port, job.count, job.parallel, job.timeoutMs);
    case 'idle-alive':
      return pool.alive();
    case 'idle-close':
      pool.close();
      return 0;
  }
}

process.on('message', (job: Job) => {
  handle(job).then(
    (result) => process.send!({ id: job.id, result }),
    (err: Error) => process.send!({ id: job.id, error: err.message }),
  );
});
process.on('disconnect', () => process.exit(0));
process.send!({ ready: true });
