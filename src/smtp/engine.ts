// The one adapter around smtp-server (the protocol engine): it closes the engine's fail-open defaults so that the rest of
// facteur can rely on them. Trusts smtp-server for parsing, pipelining, STARTTLS parser reset and dot-unstuffing; nothing else.
//
// What this module changes, and why (each one is tested in test/e2e/smtp-*.test.ts):
// - AUTH is never advertised and never accepted before TLS: smtp-server advertises AUTH in plaintext EHLO and lets AUTH
//   through when STARTTLS is hidden or allowInsecureAuth is set. Here AUTH before TLS always gets 538 5.7.11, and a
//   listener without AUTH answers 503 5.5.1.
// - Replies built by facteur (src/mail/reply.ts) carry their own enhanced code; the engine's guessed code is suppressed.
// - VRFY off answers 502 5.5.1; a command carrying a NUL byte answers 500 5.5.2; sendmail's joke commands are gone.
// - The greeting delay (early-talker check) is configurable instead of a fixed 100 ms.
// - While the server shuts down, a command after the transaction in progress gets 221 (QUIT) or 421, and the connection closes.
// - A last command line flushed at the end of input (no line end, then a half-close) comes with no callback: ours default
//   it, as the engine does (facteur's own replies scheduled the missing callback, which crashed the process).
// - After QUIT's 221 is flushed the connection is closed at once (as Postfix does), not when the client closes its side.
// - Speed, same behaviour: the end of DATA is found by data-stream.ts (Buffer.indexOf, not a byte loop), and session ids
//   come from a pooled random block (not one getrandom per connection).
import type net from 'node:net';
import type tls from 'node:tls';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { Replies, type SmtpReply } from '../mail/reply.js';
import { sessionId } from '../lib/random.js';
import { FastDataStream } from './data-stream.js';

export interface ListenerPolicy {
  /** inbound | submission | submissions: carried into the session for the policy hooks. */
  kind: string;
  /** Implicit TLS (port 465). */
  implicitTls: boolean;
  /** Offer STARTTLS on a plaintext listener. */
  starttls: boolean;
  /** Offer AUTH at all (after TLS only). */
  auth: boolean;
  /** Answer VRFY with 252 (true) or 502 5.5.1 (false). */
  vrfy: boolean;
  /** Wait before the greeting; a client talking before it gets 421 (smtp-server's early-talker check uses 100 ms). */
  greetingDelayMs: number;
}

/** smtp-server's private connection internals this adapter relies on (pinned by package-lock and the e2e tests). */
interface ConnectionInternals {
  secure: boolean;
  _ready: boolean;
  _upgrading: boolean;
  _nextHandler: unknown;
  _server: EngineServer;
  _socket: net.Socket | tls.TLSSocket;
  session: SMTPServerSession;
  close(): void;
  send(code: number, data?: string | string[], context?: string | false): void;
}

const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /;

type Callback = () => void;

class FacteurConnection extends (SMTPConnection as unknown as new (server: unknown, socket: net.Socket | tls.TLSSocket, opts: unknown) => ConnectionInternals & {
  _onCommand(command: Buffer, cb?: Callback): void;
  handler_QUIT(command: Buffer, cb: Callback): void;
  _isSupported(command: string): boolean;
  _createParser(): unknown;
  _setListeners(cb: () => void): void;
  connectionReady(): void;
  init(): void;
  on(ev: string, fn: (...a: unknown[]) => void): void;
}) {
  private get policy(): ListenerPolicy {
    return this._server.facteurPolicy;
  }

  /** smtp-server's parser wiring, with the parser whose DATA phase searches for line-starting dots natively (data-stream.ts). */
  override _createParser(): FastDataStream {
    const parser = new FastDataStream({ maxCommandLength: (this._server as unknown as { options: { maxCommandLength?: number } }).options.maxCommandLength });
    parser.oncommand = (command: Buffer, callback?: () => void) => this._onCommand(command, callback);
    // As the engine: a parser error (a command line over the limit) is answered 421, which closes the connection.
    parser.on('error', (err: Error) => this.send(421, 'Error: ' + err.message));
    return parser;
  }

  /** smtp-server's init() with the greeting delay made configurable (its fixed 100 ms caps short sessions' throughput). */
  override init(): void {
    this._setListeners(() => {
      const self = this as unknown as { _server: { options: { maxClients?: number }; connections: Set<unknown> }; name: string };
      if (self._server.options.maxClients && self._server.connections.size > self._server.options.maxClients) {
        return this.send(421, `${self.name} Too many connected clients, try again in a moment`, false);
      }
      const delay = this.policy.greetingDelayMs;
      if (delay <= 0) return setImmediate(() => this.connectionReady());
      setTimeout(() => this.connectionReady(), delay).unref();
    });
  }

  override send(code: number, data?: string | string[], context?: string | false): void {
    // A reply facteur built already holds its enhanced code: do not let the engine prepend a guessed one.
    if (typeof data === 'string' && ENHANCED.test(data)) return super.send(code, data, false);
    return super.send(code, data, context);
  }

  private reply(r: SmtpReply, cb: Callback): void {
    this.send(r.code, `${r.enhanced} ${r.text}`, false);
    setImmediate(cb);
  }

  /**
   * QUIT as the engine answers it (221, stop parsing), then our side of the connection is closed as soon as the 221 is
   * flushed, as Postfix's smtpd does, instead of reading on until the client's FIN. Many clients (smtp-source among them)
   * reset the connection after the 221, and a reset read costs Node an ErrnoException with its stack trace, ~3 % of the
   * event loop with one message per connection. Nothing a client sends after QUIT can matter.
   */
  override handler_QUIT(command: Buffer, callback: Callback): void {
    const socket = this._socket;
    super.handler_QUIT(command, callback);
    if (!socket.destroyed) socket.once('finish', () => socket.destroy());
  }

  override _isSupported(command: string): boolean {
    const c = (command || '').toString().trim().toUpperCase();
    if (c === 'AUTH' && (!this.policy.auth || !this.secure)) return false;
    if (c === 'STARTTLS' && (!this.policy.starttls || this.policy.implicitTls)) return false;
    return super._isSupported(command);
  }

  override _onCommand(command: Buffer, next?: Callback): void {
    // smtp-server passes no callback for a last line flushed at the end of input: our replies must not schedule it.
    const cb: Callback = next ?? (() => undefined);
    // Continuation lines of an AUTH exchange, input while the TLS handshake runs (discarded by the engine) and early
    // talkers keep the engine's handling.
    if (this._upgrading || !this._ready || this._nextHandler || !command) return super._onCommand(command, cb);
    if (command.includes(0)) return this.reply(Replies.nulCommand(), cb);
    const name = command.toString('latin1').split(' ')[0].toUpperCase();
    if ((this._server as unknown as { _closeTimeout: unknown })._closeTimeout) {
      // Shutting down (after a message in progress got its reply): QUIT is answered normally; anything else gets 421 and,
      // as RFC 5321 4.2.2 says of 421, the channel is closed (the engine would answer 421 and keep the connection open).
      if (name === 'QUIT') this.send(221, 'Bye');
      else this.send(421, '4.3.2 Service shutting down, try again later', false);
      this.close();
      setImmediate(cb);
      return;
    }
    if (name === 'AUTH') {
      if (!this.policy.auth) return this.reply(Replies.authNotEnabled(), cb);
      if (!this.secure) return this.reply(Replies.tlsRequired(), cb);
    }
    if (name === 'VRFY' && !this.policy.vrfy) return this.reply(Replies.vrfyDisabled(), cb);
    return super._onCommand(command, cb);
  }
}

/** SMTPServer whose connections are FacteurConnections. */
export class EngineServer extends SMTPServer {
  readonly facteurPolicy: ListenerPolicy;
  constructor(policy: ListenerPolicy, options: SMTPServerOptions) {
    const opts: SMTPServerOptions = {
      ...options,
      secure: policy.implicitTls,
      // The engine's own AUTH-required gate only counts commands; facteur answers 530 in its MAIL hook instead.
      authOptional: true,
      allowInsecureAuth: false,
      hideSTARTTLS: !policy.starttls || policy.implicitTls,
      hideENHANCEDSTATUSCODES: false,
      hideDSN: false,
      hidePIPELINING: false,
      authMethods: options.authMethods ?? ['PLAIN', 'LOGIN'],
      disabledCommands: ['WIZ', 'SHELL', 'KILL', 'XCLIENT', 'XFORWARD', ...(policy.auth ? [] : ['AUTH'])],
    };
    super(opts);
    this.facteurPolicy = policy;
  }

  /**
   * smtp-server's per-connection step before connect(): reads a PROXY header when configured (facteur never configures
   * one, but the engine's path is kept for it) and otherwise names the session with crypto.randomBytes, one getrandom
   * call per connection (~2.5 % of the event loop with one message per connection); here the id comes from a pooled block.
   */
  override _handleProxy(socket: net.Socket, callback: Parameters<SMTPServer['_handleProxy']>[1]): void {
    if (this._expectsProxyHeader(socket)) return super._handleProxy(socket, callback);
    const ignore = !!this.options.ignoredHosts?.includes(socket.remoteAddress ?? '');
    setImmediate(() => callback(null, { id: sessionId(), ignore }));
  }

  override connect(socket: net.Socket | tls.TLSSocket, socketOptions: unknown): void {
    const self = this as unknown as { connections: Set<unknown>; _onError(e: unknown): void; _onClientConnect(d: unknown): void };
    const connection = new FacteurConnection(this, socket, socketOptions);
    self.connections.add(connection);
    connection.on('error', (err) => self._onError(err));
    connection.on('connect', (data) => self._onClientConnect(data));
    connection.init();
  }
}
