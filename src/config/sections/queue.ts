// Configuration of the durable queue: where it lives, how long mail is retried and how bounces look.
// Pure declaration (see ../schema.ts).
import { defineSection } from '../schema.js';

const positive = (v: unknown): string | undefined => (typeof v === 'number' && v > 0 ? undefined : 'must be at least 1');

export const queue = defineSection('queue', 'The durable mail queue (spool) and the retry schedule', {
  dir: { type: 'string', default: '', doc: 'Spool directory (empty: <server.data_dir>/queue); must be on a local file system that honours fsync' },
  verify_on_start: { type: 'boolean', default: true, doc: 'Check every queued file\'s SHA-256 at startup (damaged files move to corrupt/); off: check only the end marker and length' },
  retry_initial: { type: 'duration', default: '5m', doc: 'Wait after the first temporary failure; doubled after each further one' },
  retry_max: { type: 'duration', default: '1h', doc: 'Longest wait between two delivery attempts' },
  max_lifetime: { type: 'duration', default: '5d', doc: 'Give up on a recipient that still fails temporarily this long after arrival, and bounce it (4.4.7)' },
  delay_warning: { type: 'duration', default: '0', doc: 'Send the sender a delay notice (DSN action "delayed") once a recipient is this late; 0: never' },
  scan_interval: { type: 'duration', default: '30s', doc: 'How often the scheduler rescans the spool for changes made by other processes (facteur queue) besides the flush trigger' },
  bounce_size_limit: { type: 'integer', default: 50_000, doc: 'Largest original message returned whole in a bounce; larger ones get their headers only', check: positive },
});
