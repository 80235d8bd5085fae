// `-a shadow`: verify against /etc/passwd + /etc/shadow with upstream auth_shadow.c's checks, order and reply texts.
// Trusts the two files (root-owned); needs root to read /etc/shadow. Hashes are checked by ../passwords.ts, never by a shell-out.
//
// -O forms (for tests and chroots; default: the system files):
//   -O /path/shadow                        another shadow file, /etc/passwd for the user lookup
//   -O shadow=/path/shadow,passwd=/path/passwd
// Replies, in upstream's order: `NO Invalid username` (not in passwd), `NO Invalid shadow username` (not in shadow),
// `NO Insufficient permission to access NIS authentication database (saslauthd)` (hash `*NP*`), `NO Incorrect password`,
// `NO Account expired` (expire day set and today > it; 0 counts as expired, like upstream), `NO Password expired`
// (last change + max days < today), `OK`. Days are counted in UTC from the epoch, as upstream's time(NULL)/86400.
// Differences: only the files are read (no NSS: NIS/LDAP users are not seen); a file that cannot be read gives upstream's
// `Username lookup failure: <error>` text as a temporary failure; hashes passwords.ts cannot check (DES crypt, unusual yescrypt
// flavours) answer `NO Incorrect password` with a log line saying why. yescrypt (`$y$`, Debian 12's default) is supported.
import fs from 'node:fs/promises';
import { ConfigError } from '../../lib/errors.js';
import { verifyPasswordHash } from '../passwords.js';
import { fail, ok, tempfail, type AuthBackend, type AuthResult, type BackendFactory, type Explain } from '../types.js';

export interface ShadowPaths {
  passwd: string;
  shadow: string;
}

export interface ShadowEntry {
  name: string;
  hash: string;
  /** Days since the epoch; -1 when the field is empty. */
  lastChange: number;
  maxDays: number;
  expire: number;
}

export function parseShadowOption(option: string | undefined): ShadowPaths {
  const paths: ShadowPaths = { passwd: '/etc/passwd', shadow: '/etc/shadow' };
  if (!option) return paths;
  if (!option.includes('=')) return { ...paths, shadow: option };
  for (const part of option.split(',')) {
    const [k, v] = part.split('=', 2) as [string, string | undefined];
    if ((k === 'shadow' || k === 'passwd') && v) paths[k] = v;
    else throw new ConfigError(`-O ${option}: expected a shadow file path, or shadow=PATH[,passwd=PATH]`);
  }
  return paths;
}

const num = (s: string | undefined) => (s === undefined || s.trim() === '' || !/^-?\d+$/.test(s.trim()) ? -1 : Number(s));

/** Find `name` in a colon-separated file (passwd or shadow): the first line whose first field is exactly `name`. */
function findLine(content: string, name: string): string[] | undefined {
  for (const line of content.split('\n')) {
    if (line.startsWith(`${name}:`)) return line.replace(/\r$/, '').split(':');
  }
  return undefined;
}

export function shadowEntry(content: string, name: string): ShadowEntry | undefined {
  const f = findLine(content, name);
  if (!f) return undefined;
  return { name, hash: f[1] ?? '', lastChange: num(f[2]), maxDays: num(f[4]), expire: num(f[7]) };
}

const STRERROR: Record<string, string> = {
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  ENOENT: 'No such file or directory',
  EIO: 'Input/output error',
  EISDIR: 'Is a directory',
};
const strerror = (err: unknown) => {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  return STRERROR[code] ?? (code || 'unknown error');
};

export const today = () => Math.floor(Date.now() / 86_400_000);

export async function shadowVerify(paths: ShadowPaths, login: string, password: string, opts: { explain?: Explain; log?: (m: string) => void; day?: number } = {}): Promise<AuthResult> {
  const { explain, log } = opts;
  // A name with ':' or a line break can never be a passwd entry (and must not match a field boundary).
  const valid = login.length > 0 && !/[:\n\r\0]/.test(login);
  let passwd: string;
  try {
    passwd = await fs.readFile(paths.passwd, 'utf8');
  } catch (err) {
    log?.(`shadow: cannot read ${paths.passwd}: ${strerror(err)}`);
    return tempfail(`Username lookup failure: ${strerror(err)}`);
  }
  if (!valid || !findLine(passwd, login)) {
    explain?.(`no user '${login}' in ${paths.passwd}`);
    return fail('Invalid username');
  }
  const day = opts.day ?? today();
  let shadow: string;
  try {
    shadow = await fs.readFile(paths.shadow, 'utf8');
  } catch (err) {
    log?.(`shadow: cannot read ${paths.shadow}: ${strerror(err)}`);
    return tempfail(`Username shadow lookup failure: ${strerror(err)}`);
  }
  const sp = shadowEntry(shadow, login);
  if (!sp) {
    explain?.(`no user '${login}' in ${paths.shadow}`);
    return fail('Invalid shadow username');
  }
  if (sp.hash === '*NP*') return fail('Insufficient permission to access NIS authentication database (saslauthd)');
  const verdict = sp.hash === '' ? false : await verifyPasswordHash(password, sp.hash);
  if (verdict === null) {
    const scheme = /^\$([^$]*)\$/.exec(sp.hash)?.[1];
    const why =
      scheme === 'y'
        ? 'this yescrypt flavour or cost is not supported: give this user a default yescrypt or SHA-512 hash (chpasswd), or use -a pam'
        : 'the hash is locked, disabled or of an unsupported kind';
    if (!/^[!*]/.test(sp.hash)) log?.(`shadow: user ${login}: ${why}`);
    explain?.(`stored hash cannot be checked: ${why}`);
    return fail('Incorrect password');
  }
  if (!verdict) {
    explain?.('password does not match');
    return fail('Incorrect password');
  }
  if (sp.expire !== -1 && day > sp.expire) {
    explain?.(`account expired on day ${sp.expire} (today is day ${day})`);
    return fail('Account expired');
  }
  if (sp.lastChange !== -1 && sp.maxDays !== -1 && sp.lastChange + sp.maxDays < day) {
    explain?.(`password expired: changed on day ${sp.lastChange}, valid ${sp.maxDays} days (today is day ${day})`);
    return fail('Password expired');
  }
  explain?.('password matches; account and password valid');
  return ok('');
}

export const createShadowBackend: BackendFactory = async (option, ctx) => {
  const paths = parseShadowOption(option);
  for (const p of [paths.passwd, paths.shadow]) {
    try {
      await fs.access(p, fs.constants.R_OK);
      const h = await fs.open(p, 'r');
      await h.close();
    } catch (err) {
      throw new ConfigError(
        `-a shadow: cannot read ${p} (${strerror(err)})${p === paths.shadow ? '; facteur authd -a shadow must run as root' : ''}`,
        { cause: err },
      );
    }
  }
  ctx.log(`shadow: ${paths.passwd} and ${paths.shadow}`);
  const backend: AuthBackend = {
    name: 'shadow',
    async verify(creds, { explain }) {
      return shadowVerify(paths, creds.login, creds.password, { explain, log: ctx.log });
    },
  };
  return backend;
};
