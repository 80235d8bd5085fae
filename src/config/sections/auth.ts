// How the SMTP server checks passwords: which mechanisms it offers and where it sends each check.
// Pure declaration (see ../schema.ts).
import { defineSection } from '../schema.js';

export const auth = defineSection('auth', 'AUTH on the submission listeners', {
  backend: { type: 'string', default: 'file', oneOf: ['file', 'saslauthd', 'ldap', 'pam', 'rimap', 'shadow'], doc: 'Where passwords are checked: saslauthd (a socket: facteur authd or Cyrus saslauthd) or a backend run in-process' },
  option: { type: 'string', default: '', doc: 'Option of the in-process backend, as authd -O: users file path (file; empty: <data_dir>/users), saslauthd.conf path (ldap), host[/port] (rimap), PAM service (pam)' },
  saslauthd_path: { type: 'string', default: '/var/run/saslauthd/mux', doc: 'saslauthd socket for backend = "saslauthd"' },
  cyrus_config: { type: 'string', default: '', doc: 'A Cyrus SASL smtpd.conf to read as is (pwcheck_method, mech_list, saslauthd_path); it overrides backend, mech_list and saslauthd_path' },
  mech_list: { type: 'string[]', default: ['PLAIN', 'LOGIN'], doc: 'SASL mechanisms offered (PLAIN and LOGIN are supported)', check: (v: unknown) => ((v as string[]).some((m) => !['PLAIN', 'LOGIN'].includes(m.toUpperCase())) ? 'only PLAIN and LOGIN are supported' : undefined) },
  service: { type: 'string', default: 'smtp', doc: 'Service name sent to saslauthd (PAM service for -a pam)' },
  realm: { type: 'string', default: '', doc: 'Realm used for logins without @ (libsasl user realm)' },
  timeout: { type: 'duration', default: '10s', doc: 'Longest wait for a password check; longer answers 454 4.7.0' },
});
