// The messages between the primary of a multi-process `facteur serve` and its SMTP workers (node:cluster IPC).
// Both ends are facteur processes forked from the same program; each side still ignores messages it does not know.
import type { RateResult } from '../../policy/ratelimit.js';
import type { ListenerKind } from '../../smtp/server.js';

/** Worker → primary. */
export type WorkerMessage =
  | { t: 'facteur:ready'; bound: { kind: ListenerKind; host: string; port: number }[] }
  | { t: 'facteur:fatal'; message: string }
  | { t: 'facteur:commit'; ids: string[] }
  | { t: 'facteur:conn-acquire'; req: number; ip: string }
  | ConnReturn
  | { t: 'facteur:rate'; req: number; key: string; cost: number; windowMs: number; limit: number }
  | PenaltyEvent
  | LearnEvent;

/** Primary → worker. */
export type PrimaryMessage =
  | { t: 'facteur:conn-answer'; req: number; lent: number }
  | { t: 'facteur:conn-recall'; recall: number; ip?: string }
  | { t: 'facteur:rate-answer'; req: number; result?: RateResult; error?: string }
  | { t: 'facteur:reload' }
  | { t: 'facteur:stop' }
  | PenaltyEvent
  | LearnEvent;

/** Connection places given back to the primary: unasked, or in answer to a recall (its number). */
export interface ConnReturn {
  t: 'facteur:conn-return';
  returns: [ip: string, n: number][];
  recall?: number;
}

/** A wrong password or a success seen by one worker, relayed to the others so the brute-force counters are global. */
export interface PenaltyEvent {
  t: 'facteur:penalty';
  op: 'failure' | 'success';
  address?: string;
  login: string;
}

/** Member addresses learned at a successful AUTH, relayed to the other workers (port 25 refuses them unauthenticated). */
export interface LearnEvent {
  t: 'facteur:learn';
  login: string;
  addresses: string[];
}

export function isFacteurMessage(m: unknown): m is { t: string } {
  return typeof m === 'object' && m !== null && typeof (m as { t?: unknown }).t === 'string' && (m as { t: string }).t.startsWith('facteur:');
}
