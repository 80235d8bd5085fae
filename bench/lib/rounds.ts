// Cells measured in rounds that take turns between the servers compared (A B, B A, A B…), each round a share of the
// cell: this VM's CPU speed swings by up to 2× within seconds (a fixed CPU-bound loop took 0.58 to 1.25 s from one run
// to the next), so a cell measured whole on one server and then on the other compares the machine's moods as much as
// the servers. Used by bench/smtp.ts and bench/queue.ts; the caller adds each server's rounds up.

/** Run `run` for every server, `rounds` times, alternating the order; each server's results in round order. */
export async function takeTurns<S, T>(servers: S[], rounds: number, run: (s: S, round: number) => Promise<T>): Promise<Map<S, T[]>> {
  const out = new Map<S, T[]>(servers.map((s) => [s, []]));
  for (let r = 0; r < rounds; r++) {
    for (const s of r % 2 ? [...servers].reverse() : servers) out.get(s)!.push(await run(s, r));
  }
  return out;
}
