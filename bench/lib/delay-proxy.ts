// A TCP proxy that delays every chunk by a fixed time in each direction, to put a network between a daemon and its
// directory on one machine. Trusts its argv: LISTEN_PORT TARGET_HOST TARGET_PORT ONE_WAY_MS. Order is kept per direction.
import net from 'node:net';

const [listenPort, host, targetPort, delayText] = process.argv.slice(2);
const delayMs = Number(delayText);

/** Forward src → dst, each chunk `delayMs` later (timers with equal delays fire in the order they were set). */
function pipeDelayed(src: net.Socket, dst: net.Socket): void {
  src.on('data', (chunk) => {
    setTimeout(() => {
      if (!dst.destroyed) dst.write(chunk);
    }, delayMs);
  });
  src.on('end', () => setTimeout(() => dst.end(), delayMs));
  src.on('error', () => dst.destroy());
  src.on('close', () => setTimeout(() => dst.destroy(), delayMs + 1));
}

const server = net.createServer((client) => {
  client.setNoDelay(true);
  const upstream = net.connect({ host, port: Number(targetPort) });
  upstream.setNoDelay(true);
  pipeDelayed(client, upstream);
  pipeDelayed(upstream, client);
});
server.listen(Number(listenPort), '127.0.0.1', () => process.send?.('ready'));
process.on('SIGTERM', () => process.exit(0));
