// `-a file -O PATH`: verify logins against a users file (format in ./usersfile/format.ts), re-read when it changes.
// Trusts the file's content only as parsed; the hash verification is constant-time and unknown users cost a dummy verification.
import fs from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { ConfigError } from '../../lib/errors.js';
import { verifyPasswordHash, dummyPasswordHash } from '../passwords.js';
import { fail, ok, tempfail, type AuthBackend, type BackendFactory } from '../types.js';
import { loginKey, parseUsersFile, userAddresses, type UserEntry } from './usersfile/format.js';

export const DEFAULT_USERS_FILE = '/etc/facteur/users';

interface Snapshot {
  users: Map<string, UserEntry>;
  sig: string;
}

const signature = (st: Stats) => `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;

export const createFileBackend: BackendFactory = async (option, ctx) => {
  const file = option && option.length > 0 ? option : DEFAULT_USERS_FILE;
  let current: Snapshot | undefined;
  let loading: Promise<Snapshot> | undefined;

  async function load(): Promise<Snapshot> {
    // Signature taken BEFORE reading: if the file is replaced meanwhile, the next request sees a new signature and re-reads.
    const st = await fs.stat(file);
    const parsed = parseUsersFile(await fs.readFile(file, 'utf8'));
    for (const p of parsed.problems) ctx.log(`users file ${file}: ${p}`);
    if ((st.mode & 0o004) !== 0) ctx.log(`users file ${file} is readable by everyone (mode ${(st.mode & 0o777).toString(8)}); chmod 600 or 640 it`);
    return { users: parsed.users, sig: signature(st) };
  }

  /** The current snapshot: one stat per request, a re-read only when the file changed; concurrent requests share one read. */
  async function snapshot(): Promise<Snapshot> {
    const st = await fs.stat(file);
    if (current && current.sig === signature(st)) return current;
    loading ??= load().finally(() => {
      loading = undefined;
    });
    const fresh = await loading;
    if (current && fresh.sig !== current.sig) ctx.log(`users file ${file} re-read: ${fresh.users.size} users`);
    current = fresh;
    return fresh;
  }

  try {
    current = await load();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(
      code === 'ENOENT'
        ? `-O ${file}: the users file does not exist; create it with 'facteur user add --file ${file} LOGIN'`
        : `-O ${file}: cannot read the users file (${code ?? (err as Error).message}); it must be readable by the user running facteur authd`,
      { cause: err },
    );
  }
  ctx.log(`users file ${file}: ${current.users.size} users`);

  const backend: AuthBackend = {
    name: 'file',
    async verify(creds, { explain }) {
      let snap: Snapshot;
      try {
        snap = await snapshot();
      } catch (err) {
        explain?.(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
        return tempfail(`users file unreadable`);
      }
      if (creds.password.length === 0) {
        explain?.('empty password refused');
        return fail('');
      }
      const entry = snap.users.get(loginKey(creds.login));
      if (!entry) {
        // Same cost as a real user: verify against a dummy argon2id hash.
        await verifyPasswordHash(creds.password, await dummyPasswordHash());
        explain?.(`no user '${creds.login}' in ${file}`);
        return fail('');
      }
      explain?.(`user found on line ${entry.line} of ${file}`);
      const verdict = await verifyPasswordHash(creds.password, entry.hash);
      if (verdict === null) {
        ctx.log(`users file ${file} line ${entry.line}: unsupported password hash scheme; this user cannot log in`);
        explain?.('the stored hash uses a scheme facteur does not support');
        return fail('');
      }
      if (!verdict) {
        explain?.('password does not match');
        return fail('');
      }
      const addresses = userAddresses(entry);
      explain?.(`password matches; may send as: ${addresses.join(', ') || '(no addresses)'}`);
      return ok('', addresses);
    },
    async reload() {
      current = await load();
    },
  };
  return backend;
};
