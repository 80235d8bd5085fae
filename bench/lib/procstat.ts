// CPU time of a process and its descendants, read from /proc/<pid>/stat (utime + stime, in clock ticks).
// Trusts /proc (Linux only); processes that vanish between listing and reading are skipped.
import fs from 'node:fs';

/** USER_HZ: the unit of utime/stime. 100 on every Linux architecture Node supports. */
const TICKS_PER_SECOND = 100;

interface Stat {
  ppid: number;
  pgrp: number;
  /** utime + stime: this process's own CPU, in ticks (rounded down per process). */
  ticks: number;
  /** cutime + cstime: CPU of children that exited and were reaped, in ticks. */
  childTicks: number;
}

/** The fields of /proc/PID/stat used here, or null when the process is gone. */
export function readStat(pid: number): Stat | null {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime, stime, cutime, cstime are fields 14-17.
  return { ppid: Number(rest[1]), pgrp: Number(rest[2]), ticks: Number(rest[11]) + Number(rest[12]), childTicks: Number(rest[13]) + Number(rest[14]) };
}

/**
 * Time on CPU of all the threads of a process, from /proc/<pid>/task/<tid>/schedstat (exact, where tick counts round
 * each process down). /proc/<pid>/schedstat alone is the main thread only: slapd works in its pool threads.
 */
function runtimeMs(pid: number): number | null {
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return null;
  }
  let ns = 0;
  for (const tid of tids) {
    try {
      ns += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      /* thread gone */
    }
  }
  return ns / 1e6;
}

/** `pid` and every live descendant. */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(Number(name));
    if (!st) continue;
    const list = children.get(st.ppid) ?? [];
    list.push(Number(name));
    children.set(st.ppid, list);
  }
  const out: number[] = [];
  const todo = [pid];
  while (todo.length) {
    const p = todo.pop()!;
    out.push(p);
    todo.push(...(children.get(p) ?? []));
  }
  return out;
}

/**
 * CPU milliseconds used so far by `pid` and its live descendants (exact run time, which matters for Cyrus's 16 processes
 * sharing the work), plus the descendants they reaped (Dovecot's short-lived login processes, in ticks), so that a
 * tree sum counts every process once.
 */
export function treeCpuMs(pid: number): number {
  let ms = 0;
  for (const p of processTree(pid)) {
    const st = readStat(p);
    if (!st) continue;
    ms += runtimeMs(p) ?? (st.ticks * 1000) / TICKS_PER_SECOND;
    ms += (st.childTicks * 1000) / TICKS_PER_SECOND;
  }
  return ms;
}

/** CPU milliseconds all processes of the machine have used since boot (every core; idle and iowait excluded). */
export function machineBusyMs(): number {
  const cpu = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already inside user.
  const [user, nice, system, , , irq, softirq, steal] = cpu;
  return ((user + nice + system + irq + softirq + (steal ?? 0)) * 1000) / TICKS_PER_SECOND;
}

/**
 * The process that listens on 127.0.0.1/[::]:`port` (TCP): the socket's inode from /proc/net/tcp*, then the process
 * holding it whose parent does not (Dovecot's children inherit the listener; its master is the one we want).
 */
export function pidListeningOn(port: number): number | undefined {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = fs.readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      const localPort = parseInt(cols[1].split(':')[1], 16);
      if (localPort === port && cols[3] === '0A') inodes.add(cols[9]);
    }
  }
  if (!inodes.size) return undefined;
  const holders = new Set<number>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${name}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let link: string;
      try {
        link = fs.readlinkSync(`/proc/${name}/fd/${fd}`);
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(link);
      if (m && inodes.has(m[1])) {
        holders.add(Number(name));
        break;
      }
    }
  }
  for (const pid of holders) {
    const st = readStat(pid);
    if (st && !holders.has(st.ppid)) return pid;
  }
  return undefined;
}

/**
 * Before a measured cell, wait (up to `maxWaitMs`) for half a second in which the rest of the machine uses less than a
 * quarter of one core. After two waits in vain, stop waiting: the "others CPU" column then tells the story.
 */
export function quietWaiter(maxWaitMs: number): () => Promise<void> {
  let vainWaits = 0;
  return async () => {
    if (vainWaits >= 2) return;
    const deadline = Date.now() + maxWaitMs;
    while (Date.now() < deadline) {
      const m0 = machineBusyMs();
      await new Promise((r) => setTimeout(r, 500));
      if (machineBusyMs() - m0 < 125) {
        vainWaits = 0;
        return;
      }
    }
    vainWaits++;
  };
}
