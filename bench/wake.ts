/**
 * Child processes of `npm run bench` (figure 7): what this machine charges a process for one round
 * trip with a peer on the other CPU over loopback TCP, doing nothing else — the way a request wakes
 * credgate and its answer wakes the client, or credgate's call wakes the AS and the answer wakes
 * credgate.
 *   node dist/bench/wake.js sleeper                     (server CPU) prints {"port"}, then echoes
 *                                                       each byte it reads; when the peer closes,
 *                                                       prints its CPU time per round trip (JSON)
 *   node dist/bench/wake.js waker PORT INTERVAL_MS COUNT (load CPU) sends a byte, waits for the echo,
 *                                                       sleeps INTERVAL_MS, COUNT times
 */
import { createConnection, createServer, type AddressInfo } from 'node:net';

export interface WakeResult {
  /** Round trips the sleeper served (woken, read, answered). */
  roundTrips: number;
  /** The sleeper's CPU time (every thread) ÷ round trips, µs. */
  cpuMicrosPerRoundTrip: number;
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'sleeper') {
  let roundTrips = -1;
  let since: NodeJS.CpuUsage | undefined;
  const server = createServer((socket) => {
    socket.setNoDelay(true);
    socket.on('data', (bytes) => {
      // Measured from the first byte on: the connection's set-up is not a round trip.
      if (++roundTrips === 0) since = process.cpuUsage();
      socket.write(bytes);
    });
    socket.on('end', () => {
      const used = process.cpuUsage(since);
      const result: WakeResult = { roundTrips, cpuMicrosPerRoundTrip: (used.user + used.system) / Math.max(1, roundTrips) };
      process.stdout.write(JSON.stringify(result) + '\n');
      socket.end();
      server.close();
    });
  });
  server.listen(0, '127.0.0.1', () => process.stdout.write(JSON.stringify({ port: (server.address() as AddressInfo).port }) + '\n'));
} else if (mode === 'waker') {
  const [port, intervalMs, count] = args.map(Number) as [number, number, number];
  const socket = createConnection({ host: '127.0.0.1', port });
  socket.setNoDelay(true);
  await new Promise((resolve) => socket.once('connect', resolve));
  // Timers take whole milliseconds: a fractional interval alternates between its floor and ceiling.
  const whole = (i: number) => Math.max(1, Math.floor((i + 1) * intervalMs) - Math.floor(i * intervalMs));
  for (let i = 0; i <= count; i++) {
    const echoed = new Promise((resolve) => socket.once('data', resolve));
    socket.write('.');
    await echoed;
    await new Promise((resolve) => setTimeout(resolve, whole(i)));
  }
  socket.end();
} else {
  console.error('usage: wake.js sleeper | wake.js waker PORT INTERVAL_MS COUNT');
  process.exit(2);
}
