/**
 * Figure 7 of `npm run bench`: credgate's own time on a cache miss, over the time the dev
 * authorization server spends on that request's calls. A client child sends requests one at a
 * time (sequential.ts), each a miss; this process notes, as each answer leaves credgate, how much
 * serving time the AS has added since the previous answer (its `servingSeconds`) and how much
 * credgate's own histogram of AS calls has grown. Nothing else runs in between, so each change is
 * that request's alone.
 */
import { writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Histogram } from 'prom-client';
import type { RunningServer } from '../src/main.js';
import { runChild } from './pinning.js';
import { ascending, percentile, results, row } from './report.js';
import type { SequentialInput, SequentialOutput } from './sequential.js';
import { ALICE, startCredgate, until200, type Bench } from './setup.js';

const sequentialScript = fileURLToPath(new URL('./sequential.js', import.meta.url));
const WARMUP = 50;
const MEASURED = 400;
const TARGET_MS = 1;

async function sequential(bench: Bench, name: string, input: SequentialInput): Promise<SequentialOutput> {
  const file = join(bench.scratch, `${name}.json`);
  writeFileSync(file, JSON.stringify(input), { mode: 0o600 });
  const r = await runChild<SequentialOutput>([sequentialScript, file], 90_000, 'load');
  if (!r.ok) throw new Error(`sequential client (${name}): ${r.why}`);
  return r.value;
}

interface AsTime {
  /** The dev AS's serving time (its own clock, summed over its calls) during the request, ms. */
  asMs: number;
  /** `credgate_upstream_request_duration_seconds_sum` growth during the request, ms. */
  upstreamMs: number;
}

/** From now until `stop()`, the AS time of each `POST /v1/verify` that `server` answers, in order. */
async function recordAsTime(bench: Bench, server: RunningServer): Promise<{ stop(): Promise<AsTime[]> }> {
  const histogram = server.service.metrics.registry.getSingleMetric('credgate_upstream_request_duration_seconds') as Histogram;
  const upstreamSeconds = async () => (await histogram.get()).values.filter((v) => v.metricName?.endsWith('_sum')).reduce((t, v) => t + v.value, 0);
  const times: AsTime[] = [];
  let last = { as: bench.dev.stats().servingSeconds, upstream: await upstreamSeconds() };
  let chain = Promise.resolve();
  const listener = (request: IncomingMessage, response: ServerResponse) => {
    if (request.method !== 'POST' || request.url !== '/v1/verify') return;
    response.once('finish', () => {
      // Read at once: the AS's next work comes only with the client's next request.
      const as = bench.dev.stats().servingSeconds;
      chain = chain.then(async () => {
        const upstream = await upstreamSeconds();
        times.push({ asMs: (as - last.as) * 1000, upstreamMs: (upstream - last.upstream) * 1000 });
        last = { as, upstream };
      });
    });
  };
  server.app.server.on('request', listener);
  return {
    async stop() {
      server.app.server.off('request', listener);
      await chain;
      return times;
    },
  };
}

/** One path: `bodies` sent one at a time to `server`'s /v1/verify; every measured one must be an uncached allow. */
async function path(bench: Bench, name: string, label: string, server: RunningServer, bodies: Record<string, unknown>[]): Promise<void> {
  const before = bench.dev.stats();
  const recording = await recordAsTime(bench, server);
  const out = await sequential(bench, name, { url: `${server.url}/v1/verify`, bodies, warmup: WARMUP });
  const times = (await recording.stop()).slice(WARMUP);
  const after = bench.dev.stats();
  if (times.length !== out.samples.length) throw new Error(`${name}: ${out.samples.length} answers measured but ${times.length} seen leaving credgate (${out.failures.join('; ')})`);
  const s = out.samples.map((x, i) => ({ ...x, ...times[i]! }));
  const pick = (f: (x: (typeof s)[number]) => number) => ascending(s.map(f));
  const latency = pick((x) => x.ms);
  const asTime = pick((x) => x.asMs);
  const overhead = pick((x) => x.ms - x.asMs);
  const outsideUpstream = pick((x) => x.ms - x.upstreamMs);
  const misses = s.filter((x) => x.status === 200 && x.allow && !x.cached).length;
  const perRequest = (n: number) => (n / bodies.length).toFixed(2);
  const calls = `${perRequest(after.tokenRequests - before.tokenRequests)} grant, ${perRequest(after.introspectionRequests - before.introspectionRequests)} introspection`;
  const p = (sorted: number[], q: number) => percentile(sorted, q);
  (results.missPath as Record<string, unknown>)[name] = {
    requests: s.length, warmup: WARMUP, uncachedAllows: misses, callsPerRequest: calls, failures: out.failures,
    latencyMs: { p50: p(latency, 50), p99: p(latency, 99) },
    asMs: { p50: p(asTime, 50), p99: p(asTime, 99) },
    overheadMs: { p50: p(overhead, 50), p90: p(overhead, 90), p99: p(overhead, 99) },
    latencyMinusUpstreamMs: { p50: p(outsideUpstream, 50), p99: p(outsideUpstream, 99) },
  };
  const valid = misses === MEASURED && out.failures.length === 0;
  row('7', `${label}: latency p50`, p(latency, 50), 'ms');
  row('7', `${label}: AS time p50`, p(asTime, 50), 'ms');
  row('7', `${label}: credgate overhead p50`, p(overhead, 50), 'ms', `≤ ${TARGET_MS} ms`, valid && p(overhead, 50) <= TARGET_MS);
  row('7', `${label}: credgate overhead p99`, p(overhead, 99), 'ms');
  row('7', `${label}: latency − credgate's AS-call time p50`, p(outsideUpstream, 50), 'ms');
  row('7', `${label}: uncached allows`, `${misses}/${MEASURED}`, 'requests');
  row('7', `${label}: AS calls per request`, calls, '');
}

export async function missPath(bench: Bench): Promise<void> {
  const { dev, credgate } = bench;
  // After figure 2's burst, load shedding may still answer 503 for a moment; /readyz says when it stops.
  const ready = await until200(`${credgate.url}/readyz`);
  if (ready.status !== 200) throw new Error(`credgate not ready: /readyz answered ${ready.status}`);
  const aliceBody = { username: 'alice', password: ALICE.password };
  const n = WARMUP + MEASURED;
  // The floor: the same client and body against the bare POST route (no AS).
  const floor = await sequential(bench, 'floor', { url: bench.bareUrl, bodies: Array.from({ length: n }, () => aliceBody), warmup: WARMUP });
  const floorMs = ascending(floor.samples.map((x) => x.ms));
  results.missPath = { measured: MEASURED, warmup: WARMUP, bareRoundTripMs: { p50: percentile(floorMs, 50), p99: percentile(floorMs, 99) } };
  row('7', 'bare fastify POST, one at a time: round trip p50', percentile(floorMs, 50), 'ms');

  // A fresh ASP per request: introspection (recognised by its shape), never cached before.
  const asps = Array.from({ length: n }, () => ({ username: 'alice', password: dev.createAppPassword('alice').password }));
  await path(bench, 'appPassword', 'ASP (introspection)', credgate, asps);

  // alice's password, every time, at a twin that caches nothing (cacheTtlSeconds 0): the password
  // grant, then the access token's signature checked locally.
  const twin = await startCredgate(dev, bench.keys, { cacheTtlSeconds: 0 });
  try {
    await path(bench, 'passwordGrant', 'password (grant + JWT)', twin, Array.from({ length: n }, () => aliceBody));
  } finally {
    await twin.close();
  }
}
