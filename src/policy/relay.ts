// Relay decision for one RCPT: mail to our own domains is accepted from anyone; anything else only from an authenticated member.
// Pure; trusts the address parser of mail/ and nothing from the client.
import { hasRoutingTrick, isAddressLiteral, parseAddress } from '../mail/address.js';
import { Replies, type SmtpReply } from '../mail/reply.js';

export interface RelayContext {
  authenticated: boolean;
  localDomains: ReadonlySet<string>;
}

/** Lower-case, without trailing dot: the form localDomains holds. */
export function normalizeDomain(d: string): string {
  return d.trim().toLowerCase().replace(/\.$/, '');
}

/** Is this recipient for one of our domains, without any routing trick that could send it on elsewhere? */
export function isLocalRecipient(address: string, localDomains: ReadonlySet<string>): boolean {
  if (address.toLowerCase() === 'postmaster') return localDomains.size > 0; // RFC 5321 4.5.1: always accepted
  const a = parseAddress(address);
  if (!a) return false;
  if (isAddressLiteral(a.domain)) return false;
  if (hasRoutingTrick(a.local)) return false;
  return localDomains.has(a.domain);
}

/** undefined: accept the recipient; otherwise the reply refusing it. Fails closed: anything unrecognised is not local. */
export function checkRecipient(address: string, ctx: RelayContext): SmtpReply | undefined {
  if (ctx.authenticated) return undefined;
  if (isLocalRecipient(address, ctx.localDomains)) return undefined;
  return Replies.relayDenied();
}
