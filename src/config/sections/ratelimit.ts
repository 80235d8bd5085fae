// The rate-limit section, declared beside its code in src/policy/ratelimit.ts; re-exported here so the loader sees it.
// Pure declaration.
export { ratelimit } from '../../policy/ratelimit.js';
