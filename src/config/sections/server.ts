// Configuration of the SMTP server as a whole: identity, data directory, local domains, limits, TLS files.
// Pure declaration (see ../schema.ts).
import { defineSection } from '../schema.js';

export const server = defineSection('server', 'The SMTP server as a whole', {
  hostname: { type: 'string', default: '', doc: 'Name announced in the greeting and in Received: headers (empty: the machine host name)' },
  data_dir: { type: 'string', default: '/var/lib/facteur', doc: 'Directory for the queue, the generated certificate and the default users file' },
  local_domains: { type: 'string[]', default: [], doc: 'Domains whose mail facteur accepts from anyone (inbound); everything else needs AUTH' },
  tls_cert: { type: 'string', default: '', doc: 'PEM certificate chain for STARTTLS and port 465 (empty: a self-signed one is generated in data_dir)' },
  tls_key: { type: 'string', default: '', doc: 'PEM private key matching tls_cert' },
  max_message_size: { type: 'integer', default: 25 * 1024 * 1024, doc: 'Largest message accepted, in bytes (advertised with SIZE; larger ones get 552 5.3.4)', check: (v: unknown) => ((v as number) > 0 ? undefined : 'must be a positive number of bytes') },
  max_recipients: { type: 'integer', default: 100, doc: 'Recipients per message; more get 452 4.5.3', check: (v: unknown) => ((v as number) > 0 ? undefined : 'must be at least 1') },
  max_connections: { type: 'integer', default: 500, doc: 'Simultaneous connections over all listeners; more get 421 4.7.0', check: (v: unknown) => ((v as number) > 0 ? undefined : 'must be at least 1') },
  max_connections_per_ip: { type: 'integer', default: 50, doc: 'Simultaneous connections from one client address; more get 421 4.7.0', check: (v: unknown) => ((v as number) > 0 ? undefined : 'must be at least 1') },
  timeout: { type: 'duration', default: '5m', doc: 'Idle time allowed between two client commands or data chunks before 421 and disconnect' },
  greeting_delay: { type: 'duration', default: '0s', doc: 'Wait before the 220 greeting; a client that talks first gets 421 (early-talker check, e.g. "1s" on a busy port 25)' },
  received_auth_user: { type: 'boolean', default: false, doc: 'Name the authenticated user in the Received: header (Postfix smtpd_sasl_authenticated_header)' },
  vrfy: { type: 'boolean', default: false, doc: 'Answer VRFY (with 252, never revealing users); off: 502 5.5.1' },
  bare_newline: { type: 'string', default: 'reject', oneOf: ['reject', 'normalize'], doc: 'Message lines ending in bare LF or CR: reject (550 5.5.2) or normalize to CRLF' },
  workers: { type: 'integer', default: 1, doc: 'SMTP worker processes sharing the listeners (0: one per CPU core). Above 1, a primary process keeps the queue, delivery, /metrics and the connection, rate and brute-force counters of all workers', check: (v: unknown) => ((v as number) >= 0 && (v as number) <= 64 ? undefined : 'must be 0 (one per core) to 64') },
  reuse_port: { type: 'boolean', default: true, doc: 'With workers above 1: each worker listens on its own socket (SO_REUSEPORT) and the kernel spreads new connections over them. Off, or without the native/net addon: the primary accepts every connection and passes it to a worker (node:cluster round-robin), which costs the primary CPU per connection' },
  log_level: { type: 'string', default: 'info', oneOf: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], doc: 'Log level (JSON lines on stderr)' },
});
