/**
 * Figures 1 and 2 of `npm run bench`: how many calls to the authorization server 1000 fresh
 * credentials cost, identical (one flight) and distinct (one introspection each).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FireInput, FireOutput } from './fire.js';
import { bracket } from './generator.js';
import { runChild } from './pinning.js';
import { ascending, percentile, results, row } from './report.js';
import { scrape, sumOf, type Bench } from './setup.js';

const fireScript = fileURLToPath(new URL('./fire.js', import.meta.url));

/** The client's output, and the server process's CPU time while it ran, µs. */
async function fire(bench: Bench, name: string, input: FireInput): Promise<FireOutput & { serverCpuMicros: number }> {
  const file = join(bench.scratch, `${name}.json`);
  writeFileSync(file, JSON.stringify(input), { mode: 0o600 });
  const { value: r, server } = await bracket(() => runChild<FireOutput>([fireScript, file], 60_000, 'load'));
  if (!r.ok) throw new Error(`fire (${name}): ${r.why}`);
  return { ...r.value, serverCpuMicros: server.cpuMicros };
}

export async function identicalFresh(bench: Bench): Promise<void> {
  const { dev, credgate } = bench;
  const [asp] = await dev.appPasswords('alice', 1);
  const before = await dev.stats();
  const coalescedBefore = sumOf(await scrape(credgate), 'credgate_coalesced_requests_total');
  const out = await fire(bench, 'identical', { url: `${credgate.url}/v1/verify`, bodies: Array.from({ length: 1000 }, () => ({ username: 'alice', password: asp! })), concurrency: 1000 });
  const after = await dev.stats();
  const grants = after.tokenRequests - before.tokenRequests;
  const introspections = after.introspectionRequests - before.introspectionRequests;
  const coalesced = sumOf(await scrape(credgate), 'credgate_coalesced_requests_total') - coalescedBefore;
  results.identicalFresh = { requests: 1000, grants, introspections, allowed: out.allowed, servedFromCache: out.cached, coalesced, wallMs: out.wallMs, statuses: out.statuses, failures: out.failures };
  row('1', 'password-grant calls', grants, 'calls', '1 (≤1: one flight)', grants <= 1 && out.allowed === 1000);
  row('1', 'introspection calls', introspections, 'calls', '≤1', introspections <= 1);
  row('1', 'allowed', `${out.allowed}/1000`, 'requests');
  row('1', 'coalesced / cache hits', `${coalesced} / ${out.cached}`, 'requests');
  row('1', 'wall time', out.wallMs, 'ms');
}

export async function distinctFresh(bench: Bench): Promise<void> {
  const { dev, credgate } = bench;
  const asps = await dev.appPasswords('alice', 1000);
  const before = await dev.stats();
  const out = await fire(bench, 'distinct', { url: `${credgate.url}/v1/verify`, bodies: asps.map((password) => ({ username: 'alice', password })), concurrency: 100 });
  const after = await dev.stats();
  const sorted = ascending(out.latencies);
  const grants = after.tokenRequests - before.tokenRequests;
  const introspections = after.introspectionRequests - before.introspectionRequests;
  results.distinctFresh = {
    requests: 1000, concurrency: 100, grants, introspections, allowed: out.allowed, wallMs: out.wallMs,
    p50Ms: percentile(sorted, 50), p99Ms: percentile(sorted, 99), maxMs: sorted.at(-1), statuses: out.statuses, failures: out.failures, serverCpuMicrosPerDecision: out.serverCpuMicros / 1000,
  };
  row('2', 'password-grant calls', grants, 'calls');
  row('2', 'introspection calls', introspections, 'calls');
  row('2', 'allowed', `${out.allowed}/1000`, 'requests');
  row('2', 'answered 503 (upstream_unavailable)', out.statuses['503'] ?? 0, 'requests');
  row('2', 'latency p50', percentile(sorted, 50), 'ms');
  row('2', 'latency p99', percentile(sorted, 99), 'ms');
  row('2', 'wall time (100 in flight)', out.wallMs, 'ms');
  row('2', 'throughput · credgate CPU per decision', `${Math.round(1000 / (out.wallMs / 1000))} · ${Math.round(out.serverCpuMicros / 1000)}`, 'decisions/s · µs CPU');
}
