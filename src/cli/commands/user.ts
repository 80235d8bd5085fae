// `facteur user add|passwd|del|list`: manage the users file read by `facteur authd -a file` (locked, atomic rewrites).
// Trusts argv for names only: passwords come from the terminal (no echo, typed twice) or two lines on standard input, never from argv.
import { UsageError } from '../../lib/errors.js';
import { hashPassword } from '../../auth/passwords.js';
import { DEFAULT_USERS_FILE } from '../../auth/backends/file.js';
import { addressProblem, formatLine, loginKey, loginProblem, userAddresses } from '../../auth/backends/usersfile/format.js';
import { readUsersFile, updateUsersFile, UsersFileError } from '../../auth/backends/usersfile/store.js';

const USAGE = `usage: facteur user add    [--file PATH] LOGIN [--address ADDR ...]
       facteur user passwd [--file PATH] LOGIN
       facteur user del    [--file PATH] LOGIN
       facteur user list   [--file PATH]

  --file PATH      the users file (default ${DEFAULT_USERS_FILE}); created by 'add' with mode 0600
  --address ADDR   another address LOGIN may send from (repeat, or separate with commas);
                   the login itself counts when it is an address
  The password is asked twice on the terminal (not echoed). When standard input is not a
  terminal, it is read from it: the password twice, on two lines. It is never taken from
  the command line. New passwords are stored as argon2id hashes.
`;

interface Args {
  action: 'add' | 'passwd' | 'del' | 'list';
  file: string;
  login?: string;
  addresses: string[];
}

function parse(argv: string[]): Args {
  const [action, ...rest] = argv;
  if (action !== 'add' && action !== 'passwd' && action !== 'del' && action !== 'list') {
    throw new UsageError(action ? `user: unknown action '${action}'\n${USAGE}` : USAGE);
  }
  const a: Args = { action, file: DEFAULT_USERS_FILE, addresses: [] };
  const positional: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const f = rest[i]!;
    const value = () => {
      const v = rest[++i];
      if (v === undefined) throw new UsageError(`user ${action}: ${f} needs a value\n${USAGE}`);
      return v;
    };
    if (f === '--file' || f === '-f') a.file = value();
    else if (f.startsWith('--file=')) a.file = f.slice(7);
    else if (f === '--address' || f === '-a') a.addresses.push(...value().split(','));
    else if (f.startsWith('--address=')) a.addresses.push(...f.slice(10).split(','));
    else if (f === '-h' || f === '--help') throw new UsageError(USAGE);
    else if (f === '--password' || f === '-p') throw new UsageError(`user ${action}: passwords are never taken from the command line (they would show in 'ps' and shell history); type it, or pipe it twice on standard input`);
    else if (f.startsWith('-') && f.length > 1) throw new UsageError(`user ${action}: unknown option ${f}\n${USAGE}`);
    else positional.push(f);
  }
  a.addresses = a.addresses.map((s) => s.trim()).filter(Boolean);
  if (a.action === 'list') {
    if (positional.length > 0) throw new UsageError(`user list takes no LOGIN\n${USAGE}`);
  } else {
    if (positional.length !== 1) throw new UsageError(`user ${action}: give exactly one LOGIN\n${USAGE}`);
    a.login = positional[0]!;
    const lp = loginProblem(a.login);
    if (lp) throw new UsageError(`user ${action}: ${lp}`);
  }
  if (a.addresses.length > 0 && a.action !== 'add') throw new UsageError(`user ${action}: --address is only for 'add'`);
  for (const addr of a.addresses) {
    const p = addressProblem(addr);
    if (p) throw new UsageError(`user add: --address ${p}`);
  }
  return a;
}

/** Read one line from the terminal without echo. */
function readHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  // Echo off BEFORE the prompt appears, or fast typists (and scripts) would see their password echoed.
  stdin.setRawMode(true);
  process.stderr.write(prompt);
  return new Promise((resolve, reject) => {
    let buf = '';
    stdin.resume();
    stdin.setEncoding('utf8');
    const done = (err?: Error) => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(buf);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003' || ch === '\u0004') return done(new UsersFileError('cancelled'));
        if (ch === '\u007f' || ch === '\b') buf = [...buf].slice(0, -1).join('');
        else if (ch === '\u0015') buf = '';
        else if (ch >= ' ') buf += ch;
      }
    };
    stdin.on('data', onData);
  });
}

async function readStdin(limit = 64 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of process.stdin) {
    const b = c as Buffer;
    n += b.length;
    if (n > limit) throw new UsersFileError('standard input is too long for two password lines');
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function askPassword(login: string): Promise<string> {
  let pw: string;
  let again: string;
  if (process.stdin.isTTY) {
    pw = await readHidden(`New password for ${login}: `);
    again = await readHidden('Retype the password: ');
  } else {
    const lines = (await readStdin()).split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
    if (lines.length < 2 || (lines.length === 2 && lines[1] === '' && lines[0] !== '')) {
      throw new UsersFileError('standard input is not a terminal: give the password twice, on two lines');
    }
    [pw, again] = [lines[0]!, lines[1]!];
  }
  if (pw !== again) throw new UsersFileError('the two passwords differ; nothing changed');
  if (pw.length === 0) throw new UsersFileError('empty password refused; nothing changed');
  if (pw.includes('\0')) throw new UsersFileError('the password contains a NUL character; nothing changed');
  if (Buffer.byteLength(pw) > 256) throw new UsersFileError('the password is longer than 256 bytes, which the saslauthd protocol cannot carry; nothing changed');
  return pw;
}

export async function run(argv: string[]): Promise<number> {
  let a: Args;
  try {
    a = parse(argv);
  } catch (err) {
    if (err instanceof UsageError && err.message === USAGE) {
      process.stdout.write(USAGE);
      return argv.includes('-h') || argv.includes('--help') ? 0 : 1;
    }
    throw err;
  }
  try {
    switch (a.action) {
      case 'list': {
        const parsed = await readUsersFile(a.file);
        if (!parsed) throw new UsersFileError(`${a.file} does not exist (create it with: facteur user add --file ${a.file} LOGIN)`);
        for (const p of parsed.problems) process.stderr.write(`facteur: ${a.file}: ${p}\n`);
        for (const e of parsed.users.values()) process.stdout.write(`${e.login}\t${userAddresses(e).join(',')}\n`);
        return 0;
      }
      case 'del': {
        await updateUsersFile(a.file, false, (parsed) => {
          const key = loginKey(a.login!);
          if (!parsed.users.has(key)) throw new UsersFileError(`no user '${a.login}' in ${a.file}`);
          const drop = new Set<number>();
          parsed.lines.forEach((l, i) => {
            const t = l.trim();
            if (t && !t.startsWith('#') && t.includes(':') && loginKey(l.slice(0, l.indexOf(':')).trim()) === key) drop.add(i);
          });
          return parsed.lines.filter((_, i) => !drop.has(i));
        });
        process.stderr.write(`facteur: removed ${a.login} from ${a.file}\n`);
        return 0;
      }
      case 'add':
      case 'passwd': {
        if (a.action === 'passwd') {
          const parsed = await readUsersFile(a.file);
          if (!parsed) throw new UsersFileError(`${a.file} does not exist (create it with: facteur user add --file ${a.file} LOGIN)`);
          if (!parsed.users.has(loginKey(a.login!))) throw new UsersFileError(`no user '${a.login}' in ${a.file} (add it with: facteur user add)`);
        } else {
          const parsed = await readUsersFile(a.file);
          if (parsed?.users.has(loginKey(a.login!))) throw new UsersFileError(`user '${a.login}' already exists in ${a.file} (change its password with: facteur user passwd)`);
        }
        // Hash before taking the lock: argon2 takes a moment and other writers should not wait for it.
        const hash = await hashPassword(await askPassword(a.login!));
        await updateUsersFile(a.file, a.action === 'add', (parsed) => {
          const existing = parsed.users.get(loginKey(a.login!));
          if (a.action === 'add') {
            if (existing) throw new UsersFileError(`user '${a.login}' already exists in ${a.file} (change its password with: facteur user passwd)`);
            return [...parsed.lines, formatLine({ login: a.login!, hash, addresses: a.addresses })];
          }
          if (!existing) throw new UsersFileError(`no user '${a.login}' in ${a.file} (add it with: facteur user add)`);
          const lines = [...parsed.lines];
          lines[existing.line - 1] = formatLine({ login: existing.login, hash, addresses: existing.addresses });
          return lines;
        });
        process.stderr.write(`facteur: ${a.action === 'add' ? 'added' : 'changed the password of'} ${a.login} in ${a.file}\n`);
        return 0;
      }
    }
  } catch (err) {
    if (err instanceof UsersFileError) {
      process.stderr.write(`facteur: user ${a.action}: ${err.message}\n`);
      return 1;
    }
    const e = err as NodeJS.ErrnoException;
    if (e.code && e.path) {
      process.stderr.write(`facteur: user ${a.action}: ${e.path}: ${e.code} (${e.message.split(',')[0]})\n`);
      return 1;
    }
    throw err;
  }
}
