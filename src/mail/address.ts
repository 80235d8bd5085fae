// Mail address vocabulary: split an envelope address into local part and domain, normalise the domain, spot routing tricks.
// Pure; trusts nothing (addresses come straight from the network).

export interface ParsedAddress {
  local: string;
  /** Lower-case, without a trailing dot; an address literal keeps its brackets. */
  domain: string;
  /** The address as it should be compared: local part as given, domain normalised. */
  normalized: string;
}

/** Split at the last `@` (a quoted local part may contain `@`). Returns undefined for addresses without a domain. */
export function parseAddress(address: string): ParsedAddress | undefined {
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) return undefined;
  const local = address.slice(0, at);
  const domain = address.slice(at + 1).toLowerCase().replace(/\.$/, '');
  return { local, domain, normalized: `${local}@${domain}` };
}

/** Compare addresses: domains case-insensitively; local parts too (as every real mail store does). */
export function sameAddress(a: string, b: string): boolean {
  return a.trim().toLowerCase().replace(/\.$/, '') === b.trim().toLowerCase().replace(/\.$/, '');
}

/**
 * Does this local part try to route the mail elsewhere? Percent hack (`user%other@us`), bang path (`other!user@us`),
 * quoted local part hiding an `@` or route (`"user@other"@us`), or an embedded source route.
 */
export function hasRoutingTrick(local: string): boolean {
  return /[%!@:"\\]/.test(local) || local.startsWith('"');
}

/** `[192.0.2.1]` or `[IPv6:...]`. */
export function isAddressLiteral(domain: string): boolean {
  return domain.startsWith('[');
}
