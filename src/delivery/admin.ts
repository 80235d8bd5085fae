// Administrator actions on queued mail that need delivery knowledge: bounce a message now (facteur queue bounce).
// Trusts the spool; the message content is untrusted and only copied into the DSN.
import { Readable } from 'node:stream';
import { FacteurError } from '../lib/errors.js';
import type { Spool } from '../queue/spool.js';
import { buildDsn, dsnEnvelope, wantsNotice, type DsnRecipient } from './dsn.js';

/**
 * Fail every recipient not yet delivered or failed with 5.0.0, queue one DSN to the sender (unless the null sender or
 * NOTIFY says otherwise), then remove the message. Returns the DSN's queue id, if one was sent.
 */
export async function bounceMessage(spool: Spool, id: string, o: { hostname: string; bounceSizeLimit: number; now?: number; reason?: string }): Promise<string | undefined> {
  const e = await spool.get(id);
  if (!e) throw new FacteurError('ENOTQUEUED', `message ${id} is not in the queue (see facteur queue list)`);
  const now = o.now ?? Date.now();
  const reason = o.reason ?? 'Message bounced by the mail administrator';
  const rcpts: DsnRecipient[] = [];
  e.status.recipients.forEach((rs, idx) => {
    if (rs.state === 'delivered' || rs.state === 'failed') return;
    if (!wantsNotice(e.envelope, e.envelope.rcptTo[idx], 'failure')) return;
    rcpts.push({ address: rs.address, orcpt: e.envelope.rcptTo[idx].orcpt, action: 'failed', status: '5.0.0', diagnostic: rs.lastError ? `${reason}; last error: ${rs.lastError}` : reason, lastAttempt: e.status.lastAttempt });
  });
  let dsnId: string | undefined;
  if (rcpts.length) {
    const original = await spool.readMessage(id);
    const dsn = buildDsn({ hostname: o.hostname, queueId: id, envelope: e.envelope, recipients: rcpts, original, sizeLimit: o.bounceSizeLimit, now });
    dsnId = await spool.commit(dsnEnvelope(e.envelope, now), Readable.from([dsn]));
  }
  await spool.remove(id);
  return dsnId;
}
