// `facteur check`: validates configuration and environment and explains each problem in one sentence with the fix.
// Exit status 0 when nothing is an error, 1 otherwise (for scripts). Wires the checks of each part.
import fs from 'node:fs';
import { checkAuthd, checkSocketLayer, checkPostfix, type Finding } from '../../auth/check.js';
import { parseAuthdArgs } from '../../auth/daemon/options.js';
import { SOCKET_NAME } from '../../auth/daemon/run.js';
import { UsageError } from '../../lib/errors.js';
import { checkServeConfig } from '../../config/check.js';

const USAGE = `usage: facteur check [--config facteur.toml] [--authd "AUTHD FLAGS" | --defaults /etc/default/saslauthd] [--postfix DIR]

  --config FILE     check facteur serve's TOML configuration and what it points at: keys, TLS certificate and key,
                    listeners, relay, auth backend or socket, LDAP directory, data and spool directories, LMTP target

  --defaults FILE   check the authd started from this Debian defaults file (mechanism, its config, run directory)
  --authd FLAGS     the same, from authd flags, e.g. --authd "-a ldap -O /etc/saslauthd.conf -m /var/run/saslauthd"
  --postfix DIR     check a Postfix configuration directory (default /etc/postfix when it exists) against that authd
`;

export async function run(argv: string[]): Promise<number> {
  let authdArgs: string[] | undefined;
  let postfixDir: string | undefined;
  let configFile: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--defaults') authdArgs = ['--defaults', argv[++i]];
    else if (a === '--authd') authdArgs = (argv[++i] ?? '').split(/\s+/).filter(Boolean);
    else if (a === '--postfix') postfixDir = argv[++i];
    else if (a === '--config' || a === '-c') {
      configFile = argv[++i];
      if (!configFile) throw new UsageError(`check: --config needs a file\n${USAGE}`);
    } else if (a === '-h' || a === '--help') {
      process.stdout.write(USAGE);
      return 0;
    } else throw new UsageError(`check: unknown argument ${a}\n${USAGE}`);
  }
  // Like serve: with no argument at all, FACTEUR_CONFIG names the configuration to check.
  if (argv.length === 0 && process.env.FACTEUR_CONFIG) configFile = process.env.FACTEUR_CONFIG;
  const findings: Finding[] = [];
  if (configFile) findings.push(...(await checkServeConfig(configFile)));
  let socket: string | undefined;
  if (authdArgs) {
    try {
      const o = parseAuthdArgs([...authdArgs, '-f']);
      socket = `${o.runDir}/${SOCKET_NAME}`;
      findings.push(...(await checkAuthd(o)), checkSocketLayer());
    } catch (err) {
      findings.push({ level: 'error', message: (err as Error).message });
    }
  }
  if (!postfixDir && fs.existsSync('/etc/postfix/main.cf') && authdArgs) postfixDir = '/etc/postfix';
  if (postfixDir) findings.push(...checkPostfix(postfixDir, socket));
  if (findings.length === 0) {
    process.stdout.write(`nothing to check: give --config FILE, --defaults FILE, --authd FLAGS or --postfix DIR\n`);
    return 1;
  }
  for (const f of findings) process.stdout.write(`${f.level === 'ok' ? 'ok     ' : f.level === 'warning' ? 'warning' : 'error  '}  ${f.message}\n`);
  const errors = findings.filter((f) => f.level === 'error').length;
  process.stdout.write(errors ? `${errors} problem${errors > 1 ? 's' : ''} to fix\n` : 'no problem found\n');
  return errors ? 1 : 0;
}
