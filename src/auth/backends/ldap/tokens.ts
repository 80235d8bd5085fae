// `%` token expansion of saslauthd.conf templates (upstream lak_expand_tokens) with escaping that cannot be escaped from.
// Trusts the templates (configuration); trusts nothing in the login, realm or service: every substituted value is escaped for its context.
//
// Tokens: %% %u (login) %U (login before the first @) %d (login after the first @, empty without @) %1..%9 (domain labels from the
// right, of the login's domain, else of the realm) %r (realm) %R (@realm or nothing) %s (service) %D (user DN, group templates only).
// Escaping goes beyond upstream (which escapes only * ( ) \ and leaves DNs injectable):
//   filter context: RFC 4515, every special: NUL ( ) * \  ->  \00 \28 \29 \2a \5c
//   DN context (fastbind's DN, search bases, group DN): RFC 4514, , + " \ < > ; = and a leading # or space or a trailing space
//                                                        get a backslash, NUL becomes \00
// %D is a DN from the directory: inserted unchanged in a DN template, filter-escaped in a filter template.
import { ConfigError } from '../../../lib/errors.js';

export type Context = 'filter' | 'dn';

export interface TokenValues {
  login: string;
  realm: string;
  service: string;
  /** User DN, for group templates. */
  dn?: string;
}

/** RFC 4515 §3 assertion-value escaping. */
export function escapeFilterValue(v: string): string {
  return v.replace(/[\0()*\\]/g, (c) => '\\' + c.charCodeAt(0).toString(16).padStart(2, '0'));
}

/** RFC 4514 §2.4 attribute-value escaping. */
export function escapeDnValue(v: string): string {
  let out = '';
  for (let i = 0; i < v.length; i++) {
    const c = v[i]!;
    if (c === '\0') out += '\\00';
    else if (',+"\\<>;='.includes(c)) out += '\\' + c;
    else if ((i === 0 && (c === '#' || c === ' ')) || (i === v.length - 1 && c === ' ')) out += '\\' + c;
    else out += c;
  }
  return out;
}

function domainLabel(login: string, realm: string, n: number): string {
  const at = login.indexOf('@');
  const domain = at >= 0 ? login.slice(at + 1) : realm;
  if (!domain) return '';
  const labels = domain.split('.');
  return labels[labels.length - n] ?? '';
}

/** Expand a template. Unknown tokens emit nothing (as upstream); a trailing lone `%` is kept as is (config validation refuses both). */
export function expand(template: string, v: TokenValues, ctx: Context): string {
  const esc = ctx === 'filter' ? escapeFilterValue : escapeDnValue;
  const at = v.login.indexOf('@');
  let out = '';
  for (let i = 0; i < template.length; i++) {
    const c = template[i]!;
    if (c !== '%') {
      out += c;
      continue;
    }
    const t = template[i + 1];
    if (t === undefined) {
      out += '%';
      break;
    }
    i++;
    switch (t) {
      case '%':
        out += '%';
        break;
      case 'u':
        out += esc(v.login);
        break;
      case 'U':
        out += esc(at >= 0 ? v.login.slice(0, at) : v.login);
        break;
      case 'd':
        out += esc(at >= 0 ? v.login.slice(at + 1) : '');
        break;
      case 'r':
        out += esc(v.realm);
        break;
      case 'R':
        out += v.realm ? esc('@' + v.realm) : '';
        break;
      case 's':
        out += esc(v.service);
        break;
      case 'D':
        if (v.dn !== undefined) out += ctx === 'filter' ? escapeFilterValue(v.dn) : v.dn;
        break;
      default:
        if (t >= '1' && t <= '9') out += esc(domainLabel(v.login, v.realm, Number(t)));
        break;
    }
  }
  return out;
}

/** Refuse templates with unknown tokens, a trailing lone `%`, or `%D` outside group templates. */
export function checkTemplate(template: string, key: string, file: string, allowDn = false): void {
  for (let i = 0; i < template.length; i++) {
    if (template[i] !== '%') continue;
    const t = template[i + 1];
    if (t === undefined) throw new ConfigError(`${file}: ${key}: ends with a lone "%"; write "%%" for a literal percent sign`);
    if (!/[%uUdrRs1-9D]/.test(t)) throw new ConfigError(`${file}: ${key}: unknown token "%${t}"; known: %% %u %U %d %1-%9 %r %R %s${allowDn ? ' %D' : ''}`);
    if (t === 'D' && !allowDn) throw new ConfigError(`${file}: ${key}: %D (the user's DN) is only known in group templates`);
    i++;
  }
}
