// Delivery status notifications (RFC 3464 multipart/report; RFC 6533 global types for SMTPUTF8 mail): bounces,
// delay warnings and success reports, plus who gets one (RFC 3461 NOTIFY). Pure; trusts nothing in the original message.
import crypto from 'node:crypto';
import type { Envelope, RecipientParams } from '../queue/types.js';

export type DsnAction = 'failed' | 'delayed' | 'delivered' | 'relayed';

export interface DsnRecipient {
  address: string;
  orcpt?: string;
  action: DsnAction;
  status: string;
  diagnostic?: string;
  diagnosticType?: 'smtp';
  remoteMta?: string;
  lastAttempt?: number;
  willRetryUntil?: number;
}

/** Does this recipient want a notice of this kind? No notice ever goes to the null sender. */
export function wantsNotice(envelope: Envelope, rcpt: RecipientParams, kind: 'failure' | 'delay' | 'success'): boolean {
  if (envelope.mailFrom === '') return false;
  const n = (rcpt.notify ?? []).map((x) => x.toUpperCase());
  if (n.includes('NEVER')) return false;
  if (n.length === 0) return kind !== 'success'; // RFC 3461 default: FAILURE (and DELAY at the MTA's discretion)
  return n.includes(kind.toUpperCase());
}

/** RFC 5322 date: `Sat, 28 Nov 2026 09:30:26 +0000`. */
export function rfc5322Date(ms: number): string {
  const d = new Date(ms);
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p = (n: number) => String(n).padStart(2, '0');
  return `${days[d.getUTCDay()]}, ${d.getUTCDate()} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

/** Make a value safe for one header line. */
function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ').replace(/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g, '').slice(0, 900);
}

/** The header block of a message (up to and including the blank line), or the whole message if it has no body. */
export function headerBlock(message: Buffer): Buffer {
  const i = message.indexOf('\r\n\r\n');
  if (i >= 0) return message.subarray(0, i + 4);
  const j = message.indexOf('\n\n');
  return j >= 0 ? message.subarray(0, j + 2) : message;
}

function hasNonAscii(s: string): boolean {
  return /[^\x00-\x7f]/.test(s);
}

export interface DsnInput {
  hostname: string;
  queueId: string;
  envelope: Envelope;
  recipients: DsnRecipient[];
  original: Buffer;
  /** Largest original returned whole. */
  sizeLimit: number;
  now: number;
}

export function buildDsn(i: DsnInput): Buffer {
  const boundary = `${i.queueId}.${crypto.randomBytes(6).toString('hex')}/${i.hostname}`;
  const global = Boolean(i.envelope.smtputf8) || i.recipients.some((r) => hasNonAscii(r.address)) || hasNonAscii(i.envelope.mailFrom);
  const failed = i.recipients.filter((r) => r.action === 'failed');
  const delayed = i.recipients.filter((r) => r.action === 'delayed');
  const subject = failed.length
    ? 'Undelivered Mail Returned to Sender'
    : delayed.length
      ? 'Delayed Mail (still being retried)'
      : 'Successful Mail Delivery Report';
  const crlf = '\r\n';
  const head = [
    `From: Mail Delivery System <MAILER-DAEMON@${i.hostname}>`,
    `To: <${oneLine(i.envelope.mailFrom)}>`,
    `Subject: ${subject}`,
    `Date: ${rfc5322Date(i.now)}`,
    `Message-ID: <${i.queueId}.${crypto.randomBytes(4).toString('hex')}.dsn@${i.hostname}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status;${crlf}\tboundary="${boundary}"`,
  ];
  const human: string[] = [`This is the mail system at host ${i.hostname}.`, ''];
  if (failed.length) {
    human.push("I'm sorry to have to inform you that your message could not", 'be delivered to one or more recipients. It is attached below.', '');
  } else if (delayed.length) {
    human.push('Your message could not be delivered yet to the recipients below.', 'It is still being retried; you do not need to send it again.', '');
  } else {
    human.push('Your message was successfully delivered to the recipients below.', '');
  }
  for (const r of i.recipients) human.push(`<${oneLine(r.address)}>: ${oneLine(r.diagnostic ?? r.status)}`);

  const status: string[] = [`Reporting-MTA: dns; ${i.hostname}`, `X-Facteur-Queue-ID: ${i.queueId}`];
  if (i.envelope.dsn?.envid) status.push(`Original-Envelope-Id: ${oneLine(i.envelope.dsn.envid)}`);
  if (i.envelope.mailFrom) status.push(`X-Original-Sender: rfc822; ${oneLine(i.envelope.mailFrom)}`);
  status.push(`Arrival-Date: ${rfc5322Date(i.envelope.receivedAt)}`);
  for (const r of i.recipients) {
    status.push('');
    status.push(`Final-Recipient: ${hasNonAscii(r.address) ? 'utf-8' : 'rfc822'}; ${oneLine(r.address)}`);
    if (r.orcpt) status.push(`Original-Recipient: ${oneLine(r.orcpt)}`);
    status.push(`Action: ${r.action}`, `Status: ${r.status}`);
    if (r.remoteMta && r.remoteMta !== 'localhost') status.push(`Remote-MTA: dns; ${oneLine(r.remoteMta)}`);
    if (r.diagnostic) status.push(`Diagnostic-Code: ${r.diagnosticType === 'smtp' ? 'smtp' : 'x-facteur'}; ${oneLine(r.diagnostic)}`);
    if (r.lastAttempt) status.push(`Last-Attempt-Date: ${rfc5322Date(r.lastAttempt)}`);
    if (r.willRetryUntil) status.push(`Will-Retry-Until: ${rfc5322Date(r.willRetryUntil)}`);
  }

  const wantFull = (i.envelope.dsn?.ret ?? 'FULL') === 'FULL' && failed.length > 0 && i.original.length <= i.sizeLimit;
  const originalPart = wantFull ? i.original : headerBlock(i.original);
  const originalType = wantFull ? (global ? 'message/global' : 'message/rfc822') : global ? 'message/global-headers' : 'text/rfc822-headers';

  const parts = [
    Buffer.from(
      head.join(crlf) +
        crlf +
        crlf +
        `This is a MIME-encapsulated message.${crlf}${crlf}` +
        `--${boundary}${crlf}Content-Description: Notification${crlf}Content-Type: text/plain; charset=utf-8${crlf}Content-Transfer-Encoding: 8bit${crlf}${crlf}` +
        human.join(crlf) +
        crlf +
        crlf +
        `--${boundary}${crlf}Content-Description: Delivery report${crlf}Content-Type: ${global ? 'message/global-delivery-status' : 'message/delivery-status'}${crlf}${crlf}` +
        status.join(crlf) +
        crlf +
        crlf +
        `--${boundary}${crlf}Content-Description: ${wantFull ? 'Undelivered Message' : 'Message Headers'}${crlf}Content-Type: ${originalType}${crlf}` +
        (wantFull ? `Content-Transfer-Encoding: 8bit${crlf}` : '') +
        crlf,
      'utf8',
    ),
    originalPart,
    Buffer.from(`${originalPart.length && !originalPart.subarray(-2).equals(Buffer.from(crlf)) ? crlf : ''}${crlf}--${boundary}--${crlf}`, 'utf8'),
  ];
  return Buffer.concat(parts);
}

/** The envelope of a DSN: null sender, to the original sender (RFC 3461 section 6.2: no DSN about a DSN). */
export function dsnEnvelope(original: Envelope, now: number): Envelope {
  return { mailFrom: '', rcptTo: [{ address: original.mailFrom, notify: ['NEVER'] }], receivedAt: now, smtputf8: hasNonAscii(original.mailFrom) || undefined, body8bit: true };
}
