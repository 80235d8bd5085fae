// Per-recipient delivery results and the helpers that turn SMTP replies and local errors into them.
// Pure; trusts nothing (reply text from remote servers is cleaned of control characters).

export interface RcptResult {
  /** Index into envelope.rcptTo. */
  index: number;
  state: 'delivered' | 'deferred' | 'failed';
  /** RFC 3463 status, e.g. 2.0.0, 4.4.1, 5.1.1. */
  status: string;
  /** Human-readable detail: the remote reply or the local reason. */
  reply: string;
  /** `smtp` when `reply` is a remote SMTP reply (used for Diagnostic-Code). */
  diagnosticType?: 'smtp';
  remoteMta?: string;
  /** The next hop announced DSN and got our NOTIFY/ORCPT: success notices are its job now (RFC 3461 section 5.2.2). */
  dsnPassedOn?: boolean;
}

export function cleanReply(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]+/g, ' ').trim().slice(0, 1000);
}

/** Map an SMTP reply (`550 5.1.1 text` or `550 text`) to a result. */
export function fromReply(index: number, code: number | undefined, response: string | undefined, remoteMta?: string): RcptResult {
  const text = cleanReply(response ?? '');
  const c = code ?? (Number(/^([2-5]\d\d)/.exec(text)?.[1]) || 451);
  const m = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(text);
  const klass = c >= 500 ? '5' : c >= 400 ? '4' : '2';
  const status = m && m[1][0] === klass ? m[1] : `${klass}.0.0`;
  return {
    index,
    state: klass === '2' ? 'delivered' : klass === '4' ? 'deferred' : 'failed',
    status,
    reply: text || `${c}`,
    diagnosticType: 'smtp',
    remoteMta,
  };
}

export function local(index: number, state: RcptResult['state'], status: string, reply: string, remoteMta?: string): RcptResult {
  return { index, state, status, reply: cleanReply(reply), remoteMta };
}
