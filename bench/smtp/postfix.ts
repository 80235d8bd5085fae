// The Postfix side of the SMTP benchmark: Debian's Postfix with its own config and queue directories, an inbound
// listener (port-25 role, relay_domains) and a submission listener (STARTTLS required, Cyrus SASL via a saslauthd socket).
// Every accepted message is fsync'ed into the queue and put on hold (no delivery), as facteur's spool is without its scheduler.
// Trusts the Debian binaries and its own options.
import fs from 'node:fs/promises';
import path from 'node:path';
import { writePostfixInstance, startPostfixInstance } from '../../test/helpers/postfix.js';

export interface BenchPostfix {
  inboundPort: number;
  submissionPort: number;
  configDir: string;
  queueDir: string;
  masterPid(): Promise<number>;
  /** Messages in the hold queue (accepted and fsync'ed). */
  held(): Promise<number>;
  stop(): Promise<void>;
}

export interface BenchPostfixOptions {
  dir: string;
  inboundPort: number;
  submissionPort: number;
  saslauthdPath: string;
  certFile: string;
  keyFile: string;
  localDomain: string;
  /** Sender address the SASL login owns (smtpd_sender_login_maps), as facteur's login_is_address. */
  login: string;
  processLimit: number;
}

/** main.cf lines for the benchmark (the instance's own directories, owner and log come from writePostfixInstance). */
export function postfixMainCf(o: BenchPostfixOptions): string[] {
  return [
    'myhostname = mx.bench.test',
    'mydomain = bench.test',
    'mydestination =',
    // Port-25 role: mail for the local domain from anyone; 127.0.0.1 is NOT a trusted network (as for facteur).
    `relay_domains = ${o.localDomain}`,
    'mynetworks = 192.0.2.1/32',
    'inet_interfaces = 127.0.0.1',
    'inet_protocols = ipv4',
    'smtpd_banner = $myhostname ESMTP',
    // SASL through the saslauthd socket (Cyrus libsasl, pwcheck_method: saslauthd), as the seed configures it.
    'smtpd_sasl_path = smtpd',
    'smtpd_sasl_type = cyrus',
    'smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination',
    // Sender ownership, as facteur's default policy (login_is_address, sender_check = reject).
    `smtpd_sender_login_maps = inline:{ ${o.login}=${o.login} }`,
    'smtpd_sender_restrictions = reject_sender_login_mismatch',
    // Accept, fsync, queue - and hold: the queue manager never sees the message, so nothing is delivered.
    'smtpd_data_restrictions = check_client_access static:HOLD',
    // No flow control: with nothing delivered the queue manager hands out no tokens, and cleanup would sleep
    // in_flow_delay (1s) per message; facteur has no such back-pressure.
    'in_flow_delay = 0',
    'smtpd_tls_cert_file = ' + o.certFile,
    'smtpd_tls_key_file = ' + o.keyFile,
    'smtpd_tls_security_level = may',
    'smtpd_tls_auth_only = yes',
    // All the load comes from 127.0.0.1: no per-client limits (facteur's are turned off the same way).
    'smtpd_client_connection_count_limit = 0',
    'smtpd_client_connection_rate_limit = 0',
    'smtpd_client_message_rate_limit = 0',
    'smtpd_client_recipient_rate_limit = 0',
    'smtpd_client_new_tls_session_rate_limit = 0',
    'smtpd_client_auth_rate_limit = 0',
    // Debian's default is 100 processes per service: it would cap smtpd at 100 connections (idle-connection test).
    `default_process_limit = ${o.processLimit}`,
  ];
}

export async function startBenchPostfix(o: BenchPostfixOptions): Promise<BenchPostfix> {
  // Debian's master.cf with the smtp service replaced by our two listeners (shared with the tests' Postfix helper).
  const { configDir, queueDir } = await writePostfixInstance({
    dir: o.dir,
    smtpServices: [
      `127.0.0.1:${o.inboundPort} inet n - n - - smtpd -o smtpd_sasl_auth_enable=no`,
      `127.0.0.1:${o.submissionPort} inet n - n - - smtpd -o smtpd_sasl_auth_enable=yes -o smtpd_tls_security_level=encrypt -o smtpd_relay_restrictions=permit_sasl_authenticated,reject`,
    ],
    main: postfixMainCf(o),
    saslauthdPath: o.saslauthdPath,
  });
  const instance = await startPostfixInstance(configDir, [o.inboundPort, o.submissionPort]);
  return {
    inboundPort: o.inboundPort,
    submissionPort: o.submissionPort,
    configDir,
    queueDir,
    async masterPid() {
      return Number((await fs.readFile(path.join(queueDir, 'pid', 'master.pid'), 'utf8')).trim());
    },
    async held() {
      let n = 0;
      const walk = async (d: string): Promise<void> => {
        for (const e of await fs.readdir(d, { withFileTypes: true }).catch(() => [])) {
          if (e.isDirectory()) await walk(path.join(d, e.name));
          else n++;
        }
      };
      await walk(path.join(queueDir, 'hold'));
      return n;
    },
    stop: instance.stop,
  };
}
