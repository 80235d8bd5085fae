// Test helper: a real Postfix instance (Debian's) with its own config and queue directories, listening on 127.0.0.1:PORT,
// using Cyrus SASL through a saslauthd socket exactly as the seed configures it (smtpd_sasl_path = smtpd, smtpd.conf).
import fs from 'node:fs/promises';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { waitForSocket } from './net.js';

const run = promisify(execFile);

export interface Postfix {
  port: number;
  configDir: string;
  maillog: string;
  stop(): Promise<void>;
}

export interface PostfixOptions {
  dir: string;
  port: number;
  /** Full path of the saslauthd socket (Cyrus `saslauthd_path`, includes /mux). */
  saslauthdPath: string;
  /** Extra main.cf lines. */
  main?: string[];
}

/** Write a Postfix configuration (main.cf, master.cf, sasl/smtpd.conf) and queue directory without starting it. */
export async function writePostfixConfig(o: PostfixOptions): Promise<{ configDir: string; saslDir: string; maillog: string }> {
  const configDir = path.join(o.dir, 'etc');
  const queueDir = path.join(o.dir, 'spool');
  const dataDir = path.join(o.dir, 'data');
  const saslDir = path.join(configDir, 'sasl');
  const maillog = path.join(o.dir, 'maillog');
  await fs.mkdir(saslDir, { recursive: true });
  await fs.mkdir(queueDir, { recursive: true });
  await fs.mkdir(dataDir, { recursive: true });
  await run('chown', ['postfix', dataDir]);
  // Debian's master.cf, with the smtpd service moved to our port and no chroot (our spool is not a chroot tree).
  const master = (await fs.readFile('/etc/postfix/master.cf', 'utf8'))
    .split('\n')
    .map((l) => (/^smtp\s+inet/.test(l) ? `127.0.0.1:${o.port} inet n - n - - smtpd` : l))
    .map((l) => l.replace(/^(\S+\s+(?:unix|inet|unix-dgram|fifo|pass)\s+\S+\s+\S+\s+)y(\s)/, '$1n$2'))
    .join('\n');
  await fs.writeFile(path.join(configDir, 'master.cf'), master);
  await fs.writeFile(
    path.join(configDir, 'main.cf'),
    [
      `queue_directory = ${queueDir}`,
      `data_directory = ${dataDir}`,
      'compatibility_level = 3.6',
      'meta_directory = /etc/postfix',
      'mail_owner = postfix',
      'setgid_group = postdrop',
      'myhostname = mx.picasoft.test',
      'mydomain = picasoft.test',
      'mydestination =',
      'inet_interfaces = 127.0.0.1',
      'inet_protocols = ipv4',
      `maillog_file = ${maillog}`,
      `maillog_file_prefixes = ${o.dir}`,
      'smtpd_sasl_auth_enable = yes',
      'smtpd_sasl_path = smtpd',
      'smtpd_sasl_type = cyrus',
      `cyrus_sasl_config_path = ${saslDir}`,
      'smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination',
      'smtpd_tls_security_level = none',
      'smtpd_banner = $myhostname ESMTP',
      ...(o.main ?? []),
    ].join('\n') + '\n',
  );
  // The seed's Cyrus file, with the socket path given in full (…/mux).
  await fs.writeFile(path.join(saslDir, 'smtpd.conf'), `pwcheck_method: saslauthd\nmech_list: PLAIN LOGIN\nsaslauthd_path: ${o.saslauthdPath}\n`);
  return { configDir, saslDir, maillog };
}

export async function startPostfix(o: PostfixOptions): Promise<Postfix> {
  const { configDir, maillog } = await writePostfixConfig(o);
  // 'check' creates the queue directories with their owners and modes.
  await run('/usr/sbin/postfix', ['-c', configDir, 'check']);
  await run('/usr/sbin/postfix', ['-c', configDir, 'start']);
  await waitForSocket(o.port, 20_000);
  return {
    port: o.port,
    configDir,
    maillog,
    async stop() {
      await run('/usr/sbin/postfix', ['-c', configDir, 'stop']).catch(() => run('/usr/sbin/postfix', ['-c', configDir, 'abort']).catch(() => undefined));
    },
  };
}
