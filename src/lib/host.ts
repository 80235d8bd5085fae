// Host names as written in configuration and URLs, made fit for the socket calls. Trusts nothing: plain string work.

/** A host as written beside a port (`[::1]` in `[::1]:25`, or in a URL) without its brackets: `::1`; others unchanged. */
export function unbracketed(host: string): string {
  return host.replace(/^\[|\]$/g, '');
}
