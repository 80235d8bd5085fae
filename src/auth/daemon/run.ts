// Runs authd as saslauthd does: run directory, pid file, single instance, the `mux` socket, signals, optional detach.
// Trusts its parsed options; the run directory's permissions are the access control (only the MTA's group gets in).
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { mechanisms, mechanismNames } from '../backends/index.js';
import { CredentialCache, DEFAULT_CAPACITY, UPSTREAM_BUCKET_BYTES } from './cache.js';
import { AuthService } from './server.js';
import { listenSaslauthd, socketLayerFromEnv } from './listener.js';
import type { AuthdOptions } from './options.js';
import type { AuthBackend } from '../types.js';
import { ConfigError, FacteurError } from '../../lib/errors.js';
import { PenaltyBox } from '../../policy/penalty.js';
import { createMetrics } from '../../observability/metrics.js';
import { startObservabilityServer, parseListen, type ObservabilityServer } from '../../observability/http.js';
import { createLogger, type Logger } from '../../observability/log.js';

export const VERSION = '0.1.0';
export const SOCKET_NAME = 'mux';
export const PID_NAME = 'saslauthd.pid';

/** Exit status when another instance holds the run directory (as saslauthd). */
export const EXIT_ALREADY_RUNNING = 2;

export async function createBackend(mech: string, option: string | undefined, log: Logger): Promise<AuthBackend> {
  const load = mechanisms[mech];
  if (!load) throw new ConfigError(`unknown authentication mechanism: ${mech} (facteur knows: ${mechanismNames.join(' ')})`);
  try {
    const factory = await load();
    return await factory(option, { log: (msg) => log.info({ mech }, msg) });
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new ConfigError(`failed to initialize mechanism ${mech}: ${reason}`, { cause: err });
  }
}

/** Look a group name up in /etc/group. */
export function groupId(name: string): number | undefined {
  if (/^\d+$/.test(name)) return Number(name);
  try {
    for (const line of fs.readFileSync('/etc/group', 'utf8').split('\n')) {
      const [n, , gid] = line.split(':');
      if (n === name) return Number(gid);
    }
  } catch {
    /* no /etc/group: no group */
  }
  return undefined;
}

async function socketAnswers(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(p);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Prepare the run directory: create it 0710 with the MTA's group, or warn when an existing one is open to everyone. */
async function prepareRunDir(o: AuthdOptions, log: Logger): Promise<void> {
  const gid = o.group !== undefined ? groupId(o.group) : groupId('sasl');
  if (o.group !== undefined && gid === undefined) throw new ConfigError(`--group ${o.group}: no such group in /etc/group`);
  let created = false;
  try {
    await fsp.mkdir(o.runDir, { mode: 0o710 });
    created = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new ConfigError(`cannot create run directory ${o.runDir}: ${(err as Error).message} (create its parent, or choose another -m)`, { cause: err });
    }
  }
  if (gid !== undefined && (created || o.group !== undefined) && process.getuid?.() === 0) {
    await fsp.chown(o.runDir, 0, gid);
    await fsp.chmod(o.runDir, 0o710);
  }
  const st = await fsp.stat(o.runDir);
  if (!st.isDirectory()) throw new ConfigError(`-m ${o.runDir} is not a directory`);
  if (st.mode & 0o001) {
    log.warn({ runDir: o.runDir, mode: (st.mode & 0o777).toString(8) }, 'run directory is open to every local user: any of them can test passwords; chmod 0710 and give it the MTA group (chgrp sasl)');
  }
}

export interface RunningAuthd {
  socketPath: string;
  service: AuthService;
  stop(): Promise<void>;
}

/** Start serving in this process. Resolves once the socket accepts connections. */
export async function startAuthd(o: AuthdOptions, log: Logger): Promise<RunningAuthd> {
  await prepareRunDir(o, log);
  const socketPath = path.join(o.runDir, SOCKET_NAME);
  const pidPath = path.join(o.runDir, PID_NAME);

  // Single instance: a live pid file whose socket answers means another daemon owns this directory.
  try {
    const pid = Number((await fsp.readFile(pidPath, 'utf8')).trim());
    let alive = false;
    if (pid > 0 && pid !== process.pid) {
      try {
        process.kill(pid, 0);
        alive = true;
      } catch {
        alive = false;
      }
    }
    if (alive && (await socketAnswers(socketPath))) {
      throw new FacteurError('ERUNNING', `Another instance of saslauthd is currently running (pid ${pid}, ${socketPath})`);
    }
  } catch (err) {
    if (err instanceof FacteurError) throw err;
  }

  const backend = await createBackend(o.mech, o.mechOption, log);
  let listen;
  if (o.metricsListen !== undefined) {
    listen = parseListen(o.metricsListen);
    if (!listen) throw new ConfigError(`--metrics ${o.metricsListen}: expected host:port, e.g. 127.0.0.1:9726`);
  }
  const metrics = listen ? createMetrics() : undefined;
  const cache = o.cache
    ? new CredentialCache({ ttlSeconds: o.cacheTtlSeconds, capacity: o.cacheKiB ? Math.floor((o.cacheKiB * 1024) / UPSTREAM_BUCKET_BYTES) : DEFAULT_CAPACITY })
    : undefined;
  const service = new AuthService({
    backend,
    cache,
    realmJoin: o.realmJoin,
    maxInflight: o.maxInflight,
    readTimeoutMs: o.readTimeoutSeconds * 1000,
    backendTimeoutMs: o.backendTimeoutSeconds * 1000,
    verbose: o.verbose,
    log,
    penalty: o.penalty ? new PenaltyBox() : undefined,
    metrics,
  });
  let observability: ObservabilityServer | undefined;
  if (listen && metrics) {
    observability = await startObservabilityServer({ registry: metrics.registry, host: listen.host, port: listen.port, log });
    log.info({ metrics: `http://${observability.host}:${observability.port}/metrics` }, 'metrics endpoint ready');
  }

  await fsp.rm(socketPath, { force: true });
  // As upstream: the pid file is written before the socket is bound, so whoever sees the socket also finds the pid.
  await fsp.writeFile(pidPath, `${process.pid}\n`, { mode: 0o600 });
  // Backlog 32 as upstream would be too small for an asynchronous server: the listener asks for Node's default (511).
  const listener = await listenSaslauthd(socketPath, service, { readTimeoutMs: o.readTimeoutSeconds * 1000, log, layer: socketLayerFromEnv() });
  // The directory (0710, MTA group) is the gate, as upstream; the socket itself must be connectable by that group.
  await fsp.chmod(socketPath, 0o777);
  log.info({ socket: socketPath, socketLayer: listener.layer, mech: o.mech, cache: o.cache, ttl: o.cache ? o.cacheTtlSeconds : undefined }, 'facteur authd ready');

  let stopped = false;
  return {
    socketPath,
    service,
    async stop() {
      if (stopped) return;
      stopped = true;
      await listener.close();
      await observability?.close();
      await Promise.all([fsp.rm(socketPath, { force: true }), fsp.rm(pidPath, { force: true })]);
      await service.backend.close?.();
    },
  };
}

/** Re-create the backend from its configuration (SIGHUP); on error keep the old one and say why. */
export async function reloadBackend(running: RunningAuthd, o: AuthdOptions, log: Logger): Promise<void> {
  try {
    const fresh = await createBackend(o.mech, o.mechOption, log);
    const old = running.service.backend;
    running.service.backend = fresh;
    log.info({ mech: o.mech }, 'configuration reloaded');
    await old.close?.();
  } catch (err) {
    log.error({ mech: o.mech, err: { message: (err as Error).message } }, 'reload failed, keeping the previous configuration');
  }
}

const DETACHED_ENV = 'FACTEUR_AUTHD_DETACHED';

/** Daemon entry: foreground (-d/-f) or detach like saslauthd (the parent exits with the child's start status). */
export async function runDaemon(o: AuthdOptions): Promise<number> {
  if (!o.foreground && process.env[DETACHED_ENV] !== '1') return detach();
  const log = createLogger({ name: 'authd', level: o.verbose ? 'debug' : 'info', file: o.logFile });
  // Signals are taken from the start: a SIGTERM during startup stops the daemon once it is up, never kills it half-made.
  let stopSignal: string | undefined;
  const hooks: { onStop?: (sig: string) => void; reload?: () => void } = {};
  const stopHandler = (sig: string) => {
    stopSignal ??= sig;
    hooks.onStop?.(sig);
  };
  process.once('SIGTERM', () => stopHandler('SIGTERM'));
  process.once('SIGINT', () => stopHandler('SIGINT'));
  process.on('SIGPIPE', () => undefined);
  process.on('SIGHUP', () => hooks.reload?.());
  let running: RunningAuthd;
  try {
    running = await startAuthd(o, log);
  } catch (err) {
    const code = err instanceof FacteurError && err.code === 'ERUNNING' ? EXIT_ALREADY_RUNNING : 1;
    process.stderr.write(`facteur authd: ${(err as Error).message}\n`);
    log.flush();
    return code;
  }
  process.send?.('ready');
  process.disconnect?.();
  hooks.reload = () => void reloadBackend(running, o, log);
  await new Promise<void>((resolve) => {
    hooks.onStop = (sig: string) => {
      log.info({ signal: sig }, 'shutting down');
      void running.stop().then(resolve, resolve);
    };
    if (stopSignal) hooks.onStop(stopSignal);
  });
  log.flush();
  return 0;
}

function detach(): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
      detached: true,
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      env: { ...process.env, [DETACHED_ENV]: '1' },
    });
    child.once('message', (m) => {
      if (m === 'ready') {
        child.unref();
        child.disconnect();
        resolve(0);
      }
    });
    child.once('exit', (code) => resolve(code ?? 1));
  });
}
