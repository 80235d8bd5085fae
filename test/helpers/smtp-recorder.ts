// Test helper: smtp-server as a remote MX that records, for every recipient of every message, whether it came over TLS.
import { SMTPServer } from 'smtp-server';

export interface Received {
  to: string;
  secure: boolean;
}

/** A server appending to `got`; with key and cert it offers STARTTLS, `starttls: false` refuses the command. */
export function recordingSmtpServer(got: Received[], opts: { key?: string; cert?: string; starttls?: boolean } = {}): SMTPServer {
  const s = new SMTPServer({
    key: opts.key,
    cert: opts.cert,
    disabledCommands: opts.starttls === false ? ['STARTTLS'] : [],
    authOptional: true,
    logger: false,
    onData(stream, session, cb) {
      stream.resume();
      stream.on('end', () => {
        for (const r of session.envelope.rcptTo) got.push({ to: r.address, secure: session.secure });
        cb();
      });
    },
  });
  s.on('error', () => undefined);
  return s;
}
