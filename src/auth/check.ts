// `facteur check` for the authentication side: the Postfix ↔ Cyrus SASL ↔ authd chain the seed describes, and the
// mechanism itself (configuration loads, backend answers, a made-up user is refused). Reads config files; never logs a password.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { parseCyrusSaslConfig } from './client/index.js';
import { createBackend, groupId, SOCKET_NAME } from './daemon/run.js';
import type { AuthdOptions } from './daemon/options.js';
import { nativeSocketLayer, socketLayerFromEnv } from './daemon/listener.js';
import { createLogger } from '../observability/log.js';

export interface Finding {
  level: 'ok' | 'warning' | 'error';
  /** One sentence: what is wrong (or right), and the fix. */
  message: string;
}

const ok = (message: string): Finding => ({ level: 'ok', message });
const warn = (message: string): Finding => ({ level: 'warning', message });
const error = (message: string): Finding => ({ level: 'error', message });

/** Effective Postfix parameters through the real `postconf` (defaults included). */
function postconf(configDir: string, names: string[]): Record<string, string> {
  const out = execFileSync('postconf', ['-c', configDir, '-x', ...names], { encoding: 'utf8' });
  const values: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^(\S+) = ?(.*)$/.exec(line);
    if (m) values[m[1]] = m[2];
  }
  return values;
}

function smtpdChrooted(configDir: string): boolean {
  try {
    const out = execFileSync('postconf', ['-c', configDir, '-M'], { encoding: 'utf8' });
    for (const line of out.split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f[1] === 'inet' && f[7] === 'smtpd' && f[4] === 'y') return true;
    }
  } catch {
    /* no master.cf: not chrooted */
  }
  return false;
}

/** The fields of a line of an /etc/passwd-style file whose `key` column equals `value`. */
function dbEntry(file: string, key: number, value: string): string[] | undefined {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').map((l) => l.split(':')).find((f) => f[key] === value);
  } catch {
    return undefined;
  }
}

/** Can `user` (uid, primary gid and supplementary groups from the system files) enter the directory `st`? */
function canEnterDir(user: string, st: fs.Stats): boolean {
  if (st.mode & 0o001) return true;
  const pw = dbEntry('/etc/passwd', 0, user);
  if (pw && Number(pw[2]) === st.uid) return (st.mode & 0o100) !== 0;
  if (!(st.mode & 0o010)) return false;
  if (pw && Number(pw[3]) === st.gid) return true;
  return (dbEntry('/etc/group', 2, String(st.gid))?.[3] ?? '').split(',').includes(user);
}

/** Check a Postfix configuration directory against the authd that should serve it. */
export function checkPostfix(configDir: string, authdSocket?: string): Finding[] {
  const f: Finding[] = [];
  let p: Record<string, string>;
  try {
    p = postconf(configDir, ['smtpd_sasl_auth_enable', 'smtpd_sasl_type', 'smtpd_sasl_path', 'cyrus_sasl_config_path', 'queue_directory', 'mail_owner', 'smtpd_tls_auth_only', 'smtpd_tls_security_level', 'smtpd_relay_restrictions', 'smtpd_recipient_restrictions']);
  } catch (err) {
    return [error(`cannot read the Postfix configuration in ${configDir} with postconf: ${(err as Error).message.split('\n')[0]}`)];
  }
  if (p.smtpd_sasl_auth_enable !== 'yes') f.push(warn(`Postfix (${configDir}) does not offer AUTH: set smtpd_sasl_auth_enable = yes on the submission service`));
  if (p.smtpd_sasl_type !== 'cyrus') {
    f.push(warn(`smtpd_sasl_type = ${p.smtpd_sasl_type}: Postfix does not use Cyrus SASL, so it will not ask authd; set smtpd_sasl_type = cyrus`));
    return f;
  }
  const saslDir = p.cyrus_sasl_config_path || '/etc/postfix/sasl';
  const confName = `${p.smtpd_sasl_path}.conf`;
  const confPath = path.join(saslDir, confName);
  if (!fs.existsSync(confPath)) {
    const others = fs.existsSync(saslDir) ? fs.readdirSync(saslDir).filter((n) => n.endsWith('.conf')) : [];
    f.push(error(`smtpd_sasl_path = ${p.smtpd_sasl_path} makes Cyrus SASL read ${confPath}, which does not exist${others.length ? ` (found: ${others.join(', ')})` : ''}: the name must be the Cyrus file's name without .conf`));
    return f;
  }
  f.push(ok(`smtpd_sasl_path = ${p.smtpd_sasl_path} matches ${confPath}`));
  let cyrus;
  try {
    cyrus = parseCyrusSaslConfig(fs.readFileSync(confPath, 'utf8'), confPath);
  } catch (err) {
    f.push(error((err as Error).message));
    return f;
  }
  if (!cyrus.pwcheck_method.includes('saslauthd')) f.push(error(`${confPath}: pwcheck_method is "${cyrus.pwcheck_method.join(' ')}", so Postfix never asks authd: set pwcheck_method: saslauthd`));
  const bad = cyrus.mech_list.filter((m) => m !== 'PLAIN' && m !== 'LOGIN');
  if (bad.length) f.push(error(`${confPath}: mech_list offers ${bad.join(', ')}, which a password-checking daemon cannot serve (it never sees the password): use mech_list: PLAIN LOGIN`));
  if (cyrus.mech_list.length === 0) f.push(warn(`${confPath}: no mech_list, so Cyrus offers every installed mechanism: set mech_list: PLAIN LOGIN`));
  const chroot = smtpdChrooted(configDir);
  const seen = chroot ? path.join(p.queue_directory, cyrus.saslauthd_path) : cyrus.saslauthd_path;
  if (fs.existsSync(seen) && fs.statSync(seen).isDirectory()) {
    f.push(error(`saslauthd_path: ${cyrus.saslauthd_path} is a directory: it must name the socket itself, e.g. ${path.join(cyrus.saslauthd_path, SOCKET_NAME)}`));
  } else if (authdSocket && path.resolve(seen) !== path.resolve(authdSocket)) {
    f.push(error(`Postfix${chroot ? ' (chrooted in ' + p.queue_directory + ')' : ''} looks for the socket at ${seen}, but authd listens at ${authdSocket}: make saslauthd_path and authd's -m agree`));
  } else if (authdSocket) {
    f.push(ok(`Postfix finds authd's socket at ${seen}${chroot ? ` (inside its chroot ${p.queue_directory})` : ''}`));
  }
  const runDir = path.dirname(seen);
  if (fs.existsSync(runDir)) {
    const st = fs.statSync(runDir);
    const owner = p.mail_owner || 'postfix';
    if (!canEnterDir(owner, st)) {
      const sasl = groupId('sasl');
      f.push(error(`${owner} cannot enter ${runDir} (mode ${(st.mode & 0o777).toString(8)}, group ${st.gid}): add it to the directory's group${sasl !== undefined ? ' (adduser postfix sasl)' : ''}`));
    } else f.push(ok(`${owner} can reach the socket directory ${runDir}`));
  }
  if (p.smtpd_tls_auth_only !== 'yes' && p.smtpd_tls_security_level !== 'encrypt') {
    f.push(warn('Postfix offers AUTH PLAIN/LOGIN on unencrypted connections: set smtpd_tls_auth_only = yes'));
  }
  const relay = `${p.smtpd_relay_restrictions} ${p.smtpd_recipient_restrictions}`;
  if (!/\b(reject_unauth_destination|defer_unauth_destination|reject)\b/.test(relay)) {
    f.push(error('neither smtpd_relay_restrictions nor smtpd_recipient_restrictions rejects unauthorised destinations: this Postfix is an open relay; add reject_unauth_destination'));
  }
  return f;
}

/** Which socket layer `facteur authd` will use (docs/design.md): the C one when built and not turned off. */
export function checkSocketLayer(env: NodeJS.ProcessEnv = process.env): Finding {
  let want;
  try {
    want = socketLayerFromEnv(env);
  } catch (err) {
    return error(`${(err as Error).message}: unset it (authd would not start)`);
  }
  if (want === 'node') return warn('FACTEUR_AUTHD_SOCKET_LAYER=node: authd serves its socket with node:net, about twice the CPU per request of its C layer; unset it unless you are comparing the two');
  const n = nativeSocketLayer();
  if ('binding' in n) return ok('authd serves its socket with its C layer (native/authd, built by npm install)');
  if (want === 'native') return error(`FACTEUR_AUTHD_SOCKET_LAYER=native but ${n.error}: authd would not start`);
  return warn(`${n.error}: authd will serve its socket with node:net, about twice the CPU per request; run npm run build:native (it needs python3, make and a C compiler)`);
}

/** Check authd's own setup: run directory, mechanism configuration, and that the backend answers and refuses a made-up user. */
export async function checkAuthd(o: AuthdOptions): Promise<Finding[]> {
  const f: Finding[] = [];
  if (fs.existsSync(o.runDir)) {
    const st = fs.statSync(o.runDir);
    if (st.mode & 0o001) f.push(warn(`run directory ${o.runDir} is open to every local user (mode ${(st.mode & 0o777).toString(8)}): chmod 0710 and chgrp sasl`));
  } else if (!fs.existsSync(path.dirname(o.runDir))) {
    f.push(error(`the parent of the run directory ${o.runDir} does not exist: authd creates one level only`));
  }
  const log = createLogger({ name: 'check', level: 'silent' });
  let backend;
  try {
    backend = await createBackend(o.mech, o.mechOption, log);
  } catch (err) {
    f.push(error((err as Error).message));
    return f;
  }
  f.push(ok(`mechanism ${o.mech} loads its configuration${o.mechOption ? ` (${o.mechOption})` : ''}`));
  try {
    const probe = { login: `facteur-check-${crypto.randomBytes(6).toString('hex')}`, password: crypto.randomBytes(12).toString('hex'), service: 'smtp', realm: '' };
    const r = await backend.verify(probe, { signal: AbortSignal.timeout(o.backendTimeoutSeconds * 1000) });
    if (r.verdict === 'ok') f.push(error(`mechanism ${o.mech} accepted a made-up user with a random password: it fails open; fix its configuration before use`));
    else if (r.verdict === 'tempfail') f.push(error(`mechanism ${o.mech} cannot reach its backend: ${r.reason.replace(/^\[UNAVAILABLE\] /, '')}`));
    else f.push(ok(`mechanism ${o.mech} answers and refuses a made-up user`));
  } catch (err) {
    f.push(error(`mechanism ${o.mech} failed: ${(err as Error).message}`));
  } finally {
    await backend.close?.();
  }
  return f;
}
