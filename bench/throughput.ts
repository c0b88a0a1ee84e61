/**
 * Figures 3–5 of `npm run bench`: a cached decision against a bare fastify route, both served by
 * this process, loaded by autocannon children in A-B-B-A halves (see docs/benchmarks.md); the method
 * (`abba`) and the rows figure 6 shares.
 */
import { fileURLToPath } from 'node:url';
import type { LoadOptions, LoadResult } from './load.js';
import { runChild } from './pinning.js';
import { results, row } from './report.js';
import { ALICE, AUDIENCE, CLIENT, scrape, sumOf, until200, type Bench } from './setup.js';

const loadScript = fileURLToPath(new URL('./load.js', import.meta.url));
export const CONNECTIONS = 50;

const load = (options: LoadOptions) => runChild<LoadResult>([loadScript, JSON.stringify(options)], (options.duration + 30) * 1000, 'load');

/** Two halves of one measurement: throughput over both; p50 the mean, p90, p99 and max the worse of the two. */
function combine(halves: LoadResult[]): LoadResult {
  const sum = (f: (r: LoadResult) => number) => halves.reduce((t, r) => t + f(r), 0);
  const worst = (f: (r: LoadResult) => number) => Math.max(...halves.map(f));
  const seconds = sum((r) => r.seconds);
  return {
    requests: sum((r) => r.requests),
    requestsPerSecond: sum((r) => r.requests) / seconds,
    seconds,
    p50: sum((r) => r.p50) / halves.length,
    p90: worst((r) => r.p90),
    p99: worst((r) => r.p99),
    max: worst((r) => r.max),
    non2xx: sum((r) => r.non2xx),
    errors: sum((r) => r.errors),
    timeouts: sum((r) => r.timeouts),
  };
}

export interface Comparison {
  bare: LoadResult;
  subject: LoadResult;
  halves: { bare: LoadResult[]; subject: LoadResult[] };
  ratio: number;
  /**
   * CPU time of this process (every thread: credgate or the bare app, the idle dev AS, libuv's pool)
   * over the measured halves ÷ requests answered. Steadier than req/s when neighbours take turns on
   * the core, though not immune to them (shared caches).
   */
  cpuMicrosPerRequest: { bare: number; subject: number };
  /** credgate's cache look-ups during the two measured halves of the subject. */
  cache: { hits: number; misses: number };
  /** credgate's calls to the AS (any endpoint, JWKS included) during the two measured halves. */
  upstreamCalls: number;
}

/**
 * Warm-up (JIT, connections) of each side, then the measured halves in the order bare, subject,
 * subject, bare, so that a neighbour's load drifting up or down during the run favours neither.
 * `subject(run)` gives the options of run 0 (warm-up), 1 and 2 (the halves).
 */
export async function abba(bench: Bench, bare: LoadOptions, subject: (run: 0 | 1 | 2) => LoadOptions, warmupSeconds: number): Promise<Comparison | string> {
  const counters = async () => {
    const m = await scrape(bench.credgate);
    return { hits: sumOf(m, 'credgate_cache_requests_total', 'result="hit"'), misses: sumOf(m, 'credgate_cache_requests_total', 'result="miss"'), upstream: sumOf(m, 'credgate_upstream_requests_total') };
  };
  const failed: string[] = [];
  for (const options of [{ ...bare, duration: warmupSeconds }, { ...subject(0), duration: warmupSeconds }]) {
    const r = await load(options);
    if (!r.ok) failed.push(`warm-up: ${r.why}`);
  }
  const before = await counters();
  const halves = { bare: [] as LoadResult[], subject: [] as LoadResult[] };
  const cpu = { bare: 0, subject: 0 };
  for (const [side, options] of [['bare', bare], ['subject', subject(1)], ['subject', subject(2)], ['bare', bare]] as const) {
    const started = process.cpuUsage();
    const r = await load(options);
    const used = process.cpuUsage(started);
    cpu[side] += used.user + used.system;
    if (r.ok) halves[side].push(r.value);
    else failed.push(`${side}: ${r.why}`);
  }
  const after = await counters();
  if (failed.length > 0) return `failed: ${failed.join('; ')}`;
  const b = combine(halves.bare);
  const s = combine(halves.subject);
  return {
    bare: b,
    subject: s,
    halves,
    ratio: s.requestsPerSecond / b.requestsPerSecond,
    cpuMicrosPerRequest: { bare: cpu.bare / b.requests, subject: cpu.subject / s.requests },
    cache: { hits: after.hits - before.hits, misses: after.misses - before.misses },
    upstreamCalls: after.upstream - before.upstream,
  };
}

const bad = (r: LoadResult) => r.non2xx + r.errors + r.timeouts;

/** The rows every comparison prints; `targets` adds PASS/FAIL to figure 3's. */
export function comparisonRows(figure: string, name: string, c: Comparison, targets?: { p99Ms: number; ratio: number }): void {
  row(figure, 'bare fastify: throughput', c.bare.requestsPerSecond, 'req/s');
  row(figure, 'bare fastify: latency p50 / p99', `${c.bare.p50.toFixed(2)} / ${c.bare.p99.toFixed(2)}`, 'ms');
  row(figure, 'bare fastify: CPU per request', c.cpuMicrosPerRequest.bare, 'µs');
  row(figure, `${name}: throughput`, c.subject.requestsPerSecond, 'req/s');
  row(figure, `${name}: CPU per request`, c.cpuMicrosPerRequest.subject, 'µs');
  row(figure, `${name}: latency p50`, c.subject.p50, 'ms');
  if (targets) row(figure, `${name}: latency p99`, c.subject.p99, 'ms', `≤ ${targets.p99Ms} ms`, c.subject.p99 <= targets.p99Ms);
  else row(figure, `${name}: latency p99`, c.subject.p99, 'ms');
  if (targets) row(figure, `${name} ÷ bare throughput`, c.ratio, '×', `≥ ${targets.ratio}`, c.ratio >= targets.ratio);
  else row(figure, `${name} ÷ bare throughput`, c.ratio, '×');
  // What the ratio would be if the core were the only limit and all ours: steadier on a shared machine.
  row(figure, `${name} ÷ bare by CPU per request`, c.cpuMicrosPerRequest.bare / c.cpuMicrosPerRequest.subject, '×');
  row(figure, 'cache hits / misses / AS calls (measured)', `${c.cache.hits} / ${c.cache.misses} / ${c.upstreamCalls}`, '');
  row(figure, 'non-2xx/errors/timeouts', `${bad(c.subject)} credgate, ${bad(c.bare)} bare`, 'responses');
}

const HALF_SECONDS = 2.5;

function report(figure: string, key: string, name: string, c: Comparison | string, extra: Record<string, unknown>, targets?: { p99Ms: number; ratio: number }): void {
  if (typeof c === 'string') {
    results[key] = { error: c };
    row(figure, 'load run', c, '');
    return;
  }
  results[key] = { connections: CONNECTIONS, order: `bare, ${name}, ${name}, bare; ${HALF_SECONDS} s each`, ...extra, ...c };
  comparisonRows(figure, name, c, targets);
}

export async function cachedBasicAuth(bench: Bench): Promise<void> {
  const authorization = 'Basic ' + Buffer.from(`alice:${ALICE.password}`, 'utf8').toString('base64');
  const first = await until200(`${bench.credgate.url}/auth`, { headers: { authorization } });
  if (first.status !== 200) throw new Error(`/auth answered ${first.status} for alice`);
  const auth: LoadOptions = { url: `${bench.credgate.url}/auth`, connections: CONNECTIONS, duration: HALF_SECONDS, headers: { authorization } };
  const plain: LoadOptions = { url: bench.bareUrl, connections: CONNECTIONS, duration: HALF_SECONDS };
  report('3', 'cachedAuth', 'cached /auth', await abba(bench, plain, () => auth, 1), {}, { p99Ms: 3, ratio: 0.55 });
}

export async function cachedVerify(bench: Bench): Promise<void> {
  const body = JSON.stringify({ username: 'alice', password: ALICE.password });
  const headers = { 'content-type': 'application/json' };
  const first = await until200(`${bench.credgate.url}/v1/verify`, { method: 'POST', headers, body });
  const decision = (await first.json()) as { allow?: boolean };
  if (decision.allow !== true) throw new Error(`/v1/verify did not allow alice: ${JSON.stringify(decision)}`);
  const verify: LoadOptions = { url: `${bench.credgate.url}/v1/verify`, connections: CONNECTIONS, duration: HALF_SECONDS, method: 'POST', headers, body };
  const plain: LoadOptions = { url: bench.bareUrl, connections: CONNECTIONS, duration: HALF_SECONDS, method: 'POST', headers, body };
  report('4', 'cachedVerify', 'cached /v1/verify', await abba(bench, plain, () => verify, 1), { body });
}

/** A real access token: the dev AS's password grant at its token endpoint, as a client would get one. */
export async function passwordGrantToken(bench: Bench): Promise<string> {
  const response = await fetch(`${bench.dev.url}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', client_id: CLIENT.clientId, client_secret: CLIENT.clientSecret, username: 'alice', password: ALICE.password, audience: AUDIENCE }),
  });
  const answer = (await response.json()) as { access_token?: string };
  if (response.status !== 200 || typeof answer.access_token !== 'string') throw new Error(`password grant answered ${response.status}`);
  return answer.access_token;
}

export async function cachedBearer(bench: Bench): Promise<void> {
  const token = await passwordGrantToken(bench);
  const authorization = `Bearer ${token}`;
  const first = await until200(`${bench.credgate.url}/auth`, { headers: { authorization } });
  if (first.status !== 200 || first.headers.get('x-auth-credential') !== 'access_token') throw new Error(`/auth answered ${first.status} for alice's access token`);
  const auth: LoadOptions = { url: `${bench.credgate.url}/auth`, connections: CONNECTIONS, duration: HALF_SECONDS, headers: { authorization } };
  const plain: LoadOptions = { url: bench.bareUrl, connections: CONNECTIONS, duration: HALF_SECONDS };
  report('5', 'cachedBearer', 'cached Bearer JWT', await abba(bench, plain, () => auth, 1), { tokenBytes: token.length });
}
