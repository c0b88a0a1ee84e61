/**
 * Profiling aid (not part of `npm run bench`): one credgate as figure 3 starts it, and autocannon
 * against a list of its routes, so the cost of each layer can be told apart:
 *   node dist/bench/probe.js [seconds]
 */
import { execFile, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import { configSchema } from '../src/config/schema.js';
import { defaultDevUsers, startDevServer } from '../src/devserver/index.js';
import { createLogger, logDestination } from '../src/log.js';
import { startServer } from '../src/main.js';
import { requireServiceConfig } from '../src/service.js';
import { generateClientKeys } from '../src/upstream/clientKeys.js';
import type { LoadResult } from './load.js';

const seconds = Number(process.argv[2] ?? 3);
/** Optional third argument: run only the probes whose name contains it (e.g. `cached`, for --cpu-prof). */
const filter = process.argv[3];
const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-bench', clientSecret: 'bench-client-secret-value' };
const load = (url: string, headers: Record<string, string> = {}) =>
  new Promise<LoadResult>((resolve, reject) =>
    execFile('taskset', ['-c', '1', process.execPath, fileURLToPath(new URL('./load.js', import.meta.url)), JSON.stringify({ url, connections: 50, duration: seconds, headers })], (err, out) => (err ? reject(err) : resolve(JSON.parse(out) as LoadResult))),
  );

execFileSync('taskset', ['-a', '-pc', '0', String(process.pid)]);
const dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT], lockoutThreshold: 1_000_000 });
const keys = await generateClientKeys();
const config = requireServiceConfig(configSchema.parse({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, host: '127.0.0.1', port: 0, passwordFailureBudget: 0, throttleIpFailures: 0 }), { inMemoryKeys: true });
const server = await startServer(config, createLogger({ level: 'info', destination: logDestination('/dev/null') as unknown as NodeJS.WritableStream }), { keys });
dev.setResourceServerJwksUrl(`${server.url}/.well-known/jwks.json`);
const bare = Fastify();
bare.get('/bare', async () => ({ reason: 'ok' }));
await bare.listen({ host: '127.0.0.1', port: 0 });
const bareUrl = `http://127.0.0.1:${(bare.server.address() as { port: number }).port}/bare`;
const alice = { authorization: 'Basic ' + Buffer.from('alice:correct horse battery staple').toString('base64') };
await fetch(`${server.url}/auth`, { headers: alice });
for (const [name, url, headers] of [
  ['bare fastify', bareUrl, {}],
  ['credgate /healthz', `${server.url}/healthz`, {}],
  ['credgate /auth (no credentials: 401)', `${server.url}/auth`, {}],
  ['credgate /auth cached', `${server.url}/auth`, alice],
  ['bare fastify', bareUrl, {}],
] as const) {
  if (filter !== undefined && !name.includes(filter)) continue;
  // CPU time of this process (credgate and the bare app; autocannon is a child) per request: far
  // steadier than req/s on a shared machine.
  const cpu = process.cpuUsage();
  const r = await load(url, headers);
  const used = process.cpuUsage(cpu);
  console.log(name.padEnd(40), String(Math.round(r.requestsPerSecond)).padStart(6), 'req/s', ((used.user + used.system) / r.requests).toFixed(1).padStart(6), 'µs CPU/req', 'p99', r.p99, 'non2xx', r.non2xx);
}
await Promise.all([server.close(), bare.close(), dev.close()]);
