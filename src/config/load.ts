// Loads facteur's TOML configuration, applies FACTEUR_SECTION_KEY environment overrides and validates every key
// against the sections declared in ./sections/ (unknown keys get a "did you mean"). Trusts the sections; reads one file.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parse as parseToml } from 'smol-toml';
import { ConfigError } from '../lib/errors.js';
import type { Param, Section } from './schema.js';

export type ConfigValues = Record<string, Record<string, unknown>>;

const SECTIONS_DIR = path.join(import.meta.dirname, 'sections');

function isSection(v: unknown): v is Section {
  return typeof v === 'object' && v !== null && typeof (v as Section).name === 'string' && typeof (v as Section).params === 'object';
}

/** Every section declared in src/config/sections/*.ts (whoever owns the file), sorted by name. */
export async function loadSections(dir = SECTIONS_DIR): Promise<Section[]> {
  const files = fs.readdirSync(dir).filter((f) => /\.(ts|js)$/.test(f) && !f.endsWith('.d.ts') && !f.includes('.test.')).sort();
  const seen = new Map<string, Section>();
  for (const f of files) {
    const mod = (await import(pathToFileURL(path.join(dir, f)).href)) as Record<string, unknown>;
    for (const v of Object.values(mod)) if (isSection(v) && !seen.has(v.name)) seen.set(v.name, v);
  }
  return [...seen.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/** Levenshtein distance, for "did you mean". */
export function distance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length];
}

function didYouMean(word: string, candidates: string[]): string {
  let best = '';
  let bestD = Infinity;
  for (const c of candidates) {
    const dd = distance(word.toLowerCase(), c.toLowerCase());
    if (dd < bestD) [best, bestD] = [c, dd];
  }
  return best && bestD <= Math.max(2, Math.floor(word.length / 3)) ? ` (did you mean '${best}'?)` : '';
}

/** "30s", "5m", "1h", "1d", "250ms", or a bare number of seconds → milliseconds. */
export function durationMs(v: string | number): number {
  if (typeof v === 'number') return v * 1000;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(v.trim());
  if (!m) throw new ConfigError(`'${v}' is not a duration (write e.g. "30s", "5m", "1h", "2d" or "250ms")`);
  const mult = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] ?? 's'] ?? 1000;
  return Math.round(Number(m[1]) * mult);
}

function coerce(where: string, p: Param, raw: unknown, fromEnv: boolean): unknown {
  const bad = (what: string) => new ConfigError(`${where}: expected ${what}, got ${JSON.stringify(raw)}`);
  let v: unknown = raw;
  switch (p.type) {
    case 'string':
      if (typeof v !== 'string') throw bad('a string');
      break;
    case 'integer':
      if (fromEnv && typeof v === 'string' && /^-?\d+$/.test(v)) v = Number(v);
      if (typeof v === 'bigint') v = Number(v);
      if (typeof v !== 'number' || !Number.isInteger(v)) throw bad('an integer');
      break;
    case 'boolean':
      if (fromEnv && typeof v === 'string' && /^(true|false|yes|no|1|0)$/i.test(v)) v = /^(true|yes|1)$/i.test(v);
      if (typeof v !== 'boolean') throw bad('true or false');
      break;
    case 'string[]':
      if (fromEnv && typeof v === 'string') v = v.split(/[\s,]+/).filter(Boolean);
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw bad('a list of strings, e.g. ["a", "b"]');
      break;
    case 'duration':
      if (fromEnv && typeof v === 'string' && /^\d+$/.test(v)) v = Number(v);
      if (typeof v !== 'string' && typeof v !== 'number') throw bad('a duration such as "30s" or "5m"');
      try {
        durationMs(v as string | number);
      } catch (err) {
        throw new ConfigError(`${where}: ${(err as Error).message}`);
      }
      break;
  }
  if (p.oneOf && !p.oneOf.includes(v as string)) throw new ConfigError(`${where}: must be one of ${p.oneOf.map((o) => `"${o}"`).join(', ')}, got ${JSON.stringify(v)}${didYouMean(String(v), [...p.oneOf])}`);
  const problem = p.check?.(v);
  if (problem) throw new ConfigError(`${where}: ${problem}`);
  return v;
}

export interface LoadOptions {
  /** TOML text (already read) or undefined for defaults only. */
  text?: string;
  file?: string;
  env?: NodeJS.ProcessEnv;
  sections?: Section[];
}

/** Validate a parsed document and overlay it (and the environment) on the declared defaults. */
export async function loadConfig(o: LoadOptions = {}): Promise<ConfigValues> {
  const sections = o.sections ?? (await loadSections());
  const file = o.file ?? 'config';
  let doc: Record<string, unknown> = {};
  if (o.text !== undefined) {
    try {
      doc = parseToml(o.text) as Record<string, unknown>;
    } catch (err) {
      throw new ConfigError(`${file}: not valid TOML: ${(err as Error).message.split('\n')[0]}`, { cause: err });
    }
  }
  const byName = new Map(sections.map((s) => [s.name, s]));
  const out: ConfigValues = {};
  for (const s of sections) out[s.name] = Object.fromEntries(Object.entries(s.params).map(([k, p]) => [k, structuredClone(p.default)]));
  for (const [name, body] of Object.entries(doc)) {
    const s = byName.get(name);
    if (!s) throw new ConfigError(`${file}: unknown section [${name}]${didYouMean(name, [...byName.keys()])}; sections are: ${[...byName.keys()].join(', ')}`);
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ConfigError(`${file}: '${name}' must be a table: write [${name}] then key = value lines`);
    for (const [key, raw] of Object.entries(body)) {
      const p = Object.hasOwn(s.params, key) ? s.params[key] : undefined; // never an inherited name (constructor, __proto__)
      if (!p) throw new ConfigError(`${file}: unknown key '${key}' in [${name}]${didYouMean(key, Object.keys(s.params))}; run 'facteur config --defaults' for the list`);
      out[name][key] = coerce(`${file}: [${name}] ${key}`, p, raw, false);
    }
  }
  const env = o.env ?? {};
  for (const [k, raw] of Object.entries(env)) {
    if (!k.startsWith('FACTEUR_') || raw === undefined) continue;
    const rest = k.slice('FACTEUR_'.length).toLowerCase();
    const s = sections.find((sec) => rest.startsWith(`${sec.name}_`) && s2key(sec, rest.slice(sec.name.length + 1)));
    if (!s) continue; // other FACTEUR_* variables (e.g. FACTEUR_CONFIG) are not configuration keys
    const key = rest.slice(s.name.length + 1);
    out[s.name][key] = coerce(`environment ${k}`, s.params[key], raw, true);
  }
  return out;
}

function s2key(s: Section, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(s.params, key);
}

export async function loadConfigFile(file: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<ConfigValues> {
  let text: string | undefined;
  if (file) {
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read configuration file ${file}: ${(err as Error).message} (give another with --config, or none for the built-in defaults)`);
    }
  }
  return loadConfig({ text, file, env });
}

/** `facteur config --defaults`: every section and key with its default and doc, as a commented TOML file. */
export function renderDefaults(sections: Section[]): string {
  const lines = ['# facteur configuration reference: every key with its default.', '# Environment variables override: FACTEUR_<SECTION>_<KEY>=value (lists comma-separated).', ''];
  for (const s of sections) {
    lines.push(`# ${s.doc}`, `[${s.name}]`);
    for (const [k, p] of Object.entries(s.params)) {
      const allowed = p.oneOf ? ` (one of: ${p.oneOf.join(', ')})` : '';
      lines.push(`# ${p.doc}${allowed}`, `${k} = ${tomlValue(p.default)}`);
    }
    lines.push('');
  }
  return lines.join('\n');
}

function tomlValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  return String(v);
}

/** The same reference as Markdown (docs/configuration.md is generated with `facteur config --markdown`). */
export function renderMarkdown(sections: Section[]): string {
  const esc = (t: string) => t.replace(/\|/g, '\\|');
  const out = [
    '# facteur configuration reference',
    '',
    'Generated by `facteur config --markdown` from the declarations in `src/config/sections/`; do not edit by hand.',
    'The file is TOML (`facteur serve --config FILE`); every key may also be set from the environment as',
    '`FACTEUR_<SECTION>_<KEY>` (lists comma-separated, durations like `30s`, `5m`, `1h`, `2d`). Unknown or misspelled',
    "keys stop the server with a 'did you mean' message; `facteur config --check FILE` checks a file without starting.",
    '',
  ];
  for (const s of sections) {
    out.push(`## [${s.name}]`, '', s.doc, '', '| key | type | default | meaning |', '| --- | --- | --- | --- |');
    for (const [k, p] of Object.entries(s.params)) {
      const allowed = p.oneOf ? ` One of: ${p.oneOf.map((o) => `\`${o}\``).join(', ')}.` : '';
      out.push(`| \`${k}\` | ${p.type} | \`${esc(tomlValue(p.default))}\` | ${esc(p.doc)}.${allowed} |`);
    }
    out.push('');
  }
  return out.join('\n');
}
