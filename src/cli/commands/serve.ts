// `facteur serve`: reads the configuration, wires the password verifier, sender policy, spool and delivery into the SMTP
// service and runs it. Without --config it runs the embedded default (127.0.0.1 high ports, ./.facteur). Trusts its config.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import os from 'node:os';
import cluster from 'node:cluster';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { loadConfigFile, durationMs, type ConfigValues } from '../../config/load.js';
import { loadCyrusSaslConfig, socketVerifier, inProcessVerifier, type PasswordVerifier } from '../../auth/client/index.js';
import { createBackend } from '../../auth/daemon/run.js';
import { readUsersFile } from '../../auth/backends/usersfile/store.js';
import { userAddresses } from '../../auth/backends/usersfile/format.js';
import { createLogger, type Logger } from '../../observability/log.js';
import { parseSenderMap, SenderPolicy, type SenderMap } from '../../policy/sender.js';
import { PenaltyBox } from '../../policy/penalty.js';
import { listenersFromConfig, startSmtpService, type ConnectionAdmission, type ListenerKind, type RunningSmtp } from '../../smtp/server.js';
import type { SharedListen } from '../../smtp/reuseport.js';
import type { QueueWriter } from '../../queue/types.js';
import { Spool } from '../../queue/spool.js';
import { startDelivery, startDeliveryThread, deliveryOptionsFromConfig, queueDirFromConfig, type DeliveryHandle, type DeliveryResult } from '../../delivery/index.js';
import { ConfigError, UsageError } from '../../lib/errors.js';
import { rateLimiterFromConfig, type ratelimit, type RateStore } from '../../policy/ratelimit.js';
import type { SectionValues } from '../../config/schema.js';
import { createMetrics, type FacteurMetrics } from '../../observability/metrics.js';
import { startObservabilityServer, parseListen, type ObservabilityServer } from '../../observability/http.js';

const run$ = promisify(execFile);

const USAGE = `usage: facteur serve [--config FILE] [--data DIR]

  --config FILE   TOML configuration (see 'facteur config --defaults'); also FACTEUR_CONFIG.
                  Without it facteur runs its embedded default: 127.0.0.1 ports 2525 (inbound), 2587 (submission,
                  STARTTLS) and 2465 (submissions, implicit TLS), local domain 'localhost', users file <data>/users,
                  a self-signed certificate generated in <data>/tls.
  --data DIR      data directory (default ./.facteur for the embedded default, [server] data_dir otherwise)
`;

/** The embedded default, applied under the environment overrides when no configuration file is given. */
export const EMBEDDED = `
[server]
hostname = "localhost"
local_domains = ["localhost"]
[inbound]
listen = ["127.0.0.1:2525"]
[submission]
listen = ["127.0.0.1:2587"]
[submissions]
listen = ["127.0.0.1:2465"]
[metrics]
listen = ""
`;

export interface ServeOptions {
  config: ConfigValues;
  /** Override the queue (tests; no delivery then); default: the spool ([queue] dir) with the delivery scheduler. */
  queue?: QueueWriter;
  /** Override the verifier (tests); default: from [auth]. */
  verifier?: PasswordVerifier;
  log?: Logger;
  /** Start the delivery scheduler (default true). */
  delivery?: boolean;
  metrics?: FacteurMetrics;
  /** Brute-force defence (tests inject one with other thresholds); default: a PenaltyBox with the built-in thresholds. */
  penalty?: PenaltyBox;
  /** Re-read the configuration on reload (the CLI re-reads --config); default: keep the one given. */
  reread?: () => Promise<ConfigValues>;
  /** On stop, how long sessions in the middle of a transaction may take to finish (default 2 s; the CLI uses 30 s). */
  shutdownTimeoutMs?: number;
  /** Start the /metrics and /health endpoint when [metrics] listen is set (default true; a worker leaves it to its primary). */
  observability?: boolean;
  /** In a worker of a multi-process server: the state kept by the primary for all workers (see ../cluster/). */
  shared?: SharedState;
}

/** What the workers of a multi-process server share through their primary, so that limits hold over all of them. */
export interface SharedState {
  /** Simultaneous connections, counted over all workers. */
  admission: ConnectionAdmission;
  /** Rate-limit counters when [ratelimit] keeps them in memory (Redis is shared by itself). */
  memoryRateStore: RateStore;
  /** A member's addresses learned at AUTH here, told to the other workers. */
  onLearn(login: string, addresses: readonly string[]): void;
  /** serve() hands over its sender policy, so that addresses learned by the other workers reach it. */
  attachSender(sender: SenderPolicy): void;
  /** Each listener's address as the primary reserved it, when the workers listen with SO_REUSEPORT (else round-robin). */
  listen?: SharedListen[];
}

export interface Served extends RunningSmtp {
  dataDir: string;
  /**
   * SIGHUP: re-read the configuration, the TLS certificate and key, the sender map and the users file's addresses. Everything
   * is read and checked before anything changes, so a failure keeps the previous state whole. Sessions in progress keep their
   * TLS session; new ones get the new certificate. Listener, auth, queue and delivery settings take effect at restart.
   */
  reload(): Promise<void>;
  metrics: FacteurMetrics;
  /** The /metrics and /health endpoint, when [metrics] listen is set. */
  observability?: ObservabilityServer;
  stopAll(): Promise<void>;
}

/** Certificate and key: the configured files, or a self-signed pair generated once into <data>/tls with the openssl CLI. */
export async function tlsFiles(cfg: ConfigValues, dataDir: string, hostname: string, log: Logger): Promise<{ key: Buffer; cert: Buffer }> {
  const s = cfg.server;
  if (s.tls_cert || s.tls_key) {
    if (!s.tls_cert || !s.tls_key) throw new ConfigError('[server] tls_cert and tls_key go together: set both, or neither for a generated self-signed certificate');
    try {
      return { cert: fs.readFileSync(s.tls_cert as string), key: fs.readFileSync(s.tls_key as string) };
    } catch (err) {
      throw new ConfigError(`[server] tls_cert/tls_key: ${(err as Error).message}`);
    }
  }
  const dir = path.join(dataDir, 'tls');
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  if (!fs.existsSync(cert) || !fs.existsSync(key)) {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const cn = hostname.replace(/[^A-Za-z0-9.-]/g, '') || 'localhost';
    try {
      await run$('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '3650', '-subj', `/CN=${cn}`, '-addext', `subjectAltName=DNS:${cn},IP:127.0.0.1`, '-keyout', key, '-out', cert]);
    } catch (err) {
      throw new ConfigError(`cannot generate a self-signed certificate with openssl (${(err as Error).message.split('\n')[0]}): install openssl, or set [server] tls_cert and tls_key`);
    }
    await fsp.chmod(key, 0o600);
    log.warn({ cert }, 'generated a self-signed certificate; set [server] tls_cert/tls_key for a real one');
  }
  return { cert: fs.readFileSync(cert), key: fs.readFileSync(key) };
}

interface VerifierSetup {
  verifier: PasswordVerifier;
  mechList: string[];
  joinRealm: boolean;
  /** The users file, when the backend is one: its users' addresses are known member addresses from the start. */
  usersFile?: string;
}

async function makeVerifier(cfg: ConfigValues, dataDir: string, log: Logger): Promise<VerifierSetup> {
  const a = cfg.auth;
  let mechList = (a.mech_list as string[]).map((m) => m.toUpperCase());
  let backend = a.backend as string;
  let socket = a.saslauthd_path as string;
  if (a.cyrus_config) {
    const cy = await loadCyrusSaslConfig(a.cyrus_config as string);
    if (!cy.pwcheck_method.includes('saslauthd')) throw new ConfigError(`${a.cyrus_config}: pwcheck_method is '${cy.pwcheck_method.join(' ')}'; facteur supports 'saslauthd' (point saslauthd_path at facteur authd or Cyrus saslauthd)`);
    backend = 'saslauthd';
    socket = cy.saslauthd_path;
    if (cy.mech_list.length) mechList = cy.mech_list;
    const unsupported = mechList.filter((m) => m !== 'PLAIN' && m !== 'LOGIN');
    if (unsupported.length) log.warn({ unsupported }, 'mech_list names mechanisms facteur does not offer; offering PLAIN/LOGIN only');
    mechList = mechList.filter((m) => m === 'PLAIN' || m === 'LOGIN');
  }
  if (!mechList.length) throw new ConfigError(`${a.cyrus_config ? `${a.cyrus_config}: mech_list` : '[auth] mech_list'} leaves no mechanism facteur offers: list PLAIN and/or LOGIN`);
  if (backend === 'saslauthd') return { verifier: socketVerifier(socket), mechList, joinRealm: false };
  let option = (a.option as string) || undefined;
  if (backend === 'file' && !option) {
    option = path.join(dataDir, 'users');
    if (!fs.existsSync(option)) {
      await fsp.mkdir(dataDir, { recursive: true, mode: 0o700 });
      await fsp.writeFile(option, '', { mode: 0o600 });
    }
  }
  const b = await createBackend(backend, option, log);
  return { verifier: inProcessVerifier(b), mechList, joinRealm: true, usersFile: backend === 'file' ? option : undefined };
}

async function loadSenderMap(file: string): Promise<SenderMap> {
  if (!file) return new Map();
  try {
    return parseSenderMap(await fsp.readFile(file, 'utf8'), file);
  } catch (err) {
    throw new ConfigError(`[policy] sender_map: ${(err as Error).message}`);
  }
}

export async function openQueue(cfg: ConfigValues, log: Logger): Promise<Spool> {
  const spool = await Spool.open(queueDirFromConfig(cfg as Record<string, Record<string, unknown>>), {
    verify: cfg.queue?.verify_on_start !== false,
    lock: true, // a second server on the same queue would deliver every message twice
    onDiscard: (file, reason) => log.warn({ file, reason }, 'queue: discarded a partial or damaged file at start'),
  });
  const why = spool.commitWriter.why;
  if (why) log.warn({ reason: why }, 'queue: the C commit job is not built; commits make their file calls on the event loop (slower): run npm run build:native');
  return spool;
}

/** Build and start everything a configuration describes. Exported for the tests, which inject a queue or verifier. */
export async function serve(o: ServeOptions): Promise<Served> {
  const cfg = o.config;
  const s = cfg.server;
  const log = o.log ?? createLogger({ name: 'facteur-smtp', level: s.log_level as string });
  const dataDir = path.resolve(s.data_dir as string);
  const hostname = (s.hostname as string) || os.hostname();
  const tls = await tlsFiles(cfg, dataDir, hostname, log);
  const v: VerifierSetup = o.verifier ? { verifier: o.verifier, mechList: (cfg.auth.mech_list as string[]).map((m) => m.toUpperCase()), joinRealm: true } : await makeVerifier(cfg, dataDir, log);
  const listeners = listenersFromConfig(cfg);
  const sharedListen = o.shared?.listen;
  // The primary reserved these from the configuration it started with; a worker whose file has changed since cannot follow.
  if (sharedListen && (sharedListen.length !== listeners.length || sharedListen.some((x, i) => x.kind !== listeners[i].kind))) {
    throw new ConfigError('the listeners in the configuration file changed since facteur started; restart it to apply them');
  }
  const spool = o.queue ? undefined : await openQueue(cfg, log);
  const q = { queue: o.queue ?? (spool as QueueWriter) };
  const deliveryOptions = () => deliveryOptionsFromConfig(cfg as Record<string, Record<string, unknown>>);
  // The delivery thread boots (~0.5 s) while the rest is set up; it is running before the listeners open, so that a port
  // that answers means a server that also handles its signals (SIGHUP, SIGTERM) and delivers.
  const metrics = o.metrics ?? createMetrics();
  // The queue's owner exposes its size and the delivery results (a worker of the multi-process mode leaves both to its primary).
  if (spool) metrics.setQueueSource(() => spool.sizes());
  const countResult = (r: DeliveryResult, n = 1) => metrics.deliveries.inc({ result: r }, n);
  const deliveryThread =
    o.delivery !== false && spool && cfg.delivery.thread
      ? startDeliveryThread({ spool, options: deliveryOptions(), log, logLevel: s.log_level as string, onResults: (c) => Object.entries(c).forEach(([r, n]) => countResult(r as DeliveryResult, n)) })
      : undefined;
  deliveryThread?.catch(() => undefined); // its failure is handled where it is awaited, below
  /** A start that fails after this point leaves no thread running (it would keep the process alive) and no spool lock. */
  const undoStart = async (): Promise<void> => {
    await deliveryThread?.then((d) => d.stop()).catch(() => undefined);
    await spool?.close();
  };
  const pol = cfg.policy;
  let rl: ReturnType<typeof rateLimiterFromConfig> | undefined;
  let sender: SenderPolicy;
  let running: RunningSmtp;
  const learnUsersFile = async () => {
    if (!v.usersFile) return;
    // Members' addresses from the users file, so port 25 can refuse them as unauthenticated senders (re-read on SIGHUP;
    // addresses of users added since are also learned at their first AUTH).
    const parsed = await readUsersFile(v.usersFile).catch(() => null);
    for (const e of parsed?.users.values() ?? []) sender.learn(e.login, userAddresses(e), { share: false }); // every worker reads the file
  };
  try {
    rl = cfg.ratelimit ? rateLimiterFromConfig(cfg.ratelimit as SectionValues<typeof ratelimit.params>, { log, metrics, memoryStore: o.shared?.memoryRateStore }) : undefined;
    sender = new SenderPolicy({ map: await loadSenderMap(pol.sender_map as string), loginIsAddress: pol.login_is_address as boolean, onLearn: o.shared?.onLearn });
    o.shared?.attachSender(sender);
    await learnUsersFile();
    if (deliveryThread) await deliveryThread;
    running = await startSmtpService({
      hostname,
      localDomains: s.local_domains as string[],
      listeners,
      tls,
      maxMessageSize: s.max_message_size as number,
      maxRecipients: s.max_recipients as number,
      maxConnections: s.max_connections as number,
      maxConnectionsPerIp: s.max_connections_per_ip as number,
      timeoutMs: durationMs(s.timeout as string),
      receivedAuthUser: s.received_auth_user as boolean,
      vrfy: s.vrfy as boolean,
      greetingDelayMs: durationMs(s.greeting_delay as string),
      bareNewline: s.bare_newline as 'reject' | 'normalize',
      mechList: v.mechList,
      verifier: v.verifier,
      authService: cfg.auth.service as string,
      authRealm: cfg.auth.realm as string,
      authTimeoutMs: durationMs(cfg.auth.timeout as string),
      joinRealm: v.joinRealm,
      sender,
      senderCheck: pol.sender_check as 'reject' | 'allow',
      fromHeaderCheck: pol.from_header_check as 'reject' | 'allow',
      unauthMemberSender: pol.unauth_member_sender as 'reject' | 'allow',
      nullSender: pol.null_sender as boolean,
      queue: q.queue,
      log,
      penalty: o.penalty ?? new PenaltyBox(),
      rateLimiter: rl?.limiter,
      metrics,
      authBackendName: (cfg.auth.cyrus_config ? 'saslauthd' : (cfg.auth.backend as string)) || 'saslauthd',
      shutdownTimeoutMs: o.shutdownTimeoutMs,
      admission: o.shared?.admission,
      sharedListen,
    });
  } catch (err) {
    await rl?.close();
    await undoStart();
    throw err;
  }
  let observability: ObservabilityServer | undefined;
  const listen = cfg.metrics?.listen as string | undefined;
  if (listen && o.observability !== false) {
    const hp = parseListen(listen)!;
    observability = await startObservabilityServer({ registry: metrics.registry, host: hp.host, port: hp.port, log, checks: { smtp: () => running.bound.length > 0 } });
  }
  let delivery: DeliveryHandle | undefined;
  if (o.delivery !== false && spool) delivery = deliveryThread ? await deliveryThread : startDelivery({ spool, options: deliveryOptions(), log, onResult: countResult });
  return {
    ...running,
    dataDir,
    metrics,
    observability,
    async reload() {
      const next = o.reread ? await o.reread() : cfg;
      const nextTls = await tlsFiles(next, dataDir, hostname, log);
      const nextMap = await loadSenderMap(next.policy.sender_map as string);
      running.setTls(nextTls);
      sender.setMap(nextMap);
      await learnUsersFile();
      const restartOnly = ['inbound', 'submission', 'submissions', 'auth', 'queue', 'delivery', 'ratelimit', 'metrics'].filter((k) => JSON.stringify(next[k]) !== JSON.stringify(cfg[k]));
      const serverRestart = ['hostname', 'data_dir', 'local_domains', 'max_message_size', 'max_recipients', 'max_connections', 'max_connections_per_ip', 'timeout', 'greeting_delay', 'log_level'].filter((k) => JSON.stringify(next.server[k]) !== JSON.stringify(s[k]));
      if (restartOnly.length || serverRestart.length) log.warn({ sections: restartOnly, server: serverRestart }, 'these settings changed but take effect only at restart');
      log.info('reloaded the configuration: TLS certificate, sender map, users file addresses');
    },
    async stopAll() {
      await observability?.close();
      await running.close();
      await rl?.close();
      await delivery?.stop();
      await spool?.close();
      await v.verifier.close?.();
    },
  };
}

export async function run(argv: string[]): Promise<number> {
  let configFile = process.env.FACTEUR_CONFIG || undefined;
  let dataDir: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--config' || a === '-c') configFile = argv[++i];
    else if (a === '--data') dataDir = argv[++i];
    else if (a === '-h' || a === '--help') {
      process.stdout.write(USAGE);
      return 0;
    } else throw new UsageError(`serve: unknown argument ${a}\n${USAGE}`);
  }
  if ((configFile === undefined && argv.includes('--config')) || (dataDir === undefined && argv.includes('--data'))) throw new UsageError(`serve: option needs a value\n${USAGE}`);
  const embedded = !configFile;
  let config: ConfigValues;
  if (embedded) {
    const { loadConfig } = await import('../../config/load.js');
    config = await loadConfig({ text: EMBEDDED, file: '(embedded default)', env: process.env });
    if (!process.env.FACTEUR_SERVER_DATA_DIR) config.server.data_dir = dataDir ?? './.facteur';
  } else {
    config = await loadConfigFile(configFile);
  }
  if (dataDir) config.server.data_dir = dataDir;
  const reread = async (): Promise<ConfigValues> => {
    if (embedded) return config;
    const next = await loadConfigFile(configFile);
    if (dataDir) next.server.data_dir = dataDir;
    return next;
  };
  const shutdownTimeoutMs = 30_000;
  // [server] workers > 1: this process is the primary, and cluster.fork() runs this same command line in each worker.
  if (cluster.isWorker) return (await import('../cluster/worker.js')).runWorker({ config, reread, shutdownTimeoutMs });
  const { workerCount, startPrimary } = await import('../cluster/primary.js');
  const workers = workerCount(config);
  const served: Pick<Served, 'bound' | 'dataDir' | 'reload' | 'stopAll'> =
    workers > 1
      ? await startPrimary({ config, workers, reread, shutdownTimeoutMs, log: createLogger({ name: 'facteur-smtp', level: config.server.log_level as string }) })
      : await serve({ config, reread, shutdownTimeoutMs });
  if (embedded) printWelcome(served, config);
  const onHup = () => {
    served.reload().catch((err: unknown) => process.stderr.write(`facteur serve: reload failed, keeping the previous configuration and certificate: ${(err as Error).message}\n`));
  };
  process.on('SIGHUP', onHup);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  process.off('SIGHUP', onHup);
  // Graceful: the listeners stop accepting now; idle sessions get 421, sessions in a transaction get up to 30 s to finish.
  process.stderr.write('facteur serve: stopping: no new connections; finishing sessions in progress\n');
  await served.stopAll();
  return 0;
}

function printWelcome(served: Pick<Served, 'bound' | 'dataDir'>, cfg: ConfigValues): void {
  const r = path.relative(process.cwd(), served.dataDir) || '.';
  const rel = r.startsWith('..') ? served.dataDir : r;
  const port = (k: ListenerKind) => served.bound.find((b) => b.kind === k)?.port;
  const domain = (cfg.server.local_domains as string[])[0] ?? 'localhost';
  process.stdout.write(`facteur is running (embedded default, data in ${rel}/)
  inbound      127.0.0.1:${port('inbound')}   mail for @${domain}, no AUTH
  submission   127.0.0.1:${port('submission')}   STARTTLS + AUTH PLAIN/LOGIN
  submissions  127.0.0.1:${port('submissions')}   implicit TLS + AUTH

Add a user:
  bin/facteur user add --file ${rel}/users alice@${domain}
Send a first message:
  swaks --server 127.0.0.1:${port('submission')} --tls --auth PLAIN \\
        --auth-user alice@${domain} --auth-password 'PASSWORD' --from alice@${domain} --to alice@${domain}
Stop with Ctrl-C.
`);
}
