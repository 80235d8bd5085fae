// Calibration daemon: facteur's own socket server (AuthService + serveConnections) in front of an instant in-memory backend.
// It measures the ceiling of the protocol layer plus the load generator, so the real cells can be read against it.
// Trusts its argv (socket path, user count); the backend still compares passwords, so a wrong one gets NO.
import fs from 'node:fs';
import { AuthService } from '../../src/auth/daemon/server.js';
import { listenSaslauthd, socketLayerFromEnv } from '../../src/auth/daemon/listener.js';
import { ok, fail, type AuthBackend } from '../../src/auth/types.js';
import { createLogger } from '../../src/observability/log.js';

const [socketPath, countText] = process.argv.slice(2);
const table = new Map<string, string>();
for (let i = 0; i < Number(countText); i++) table.set(`user${i}`, `pass${i}`);
const backend: AuthBackend = {
  name: 'null',
  verify: async (c) => (table.get(c.login) === c.password ? ok() : fail()),
};
const log = createLogger({ name: 'null-daemon', level: 'warn' });
const service = new AuthService({ backend, realmJoin: false, maxInflight: 256, readTimeoutMs: 30_000, backendTimeoutMs: 30_000, verbose: false, log });
fs.rmSync(socketPath, { force: true });
const listener = await listenSaslauthd(socketPath, service, { readTimeoutMs: 30_000, log, layer: socketLayerFromEnv() });
process.on('SIGTERM', () => void listener.close().then(() => process.exit(0)));
