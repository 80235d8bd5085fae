// facteur's SMTP service: builds one engine listener per configured listener and plugs in the policy hooks (connection
// limits, AUTH through the password verifier, sender ownership, relay, message checks, hand-off to the queue).
// Trusts the QueueWriter to be durable and the verifier's verdicts; everything from the network is untrusted.
import type { Readable } from 'node:stream';
import { PassThrough } from 'node:stream';
import tls from 'node:tls';
import type { SMTPServerAddress, SMTPServerAuthentication, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { Logger } from 'pino';
import { EngineServer, type ListenerPolicy } from './engine.js';
import { MessageInspector } from './inspect.js';
import { reusePortHandle, type SharedListen } from './reuseport.js';
import { splitLogin, type PasswordVerifier } from '../auth/client/index.js';
import type { Envelope, QueueWriter } from '../queue/types.js';
import type { AuthResult } from '../auth/types.js';
import { Replies, SmtpReply } from '../mail/reply.js';
import { ConfigError } from '../lib/errors.js';
import { unbracketed } from '../lib/host.js';
import type { ConfigValues } from '../config/load.js';
import { extractAddresses, headerValues, receivedHeader } from '../mail/headers.js';
import { checkRecipient, normalizeDomain } from '../policy/relay.js';
import { ConnectionLimiter } from '../policy/connlimit.js';
import type { SenderPolicy } from '../policy/sender.js';
import type { PenaltyBox } from '../policy/penalty.js';
import { rateLimitReply, type RateLimiter } from '../policy/ratelimit.js';
import type { FacteurMetrics } from '../observability/metrics.js';

export type ListenerKind = 'inbound' | 'submission' | 'submissions';

export interface ListenerConfig {
  kind: ListenerKind;
  host: string;
  port: number;
  /** AUTH offered (after TLS) and required before MAIL. */
  authRequired: boolean;
  starttls: boolean;
}

export interface SmtpServiceOptions {
  hostname: string;
  localDomains: string[];
  listeners: ListenerConfig[];
  /** In a worker of a multi-process server: the address of each listener (same order) as its primary reserved it (SO_REUSEPORT). */
  sharedListen?: SharedListen[];
  tls: { key: string | Buffer; cert: string | Buffer };
  maxMessageSize: number;
  maxRecipients: number;
  maxConnections: number;
  maxConnectionsPerIp: number;
  timeoutMs: number;
  receivedAuthUser: boolean;
  vrfy: boolean;
  greetingDelayMs: number;
  bareNewline: 'reject' | 'normalize';
  mechList: string[];
  verifier: PasswordVerifier;
  authService: string;
  authRealm: string;
  authTimeoutMs: number;
  /** In-process backends receive the whole authentication id as login (like `authd -r`); sockets get libsasl's split. */
  joinRealm: boolean;
  sender: SenderPolicy;
  senderCheck: 'reject' | 'allow';
  fromHeaderCheck: 'reject' | 'allow';
  unauthMemberSender: 'reject' | 'allow';
  nullSender: boolean;
  queue: QueueWriter;
  log: Logger;
  penalty?: PenaltyBox;
  /** Connections per IP per minute, messages and recipients per user per hour. */
  rateLimiter?: RateLimiter;
  metrics?: FacteurMetrics;
  /** Backend label for the auth metrics. */
  authBackendName?: string;
  /** On close, how long sessions in the middle of a transaction may take to finish before 421 (default 2 s). */
  shutdownTimeoutMs?: number;
  /**
   * Who counts simultaneous connections (default: this process, with maxConnections and maxConnectionsPerIp). A
   * multi-process server counts in its primary, so the limits hold over all workers.
   */
  admission?: ConnectionAdmission;
}

/** Admit a connection from `ip`: a release function, or undefined when a limit is reached. May answer asynchronously. */
export interface ConnectionAdmission {
  acquire(ip: string): (() => void) | undefined | Promise<(() => void) | undefined>;
}

interface AuthUser {
  login: string;
  addresses: string[];
}

interface FacteurSession extends SMTPServerSession {
  facteurRelease?: () => void;
  facteurClosed?: boolean;
}

/** Run an async hook and hand its reply (or a fail-closed 4xx) to an smtp-server callback. */
function hook(log: Logger, what: string, fn: () => Promise<SmtpReply | undefined>, cb: (err?: Error | null) => void): void {
  fn().then(
    (r) => cb(r ?? undefined),
    (err: unknown) => {
      log.error({ err }, `${what} failed`);
      cb(Replies.internal());
    },
  );
}

export interface RunningSmtp {
  /** Bound ports by listener kind, in configuration order. */
  bound: { kind: ListenerKind; host: string; port: number }[];
  /**
   * Graceful stop: stop accepting, answer idle sessions 421 at once, let sessions in the middle of a transaction finish
   * (bounded by shutdownTimeoutMs, then 421). Resolves once every listener is closed.
   */
  close(): Promise<void>;
  /** Use this certificate and key for new TLS sessions (STARTTLS and implicit); sessions already in TLS keep theirs. Throws if unusable. */
  setTls(tls: { key: string | Buffer; cert: string | Buffer }): void;
}

/** smtp-server's per-connection state used to tell an idle session from one inside a transaction. */
interface ConnState {
  _ready?: boolean;
  _upgrading?: boolean;
  _dataStream?: unknown;
  session?: SMTPServerSession;
  send(code: number, data: string): void;
  close(): void;
}

/** The enabled listeners, in the order [inbound], [submission], [submissions] and each one's listen list. */
export function listenersFromConfig(cfg: ConfigValues): ListenerConfig[] {
  const listeners: ListenerConfig[] = [];
  for (const kind of ['inbound', 'submission', 'submissions'] as ListenerKind[]) {
    const l = cfg[kind];
    if (!l.enabled) continue;
    for (const addr of l.listen as string[]) listeners.push({ kind, ...hostPort(addr), authRequired: l.auth === 'required', starttls: l.starttls as boolean });
  }
  if (!listeners.length) throw new ConfigError('no listener enabled: set enabled = true in [inbound], [submission] or [submissions]');
  return listeners;
}

function hostPort(v: string): { host: string; port: number } {
  const i = v.lastIndexOf(':');
  return { host: v.slice(0, i), port: Number(v.slice(i + 1)) };
}

/** A listener that cannot listen, said for its operator: which address, and why in words for the usual causes. */
export function listenError(l: { kind: ListenerKind; host: string; port: number }, err: NodeJS.ErrnoException): ConfigError {
  const change = `change [${l.kind}] listen`;
  const [why, fix] =
    err.code === 'EADDRINUSE'
      ? ['the address is already in use (another facteur or MTA running?)', `stop the other server or ${change}`]
      : err.code === 'EACCES'
        ? ['permission denied (ports below 1024 need CAP_NET_BIND_SERVICE or root)', `grant it or ${change}`]
        : err.code === 'EADDRNOTAVAIL'
          ? ['no network interface of this machine has that address', change]
          : err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN'
            ? ['the host name does not resolve', `${change} to an IP address`]
            : [err.message, change];
  return new ConfigError(`[${l.kind}] cannot listen on ${l.host}:${l.port}: ${why}; ${fix}`, { cause: err });
}

/** Close one listener gracefully (see RunningSmtp.close). */
function closeGracefully(srv: EngineServer): Promise<void> {
  const done = new Promise<void>((r) => srv.close(() => r()));
  for (const c of (srv as unknown as { connections: Set<ConnState> }).connections) {
    const busy = !c._ready || c._upgrading || !!c._dataStream || !!c.session?.envelope?.mailFrom;
    if (busy) continue;
    c.send(421, '4.3.2 Service shutting down, try again later');
    c.close();
  }
  return done;
}

const userOf = (s: SMTPServerSession): AuthUser | undefined => (s.user ? (s.user as AuthUser) : undefined);

export async function startSmtpService(o: SmtpServiceOptions): Promise<RunningSmtp> {
  const limiter: ConnectionAdmission = o.admission ?? new ConnectionLimiter(o.maxConnections, o.maxConnectionsPerIp);
  const localDomains = new Set(o.localDomains.map(normalizeDomain));
  const log = o.log;
  const servers: EngineServer[] = [];
  const bound: RunningSmtp['bound'] = [];

  for (const l of o.listeners) {
    const policy: ListenerPolicy = { kind: l.kind, implicitTls: l.kind === 'submissions', starttls: l.starttls, auth: l.authRequired, vrfy: o.vrfy, greetingDelayMs: o.greetingDelayMs };
    const srv = new EngineServer(policy, {
      name: o.hostname,
      banner: 'facteur',
      key: o.tls.key,
      cert: o.tls.cert,
      size: o.maxMessageSize,
      maxRecipients: o.maxRecipients,
      maxClients: o.maxConnections,
      socketTimeout: o.timeoutMs,
      closeTimeout: o.shutdownTimeoutMs ?? 2000,
      maxCommandLength: 4096,
      disableReverseLookup: true,
      authMethods: o.mechList.map((m) => m.toUpperCase()),
      logger: false,

      onConnect(session, cb) {
        const fsession = session as FacteurSession;
        // After the admission answer: refuse, or count the connection and go on to the rate check.
        const admit = (release: (() => void) | undefined) => {
          if (!release) {
            log.warn({ listener: l.kind, client: session.remoteAddress }, 'connection refused: limit reached');
            return cb(SmtpReply.temp('4.7.0', 'Too many connections, try again later', 421));
          }
          fsession.facteurRelease = () => {
            release();
            o.metrics?.connectionsActive.dec({ listener: l.kind });
          };
          o.metrics?.connections.inc({ listener: l.kind });
          o.metrics?.connectionsActive.inc({ listener: l.kind });
          if (!o.rateLimiter) return cb();
          hook(
            log,
            'connection rate check',
            async () => {
              const refusal = rateLimitReply(await o.rateLimiter!.connection(session.remoteAddress));
              if (refusal) log.warn({ listener: l.kind, client: session.remoteAddress }, 'connection refused: rate limit');
              return refusal;
            },
            cb,
          );
        };
        const admitted = limiter.acquire(session.remoteAddress);
        if (!(admitted instanceof Promise)) return admit(admitted);
        admitted.then(
          (release) => {
            // The client may have gone while we waited for the answer: give its place back at once.
            if (fsession.facteurClosed) release?.();
            else admit(release);
          },
          (err: unknown) => {
            log.error({ err, listener: l.kind }, 'connection admission failed');
            cb(Replies.internal()); // fail closed
          },
        );
      },

      onSecure(socket, session, cb) {
        const version = (socket as import('node:tls').TLSSocket).getProtocol?.() ?? 'unknown';
        o.metrics?.tlsSessions.inc({ listener: l.kind, version: version ?? 'unknown' });
        cb();
      },

      onClose(session) {
        (session as FacteurSession).facteurClosed = true;
        (session as FacteurSession).facteurRelease?.();
      },

      onAuth(auth, session, cb) {
        authenticate(o, l, auth, session).then(
          (user) => cb(null, { user }),
          (err: unknown) => cb(err instanceof SmtpReply ? err : Replies.authTempfail()),
        );
      },

      onMailFrom(address, session, cb) {
        hook(
          log,
          'sender check',
          async () => {
            const refusal = checkSender(o, l, address, session);
            const user = userOf(session);
            if (refusal || !user || !o.rateLimiter) return refusal;
            return rateLimitReply(await o.rateLimiter.message(user.login));
          },
          cb,
        );
      },

      onRcptTo(address, session, cb) {
        hook(
          log,
          'recipient check',
          async () => {
            const user = userOf(session);
            const refusal = checkRecipient(address.address, { authenticated: !!user, localDomains });
            if (refusal) {
              log.info({ listener: l.kind, client: session.remoteAddress, rcpt: address.address, user: user?.login }, 'relay denied');
              return refusal;
            }
            if (!user || !o.rateLimiter) return undefined;
            return rateLimitReply(await o.rateLimiter.recipients(user.login, 1));
          },
          cb,
        );
      },

      onData(stream, session, cb) {
        receive(o, l, stream, session).then(
          (id) => {
            o.metrics?.messages.inc({ listener: l.kind, result: 'accepted' });
            cb(null, `2.0.0 Ok: queued as ${id}`);
          },
          (err: unknown) => {
            o.metrics?.messages.inc({ listener: l.kind, result: 'rejected' });
            if (err instanceof SmtpReply) return cb(err);
            log.error({ err }, 'queue commit failed');
            cb((err as { code?: string })?.code === 'ESPOOLFULL' ? SmtpReply.temp('4.3.1', 'Insufficient system storage', 452) : Replies.queueError());
          },
        );
      },
    });
    srv.on('error', (err) => log.warn({ err: (err as Error).message, listener: l.kind }, 'smtp connection error'));
    const shared = o.sharedListen?.[o.listeners.indexOf(l)];
    try {
      await new Promise<void>((resolve, reject) => {
        srv.server.once('error', reject);
        const listening = () => {
          srv.server.off('error', reject);
          resolve();
        };
        // A worker of a multi-process server listens on its own SO_REUSEPORT socket on the address its primary fixed.
        if (shared) srv.server.listen(reusePortHandle(shared), listening);
        else srv.listen(l.port, unbracketed(l.host), listening);
      });
    } catch (err) {
      // Listeners already bound would keep the process alive: close them, then say which address and why.
      await Promise.all(servers.map((x) => new Promise((r) => x.close(() => r(undefined)))));
      throw listenError(l, err as NodeJS.ErrnoException);
    }
    const addr = srv.server.address();
    bound.push({ kind: l.kind, host: l.host, port: typeof addr === 'object' && addr ? addr.port : l.port });
    servers.push(srv);
  }
  log.info({ listeners: bound }, 'smtp listening');
  return {
    bound,
    close: () => Promise.all(servers.map(closeGracefully)).then(() => undefined),
    setTls(t) {
      // Fails here (mismatched pair, not PEM) before any listener switches, so a bad file never half-applies.
      tls.createSecureContext({ key: t.key, cert: t.cert });
      for (const s of servers) s.updateSecureContext({ key: t.key, cert: t.cert });
      log.info('tls certificate reloaded for new sessions');
    },
  };
}

async function authenticate(o: SmtpServiceOptions, l: ListenerConfig, auth: SMTPServerAuthentication, session: SMTPServerSession): Promise<AuthUser> {
  let authcid: string;
  if (auth.method === 'PLAIN') {
    // RFC 4616: authcid is the identity checked; an authzid may only name that same identity (no proxy authorization).
    authcid = auth.authcid ?? '';
    const authzid = auth.authzid ?? '';
    if (!authcid) throw Replies.authInvalid();
    if (authzid && authzid !== authcid) {
      o.log.info({ listener: l.kind, client: session.remoteAddress, user: authcid }, 'auth refused: authzid differs from authcid');
      throw Replies.authInvalid();
    }
  } else if (auth.method === 'LOGIN') {
    authcid = auth.username ?? '';
  } else throw SmtpReply.perm('5.5.4', 'Unrecognized authentication type', 504);
  const password = auth.password ?? '';
  const client = session.remoteAddress;
  const backend = o.authBackendName ?? 'saslauthd';
  const admission = o.penalty?.admit(client);
  if (admission && !admission.allowed) {
    o.metrics?.penaltyRefusals.inc({ where: 'smtp' });
    o.metrics?.authAttempts.inc({ backend, result: 'refused' });
    throw Replies.authBlocked();
  }
  const endTimer = o.metrics?.backendLatency.startTimer({ backend });
  const split = splitLogin(authcid, o.authRealm);
  const login = o.joinRealm ? (split.realm ? `${split.login}@${split.realm}` : split.login) : split.login;
  // Bounded even if a verifier ignores its abort signal: past the deadline the answer is a temporary failure.
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<AuthResult>((resolve) => {
    timer = setTimeout(() => {
      ac.abort();
      resolve({ verdict: 'tempfail', reason: 'timeout' });
    }, o.authTimeoutMs);
  });
  const result = await Promise.race([
    o.verifier.verify({ login, password, service: o.authService, realm: split.realm, clientAddr: `${client};${session.remotePort}` }, { signal: ac.signal }),
    deadline,
  ])
    .catch((err: unknown): AuthResult => ({ verdict: 'tempfail', reason: (err as Error).message }))
    .finally(() => {
      clearTimeout(timer);
      endTimer?.();
    });
  o.metrics?.authAttempts.inc({ backend, result: result.verdict });
  const fields = { listener: l.kind, client, user: authcid, method: auth.method };
  if (result.verdict === 'ok') {
    o.penalty?.success(client);
    o.sender.learn(authcid, result.addresses ?? []);
    o.log.info(fields, 'auth ok');
    return { login: authcid, addresses: result.addresses ?? [] };
  }
  if (result.verdict === 'tempfail') {
    o.log.warn({ ...fields, reason: result.reason }, 'auth tempfail');
    throw Replies.authTempfail();
  }
  const delay = o.penalty?.failure(client, authcid) ?? 0;
  if (delay > 0) o.metrics?.penaltyDelays.inc({ where: 'smtp' });
  o.log.info({ ...fields, delayMs: delay }, 'auth failed');
  if (delay > 0) await new Promise((r) => setTimeout(r, delay));
  throw Replies.authInvalid();
}

function checkSender(o: SmtpServiceOptions, l: ListenerConfig, address: SMTPServerAddress, session: SMTPServerSession): SmtpReply | undefined {
  const user = userOf(session);
  const from = address.address;
  const fields = { listener: l.kind, client: session.remoteAddress, from, user: user?.login };
  if (l.authRequired && !user) return Replies.authRequired();
  if (!from) {
    if (!user && !o.nullSender) return SmtpReply.perm('5.7.1', 'Null sender not accepted here', 553);
    return undefined;
  }
  if (user) {
    if (o.senderCheck === 'reject' && !o.sender.owns(user.login, from, user.addresses)) {
      o.log.info(fields, 'sender not owned');
      return Replies.senderNotOwned(from);
    }
    return undefined;
  }
  if (o.unauthMemberSender === 'reject' && o.sender.isMemberAddress(from)) {
    o.log.info(fields, 'unauthenticated use of a member address');
    return Replies.memberSenderUnauth();
  }
  return undefined;
}

function envelopeOf(session: SMTPServerSession): Envelope {
  const e = session.envelope;
  const mailFrom = e.mailFrom ? e.mailFrom.address : '';
  const dsn = e.dsn && (e.dsn.ret || e.dsn.envid) ? { ret: (e.dsn.ret ?? undefined) as 'FULL' | 'HDRS' | undefined, envid: e.dsn.envid ?? undefined } : undefined;
  return {
    mailFrom,
    rcptTo: e.rcptTo.map((r) => ({ address: r.address, notify: r.dsn?.notify, orcpt: r.dsn?.orcpt })),
    dsn,
    authUser: userOf(session)?.login,
    clientAddress: session.remoteAddress,
    heloName: session.hostNameAppearsAs,
    smtputf8: !!e.smtpUtf8,
    body8bit: e.bodyType === '8bitmime',
    receivedAt: Date.now(),
  };
}

/** Stream one message into the queue; resolves with the queue id once durable, rejects with the reply otherwise. */
async function receive(o: SmtpServiceOptions, l: ListenerConfig, stream: SMTPServerDataStream, session: SMTPServerSession): Promise<string> {
  const inspector = new MessageInspector(o.maxMessageSize, o.bareNewline);
  const user = userOf(session);
  const out = new PassThrough();
  const tlsInfo = session.tlsOptions ? { protocol: session.tlsOptions.version, cipher: session.tlsOptions.name } : undefined;
  const rcpts = session.envelope.rcptTo;
  out.write(
    receivedHeader({
      heloName: session.hostNameAppearsAs,
      clientHostname: session.clientHostname,
      clientAddress: session.remoteAddress,
      byHost: o.hostname,
      protocol: session.transmissionType,
      tls: tlsInfo,
      authUser: o.receivedAuthUser ? user?.login : undefined,
      forAddress: rcpts.length === 1 ? rcpts[0].address : undefined,
    }),
  );
  const envelope = envelopeOf(session);
  let queueError: unknown;
  let refused: SmtpReply | undefined;
  let fromChecked = !(user && o.fromHeaderCheck === 'reject');
  let clientGone = false;
  const commit = o.queue.commit(envelope, out as Readable).catch((err: unknown) => {
    queueError = err;
    return undefined;
  });

  const refuse = (r: SmtpReply) => {
    if (refused) return;
    refused = r;
    out.destroy(new Error(`message refused: ${r.text}`));
  };
  const checkFrom = () => {
    fromChecked = true;
    const froms = headerValues(inspector.headerText(), 'From').flatMap(extractAddresses);
    const bad = froms.find((a) => !o.sender.owns(user!.login, a, user!.addresses));
    if (froms.length === 0) refuse(SmtpReply.perm('5.7.1', 'Message has no From: address', 553));
    else if (bad) {
      o.log.info({ listener: l.kind, user: user?.login, from: bad }, 'From: header not owned');
      refuse(Replies.fromNotOwned(bad));
    }
  };

  await new Promise<void>((resolve) => {
    stream.on('data', (chunk: Buffer) => {
      if (refused || queueError) return; // keep reading and discarding
      const bytes = inspector.feed(chunk);
      if (!bytes) return refuse(inspector.violation!);
      if (!fromChecked && inspector.headerComplete) checkFrom();
      if (refused) return;
      if (!out.write(bytes)) {
        stream.pause();
        out.once('drain', () => stream.resume());
      }
    });
    stream.once('end', () => {
      if (!refused && !queueError) {
        const tail = inspector.finish();
        if (!tail) refuse(inspector.violation!);
        else {
          if (!fromChecked) checkFrom();
          if (!refused) out.end(tail);
        }
      }
      resolve();
    });
    stream.once('error', (err) => {
      clientGone = true;
      out.destroy(err);
      resolve();
    });
    out.on('error', () => {
      // the queue side reports through the commit promise; a refused message destroys `out` on purpose
      stream.resume();
    });
    out.on('close', () => {
      if (stream.isPaused()) stream.resume();
    });
  });
  if (clientGone) {
    await commit;
    o.log.info({ listener: l.kind, client: session.remoteAddress, bytes: inspector.bytes }, 'client left during DATA; nothing queued');
    throw Replies.internal();
  }
  if (refused) {
    await commit;
    o.log.info({ listener: l.kind, client: session.remoteAddress, reply: refused.toString() }, 'message refused');
    throw refused;
  }
  const id = await commit;
  if (queueError || !id) throw queueError ?? new Error('queue returned no id');
  o.log.info({ listener: l.kind, client: session.remoteAddress, id, from: envelope.mailFrom, rcpts: envelope.rcptTo.length, bytes: inspector.bytes, user: user?.login }, 'queued');
  return id;
}
