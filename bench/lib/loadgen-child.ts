// Child-process entry of the load generator: runs each LoadSpec it is sent over IPC and sends back the LoadResult.
// Trusts its parent (the bench orchestrator) for the specs; keeps the generator's CPU apart from the daemons measured.
import { runLoad, type LoadSpec } from './loadgen.js';

interface Job {
  id: number;
  spec: LoadSpec;
}

process.on('message', (msg: Job) => {
  runLoad(msg.spec).then(
    (result) => process.send!({ id: msg.id, result }),
    (err: Error) => process.send!({ id: msg.id, error: err.message }),
  );
});
process.send!({ ready: true });
