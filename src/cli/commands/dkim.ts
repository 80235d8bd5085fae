// `facteur dkim keygen DOMAIN`: write a DKIM private key (mode 0600) where delivery looks for it and print the DNS TXT record.
// Trusts the directory it is given; DOMAIN and selector are validated before they become a file name.
import fs from 'node:fs/promises';
import path from 'node:path';
import { loadConfigFile } from '../../config/load.js';
import { FacteurError, UsageError } from '../../lib/errors.js';
import { dnsRecord, generateDkimKey, validDomain, validSelector } from '../../delivery/dkim.js';

const USAGE = `usage: facteur dkim keygen DOMAIN [--selector S] [--type rsa|ed25519] [--bits N] [--dir DIR | --data DIR | --config FILE] [--force]

  Writes DIR/DOMAIN.SELECTOR.key (PKCS#8 PEM, mode 0600) and prints the TXT record to publish at
  SELECTOR._domainkey.DOMAIN. facteur signs mail whose From: domain has a key in that directory.

  --selector S    selector (default: the current year and month, e.g. 202611)
  --type T        rsa (default, 2048 bits) or ed25519 (RFC 8463; not every verifier supports it yet)
  --bits N        RSA key size (1024..4096, default 2048)
  --dir DIR       key directory (default: [delivery] dkim_dir, i.e. <data_dir>/dkim)
  --data DIR      data directory (keys in DIR/dkim)
  --config FILE   read [delivery] dkim_dir / [server] data_dir from this configuration (also FACTEUR_CONFIG)
  --force         replace an existing key
`;

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '-h' || sub === '--help') {
    process.stdout.write(USAGE);
    return sub ? 0 : 1;
  }
  if (sub !== 'keygen') throw new UsageError(`dkim: unknown command '${sub}'\n${USAGE}`);
  let domain: string | undefined;
  let selector: string | undefined;
  let type: 'rsa' | 'ed25519' = 'rsa';
  let bits = 2048;
  let dir: string | undefined;
  let data: string | undefined;
  let config = process.env.FACTEUR_CONFIG || undefined;
  let force = false;
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    const val = () => {
      const v = rest[++i];
      if (v === undefined) throw new UsageError(`dkim keygen: ${a} needs a value\n${USAGE}`);
      return v;
    };
    if (a === '--selector' || a === '-s') selector = val();
    else if (a === '--type') {
      const t = val();
      if (t !== 'rsa' && t !== 'ed25519') throw new UsageError(`dkim keygen: --type must be rsa or ed25519`);
      type = t;
    } else if (a === '--bits') {
      bits = Number(val());
      if (!Number.isInteger(bits) || bits < 1024 || bits > 4096) throw new UsageError('dkim keygen: --bits must be between 1024 and 4096 (2048 recommended)');
    } else if (a === '--dir') dir = val();
    else if (a === '--data') data = val();
    else if (a === '--config' || a === '-c') config = val();
    else if (a === '--force') force = true;
    else if (a === '-h' || a === '--help') {
      process.stdout.write(USAGE);
      return 0;
    } else if (a.startsWith('-')) throw new UsageError(`dkim keygen: unknown option ${a}\n${USAGE}`);
    else if (!domain) domain = a;
    else throw new UsageError(`dkim keygen: too many arguments\n${USAGE}`);
  }
  if (!domain) throw new UsageError(`dkim keygen: give the DOMAIN to sign for\n${USAGE}`);
  domain = domain.toLowerCase().replace(/\.$/, '');
  if (!validDomain(domain)) throw new UsageError(`dkim keygen: '${domain}' is not a domain name`);
  const d = new Date();
  selector ??= `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}`;
  if (!validSelector(selector)) throw new UsageError(`dkim keygen: '${selector}' is not a valid selector (letters, digits, - and _)`);
  if (!dir) {
    if (data) dir = path.join(data, 'dkim');
    else if (config) {
      const cfg = await loadConfigFile(config);
      dir = String(cfg.delivery?.dkim_dir || path.join(String(cfg.server?.data_dir ?? '/var/lib/facteur'), 'dkim'));
    } else dir = path.join('.facteur', 'dkim');
  }
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, `${domain}.${selector}.key`);
  const key = generateDkimKey(type, bits);
  try {
    await fs.writeFile(file, key.privatePem, { mode: 0o600, flag: force ? 'w' : 'wx' });
    await fs.chmod(file, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new FacteurError('EEXIST', `${file} already exists: choose another --selector, or --force to replace it`);
    throw err;
  }
  process.stderr.write(`wrote ${file} (${type === 'rsa' ? `RSA ${bits}` : 'Ed25519'}, mode 0600)\npublish this DNS record, then mail From: @${domain} is signed:\n`);
  process.stdout.write(`${dnsRecord(domain, selector, key.txt)}\n`);
  return 0;
}
