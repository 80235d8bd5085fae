// `facteur queue`: list, show, flush, hold, release, delete and bounce queued mail (mailq/postqueue/postsuper).
// Trusts the spool directory it is pointed at; queue ids from the command line are validated before use as file names.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadConfigFile } from '../../config/load.js';
import { FacteurError, UsageError } from '../../lib/errors.js';
import { Spool, isQueueId, type QueueEntry } from '../../queue/spool.js';
import { bounceMessage } from '../../delivery/admin.js';
import { requestFlush } from '../../delivery/scheduler.js';
import { queueDirFromConfig } from '../../delivery/options.js';

const USAGE = `usage: facteur queue COMMAND [ID|ALL] [--spool DIR | --data DIR | --config FILE]

commands:
  list [--json]     every queued message: id, state, size, age, sender, recipients, last error, next attempt (mailq)
  show ID [--raw]   envelope, per-recipient status and headers of one message (--raw: the whole message)
  flush [ID]        ask the running server to retry now: one message, or every deferred one (postqueue -f / -i)
  hold ID|ALL       put on hold: not delivered until released (postsuper -h)
  release ID|ALL    take off hold and retry now (postsuper -H)
  delete ID|ALL     remove without notice (postsuper -d)
  bounce ID|ALL     fail every pending recipient now and send the sender a bounce

  --spool DIR       the spool directory
  --data DIR        the data directory (spool in DIR/queue)
  --config FILE     read [server] data_dir / [queue] dir from this configuration (also FACTEUR_CONFIG)
                    default: ./.facteur/queue (the embedded default of facteur serve)

flush works by dropping a request file into <spool>/control/; the running scheduler watches that directory
(and rescans it every [queue] scan_interval). Without a running server the request waits for the next start.
`;

function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

function iso(ms: number | undefined): string {
  return ms ? new Date(ms).toISOString() : '-';
}

function entryJson(e: QueueEntry, now: number) {
  return {
    id: e.id,
    state: e.state,
    size: e.size,
    arrival: iso(e.envelope.receivedAt),
    ageSeconds: Math.round((now - e.envelope.receivedAt) / 1000),
    sender: e.envelope.mailFrom,
    attempts: e.status.attempts,
    nextAttempt: e.state === 'deferred' ? iso(e.status.nextAttempt) : e.state === 'active' ? 'now' : 'on hold',
    lastError: e.status.lastError ?? null,
    recipients: e.status.recipients.map((r) => ({ address: r.address, state: r.state, status: r.status ?? null, lastError: r.lastError ?? null })),
  };
}

async function resolveSpoolDir(opts: { spool?: string; data?: string; config?: string }): Promise<string> {
  if (opts.spool) return path.resolve(opts.spool);
  if (opts.data) return path.resolve(opts.data, 'queue');
  const file = opts.config ?? process.env.FACTEUR_CONFIG;
  if (file) return path.resolve(queueDirFromConfig(await loadConfigFile(file)));
  return path.resolve('.facteur', 'queue');
}

async function bounceSettings(opts: { config?: string }): Promise<{ hostname: string; bounceSizeLimit: number }> {
  const file = opts.config ?? process.env.FACTEUR_CONFIG;
  const out = { hostname: os.hostname(), bounceSizeLimit: 50_000 };
  if (file) {
    const cfg = await loadConfigFile(file);
    if (cfg.server?.hostname) out.hostname = String(cfg.server.hostname);
    if (cfg.queue?.bounce_size_limit) out.bounceSizeLimit = Number(cfg.queue.bounce_size_limit);
  }
  return out;
}

export async function run(argv: string[]): Promise<number> {
  const opts: { spool?: string; data?: string; config?: string; json?: boolean; raw?: boolean } = {};
  const pos: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined || v.startsWith('--')) throw new UsageError(`queue: ${a} needs a value\n${USAGE}`);
      return v;
    };
    if (a === '--spool') opts.spool = val();
    else if (a === '--data') opts.data = val();
    else if (a === '--config' || a === '-c') opts.config = val();
    else if (a === '--json') opts.json = true;
    else if (a === '--raw') opts.raw = true;
    else if (a === '-h' || a === '--help') {
      process.stdout.write(USAGE);
      return 0;
    } else if (a.startsWith('-')) throw new UsageError(`queue: unknown option ${a}\n${USAGE}`);
    else pos.push(a);
  }
  const [cmd, target, ...extra] = pos;
  if (!cmd) throw new UsageError(`queue: missing command\n${USAGE}`);
  if (extra.length) throw new UsageError(`queue: too many arguments\n${USAGE}`);
  const dir = await resolveSpoolDir(opts);
  try {
    await fsp.access(path.join(dir, 'active'));
  } catch {
    throw new FacteurError('ENOSPOOL', `no queue at ${dir} (give --spool DIR, --data DIR or --config FILE)`);
  }
  // recover: false — a running server may be writing into incoming/ right now.
  const spool = await Spool.open(dir, { recover: false });
  const now = Date.now();
  const out = (s: string) => process.stdout.write(s);

  const needId = (allowAll: boolean): string[] | Promise<string[]> => {
    if (!target) throw new UsageError(`queue ${cmd}: give a queue ID${allowAll ? ' or ALL' : ''}`);
    if (allowAll && target === 'ALL') return spool.list().then((l) => l.map((e) => e.id));
    if (!isQueueId(target)) throw new UsageError(`queue ${cmd}: '${target}' is not a queue ID (see facteur queue list)`);
    return [target];
  };
  const forEach = async (verb: string, ids: string[], fn: (id: string) => Promise<boolean>): Promise<number> => {
    let n = 0;
    for (const [i, id] of ids.entries()) {
      if (await fn(id)) n++;
      if (ids.length > 200 && (i + 1) % 100 === 0) process.stderr.write(`${verb}: ${i + 1}/${ids.length}\n`);
    }
    out(`${verb}: ${n} message${n === 1 ? '' : 's'}\n`);
    if (ids.length === 1 && n === 0) {
      process.stderr.write(`facteur: queue ${cmd}: ${ids[0]} not found (or not in a state where ${cmd} applies)\n`);
      return 1;
    }
    return 0;
  };

  switch (cmd) {
    case 'list': {
      if (target) throw new UsageError(`queue list takes no ID (use queue show ID)`);
      const list = await spool.list();
      if (opts.json) {
        out(`${JSON.stringify(list.map((e) => entryJson(e, now)), null, 2)}\n`);
        return 0;
      }
      if (!list.length) {
        out('Mail queue is empty\n');
        return 0;
      }
      out(`${'Queue ID'.padEnd(22)} ${'State'.padEnd(8)} ${'Size'.padStart(9)} ${'Age'.padStart(5)}  Sender / Recipients\n`);
      let total = 0;
      for (const e of list) {
        total += e.size;
        const next = e.state === 'deferred' ? `next attempt ${iso(e.status.nextAttempt)}` : e.state === 'hold' ? 'on hold' : 'due now';
        out(`${e.id.padEnd(22)} ${e.state.padEnd(8)} ${String(e.size).padStart(9)} ${age(now - e.envelope.receivedAt).padStart(5)}  <${e.envelope.mailFrom}>  (${next}, ${e.status.attempts} attempt${e.status.attempts === 1 ? '' : 's'})\n`);
        for (const r of e.status.recipients) {
          const err = r.lastError && r.state !== 'delivered' ? `  ${r.lastError}` : '';
          out(`${' '.repeat(50)}${r.address} [${r.state}]${err}\n`);
        }
      }
      out(`-- ${Math.ceil(total / 1024)} Kbytes in ${list.length} Request${list.length === 1 ? '' : 's'}.\n`);
      return 0;
    }
    case 'show': {
      const [id] = await needId(false);
      const e = await spool.get(id);
      if (!e) throw new FacteurError('ENOTQUEUED', `message ${id} is not in the queue`);
      const msg = await spool.readMessage(id);
      if (opts.raw) {
        process.stdout.write(msg);
        return 0;
      }
      const j = entryJson(e, now);
      out(`${JSON.stringify({ ...j, envelope: e.envelope }, null, 2)}\n\n`);
      const i = msg.indexOf('\r\n\r\n');
      out(`${msg.subarray(0, i >= 0 ? i : msg.length).toString('utf8')}\n`);
      return 0;
    }
    case 'flush': {
      if (target && !isQueueId(target)) throw new UsageError(`queue flush: '${target}' is not a queue ID`);
      const file = await requestFlush(spool.dirOf('control'), target);
      for (let i = 0; i < 30; i++) {
        try {
          await fsp.access(file);
        } catch {
          out(`flush: request taken by the running server${target ? ` for ${target}` : ''}\n`);
          return 0;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      out('flush: request queued; no running server took it yet (it will at its next start or rescan)\n');
      return 0;
    }
    case 'hold':
      return forEach('held', await needId(true), async (id) => {
        const st = await spool.locate(id);
        return st === 'active' || st === 'deferred' ? spool.move(id, st, 'hold') : false;
      });
    case 'release': {
      const code = await forEach('released', await needId(true), async (id) => ((await spool.locate(id)) === 'hold' ? spool.move(id, 'hold', 'active') : false));
      await requestFlush(spool.dirOf('control'), target === 'ALL' ? undefined : target);
      return code;
    }
    case 'delete':
      return forEach('deleted', await needId(true), (id) => spool.remove(id));
    case 'bounce': {
      const settings = await bounceSettings(opts);
      const ids = await needId(true);
      const code = await forEach('bounced', ids, async (id) => {
        if (!(await spool.locate(id))) return false;
        const dsn = await bounceMessage(spool, id, settings);
        if (dsn && ids.length === 1) out(`bounce queued as ${dsn}\n`);
        return true;
      });
      await requestFlush(spool.dirOf('control'));
      return code;
    }
    default:
      throw new UsageError(`queue: unknown command '${cmd}'\n${USAGE}`);
  }
}
