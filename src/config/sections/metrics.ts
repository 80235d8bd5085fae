// The metrics endpoint section, declared beside its code in src/observability/http.ts; re-exported here for the loader.
// Pure declaration.
export { metricsSection } from '../../observability/http.js';
