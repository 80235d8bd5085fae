// `-a pam`: verify through the system's PAM stack (service name = the request's service, realm ignored), like upstream auth_pam.c.
// Trusts PAM's verdict and the node-linux-pam binding (optional dependency); bounds how many PAM calls run at once.
//
// Replies (upstream texts): `OK`, `NO PAM auth error`, `NO PAM acct error`, `NO PAM start error`.
// The binding (node-linux-pam 0.2, read from its source) runs pam_start, pam_authenticate, pam_acct_mgmt and pam_end in a
// Napi::AsyncWorker, i.e. on the libuv thread pool, off the event loop. It returns only the final PAM code, not which step failed,
// so the reply is chosen from the code: account codes (PAM_ACCT_EXPIRED, PAM_NEW_AUTHTOK_REQD, PAM_PERM_DENIED, PAM_AUTHTOK_EXPIRED)
// give `PAM acct error`, pam_start's own codes (PAM_BUF_ERR, PAM_ABORT) give `PAM start error`, anything else `PAM auth error`.
// Known binding limits: it answers every conversation prompt with the password (upstream answers an echo-on user prompt with the
// login; moot here since pam_start is given the user), answers only the first message of a multi-message conversation, calls
// pam_authenticate without PAM_SILENT, and cannot be cancelled (an abandoned call keeps its slot until PAM returns).
// PAM_RHOST is set from the 5-field request's client address (truncated at ';'), as upstream master does.
import { createRequire } from 'node:module';
import { ConfigError } from '../../lib/errors.js';
import { fail, ok, tempfail, type AuthBackend, type BackendFactory, type AbortLike } from '../types.js';

interface PamBinding {
  pamAuthenticatePromise(o: { username: string; password: string; serviceName?: string; remoteHost?: string }): Promise<number>;
  pamErrors: Record<string, number>;
}

export const PAM_MISSING =
  'PAM support needs the optional node-linux-pam module: apt-get install libpam0g-dev && npm install node-linux-pam';

/** Load the binding; a missing or unbuildable module is a ConfigError with the fix. */
export function loadPam(): PamBinding {
  try {
    const require = createRequire(import.meta.url);
    const mod = require('node-linux-pam') as PamBinding;
    if (typeof mod.pamAuthenticatePromise !== 'function') throw new Error('unexpected module shape');
    return mod;
  } catch (err) {
    throw new ConfigError(PAM_MISSING, { cause: err });
  }
}

// PAM return codes (Linux-PAM _pam_types.h).
const PAM_SUCCESS = 0;
const PAM_BUF_ERR = 5;
const PAM_PERM_DENIED = 6;
const PAM_NEW_AUTHTOK_REQD = 12;
const PAM_ACCT_EXPIRED = 13;
const PAM_ABORT = 26;
const PAM_AUTHTOK_EXPIRED = 27;
const ACCT_CODES = new Set([PAM_ACCT_EXPIRED, PAM_NEW_AUTHTOK_REQD, PAM_PERM_DENIED, PAM_AUTHTOK_EXPIRED]);
const START_CODES = new Set([PAM_BUF_ERR, PAM_ABORT]);

export function pamReply(code: number): { verdict: 'ok' | 'fail'; reason: string } {
  if (code === PAM_SUCCESS) return { verdict: 'ok', reason: '' };
  if (ACCT_CODES.has(code)) return { verdict: 'fail', reason: 'PAM acct error' };
  if (START_CODES.has(code)) return { verdict: 'fail', reason: 'PAM start error' };
  return { verdict: 'fail', reason: 'PAM auth error' };
}

/** A counting semaphore whose waiters give up when their signal aborts. */
class Slots {
  private used = 0;
  private readonly queue: Array<() => void> = [];
  constructor(private readonly max: number) {}
  async take(signal: AbortLike): Promise<boolean> {
    if (this.used < this.max) {
      this.used++;
      return true;
    }
    return new Promise((resolve) => {
      const go = () => {
        signal.removeEventListener('abort', onAbort);
        this.used++;
        resolve(true);
      };
      const onAbort = () => {
        const i = this.queue.indexOf(go);
        if (i >= 0) this.queue.splice(i, 1);
        resolve(false);
      };
      this.queue.push(go);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
  release(): void {
    this.used--;
    this.queue.shift()?.();
  }
}

/**
 * At most this many PAM conversations at once. They run on libuv's thread pool (UV_THREADPOOL_SIZE, default 4), which file
 * system calls and DNS lookups share: one thread is always left for them. Raise UV_THREADPOOL_SIZE to allow more.
 */
export function pamConcurrency(env: NodeJS.ProcessEnv = process.env): number {
  const pool = Number(env.UV_THREADPOOL_SIZE) || 4;
  return Math.max(1, Math.min(pool, 1024) - 1);
}

export const createPamBackend: BackendFactory = async (option, ctx) => {
  if (option) ctx.log(`pam: -O ${option} ignored (the PAM service is the request's service name, as upstream)`);
  const pam = loadPam();
  const slots = new Slots(pamConcurrency());
  const backend: AuthBackend = {
    name: 'pam',
    async verify(creds, { signal, explain }) {
      if (creds.login.includes('\0') || creds.password.includes('\0')) {
        explain?.('NUL byte in the login or password: refused');
        return fail('PAM auth error');
      }
      const service = creds.service;
      explain?.(`PAM service '${service}' (/etc/pam.d/${service}, or /etc/pam.d/other when absent), user '${creds.login}'`);
      if (!(await slots.take(signal))) return tempfail('PAM busy: no free slot in time');
      let code: number;
      try {
        const remoteHost = creds.clientAddr ? creds.clientAddr.split(';')[0] : undefined;
        const call = pam.pamAuthenticatePromise({ username: creds.login, password: creds.password, serviceName: service, ...(remoteHost ? { remoteHost } : {}) }).then(
          (c) => c,
          (err: { code?: unknown }) => (typeof err?.code === 'number' ? err.code : -1),
        );
        // The call cannot be cancelled: on abort answer at once, and free the slot only when PAM returns.
        const aborted = new Promise<null>((resolve) => {
          if (signal.aborted) resolve(null);
          signal.addEventListener('abort', () => resolve(null), { once: true });
        });
        const first = await Promise.race([call, aborted]);
        if (first === null) {
          void call.finally(() => slots.release());
          explain?.('PAM did not answer in time');
          return tempfail('PAM did not answer in time');
        }
        slots.release();
        code = first;
      } catch (err) {
        slots.release();
        throw err;
      }
      if (code === -1) {
        explain?.('the PAM binding failed without a PAM code');
        return fail('PAM start error');
      }
      const r = pamReply(code);
      explain?.(`PAM returned ${code}: ${r.verdict === 'ok' ? 'success' : r.reason}`);
      return r.verdict === 'ok' ? ok('') : fail(r.reason);
    },
  };
  return backend;
};
