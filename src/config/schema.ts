// Every configuration parameter declared once: type, default, one line of doc. The same table feeds validation,
// `facteur config --defaults` and the reference docs. Each area declares its section in src/config/sections/<name>.ts.
// Pure: no I/O.

export type ParamType = 'string' | 'integer' | 'boolean' | 'string[]' | 'duration';

export interface Param<T = unknown> {
  type: ParamType;
  default: T;
  doc: string;
  /** Extra validation; return an error sentence (with the fix) or undefined. */
  check?(value: T): string | undefined; // method syntax: a check may take its own value type (number, string[])
  /** Allowed values for enumerations. */
  oneOf?: readonly string[];
}

export type SectionSpec = Record<string, Param>;

export interface Section<S extends SectionSpec = SectionSpec> {
  name: string;
  doc: string;
  params: S;
}

export function defineSection<S extends SectionSpec>(name: string, doc: string, params: S): Section<S> {
  return { name, doc, params };
}

/** The value type a section yields after validation. */
export type SectionValues<S extends SectionSpec> = { [K in keyof S]: S[K]['default'] };
