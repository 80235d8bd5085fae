// The users file format: parse it into entries (keeping every other line verbatim) and write entries back.
// Trusts nothing: every line is checked; a bad line is reported by number (never by content: it may hold a hash).
//
// Format (UTF-8, one user per line, `#` starts a comment line, blank lines ignored, CRLF accepted):
//
//     login:hash[:address,address,...]
//
//   login      no `:`, `,`, whitespace or control characters; matched exactly, except that the domain
//              after the last `@` is compared case-insensitively (RFC 5321: domains are case-insensitive).
//   hash       any form src/auth/passwords.ts verifies (facteur user writes argon2id PHC strings).
//              The hash is the text between the FIRST and the LAST `:` of the line. A line with a single `:`
//              has no address list. So a hash that itself contains `:` (possible only with `{PLAIN}`) needs the
//              third field, even empty: `bob:{PLAIN}a:b:` .
//   addresses  optional, comma-separated envelope addresses this user may send from, besides the login itself
//              when the login looks like an address. Spaces around commas are ignored.
//
// The first line for a login wins; later duplicates are reported and ignored.

export interface UserEntry {
  login: string;
  hash: string;
  addresses: string[];
  /** 1-based line number in the file. */
  line: number;
}

export interface ParsedUsersFile {
  /** Keyed by `loginKey(login)`. */
  users: Map<string, UserEntry>;
  /** One message per bad line, e.g. `line 7: no ':' separator`. Never contains the line's content. */
  problems: string[];
  /** The original lines (without line terminators), for rewriting the file with comments preserved. */
  lines: string[];
}

const BAD_LOGIN = /[:,\s\x00-\x1f\x7f]/;
const BAD_ADDRESS = /[:,\s\x00-\x1f\x7f<>]/;

/** Key used for lookups: the login with its domain (after the last `@`) lower-cased. */
export function loginKey(login: string): string {
  const at = login.lastIndexOf('@');
  return at < 0 ? login : login.slice(0, at + 1) + login.slice(at + 1).toLowerCase();
}

/** Why a login cannot be stored, or undefined when it can. */
export function loginProblem(login: string): string | undefined {
  if (login.length === 0) return 'the login is empty';
  if (Buffer.byteLength(login) > 256) return 'the login is longer than 256 bytes (the saslauthd protocol limit)';
  if (BAD_LOGIN.test(login)) return "the login contains ':', ',', whitespace or a control character";
  if (login.startsWith('#')) return "the login starts with '#' (that would be a comment line)";
  return undefined;
}

/** Does this look like an envelope address (`local@domain.tld` or `local@domain`)? */
export function looksLikeAddress(s: string): boolean {
  const at = s.lastIndexOf('@');
  return at > 0 && at < s.length - 1 && !BAD_ADDRESS.test(s) && /^[A-Za-z0-9.-]+$/.test(s.slice(at + 1));
}

export function addressProblem(address: string): string | undefined {
  return looksLikeAddress(address) ? undefined : `'${address.replace(/[\x00-\x1f\x7f]/g, '?')}' is not an address like user@example.org`;
}

function normaliseAddress(a: string): string {
  const at = a.lastIndexOf('@');
  return a.slice(0, at + 1) + a.slice(at + 1).toLowerCase();
}

/** Parse one non-comment line. */
export function parseLine(text: string, line: number): UserEntry | string {
  const first = text.indexOf(':');
  if (first < 0) return `line ${line}: no ':' separator (expected login:hash[:addresses])`;
  const last = text.lastIndexOf(':');
  const login = text.slice(0, first).trim();
  const hash = (last === first ? text.slice(first + 1) : text.slice(first + 1, last)).trim();
  const addrField = last === first ? '' : text.slice(last + 1);
  const lp = loginProblem(login);
  if (lp) return `line ${line}: ${lp}`;
  if (hash.length === 0) return `line ${line}: empty password hash`;
  const addresses: string[] = [];
  for (const raw of addrField.split(',')) {
    const a = raw.trim();
    if (!a) continue;
    if (!looksLikeAddress(a)) return `line ${line}: address ${addresses.length + 1} is not an address like user@example.org`;
    addresses.push(normaliseAddress(a));
  }
  return { login, hash, addresses, line };
}

export function parseUsersFile(content: string): ParsedUsersFile {
  const lines = content.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  const users = new Map<string, UserEntry>();
  const problems: string[] = [];
  lines.forEach((raw, i) => {
    const text = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const trimmed = text.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const r = parseLine(text, i + 1);
    if (typeof r === 'string') {
      problems.push(r);
      return;
    }
    const key = loginKey(r.login);
    const prev = users.get(key);
    if (prev) {
      problems.push(`line ${i + 1}: duplicate login (first defined on line ${prev.line}); ignored`);
      return;
    }
    users.set(key, r);
  });
  return { users, problems, lines };
}

/** The addresses a user may send from: the login itself when it looks like an address, then the listed ones, without duplicates. */
export function userAddresses(e: Pick<UserEntry, 'login' | 'addresses'>): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const a of [...(looksLikeAddress(e.login) ? [normaliseAddress(e.login)] : []), ...e.addresses]) {
    const k = a.toLowerCase();
    if (!seen.has(k)) {
      seen.add(k);
      out.push(a);
    }
  }
  return out;
}

/** One line of the file. Always writes the third field, so a hash containing `:` stays unambiguous. */
export function formatLine(e: Pick<UserEntry, 'login' | 'hash' | 'addresses'>): string {
  if (/[\r\n]/.test(e.hash)) throw new Error('a password hash cannot contain a line break');
  return `${e.login}:${e.hash}:${e.addresses.join(',')}`;
}

export const FILE_HEADER = [
  '# facteur users file: login:hash[:address,address...]',
  '# Managed with: facteur user add|passwd|del|list --file PATH. The hash is between the first and the last ":".',
];
