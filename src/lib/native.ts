// facteur's C addons (native/authd, native/spool and native/net, built by npm install): loaded once each, or the reason they cannot
// be. Callers keep a JavaScript fallback for each, so facteur works where no C compiler was available at install.
import { createRequire } from 'node:module';

/** Each addon (a target of native/<folder>/binding.gyp) and its folder. */
const FOLDER = { saslauthd_socket: 'authd', cache_digest: 'authd', spool_commit: 'spool', reuseport_socket: 'net' } as const;
export type AddonName = keyof typeof FOLDER;

const loaded = new Map<string, { binding: unknown } | { error: string }>();

/** The addon `name`, or why it is not there. */
export function nativeAddon<T>(name: AddonName): { binding: T } | { error: string } {
  let r = loaded.get(name);
  if (!r) {
    try {
      r = { binding: createRequire(import.meta.url)(`../../native/${FOLDER[name]}/build/Release/${name}.node`) };
    } catch (err) {
      r = { error: `native addon ${name} not built (${(err as Error).message.split('\n')[0]}); run npm run build:native` };
    }
    loaded.set(name, r);
  }
  return r as { binding: T } | { error: string };
}
