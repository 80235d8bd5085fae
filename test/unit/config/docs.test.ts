// docs/configuration.md is generated from the section declarations: this keeps the committed file from drifting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { loadSections, renderMarkdown } from '../../../src/config/load.js';

test('docs/configuration.md is what `facteur config --markdown` prints (regenerate it after changing a section)', async () => {
  const committed = await fs.readFile(path.resolve(import.meta.dirname, '../../../docs/configuration.md'), 'utf8');
  assert.equal(committed, renderMarkdown(await loadSections()));
});
