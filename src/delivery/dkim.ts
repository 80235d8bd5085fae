// DKIM: find the key for a sender domain (<dir>/<domain>.<selector>.key), sign outgoing mail with mailauth, and
// generate keys with the DNS TXT record to publish. Trusts the key directory; the message's From header is untrusted.
import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { dkimSign as DkimSign } from 'mailauth/lib/dkim/sign.js';
import type { dkimVerify as DkimVerify } from 'mailauth/lib/dkim/verify.js';
import addressparser from 'nodemailer/lib/addressparser';
import { headerBlock } from './dsn.js';

export interface DkimKey {
  domain: string;
  selector: string;
  privateKey: string;
  algorithm: 'rsa-sha256' | 'ed25519-sha256';
}

const DOMAIN_RE = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/;
const SELECTOR_RE = /^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$/i;

export function validDomain(d: string): boolean {
  return DOMAIN_RE.test(d) && d.length <= 253;
}
export function validSelector(s: string): boolean {
  return SELECTOR_RE.test(s) && s.length <= 63;
}

/** Key lookup with a short cache so a busy queue does not read the directory for every message. */
export class DkimKeys {
  private cache = new Map<string, { at: number; key: DkimKey | undefined }>();
  constructor(
    readonly dir: string,
    private readonly ttlMs = 60_000,
  ) {}

  async find(domain: string): Promise<DkimKey | undefined> {
    const d = domain.toLowerCase();
    if (!validDomain(d)) return undefined;
    const hit = this.cache.get(d);
    if (hit && Date.now() - hit.at < this.ttlMs) return hit.key;
    let key: DkimKey | undefined;
    try {
      const names = (await fsp.readdir(this.dir)).filter((f) => f.startsWith(`${d}.`) && f.endsWith('.key')).sort();
      for (const f of names) {
        const selector = f.slice(d.length + 1, -4);
        if (!validSelector(selector)) continue;
        const privateKey = await fsp.readFile(path.join(this.dir, f), 'utf8');
        const type = crypto.createPrivateKey(privateKey).asymmetricKeyType;
        key = { domain: d, selector, privateKey, algorithm: type === 'ed25519' ? 'ed25519-sha256' : 'rsa-sha256' };
        break;
      }
    } catch {
      key = undefined;
    }
    this.cache.set(d, { at: Date.now(), key });
    return key;
  }
}

/** Domain of the (first) From: header address. */
export function fromDomain(message: Buffer): string | undefined {
  const head = headerBlock(message).toString('utf8').replace(/\r?\n[ \t]+/g, ' ');
  const m = /^from:(.*)$/im.exec(head);
  if (!m) return undefined;
  const list = addressparser(m[1]) as { address?: string }[];
  const addr = list.find((a) => a.address)?.address;
  const at = addr?.lastIndexOf('@') ?? -1;
  return addr && at > 0 ? addr.slice(at + 1).toLowerCase() : undefined;
}

/** The TXT record value that publishes this private key's public half. */
export function publicRecord(privatePem: string): string {
  const pub = crypto.createPublicKey(crypto.createPrivateKey(privatePem));
  const der = pub.export({ type: 'spki', format: 'der' });
  if (pub.asymmetricKeyType === 'ed25519') return `v=DKIM1; k=ed25519; p=${der.subarray(der.length - 32).toString('base64')}`;
  return `v=DKIM1; k=rsa; p=${der.toString('base64')}`;
}

// mailauth's DKIM modules take ~0.2 s to load: loaded at the first signature, not at every start of facteur serve.
let mailauthDkim: Promise<{ dkimSign: typeof DkimSign; dkimVerify: typeof DkimVerify }> | undefined;
function loadMailauthDkim() {
  return (mailauthDkim ??= Promise.all([import('mailauth/lib/dkim/sign.js'), import('mailauth/lib/dkim/verify.js')]).then(([s, v]) => ({ dkimSign: s.dkimSign, dkimVerify: v.dkimVerify })));
}

async function signOnce(message: Buffer, key: DkimKey, signTime: Date): Promise<string> {
  // mailauth reads the keys from signatureData (its type declarations show top-level fields, which it ignores).
  const opts = {
    canonicalization: 'relaxed/relaxed',
    algorithm: key.algorithm,
    signTime,
    signatureData: [{ signingDomain: key.domain, selector: key.selector, privateKey: key.privateKey, algorithm: key.algorithm, canonicalization: 'relaxed/relaxed' }],
  };
  const { dkimSign } = await loadMailauthDkim();
  const res = await dkimSign(message, opts as unknown as Parameters<typeof DkimSign>[1]);
  if (res.errors?.length || !res.signatures?.trim()) throw new Error(String(res.errors?.[0]?.message ?? res.errors?.[0] ?? 'no signature produced'));
  return res.signatures;
}

/**
 * The message with a DKIM-Signature header prepended, checked against the key's own public half before it leaves:
 * mailauth 4.13 now and then (about 1 signature in 200) produces a header whose folding does not match what it signed,
 * which every verifier rejects. Such a signature is made again with another timestamp (a different signature). If no
 * good one comes, the message goes out unsigned (with `error` for the log) rather than with a broken signature.
 */
export async function signMessage(message: Buffer, key: DkimKey): Promise<{ message: Buffer; error?: string }> {
  let record: string;
  try {
    record = publicRecord(key.privateKey);
  } catch (err) {
    return { message, error: `unusable key: ${(err as Error).message}` };
  }
  const name = `${key.selector}._domainkey.${key.domain}`;
  const resolver = async (n: string, type: string) => {
    if (type === 'TXT' && n.toLowerCase() === name) return [[record]];
    throw Object.assign(new Error(`ENOTFOUND ${n}`), { code: 'ENOTFOUND' });
  };
  let last = 'no signature produced';
  for (let attempt = 0; attempt < 4; attempt++) {
    try {
      const sig = await signOnce(message, key, new Date(Date.now() - attempt * 1000));
      const signed = Buffer.concat([Buffer.from(sig, 'utf8'), message]);
      const { dkimVerify } = await loadMailauthDkim();
      const check = await dkimVerify(signed, { resolver: resolver as never });
      const mine = check.results.find((r) => r.signingDomain === key.domain);
      if (mine?.status.result === 'pass') return { message: signed };
      last = `self-check failed: ${mine?.status.comment ?? 'no result'}`;
    } catch (err) {
      last = (err as Error).message;
    }
  }
  return { message, error: last };
}

export interface GeneratedKey {
  privatePem: string;
  /** Value of the TXT record (one string; split into 255-byte chunks by dnsRecord). */
  txt: string;
}

export function generateDkimKey(type: 'rsa' | 'ed25519', bits = 2048): GeneratedKey {
  if (type === 'ed25519') {
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ed25519');
    const der = publicKey.export({ type: 'spki', format: 'der' });
    // RFC 8463: p= is the raw 32-byte public key, not the SPKI structure.
    const raw = der.subarray(der.length - 32);
    return { privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), txt: `v=DKIM1; k=ed25519; p=${raw.toString('base64')}` };
  }
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: bits });
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return { privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), txt: `v=DKIM1; k=rsa; p=${der.toString('base64')}` };
}

/** A zone-file line: `sel._domainkey.example.org. IN TXT ( "..." "..." )`, strings of at most 255 characters. */
export function dnsRecord(domain: string, selector: string, txt: string): string {
  const chunks = txt.match(/.{1,255}/g) ?? [];
  return `${selector}._domainkey.${domain}. IN TXT ( ${chunks.map((c) => `"${c}"`).join(' ')} )`;
}
