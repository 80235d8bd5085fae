// facteur's single entry point: picks the subcommand and hands it the rest of argv.
// Trusts argv only as far as each command's own parser does; the only place that wires parts together.
import { FacteurError, UsageError } from '../lib/errors.js';
import { daemonStackTraces } from '../observability/log.js';

type Command = { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> };

const commands: Record<string, Command> = {
  authd: { summary: 'saslauthd-compatible authentication daemon (same flags as saslauthd)', load: () => import('./commands/authd.js') },
  testauth: { summary: 'check one login through a saslauthd socket (testsaslauthd flags, plus --explain)', load: () => import('./commands/testauth.js') },
  user: { summary: 'manage a users file: user add|passwd|del|list --file PATH [LOGIN]', load: () => import('./commands/user.js') },
  serve: { summary: 'run the SMTP server (inbound 25, submission 587, submissions 465)', load: () => import('./commands/serve.js') },
  config: { summary: 'print the configuration reference: config --defaults', load: () => import('./commands/config.js') },
  dkim: { summary: 'DKIM keys: dkim keygen DOMAIN [--selector S] (prints the DNS TXT record)', load: () => import('./commands/dkim.js') },
  check: { summary: 'validate the configuration and environment, explain each problem', load: () => import('./commands/check.js') },
  queue: { summary: 'inspect and manage the mail queue', load: () => import('./commands/queue.js') },
};

function usage(): string {
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `usage: facteur COMMAND [ARGS...]\n\ncommands:\n${lines.join('\n')}\n\nRun 'facteur COMMAND -h' for a command's options.\n`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(usage());
    return name ? 0 : 1;
  }
  const cmd = commands[name];
  if (!cmd) {
    process.stderr.write(`facteur: unknown command '${name}'\n\n${usage()}`);
    return 1;
  }
  if (name === 'serve' || name === 'authd') daemonStackTraces();
  const mod = await cmd.load();
  return mod.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`facteur: ${err.message}\n`);
      process.exitCode = 1;
    } else if (err instanceof FacteurError) {
      process.stderr.write(`facteur: ${err.message}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`facteur: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 70;
    }
  },
);
