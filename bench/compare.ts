/**
 * Compares builds of credgate in one process, for measuring one change (not part of `npm run bench`):
 * each build tree (a copy of `dist/`, e.g. `cp -r dist dist-before` before the change) is imported
 * and started as the bench starts credgate, beside one bare app and one dev AS, and wrk (on the
 * other CPU) runs against every build's routes in passes, every other pass reversed, so that a
 * neighbour's load drifts onto no side. Printed per route: median and lowest CPU µs per request
 * over the passes (the lowest is the least disturbed), ÷ the bare route's median, and req/s.
 *   node dist/bench/compare.js SECONDS PASSES FILTER dist-before dist
 * FILTER: comma-separated parts of route names (`basic,bearer`), or '' for all: healthz, 401,
 * basic and bearer (cached `/auth`), verify (cached `POST /v1/verify`).
 * Build trees must sit in the repository's root (dist*), where they find node_modules and package.json.
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { RunningServer } from '../src/main.js';
import { AsProcess } from './as.js';
import { runWrk, type WrkOptions, type WrkRun } from './generator.js';
import { pinBenchProcess } from './pinning.js';
import { ALICE, AUDIENCE, CLIENT, scratchDirectory, startBareApp } from './setup.js';
import { basicAuthorization, CONNECTIONS } from './throughput.js';

type Route = Omit<WrkOptions, 'connections' | 'seconds'>;

const [seconds = '2', passes = '5', filter = '', ...trees] = process.argv.slice(2);
if (trees.length === 0) throw new Error('usage: node dist/bench/compare.js SECONDS PASSES FILTER DIST...');

console.log(pinBenchProcess().summary);
const dev = await AsProcess.start({ audience: AUDIENCE, clients: [CLIENT], lockoutThreshold: 1_000_000 });
const bare = await startBareApp();
const bareUrl = `http://127.0.0.1:${(bare.server.address() as { port: number }).port}/bare`;
const grant = await fetch(`${dev.url}/oauth/token`, {
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams({ grant_type: 'password', client_id: CLIENT.clientId, client_secret: CLIENT.clientSecret, username: 'alice', password: ALICE.password, audience: AUDIENCE }),
});
const token = ((await grant.json()) as { access_token: string }).access_token;
const basic = { authorization: basicAuthorization() };
const bearer = { authorization: `Bearer ${token}` };
const body = JSON.stringify({ username: 'alice', password: ALICE.password });
const bodyFile = resolve(scratchDirectory(), 'verify-body.json');
writeFileSync(bodyFile, body, { mode: 0o600 });
const post = { method: 'POST' as const, headers: { 'content-type': 'application/json' }, bodyFile };

const routes: Array<[string, Route]> = [
  ['bare GET', { url: bareUrl }],
  ['bare POST', { url: bareUrl, ...post }],
  // The bare route sent the Bearer request's own header: what receiving the bigger request costs Node alone.
  ['bare GET with the bearer header', { url: bareUrl, headers: bearer }],
];
const servers: RunningServer[] = [];
for (const tree of trees.map((t) => resolve(t))) {
  // Each tree's own modules: its startCredgate, logger, routes.
  const setup = (await import(`${tree}/bench/setup.js`)) as typeof import('./setup.js');
  const clientKeys = (await import(`${tree}/src/upstream/clientKeys.js`)) as typeof import('../src/upstream/clientKeys.js');
  const server = await setup.startCredgate(dev, await clientKeys.generateClientKeys());
  servers.push(server);
  for (const headers of [basic, bearer]) {
    const answer = await fetch(`${server.url}/auth`, { headers });
    if (answer.status !== 200) throw new Error(`${tree}: /auth answered ${answer.status}`);
  }
  const verified = await fetch(`${server.url}/v1/verify`, { method: 'POST', headers: post.headers, body });
  if (((await verified.json()) as { allow?: boolean }).allow !== true) throw new Error(`${tree}: /v1/verify did not allow alice`);
  const name = tree.split('/').pop()!;
  routes.push(
    [`${name} healthz`, { url: `${server.url}/healthz` }],
    [`${name} 401`, { url: `${server.url}/auth` }],
    [`${name} basic`, { url: `${server.url}/auth`, headers: basic }],
    [`${name} bearer`, { url: `${server.url}/auth`, headers: bearer }],
    [`${name} verify`, { url: `${server.url}/v1/verify`, ...post }],
  );
}

const wanted = filter.split(',').filter(Boolean);
const chosen = routes.filter(([name]) => name.startsWith('bare') || wanted.length === 0 || wanted.some((w) => name.includes(w)));
const runs = new Map<string, WrkRun[]>(chosen.map(([name]) => [name, []]));
for (const [name, route] of chosen) await runWrk(name, { connections: CONNECTIONS, seconds: 1, ...route }, true);
for (let pass = 0; pass < Number(passes); pass++) {
  for (const [name, route] of pass % 2 === 0 ? chosen : [...chosen].reverse()) {
    runs.get(name)!.push(await runWrk(name, { connections: CONNECTIONS, seconds: Number(seconds), ...route }));
  }
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const cpuOf = (name: string) => median(runs.get(name)!.map((r) => r.cpuPerRequest));
for (const [name, rs] of runs) {
  const cpu = rs.map((r) => r.cpuPerRequest);
  const reference = cpuOf(name.includes('verify') || name.includes('POST') ? 'bare POST' : 'bare GET');
  console.log(
    name.padEnd(28),
    'CPU µs/req median', median(cpu).toFixed(1).padStart(6),
    'lowest', Math.min(...cpu).toFixed(1).padStart(6),
    '÷ bare', (median(cpu) / reference).toFixed(2),
    ' req/s median', Math.round(median(rs.map((r) => r.rps))),
    ' others on the CPUs, at most', `${Math.round(100 * Math.max(...rs.map((r) => Math.max(r.server.neighbourShare, r.generator.neighbourShare))))} %`,
    ' non-2xx', rs.reduce((n, r) => n + r.non2xx, 0),
  );
}
await Promise.all([...servers.map((s) => s.close()), bare.close()]);
await dev.close();
