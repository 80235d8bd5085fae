// The contract between the SMTP server and the queue: an envelope plus a byte stream in, a durable queue id out.
// Pure types; the spool implementation lives beside it.
import type { Readable } from 'node:stream';

export interface RecipientParams {
  address: string;
  /** RFC 3461 NOTIFY values (NEVER | SUCCESS,FAILURE,DELAY), if given. */
  notify?: string[];
  /** RFC 3461 ORCPT, if given (e.g. `rfc822;bob@example.org`). */
  orcpt?: string;
}

export interface Envelope {
  /** Reverse path; empty string for the null sender `<>`. */
  mailFrom: string;
  rcptTo: RecipientParams[];
  /** RFC 3461 RET and ENVID from MAIL FROM. */
  dsn?: { ret?: 'FULL' | 'HDRS'; envid?: string };
  /** Authenticated login, if any. */
  authUser?: string;
  clientAddress?: string;
  heloName?: string;
  smtputf8?: boolean;
  body8bit?: boolean;
  /** Arrival time, ms since epoch. */
  receivedAt: number;
}

export interface QueueWriter {
  /**
   * Store a message durably: resolves with the queue id only once the data file and its directory entry are fsynced.
   * Rejects with a temporary FacteurError (disk full, read-only) so the SMTP side answers 4xx.
   */
  commit(envelope: Envelope, message: Readable): Promise<string>;
}
