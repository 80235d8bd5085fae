// Configuration of outbound delivery: local mailboxes, routing (transport map, relayhost), the SMTP client and DKIM.
// Pure declaration (see ../schema.ts).
import { defineSection } from '../schema.js';

const positive = (v: unknown): string | undefined => (typeof v === 'number' && v > 0 ? undefined : 'must be at least 1');

export const delivery = defineSection('delivery', 'Delivery: local mailboxes, routing, outbound SMTP and DKIM signing', {
  thread: { type: 'boolean', default: true, doc: 'Deliver on a thread of its own beside the SMTP event loop, so that taking mail in and sending it out use two cores (single-process serve; with server.workers > 1 the primary process delivers). Off: both on one event loop' },
  local_transport: { type: 'string', default: 'maildir', oneOf: ['maildir', 'lmtp'], doc: 'How mail for server.local_domains is stored: Maildir on disk, or LMTP to a mailbox server (Dovecot)' },
  maildir_path: { type: 'string', default: '', doc: 'Maildir per recipient; {domain}, {local} and {data} are replaced (empty: {data}/mail/{domain}/{local}/)' },
  lmtp_target: { type: 'string', default: '', doc: 'LMTP server for local_transport = "lmtp": "unix:/path/to/socket" or "host:port"' },
  relayhost: { type: 'string', default: '', doc: 'Send all non-local mail through this host: "[host]:port" (no MX lookup) or "host:port" (MX lookup); empty: deliver directly to each domain\'s MX' },
  relayhost_user: { type: 'string', default: '', doc: 'Login for SMTP AUTH to the relayhost (empty: no AUTH)' },
  relayhost_password_file: { type: 'string', default: '', doc: 'File holding the relayhost password (first line); keep it mode 0600' },
  transport_map: { type: 'string[]', default: [], doc: 'Per-domain routes like Postfix transport(5): "example.org = smtp:[192.0.2.1]:2525", ".example.org = lmtp:unix:/run/lmtp", "* = smtp:relay.example:587", "local.test = maildir"' },
  helo_name: { type: 'string', default: '', doc: 'Name sent in EHLO/LHLO (empty: server.hostname)' },
  smtp_port: { type: 'integer', default: 25, doc: 'Port used for MX hosts', check: positive },
  starttls: { type: 'string', default: 'opportunistic', oneOf: ['opportunistic', 'require', 'off'], doc: 'STARTTLS to remote servers: use it when offered, require it (defer otherwise), or never' },
  tls_verify: { type: 'boolean', default: false, doc: 'Verify the remote certificate (opportunistic TLS usually does not: most MX certificates would fail)' },
  tls_ca_file: { type: 'string', default: '', doc: 'Extra CA certificates (PEM) trusted when verifying remote servers, e.g. a private relayhost\'s CA' },
  mta_sts: { type: 'boolean', default: true, doc: 'Honour MTA-STS (RFC 8461) for direct MX delivery: with an enforcing policy, only listed MX hosts and verified TLS' },
  dane: { type: 'string', default: 'auto', oneOf: ['auto', 'on', 'off'], doc: 'DANE (RFC 7672) for direct MX delivery: TLSA records published under DNSSEC make verified STARTTLS mandatory. "auto": only when the system resolver is on this machine (a validating resolver such as unbound, whose AD bit can be trusted); "on": trust the resolver\'s AD bit wherever it is' },
  concurrency: { type: 'integer', default: 50, doc: 'Messages delivered at the same time', check: positive },
  destination_concurrency: { type: 'integer', default: 10, doc: 'Simultaneous connections to one destination (domain or next hop)', check: positive },
  recipients_per_transaction: { type: 'integer', default: 50, doc: 'Recipients sent in one SMTP transaction; more are split', check: positive },
  connect_timeout: { type: 'duration', default: '30s', doc: 'Time allowed to connect and get a greeting from a remote server' },
  timeout: { type: 'duration', default: '5m', doc: 'Time allowed for each reply of a remote server' },
  dkim_sign: { type: 'boolean', default: true, doc: 'DKIM-sign outgoing mail whose From domain has a key in dkim_dir' },
  dkim_dir: { type: 'string', default: '', doc: 'Directory of DKIM keys named <domain>.<selector>.key (empty: <server.data_dir>/dkim); create them with facteur dkim keygen' },
});
