// The password-check seam the SMTP server uses: through a saslauthd socket (facteur authd or Cyrus saslauthd) or in-process.
// Trusts its configuration; never logs a password.
import fs from 'node:fs/promises';
import { verifyViaSocket } from './saslauthd.js';
import type { AuthBackend, AuthResult, Credentials } from '../types.js';
import { ConfigError } from '../../lib/errors.js';

export interface PasswordVerifier {
  verify(c: Credentials, opts: { signal: AbortSignal }): Promise<AuthResult>;
  close?(): Promise<void>;
}

export function socketVerifier(socketPath: string): PasswordVerifier {
  return { verify: (c, { signal }) => verifyViaSocket(socketPath, c, signal) };
}

/** Calls a backend directly (single-process default). Exceptions become temporary failures: fail closed, never open. */
export function inProcessVerifier(backend: AuthBackend): PasswordVerifier {
  return {
    async verify(c, { signal }) {
      try {
        return await backend.verify(c, { signal });
      } catch (err) {
        return { verdict: 'tempfail', reason: `[UNAVAILABLE] ${backend.name}: ${(err as Error).message}` };
      }
    },
    close: backend.close ? () => backend.close!() : undefined,
  };
}

/**
 * Split an authentication id the way libsasl (lib/checkpw.c, lib/canonusr.c) does before asking saslauthd:
 * trim whitespace; `user@realm` is split at the last `@`; otherwise the configured user realm (or '') is the realm.
 */
export function splitLogin(authcid: string, userRealm = ''): { login: string; realm: string } {
  const id = authcid.trim();
  const at = id.lastIndexOf('@');
  if (at >= 0) return { login: id.slice(0, at), realm: id.slice(at + 1) };
  return { login: id, realm: userRealm };
}

/** The Cyrus SASL application config (`/etc/postfix/sasl/smtpd.conf`) keys facteur understands. */
export interface CyrusSaslConfig {
  pwcheck_method: string[];
  mech_list: string[];
  saslauthd_path: string;
}

const CYRUS_KEYS = new Set(['pwcheck_method', 'mech_list', 'saslauthd_path', 'log_level', 'auxprop_plugin', 'sql_engine']);

/** Parse a Cyrus SASL config file: `key: value` lines, `#` comments, as lib/config.c reads them. */
export function parseCyrusSaslConfig(text: string, file = 'smtpd.conf'): CyrusSaslConfig {
  const cfg: CyrusSaslConfig = { pwcheck_method: ['auxprop'], mech_list: [], saslauthd_path: '/var/run/saslauthd/mux' };
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const m = /^([A-Za-z0-9_-]+)\s*:\s*(.*)$/.exec(line);
    if (!m) throw new ConfigError(`${file}:${i + 1}: expected 'key: value', got '${line}'`);
    const key = m[1].toLowerCase();
    const value = m[2].trim();
    if (!CYRUS_KEYS.has(key)) throw new ConfigError(`${file}:${i + 1}: unknown option '${key}' (facteur knows: ${[...CYRUS_KEYS].join(', ')})`);
    if (key === 'pwcheck_method') cfg.pwcheck_method = value.split(/\s+/).filter(Boolean);
    else if (key === 'mech_list') cfg.mech_list = value.split(/\s+/).filter(Boolean).map((s) => s.toUpperCase());
    else if (key === 'saslauthd_path') cfg.saslauthd_path = value;
  });
  return cfg;
}

export async function loadCyrusSaslConfig(file: string): Promise<CyrusSaslConfig> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read Cyrus SASL config ${file}: ${(err as Error).message}`, { cause: err });
  }
  return parseCyrusSaslConfig(text, file);
}
