// `facteur config`: prints the configuration reference (--defaults) or checks a file (--check FILE).
// Trusts the sections declared in src/config/sections/.
import { loadSections, renderDefaults, renderMarkdown, loadConfigFile } from '../../config/load.js';
import { UsageError } from '../../lib/errors.js';

const USAGE = `usage: facteur config --defaults        print every key with its default and documentation (TOML)
       facteur config --check FILE      validate a configuration file (unknown keys, types, values)
       facteur config --markdown        the same reference as Markdown (docs/configuration.md)
`;

export async function run(argv: string[]): Promise<number> {
  if (argv[0] === '--defaults' && argv.length === 1) {
    process.stdout.write(renderDefaults(await loadSections()));
    return 0;
  }
  if (argv[0] === '--markdown' && argv.length === 1) {
    process.stdout.write(renderMarkdown(await loadSections()));
    return 0;
  }
  if (argv[0] === '--check' && argv.length === 2) {
    await loadConfigFile(argv[1]);
    process.stdout.write(`${argv[1]}: ok\n`);
    return 0;
  }
  if (argv[0] === '-h' || argv[0] === '--help') {
    process.stdout.write(USAGE);
    return 0;
  }
  throw new UsageError(`config: ${argv.length ? `unknown arguments ${argv.join(' ')}` : 'nothing to do'}\n${USAGE}`);
}
