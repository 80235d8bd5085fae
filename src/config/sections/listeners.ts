// The three kinds of listener (inbound 25, submission 587, submissions 465), each with its own address and AUTH policy.
// Pure declaration (see ../schema.ts).
import { defineSection } from '../schema.js';

function listener(name: string, doc: string, listen: string[], auth: 'none' | 'required', starttls: boolean) {
  return defineSection(name, doc, {
    enabled: { type: 'boolean', default: true, doc: `Open the ${name} listener` },
    listen: { type: 'string[]', default: listen, doc: 'Addresses to listen on, as "host:port" ("[::]:port" for IPv6)', check: (v: unknown) => (v as string[]).map(checkListen).find(Boolean) },
    auth: { type: 'string', default: auth, oneOf: ['none', 'required'], doc: 'none: AUTH is not offered, only mail for local_domains is accepted; required: AUTH (over TLS) before MAIL' },
    starttls: { type: 'boolean', default: starttls, doc: 'Offer STARTTLS (ignored on the implicit-TLS listener)' },
  });
}

export function checkListen(v: string): string | undefined {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):(\d{1,5})$/.exec(v);
  if (!m || Number(m[2]) > 65535) return `"${v}" is not "host:port" (e.g. "0.0.0.0:25" or "[::]:25")`;
  return undefined;
}

export const inbound = listener('inbound', 'Port 25: mail from the world to local_domains; no AUTH', ['0.0.0.0:25'], 'none', true);
export const submission = listener('submission', 'Port 587: members submit mail after STARTTLS and AUTH (RFC 6409)', ['0.0.0.0:587'], 'required', true);
export const submissions = listener('submissions', 'Port 465: members submit mail over implicit TLS and AUTH (RFC 8314)', ['0.0.0.0:465'], 'required', false);
