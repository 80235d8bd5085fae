// authd's C addons (native/authd, built by npm install): loaded once each, or the reason they cannot be.
// Callers keep a JavaScript fallback for each, so facteur works where no C compiler was available at install.
import { createRequire } from 'node:module';

const BUILD = '../../../native/authd/build/Release/';
const loaded = new Map<string, { binding: unknown } | { error: string }>();

/** The addon `name` (a target of native/authd/binding.gyp), or why it is not there. */
export function nativeAddon<T>(name: 'saslauthd_socket' | 'cache_digest'): { binding: T } | { error: string } {
  let r = loaded.get(name);
  if (!r) {
    try {
      r = { binding: createRequire(import.meta.url)(`${BUILD}${name}.node`) };
    } catch (err) {
      r = { error: `native addon ${name} not built (${(err as Error).message.split('\n')[0]}); run npm run build:native` };
    }
    loaded.set(name, r);
  }
  return r as { binding: T } | { error: string };
}
