// Delivery and queue options as one plain object, built from the loaded [server], [queue] and [delivery] sections.
// Trusts the config loader's validation; reads the relayhost password file.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError } from '../lib/errors.js';
import { durationMs } from '../config/load.js';
import { parseTransportMap, type TransportEntry } from './routing.js';

export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

export interface DeliveryOptions {
  hostname: string;
  heloName: string;
  dataDir: string;
  localDomains: string[];
  localTransport: 'maildir' | 'lmtp';
  /** Template with {data}, {domain}, {local}. */
  maildirPath: string;
  lmtpTarget: string;
  relayhost: string;
  relayAuth?: { user: string; pass: string };
  transportMap: TransportEntry[];
  smtpPort: number;
  starttls: 'opportunistic' | 'require' | 'off';
  tlsVerify: boolean;
  /** Extra trusted CA certificates (PEM) for verifying remote servers. */
  tlsCa?: string;
  /** Apply MTA-STS policies (RFC 8461) to direct MX delivery. */
  mtaSts: boolean;
  /** DANE (RFC 7672): "auto" when the system resolver is local, "on" whatever it is, "off". */
  dane: 'auto' | 'on' | 'off';
  concurrency: number;
  destinationConcurrency: number;
  recipientsPerTransaction: number;
  connectTimeoutMs: number;
  timeoutMs: number;
  dkimSign: boolean;
  dkimDir: string;
  retryInitialMs: number;
  retryMaxMs: number;
  maxLifetimeMs: number;
  delayWarningMs: number;
  scanIntervalMs: number;
  bounceSizeLimit: number;
}

export function defaultDeliveryOptions(dataDir: string, over: Partial<DeliveryOptions> = {}): DeliveryOptions {
  const hostname = over.hostname || os.hostname();
  return {
    hostname,
    heloName: hostname,
    dataDir,
    localDomains: [],
    localTransport: 'maildir',
    maildirPath: '{data}/mail/{domain}/{local}/',
    lmtpTarget: '',
    relayhost: '',
    transportMap: [],
    smtpPort: 25,
    starttls: 'opportunistic',
    tlsVerify: false,
    mtaSts: true,
    dane: 'auto',
    concurrency: 50,
    destinationConcurrency: 10,
    recipientsPerTransaction: 50,
    connectTimeoutMs: 30_000,
    timeoutMs: 300_000,
    dkimSign: true,
    dkimDir: path.join(dataDir, 'dkim'),
    retryInitialMs: 5 * 60_000,
    retryMaxMs: 3_600_000,
    maxLifetimeMs: 5 * 86_400_000,
    delayWarningMs: 0,
    scanIntervalMs: 30_000,
    bounceSizeLimit: 50_000,
    ...over,
  };
}

type Sec = Record<string, unknown>;

function readCaFile(file: string): string | undefined {
  if (!file) return undefined;
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`[delivery] tls_ca_file: cannot read ${file} (${(err as NodeJS.ErrnoException).code}); fix the path or leave it empty`);
  }
}

/** The spool directory from the loaded configuration. */
export function queueDirFromConfig(cfg: Record<string, Sec>): string {
  const dataDir = String(cfg.server?.data_dir ?? '/var/lib/facteur');
  return String(cfg.queue?.dir || path.join(dataDir, 'queue'));
}

/** Build DeliveryOptions from the loaded configuration (sections server, queue, delivery). */
export function deliveryOptionsFromConfig(cfg: Record<string, Sec>): DeliveryOptions {
  const s = cfg.server ?? {};
  const q = cfg.queue ?? {};
  const d = cfg.delivery ?? {};
  const dataDir = String(s.data_dir ?? '/var/lib/facteur');
  const hostname = String(s.hostname || os.hostname());
  let relayAuth: DeliveryOptions['relayAuth'];
  if (d.relayhost_user) {
    const file = String(d.relayhost_password_file ?? '');
    if (!file) throw new ConfigError('[delivery] relayhost_user is set but relayhost_password_file is empty: give the file holding the relayhost password');
    let pass: string;
    try {
      pass = fs.readFileSync(file, 'utf8').split(/\r?\n/)[0];
    } catch (err) {
      throw new ConfigError(`[delivery] relayhost_password_file: cannot read ${file} (${(err as NodeJS.ErrnoException).code}); create it or fix the path`);
    }
    relayAuth = { user: String(d.relayhost_user), pass };
  }
  const dur = (v: unknown, dflt: string) => durationMs((v as string | number | undefined) ?? dflt);
  return defaultDeliveryOptions(dataDir, {
    hostname,
    heloName: String(d.helo_name || hostname),
    localDomains: ((s.local_domains as string[] | undefined) ?? []).map((x) => x.toLowerCase()),
    localTransport: (d.local_transport as 'maildir' | 'lmtp' | undefined) ?? 'maildir',
    maildirPath: String(d.maildir_path || '{data}/mail/{domain}/{local}/'),
    lmtpTarget: String(d.lmtp_target ?? ''),
    relayhost: String(d.relayhost ?? ''),
    relayAuth,
    transportMap: parseTransportMap((d.transport_map as string[] | undefined) ?? []),
    smtpPort: Number(d.smtp_port ?? 25),
    starttls: (d.starttls as DeliveryOptions['starttls'] | undefined) ?? 'opportunistic',
    tlsVerify: Boolean(d.tls_verify ?? false),
    tlsCa: readCaFile(String(d.tls_ca_file ?? '')),
    mtaSts: Boolean(d.mta_sts ?? true),
    dane: (d.dane as DeliveryOptions['dane'] | undefined) ?? 'auto',
    concurrency: Number(d.concurrency ?? 50),
    destinationConcurrency: Number(d.destination_concurrency ?? 10),
    recipientsPerTransaction: Number(d.recipients_per_transaction ?? 50),
    connectTimeoutMs: dur(d.connect_timeout, '30s'),
    timeoutMs: dur(d.timeout, '5m'),
    dkimSign: Boolean(d.dkim_sign ?? true),
    dkimDir: String(d.dkim_dir || path.join(dataDir, 'dkim')),
    retryInitialMs: dur(q.retry_initial, '5m'),
    retryMaxMs: dur(q.retry_max, '1h'),
    maxLifetimeMs: dur(q.max_lifetime, '5d'),
    delayWarningMs: dur(q.delay_warning, '0'),
    scanIntervalMs: dur(q.scan_interval, '30s'),
    bounceSizeLimit: Number(q.bounce_size_limit ?? 50_000),
  });
}
