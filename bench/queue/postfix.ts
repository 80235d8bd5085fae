// The Postfix side of the queue benchmark: Debian's Postfix with its own config and queue directories and one plain
// inbound smtpd (port-25 role for bench.test); either every message is put on hold (enqueue test) or it is relayed to a
// local smtp-sink through transport_maps (end-to-end test). Trusts the Debian binaries and its own options.
import fs from 'node:fs/promises';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { waitForSocket } from '../../test/helpers/net.js';

const run = promisify(execFile);

export interface QueuePostfixOptions {
  dir: string;
  port: number;
  domain: string;
  /** Relay the domain to this smtp-sink port; without it every message goes to the hold queue. */
  sinkPort?: number;
  /** Put every message on hold even with a sink (the drain test releases them with postsuper -H ALL). */
  hold?: boolean;
  /** default_destination_concurrency_limit (parallel deliveries to one destination). */
  destinationConcurrency: number;
  /** default_process_limit (smtp delivery agents, smtpd processes). */
  processLimit: number;
}

export interface QueuePostfix {
  port: number;
  queueDir: string;
  masterPid(): Promise<number>;
  /** Files under the given queue directories (hold, active, incoming, deferred…). */
  count(queues: string[]): Promise<number>;
  mainCf: string[];
  /** Release the hold queue and ask the queue manager to deliver it now. */
  release(): Promise<void>;
  stop(): Promise<void>;
}

export function queueMainCf(o: QueuePostfixOptions, queueDir: string, dataDir: string, maillog: string): string[] {
  const lines = [
    `queue_directory = ${queueDir}`,
    `data_directory = ${dataDir}`,
    'compatibility_level = 3.6',
    'meta_directory = /etc/postfix',
    'mail_owner = postfix',
    'setgid_group = postdrop',
    'myhostname = mx.bench.test',
    'mydomain = bench.test',
    'mydestination =',
    `relay_domains = ${o.domain}`,
    'mynetworks = 192.0.2.1/32',
    'inet_interfaces = 127.0.0.1',
    'inet_protocols = ipv4',
    `maillog_file = ${maillog}`,
    `maillog_file_prefixes = ${o.dir}`,
    'smtpd_banner = $myhostname ESMTP',
    'smtpd_relay_restrictions = reject_unauth_destination',
    // Same as bench/smtp: no flow-control sleep in cleanup (facteur has no such brake).
    'in_flow_delay = 0',
    'smtpd_client_connection_count_limit = 0',
    'smtpd_client_connection_rate_limit = 0',
    'smtpd_client_message_rate_limit = 0',
    'smtpd_client_recipient_rate_limit = 0',
    `default_process_limit = ${o.processLimit}`,
    `default_destination_concurrency_limit = ${o.destinationConcurrency}`,
    // No TLS to the sink (smtp-sink offers none; facteur is told starttls = "off").
    'smtp_tls_security_level = none',
    'smtpd_tls_security_level = none',
  ];
  if (o.sinkPort === undefined || o.hold) lines.push('smtpd_data_restrictions = check_client_access static:HOLD');
  if (o.sinkPort !== undefined) lines.push(`transport_maps = inline:{ ${o.domain}=smtp:[127.0.0.1]:${o.sinkPort} }`);
  return lines;
}

export async function startQueuePostfix(o: QueuePostfixOptions): Promise<QueuePostfix> {
  const configDir = path.join(o.dir, 'etc');
  const queueDir = path.join(o.dir, 'spool');
  const dataDir = path.join(o.dir, 'data');
  const maillog = path.join(o.dir, 'maillog');
  await fs.mkdir(configDir, { recursive: true });
  await fs.mkdir(queueDir, { recursive: true });
  await fs.mkdir(dataDir, { recursive: true });
  await run('chown', ['postfix', dataDir]);
  // Debian's master.cf, its smtp listener replaced by ours, no chroot (our queue directory is no chroot tree).
  const master = (await fs.readFile('/etc/postfix/master.cf', 'utf8'))
    .split('\n')
    .map((l) => (/^smtp\s+inet/.test(l) ? `127.0.0.1:${o.port} inet n - n - - smtpd` : l))
    .map((l) => l.replace(/^(\S+\s+(?:unix|inet|unix-dgram|fifo|pass)\s+\S+\s+\S+\s+)y(\s)/, '$1n$2'))
    .join('\n');
  const mainCf = queueMainCf(o, queueDir, dataDir, maillog);
  await fs.writeFile(path.join(configDir, 'master.cf'), master);
  await fs.writeFile(path.join(configDir, 'main.cf'), mainCf.join('\n') + '\n');
  await run('/usr/sbin/postfix', ['-c', configDir, 'check']);
  await run('/usr/sbin/postfix', ['-c', configDir, 'start']);
  await waitForSocket(o.port, 20_000);
  return {
    port: o.port,
    queueDir,
    mainCf,
    async masterPid() {
      return Number((await fs.readFile(path.join(queueDir, 'pid', 'master.pid'), 'utf8')).trim());
    },
    async count(queues: string[]) {
      let n = 0;
      const walk = async (d: string): Promise<void> => {
        for (const e of await fs.readdir(d, { withFileTypes: true }).catch(() => [])) {
          if (e.isDirectory()) await walk(path.join(d, e.name));
          else n++;
        }
      };
      for (const q of queues) await walk(path.join(queueDir, q));
      return n;
    },
    async release() {
      await run('/usr/sbin/postsuper', ['-c', configDir, '-H', 'ALL']);
      await run('/usr/sbin/postqueue', ['-c', configDir, '-f']);
    },
    async stop() {
      await run('/usr/sbin/postfix', ['-c', configDir, 'stop']).catch(() => run('/usr/sbin/postfix', ['-c', configDir, 'abort']).catch(() => undefined));
    },
  };
}
