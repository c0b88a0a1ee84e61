/**
 * Profiling aid (not part of `npm run bench`): one credgate as the bench starts it, the bare GET
 * route, and wrk (on the other CPU) against a list of routes, each printed with req/s and this
 * process's CPU time per request, so the cost of each layer can be told apart:
 *   node dist/bench/probe.js [seconds] [name filter]
 *   node --cpu-prof --cpu-prof-dir=prof dist/bench/probe.js 10 cached    (one route, profiled)
 * The dev AS runs in its own process, so a profile of this one holds credgate and the bare app only.
 */
import { generateClientKeys } from '../src/upstream/clientKeys.js';
import { AsProcess } from './as.js';
import { runWrk } from './generator.js';
import { pinBenchProcess } from './pinning.js';
import { AUDIENCE, CLIENT, startBareApp, startCredgate } from './setup.js';
import { basicAuthorization, CONNECTIONS } from './throughput.js';

const seconds = Number(process.argv[2] ?? 3);
/** Optional second argument: run only the probes whose name contains it (e.g. `cached`, for --cpu-prof). */
const filter = process.argv[3];

console.log(pinBenchProcess().summary);
const dev = await AsProcess.start({ audience: AUDIENCE, clients: [CLIENT], lockoutThreshold: 1_000_000 });
const server = await startCredgate(dev, await generateClientKeys());
await dev.setResourceServerJwksUrl(`${server.url}/.well-known/jwks.json`);
const bare = await startBareApp();
const bareUrl = `http://127.0.0.1:${(bare.server.address() as { port: number }).port}/bare`;
const alice = { authorization: basicAuthorization() };
await fetch(`${server.url}/auth`, { headers: alice });
for (const [name, url, headers] of [
  ['bare fastify', bareUrl, {}],
  ['credgate /healthz', `${server.url}/healthz`, {}],
  ['credgate /auth (no credentials: 401)', `${server.url}/auth`, {}],
  ['credgate /auth cached', `${server.url}/auth`, alice],
  ['bare fastify', bareUrl, {}],
] as const) {
  if (filter !== undefined && !name.includes(filter)) continue;
  const r = await runWrk(name, { url, headers, connections: CONNECTIONS, seconds });
  console.log(
    name.padEnd(40),
    String(Math.round(r.rps)).padStart(6), 'req/s',
    r.cpuPerRequest.toFixed(1).padStart(6), 'µs CPU/req',
    'p99', r.p99.toFixed(2), 'ms',
    'wrk CPU', `${(r.generator.share * 100).toFixed(0)} %`,
    'non-2xx', r.non2xx,
  );
}
await Promise.all([server.close(), bare.close()]);
await dev.close();
