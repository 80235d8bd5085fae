// Sender ownership (Postfix reject_sender_login_mismatch): which addresses a login may use as MAIL FROM and From:, and
// which addresses belong to members at all. Pure lookups over data handed in; never sees a password.
import { parseAddress } from '../mail/address.js';

/** address (lower-case) or "@domain" → logins allowed to use it. */
export type SenderMap = Map<string, Set<string>>;

/** Parse a Postfix-style sender login map: "address login[,login...]" per line, '#' comments. */
export function parseSenderMap(text: string, file = 'sender_map'): SenderMap {
  const map: SenderMap = new Map();
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/#.*$/, '').trim();
    if (!line) return;
    const m = /^(\S+)\s+(\S.*)$/.exec(line);
    if (!m) throw new Error(`${file}:${i + 1}: expected "address login[,login...]", got '${line}'`);
    const key = m[1].toLowerCase().replace(/\.$/, '');
    const logins = m[2].split(/[\s,]+/).filter(Boolean).map((l) => l.toLowerCase());
    const set = map.get(key) ?? new Set<string>();
    logins.forEach((l) => set.add(l));
    map.set(key, set);
  });
  return map;
}

export interface SenderPolicyOptions {
  map: SenderMap;
  loginIsAddress: boolean;
  /** Called after each learn() (unless told not to share it): a multi-process server shares them with its other workers. */
  onLearn?: (login: string, addresses: readonly string[]) => void;
}

export class SenderPolicy {
  /** Addresses reported by the backend at a successful AUTH, remembered as member addresses (bounded). */
  private readonly learned = new Map<string, string>();
  constructor(
    private o: SenderPolicyOptions,
    private readonly maxLearned = 100_000,
  ) {}

  /** Swap in a re-read sender map (SIGHUP). */
  setMap(map: SenderMap): void {
    this.o = { ...this.o, map };
  }

  private owners(address: string): Set<string> | undefined {
    const a = parseAddress(address);
    if (!a) return undefined;
    const key = a.normalized.toLowerCase();
    return this.o.map.get(key) ?? this.o.map.get(`@${a.domain}`);
  }

  /** May this login use this address (MAIL FROM or From:)? `addresses` are the ones its backend listed at AUTH. */
  owns(login: string, address: string, addresses: readonly string[] = []): boolean {
    const a = parseAddress(address);
    if (!a) return false;
    const want = a.normalized.toLowerCase();
    const l = login.toLowerCase();
    if (addresses.some((x) => x.toLowerCase().replace(/\.$/, '') === want)) return true;
    if (this.o.loginIsAddress && l.includes('@') && l.replace(/\.$/, '') === want) return true;
    return this.owners(address)?.has(l) ?? false;
  }

  /** Does any member own this address (for refusing it from unauthenticated clients)? */
  isMemberAddress(address: string): boolean {
    const a = parseAddress(address);
    if (!a) return false;
    return this.owners(address) !== undefined || this.learned.has(a.normalized.toLowerCase());
  }

  /** Remember a member's addresses after a successful AUTH (including the login when it is an address). */
  learn(login: string, addresses: readonly string[] = [], how: { share?: boolean } = {}): void {
    if (how.share !== false) this.o.onLearn?.(login, addresses);
    const all = [...addresses];
    if (this.o.loginIsAddress && login.includes('@')) all.push(login);
    for (const x of all) {
      const k = x.toLowerCase().replace(/\.$/, '');
      this.learned.delete(k);
      this.learned.set(k, login);
      if (this.learned.size > this.maxLearned) this.learned.delete(this.learned.keys().next().value as string);
    }
  }
}
