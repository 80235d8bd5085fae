// The Node flags bin/facteur's shebang gives facteur in production (`#!/usr/bin/env -S node FLAGS`), for benchmarks that
// start facteur's code another way (a bench entry point, or node with --cpu-prof): they must run it with the same flags.
import fs from 'node:fs';
import path from 'node:path';

export const FACTEUR_BIN = path.resolve(import.meta.dirname, '../../bin/facteur');

export function facteurNodeFlags(bin = FACTEUR_BIN): string[] {
  const first = fs.readFileSync(bin, 'utf8').split('\n', 1)[0];
  const m = /^#!\S*env(?: -S)? node(?:\s+(.*))?$/.exec(first.trim());
  if (!m) throw new Error(`${bin}: cannot read the Node flags of its first line: ${first}`);
  return m[1] ? m[1].trim().split(/\s+/) : [];
}
