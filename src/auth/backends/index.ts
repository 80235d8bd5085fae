// Registry of authentication mechanisms (`-a NAME`), loaded lazily so a missing optional dependency (PAM) only matters when used.
// Trusts nothing; maps names to factories.
import type { BackendFactory } from '../types.js';

export const mechanisms: Record<string, () => Promise<BackendFactory>> = {
  ldap: async () => (await import('./ldap/index.js')).createLdapBackend,
  file: async () => (await import('./file.js')).createFileBackend,
  rimap: async () => (await import('./rimap.js')).createRimapBackend,
  pam: async () => (await import('./pam.js')).createPamBackend,
  shadow: async () => (await import('./shadow.js')).createShadowBackend,
};

export const mechanismNames = Object.keys(mechanisms);
