// Reading the few header fields facteur checks (From:) out of a raw header block, and writing the Received: trace field.
// Pure; trusts nothing in the header block (it comes from the client).

/** Unfold the header block and return the values of every field with this name (case-insensitive). */
export function headerValues(block: string, name: string): string[] {
  const unfolded = block.replace(/\r?\n[ \t]+/g, ' ');
  const out: string[] = [];
  const re = new RegExp(`^${name}[ \\t]*:(.*)$`, 'gim');
  for (let m = re.exec(unfolded); m; m = re.exec(unfolded)) out.push(m[1].trim());
  return out;
}

/**
 * Addresses in an address-list field value. Deliberately over-inclusive: every `<...>` and every bare word holding an `@`
 * (including ones inside display names) is returned, so a check over all of them fails closed.
 */
export function extractAddresses(value: string): string[] {
  const found = new Set<string>();
  for (const m of value.matchAll(/<([^<>\s]*)>/g)) if (m[1]) found.add(m[1]);
  const withoutAngles = value.replace(/<[^<>]*>/g, ' ');
  for (const m of withoutAngles.matchAll(/[^\s,;:"()<>]+@[^\s,;:"()<>]+/g)) found.add(m[0]);
  return [...found];
}

/** RFC 5322 date-time in UTC: `Sat, 28 Nov 2026 09:27:42 +0000`. */
export function rfc5322Date(d = new Date()): string {
  return d.toUTCString().replace(/GMT$/, '+0000');
}

export interface ReceivedInfo {
  heloName: string;
  clientHostname?: string;
  clientAddress: string;
  byHost: string;
  /** ESMTP, ESMTPS, ESMTPSA... (RFC 3848). */
  protocol: string;
  tls?: { protocol?: string; cipher?: string };
  authUser?: string;
  /** Only with exactly one recipient (Postfix's habit: never list several). */
  forAddress?: string;
  date?: Date;
}

const clean = (s: string) => s.replace(/[^\x21-\x7e]/g, '?').slice(0, 255);

/** The Received: field, folded, ending with CRLF. */
export function receivedHeader(r: ReceivedInfo): string {
  const host = r.clientHostname && !r.clientHostname.startsWith('[') ? r.clientHostname : 'unknown';
  const lines = [`Received: from ${clean(r.heloName || 'unknown')} (${clean(host)} [${clean(r.clientAddress)}])`];
  if (r.tls?.protocol) lines.push(`\t(using ${clean(r.tls.protocol)} with cipher ${clean(r.tls.cipher ?? 'unknown')})`);
  if (r.authUser) lines.push(`\t(Authenticated sender: ${clean(r.authUser)})`);
  lines.push(`\tby ${clean(r.byHost)} (facteur) with ${clean(r.protocol)}`);
  if (r.forAddress) lines.push(`\tfor <${clean(r.forAddress)}>`);
  lines[lines.length - 1] += `; ${rfc5322Date(r.date)}`;
  return lines.join('\r\n') + '\r\n';
}
