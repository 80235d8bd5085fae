// Routing: which transport and next hop each recipient domain goes to (transport map, local domains, relayhost, MX).
// Pure; trusts the configuration (validated here) and treats recipient domains as untrusted strings.
import { ConfigError } from '../lib/errors.js';

/** A next hop: a host (with or without MX lookup) and port, or a UNIX socket path. */
export type NextHop = { host: string; port: number; mx: boolean } | { path: string };

export type Route =
  | { kind: 'maildir' }
  | { kind: 'lmtp'; hop: NextHop }
  | { kind: 'smtp'; hop: NextHop; auth?: { user: string; pass: string } }
  /** Deliver to the domain's own MX hosts. */
  | { kind: 'mx'; domain: string }
  | { kind: 'error'; status: string; text: string };

export interface TransportEntry {
  /** `example.org`, `.example.org` (subdomains) or `*`. */
  pattern: string;
  route: Exclude<Route, { kind: 'mx' }> | { kind: 'mx' };
  source: string;
}

/** `[host]:port`, `host:port`, `[host]`, `host`, `unix:/path`, `[::1]:25`. */
export function parseNextHop(text: string, defaultPort: number, where: string): NextHop {
  const t = text.trim();
  if (t.startsWith('unix:')) {
    const p = t.slice(5);
    if (!p.startsWith('/')) throw new ConfigError(`${where}: "${text}": a UNIX socket must be an absolute path, e.g. unix:/run/dovecot/lmtp`);
    return { path: p };
  }
  if (t.startsWith('/')) return { path: t };
  const br = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  if (br) return { host: br[1].replace(/^ipv6:/i, ''), port: br[2] ? Number(br[2]) : defaultPort, mx: false };
  const hp = /^([A-Za-z0-9.-]+)(?::(\d+))?$/.exec(t);
  if (!hp) throw new ConfigError(`${where}: "${text}" is not a next hop: write [host]:port, host:port or unix:/path`);
  const port = hp[2] ? Number(hp[2]) : defaultPort;
  if (port < 1 || port > 65535) throw new ConfigError(`${where}: port ${port} out of range`);
  return { host: hp[1].toLowerCase(), port, mx: true };
}

/** Parse `pattern = transport:nexthop` lines. Transports: smtp, lmtp, maildir, error. */
export function parseTransportMap(lines: string[]): TransportEntry[] {
  return lines.map((line) => {
    const where = `[delivery] transport_map "${line}"`;
    const m = /^\s*(\*|\.?[A-Za-z0-9.-]+|\[[^\]]+\])\s*=\s*([a-z]+)(?::(.*))?\s*$/.exec(line);
    if (!m) throw new ConfigError(`${where}: write "domain = transport:nexthop", e.g. "example.org = smtp:[192.0.2.1]:25"`);
    const pattern = m[1].toLowerCase();
    const nexthop = (m[3] ?? '').trim();
    switch (m[2]) {
      case 'maildir':
        return { pattern, route: { kind: 'maildir' }, source: line };
      case 'smtp':
        return { pattern, route: nexthop ? { kind: 'smtp', hop: parseNextHop(nexthop, 25, where) } : { kind: 'mx' }, source: line };
      case 'lmtp':
        if (!nexthop) throw new ConfigError(`${where}: lmtp needs a next hop: lmtp:unix:/path or lmtp:[host]:port`);
        return { pattern, route: { kind: 'lmtp', hop: parseNextHop(nexthop, 24, where) }, source: line };
      case 'error': {
        const e = /^([45]\.\d{1,3}\.\d{1,3})?\s*(.*)$/.exec(nexthop)!;
        return { pattern, route: { kind: 'error', status: e[1] ?? '5.0.0', text: e[2] || 'Mail for this domain is not accepted' }, source: line };
      }
      default:
        throw new ConfigError(`${where}: unknown transport "${m[2]}" (use smtp, lmtp, maildir or error)`);
    }
  });
}

export interface Router {
  route(domain: string): Route;
}

export function createRouter(o: {
  transportMap: TransportEntry[];
  localDomains: string[];
  localTransport: 'maildir' | 'lmtp';
  lmtpTarget: string;
  relayhost: string;
  relayAuth?: { user: string; pass: string };
}): Router {
  const exact = new Map<string, TransportEntry>();
  const suffix: TransportEntry[] = [];
  let star: TransportEntry | undefined;
  for (const e of o.transportMap) {
    if (e.pattern === '*') star ??= e;
    else if (e.pattern.startsWith('.')) suffix.push(e);
    else if (!exact.has(e.pattern)) exact.set(e.pattern, e);
  }
  suffix.sort((a, b) => b.pattern.length - a.pattern.length);
  const local = new Set(o.localDomains.map((d) => d.toLowerCase()));
  const lmtpHop = o.localTransport === 'lmtp' ? (o.lmtpTarget ? parseNextHop(o.lmtpTarget, 24, '[delivery] lmtp_target') : undefined) : undefined;
  if (o.localTransport === 'lmtp' && !lmtpHop) throw new ConfigError('[delivery] local_transport = "lmtp" needs lmtp_target, e.g. "unix:/run/dovecot/lmtp" or "127.0.0.1:24"');
  const relay = o.relayhost ? parseNextHop(o.relayhost, 25, '[delivery] relayhost') : undefined;
  const fix = (domain: string, r: TransportEntry['route']): Route => {
    if (r.kind === 'mx') return { kind: 'mx', domain };
    return r;
  };
  return {
    route(raw: string): Route {
      const domain = raw.toLowerCase().replace(/\.$/, '');
      const hit = exact.get(domain) ?? suffix.find((e) => domain.endsWith(e.pattern));
      if (hit) return fix(domain, hit.route);
      if (local.has(domain)) return lmtpHop ? { kind: 'lmtp', hop: lmtpHop } : { kind: 'maildir' };
      if (star) return fix(domain, star.route);
      if (relay) return { kind: 'smtp', hop: relay, auth: o.relayAuth };
      return { kind: 'mx', domain };
    },
  };
}

/** A stable key for grouping recipients and limiting concurrency per destination. */
export function routeKey(r: Route): string {
  switch (r.kind) {
    case 'maildir':
      return 'maildir';
    case 'mx':
      return `mx:${r.domain}`;
    case 'error':
      return `error:${r.status}:${r.text}`;
    default:
      return `${r.kind}:${'path' in r.hop ? `unix:${r.hop.path}` : `${r.hop.mx ? '' : '['}${r.hop.host}${r.hop.mx ? '' : ']'}:${r.hop.port}`}`;
  }
}
