// Machine description and Markdown/console tables for the authd benchmark; rewrites one marked section of docs/benchmarks.md.
// Trusts the measurements it is given; reads /proc and runs `saslauthd -v` / `slapd -VV` only for version strings.
import fs from 'node:fs';
import os from 'node:os';
import { spawnSync } from 'node:child_process';

export interface MachineInfo {
  cpu: string;
  cores: number;
  ramGiB: number;
  kernel: string;
  node: string;
  cyrus: string;
  slapd: string;
  dovecot?: string;
}

/** First non-empty line a command prints (saslauthd -v and slapd -VV write their version on stderr and may exit non-zero). */
function firstLine(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 5000 });
  return `${r.stdout ?? ''}\n${r.stderr ?? ''}`.split('\n').find((l) => l.trim())?.trim() ?? 'unknown';
}

export function machineInfo(): MachineInfo {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  return {
    cpu: model.trim(),
    cores: os.availableParallelism(),
    ramGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    cyrus: firstLine('/usr/sbin/saslauthd', ['-v']),
    slapd: firstLine('/usr/sbin/slapd', ['-VV']).replace(/^@\(#\) \$OpenLDAP: /, '').replace(/ \$$/, ''),
    dovecot: fs.existsSync('/usr/sbin/dovecot') ? firstLine('/usr/sbin/dovecot', ['--version']) : undefined,
  };
}

/** A simple aligned text table for the console. */
export function textTable(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function markdownTable(head: string[], rows: string[][]): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  return [
    `| ${head.map(esc).join(' | ')} |`,
    `| ${head.map((_, i) => (i === 0 ? '---' : '---:')).join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
  ].join('\n');
}

export const SECTION_START = '<!-- bench:authd:start -->';
export const SECTION_END = '<!-- bench:authd:end -->';
const markers = (id: string) => ({ start: `<!-- bench:${id}:start -->`, end: `<!-- bench:${id}:end -->` });

const PREAMBLE = `# Benchmarks

Numbers written by the benchmark scripts themselves; each section is replaced on every run. Run them on an idle machine.
`;

/** Replace (or append) the section marked `id` (default `authd`) of a Markdown file, leaving the rest of the file alone. */
export function writeSection(file: string, body: string, id = 'authd'): void {
  let text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : PREAMBLE;
  const { start, end } = markers(id);
  const block = `${start}\n${body.trim()}\n${end}`;
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  if (a >= 0 && b > a) text = text.slice(0, a) + block + text.slice(b + end.length);
  else text = `${text.trimEnd()}\n\n${block}\n`;
  fs.writeFileSync(file, text.endsWith('\n') ? text : `${text}\n`);
}
