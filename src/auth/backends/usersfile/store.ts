// Changes to a users file: take an exclusive lock, read, apply one change, write a temporary file, fsync, rename, fsync the directory.
// Trusts the file system's rename atomicity; readers (the file backend) see the old or the new file, never a mix.
import fs from 'node:fs/promises';
import { constants as C } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { FILE_HEADER, parseUsersFile, type ParsedUsersFile } from './format.js';

/** Raised for problems the user must fix (locked file, missing file, unknown login...). The message is complete. */
export class UsersFileError extends Error {}

const LOCK_WAIT_MS = 15_000;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Exclusive lock: `PATH.lock` created with O_EXCL, holding our pid. A lock left by a dead process is removed.
 * (Breaking a stale lock has a small window in which two breakers could both proceed; it only matters after a crash.)
 */
async function lock(file: string): Promise<() => Promise<void>> {
  const lockPath = `${file}.lock`;
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const h = await fs.open(lockPath, C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o600);
      await h.writeFile(`${process.pid}\n`);
      await h.close();
      return async () => {
        await fs.rm(lockPath, { force: true });
      };
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ENOENT') throw new UsersFileError(`cannot create ${lockPath}: the directory ${path.dirname(file)} does not exist`);
      if (e.code === 'EACCES' || e.code === 'EROFS') throw new UsersFileError(`cannot create ${lockPath}: ${e.code} (run as the file's owner, or root)`);
      if (e.code !== 'EEXIST') throw err;
    }
    const holder = Number((await fs.readFile(lockPath, 'utf8').catch(() => '')).trim());
    if (Number.isInteger(holder) && holder > 0 && !alive(holder)) {
      await fs.rm(lockPath, { force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new UsersFileError(`${file} is locked by process ${holder || '?'} (${lockPath}); if no 'facteur user' is running, remove that file`);
    }
    await new Promise((r) => setTimeout(r, 10 + Math.random() * 30));
  }
}

/** Read and parse the file, or null when it does not exist. */
export async function readUsersFile(file: string): Promise<ParsedUsersFile | null> {
  try {
    return parseUsersFile(await fs.readFile(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Write `content` to `file` atomically, keeping the old file's mode and owner (new files: 0600). */
export async function atomicWrite(file: string, content: string): Promise<void> {
  const dir = path.dirname(path.resolve(file));
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  const old = await fs.stat(file).catch(() => null);
  const h = await fs.open(tmp, C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o600);
  try {
    try {
      await h.writeFile(content, 'utf8');
      if (old) {
        await h.chmod(old.mode & 0o7777);
        if (process.getuid?.() === 0) await h.chown(old.uid, old.gid);
      }
      await h.sync();
    } finally {
      await h.close();
    }
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  const d = await fs.open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/**
 * Apply one change under the lock. `change` gets the parsed file (null when it does not exist) and returns the new lines,
 * or throws UsersFileError. When `create` is false a missing file is an error.
 */
export async function updateUsersFile(file: string, create: boolean, change: (parsed: ParsedUsersFile) => string[]): Promise<void> {
  const unlock = await lock(file);
  try {
    let parsed = await readUsersFile(file);
    if (!parsed) {
      if (!create) throw new UsersFileError(`${file} does not exist (create it with: facteur user add --file ${file} LOGIN)`);
      parsed = { users: new Map(), problems: [], lines: [...FILE_HEADER] };
    }
    const lines = change(parsed);
    await atomicWrite(file, lines.map((l) => `${l}\n`).join(''));
  } finally {
    await unlock();
  }
}
