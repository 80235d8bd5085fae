// SMTP replies as values built in one place: basic code, enhanced code (RFC 3463) whose class digit follows the basic code, text.
// Pure; trusts nothing (text is stripped of control characters so a reply can never be split).

export class SmtpReply extends Error {
  readonly code: number;
  readonly enhanced: string;
  readonly text: string;
  /** smtp-server reads `responseCode` from errors handed to its callbacks. */
  readonly responseCode: number;

  constructor(code: number, enhanced: string, text: string) {
    const clean = text.replace(/[\x00-\x1f\x7f]/g, ' ');
    if (!/^[245]\d\d$/.test(String(code))) throw new Error(`bad SMTP code ${code}`);
    if (!/^[245]\.\d{1,3}\.\d{1,3}$/.test(enhanced) || enhanced[0] !== String(code)[0]) {
      throw new Error(`enhanced code ${enhanced} does not match ${code}`);
    }
    super(`${enhanced} ${clean}`);
    this.code = code;
    this.enhanced = enhanced;
    this.text = clean;
    this.responseCode = code;
  }

  /** The wire form, without CRLF: `553 5.7.1 text`. */
  override toString(): string {
    return `${this.code} ${this.enhanced} ${this.text}`;
  }

  get temporary(): boolean {
    return this.code >= 400 && this.code < 500;
  }

  static ok(enhanced: string, text: string, code = 250): SmtpReply {
    return new SmtpReply(code, enhanced, text);
  }
  static temp(enhanced: string, text: string, code = 451): SmtpReply {
    return new SmtpReply(code, enhanced, text);
  }
  static perm(enhanced: string, text: string, code = 550): SmtpReply {
    return new SmtpReply(code, enhanced, text);
  }
}

/** The replies facteur's policy gives, named once so tests and docs quote the same text. */
export const Replies = {
  relayDenied: () => SmtpReply.perm('5.7.1', 'Relay access denied', 554),
  authRequired: () => SmtpReply.perm('5.7.0', 'Authentication required', 530),
  tlsRequired: () => SmtpReply.perm('5.7.11', 'Must issue a STARTTLS command first', 538),
  authNotEnabled: () => SmtpReply.perm('5.5.1', 'Error: authentication not enabled', 503),
  authInvalid: () => SmtpReply.perm('5.7.8', 'Authentication credentials invalid', 535),
  authTempfail: () => SmtpReply.temp('4.7.0', 'Temporary authentication failure, try again later', 454),
  authBlocked: () => SmtpReply.temp('4.7.0', 'Too many authentication failures, try again later', 454),
  senderNotOwned: (addr: string) => SmtpReply.perm('5.7.1', `Sender address rejected: not owned by user (${addr})`, 553),
  fromNotOwned: (addr: string) => SmtpReply.perm('5.7.1', `From: header address rejected: not owned by user (${addr})`, 553),
  memberSenderUnauth: () => SmtpReply.perm('5.7.1', 'Sender address rejected: this address belongs to a member, authenticate on the submission port', 553),
  tooBig: () => SmtpReply.perm('5.3.4', 'Message size exceeds fixed maximum message size', 552),
  queueError: () => SmtpReply.temp('4.3.0', 'Queue write error, try again later', 451),
  internal: () => SmtpReply.temp('4.3.0', 'Internal error, try again later', 451),
  vrfyDisabled: () => SmtpReply.perm('5.5.1', 'VRFY command is disabled', 502),
  bareLf: () => SmtpReply.perm('5.5.2', 'Message contains bare <CR> or <LF> (RFC 5321 2.3.8)', 550),
  nul: () => SmtpReply.perm('5.6.0', 'Message contains NUL characters', 554),
  longLine: () => SmtpReply.perm('5.5.2', 'Message has a line longer than 998 octets (RFC 5322 2.1.1)', 550),
  nulCommand: () => SmtpReply.perm('5.5.2', 'Error: NUL character in command', 500),
} as const;
