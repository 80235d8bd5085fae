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

export interface PostfixInstanceOptions {
  dir: string;
  /** master.cf lines that replace Debian's `smtp inet` service (our listeners). */
  smtpServices: string[];
  /** main.cf lines after the instance's own (directories, owner, log file, Cyrus SASL path). */
  main: string[];
  /** When given, sasl/smtpd.conf is the seed's file pointing at this socket (full path, …/mux). */
  saslauthdPath?: string;
}

export interface PostfixInstance {
  configDir: string;
  queueDir: string;
  saslDir: string;
  maillog: string;
}

/**
 * Write a self-contained Postfix instance under `dir` (etc/, spool/, data/, maillog): Debian's master.cf with our smtpd
 * services and no chroot (our spool is no chroot tree), main.cf with the instance's directories plus `main`. Not started.
 */
export async function writePostfixInstance(o: PostfixInstanceOptions): Promise<PostfixInstance> {
  const configDir = path.join(o.dir, 'etc');
  const queueDir = path.join(o.dir, 'spool');
  const dataDir = path.join(o.dir, 'data');
  const saslDir = path.join(configDir, 'sasl');
  const maillog = path.join(o.dir, 'maillog');
  await fs.mkdir(saslDir, { recursive: true });
  await fs.mkdir(queueDir, { recursive: true });
  await fs.mkdir(dataDir, { recursive: true });
  await run('chown', ['postfix', dataDir]);
  const master = (await fs.readFile('/etc/postfix/master.cf', 'utf8'))
    .split('\n')
    .map((l) => (/^smtp\s+inet/.test(l) ? o.smtpServices.join('\n') : l))
    .map((l) => l.replace(/^(\S+\s+(?:unix|inet|unix-dgram|fifo|pass)\s+\S+\s+\S+\s+)y(\s)/, '$1n$2'))
    .join('\n');
  await fs.writeFile(path.join(configDir, 'master.cf'), master);
  const own = [
    `queue_directory = ${queueDir}`,
    `data_directory = ${dataDir}`,
    'compatibility_level = 3.6',
    'meta_directory = /etc/postfix',
    'mail_owner = postfix',
    'setgid_group = postdrop',
    `maillog_file = ${maillog}`,
    `maillog_file_prefixes = ${o.dir}`,
    `cyrus_sasl_config_path = ${saslDir}`,
  ];
  await fs.writeFile(path.join(configDir, 'main.cf'), [...own, ...o.main].join('\n') + '\n');
  // The seed's Cyrus file, with the socket path given in full (…/mux).
  if (o.saslauthdPath) await fs.writeFile(path.join(saslDir, 'smtpd.conf'), `pwcheck_method: saslauthd\nmech_list: PLAIN LOGIN\nsaslauthd_path: ${o.saslauthdPath}\n`);
  return { configDir, queueDir, saslDir, maillog };
}

/** Start a written instance: `postfix check` creates the queue directories with their owners and modes, then `start`. */
export async function startPostfixInstance(configDir: string, ports: number[]): Promise<{ stop(): Promise<void> }> {
  await run('/usr/sbin/postfix', ['-c', configDir, 'check']);
  await run('/usr/sbin/postfix', ['-c', configDir, 'start']);
  for (const p of ports) await waitForSocket(p, 20_000);
  return {
    async stop() {
      await run('/usr/sbin/postfix', ['-c', configDir, 'stop']).catch(() => run('/usr/sbin/postfix', ['-c', configDir, 'abort']).catch(() => undefined));
    },
  };
}

/** Write the seed's setup (one smtpd on `port`, Cyrus SASL through `saslauthdPath`) without starting it. */
export async function writePostfixConfig(o: PostfixOptions): Promise<{ configDir: string; saslDir: string; maillog: string }> {
  return writePostfixInstance({
    dir: o.dir,
    smtpServices: [`127.0.0.1:${o.port} inet n - n - - smtpd`],
    saslauthdPath: o.saslauthdPath,
    main: [
      'myhostname = mx.picasoft.test',
      'mydomain = picasoft.test',
      'mydestination =',
      'inet_interfaces = 127.0.0.1',
      'inet_protocols = ipv4',
      'smtpd_sasl_auth_enable = yes',
      'smtpd_sasl_path = smtpd',
      'smtpd_sasl_type = cyrus',
      'smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination',
      'smtpd_tls_security_level = none',
      'smtpd_banner = $myhostname ESMTP',
      ...(o.main ?? []),
    ],
  });
}

export async function startPostfix(o: PostfixOptions): Promise<Postfix> {
  const { configDir, maillog } = await writePostfixConfig(o);
  const instance = await startPostfixInstance(configDir, [o.port]);
  return { port: o.port, configDir, maillog, stop: instance.stop };
}
