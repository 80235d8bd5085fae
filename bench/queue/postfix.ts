// The Postfix side of the queue benchmark: Debian's Postfix with its own config and queue directories and one plain
// inbound smtpd (port-25 role for bench.test); either every message is put on hold (enqueue test) or it is relayed to a
// local smtp-sink through transport_maps (end-to-end test). Trusts the Debian binaries and its own options.
import fs from 'node:fs/promises';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { writePostfixInstance, startPostfixInstance } from '../../test/helpers/postfix.js';

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

/** main.cf lines for the benchmark (the instance's own directories, owner and log come from writePostfixInstance). */
export function queueMainCf(o: QueuePostfixOptions): string[] {
  const lines = [
    'myhostname = mx.bench.test',
    'mydomain = bench.test',
    'mydestination =',
    `relay_domains = ${o.domain}`,
    'mynetworks = 192.0.2.1/32',
    'inet_interfaces = 127.0.0.1',
    'inet_protocols = ipv4',
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
  // Debian's master.cf, its smtp listener replaced by ours (shared with the tests' Postfix helper).
  const mainCf = queueMainCf(o);
  const { configDir, queueDir } = await writePostfixInstance({ dir: o.dir, smtpServices: [`127.0.0.1:${o.port} inet n - n - - smtpd`], main: mainCf });
  const instance = await startPostfixInstance(configDir, [o.port]);
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
    stop: instance.stop,
  };
}
