// Local delivery into Maildir: tmp/ then rename into new/ with fsync of the file and the directory (maildir(5)).
// Trusts the configured path template; the recipient local part is untrusted and checked before it becomes a path.
import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { parseAddress } from '../mail/address.js';
import { local, type RcptResult } from './result.js';

let seq = 0;

/** The Maildir directory for an address, or undefined when the address cannot safely name a directory. */
export function maildirFor(template: string, dataDir: string, address: string): string | undefined {
  const a = parseAddress(address);
  if (!a) return undefined;
  const loc = a.local.toLowerCase();
  const dom = a.domain;
  const safe = (s: string) => /^[a-z0-9!#$&'*+=?^_`{|}~-]+(\.[a-z0-9!#$&'*+=?^_`{|}~-]+)*$/.test(s) && s.length <= 128;
  if (!safe(loc) || !safe(dom)) return undefined;
  return path.resolve(template.replaceAll('{data}', dataDir).replaceAll('{domain}', dom).replaceAll('{local}', loc));
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function deliverMaildir(
  o: { maildirPath: string; dataDir: string; hostname: string },
  index: number,
  address: string,
  mailFrom: string,
  message: Buffer,
): Promise<RcptResult> {
  const dir = maildirFor(o.maildirPath, o.dataDir, address);
  if (!dir) return local(index, 'failed', '5.1.3', `550 5.1.3 Bad destination mailbox address syntax: cannot store mail for ${address}`);
  const prefix = Buffer.from(`Return-Path: <${mailFrom}>\r\nDelivered-To: ${address}\r\n`, 'utf8');
  const data = Buffer.concat([prefix, message]);
  const now = Date.now();
  const host = o.hostname.replace(/[/:]/g, '_');
  const unique = `${Math.floor(now / 1000)}.M${String((now % 1000) * 1000).padStart(6, '0')}P${process.pid}Q${String(++seq).padStart(8, '0')}R${crypto.randomBytes(4).toString('hex')}.${host}`;
  try {
    for (const sub of ['tmp', 'new', 'cur']) await fsp.mkdir(path.join(dir, sub), { recursive: true, mode: 0o700 });
    const tmp = path.join(dir, 'tmp', unique);
    const fh = await fsp.open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, path.join(dir, 'new', `${unique},S=${data.length}`));
    await syncDir(path.join(dir, 'new'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    const status = code === 'ENOSPC' || code === 'EDQUOT' ? '4.2.2' : '4.3.0';
    return local(index, 'deferred', status, `451 ${status} Cannot write to mailbox (${code})`);
  }
  return local(index, 'delivered', '2.0.0', `250 2.0.0 Delivered to maildir`, 'localhost');
}
