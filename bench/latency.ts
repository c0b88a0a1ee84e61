/**
 * Figure 9 of `npm run bench`: latency at a fixed offered load of half the bare route's capacity
 * (its wrk req/s in figure 3 of this run, or a wrk run of its own when figure 3 did not run),
 * cached `/auth` against the bare GET route. `h2load --h1 --rps` on the load CPU, 50 connections,
 * in the order bare, /auth, /auth, bare; p99 over every response of a side's two runs.
 */
import { quiet, runH2load, runWrk, type RateRun } from './generator.js';
import { ascending, fmt, percentile, results, row, targetRow } from './report.js';
import { purgeAlice, until200, type Bench } from './setup.js';
import { basicAuthorization, CONNECTIONS } from './throughput.js';
import { noteBare } from './validity.js';

const SECONDS = 3;
const WARMUP_SECONDS = 1;
export const P99_RATIO_TARGET = 1.5;
/** A side that answered fewer than this share of the offered requests did not keep up. */
const KEPT_UP = 0.97;

export async function latencyAtHalfLoad(bench: Bench): Promise<void> {
  let capacity = (results as { bareGetRps?: number }).bareGetRps;
  if (capacity === undefined) {
    const r = await runWrk('9 bare GET capacity', { url: bench.bareUrl, connections: CONNECTIONS, seconds: 2 });
    noteBare('9', '9 capacity', r.rps);
    capacity = r.rps;
  }
  const rate = Math.round(capacity / 2);
  const authorization = basicAuthorization();
  // Every answer of the /auth side a cache hit: alice's entry made now, not by an earlier figure.
  await purgeAlice(bench.credgate);
  const first = await until200(`${bench.credgate.url}/auth`, { headers: { authorization } });
  if (first.status !== 200) throw new Error(`/auth answered ${first.status} for alice`);
  const sides = {
    bare: { url: bench.bareUrl, headers: {} as Record<string, string> },
    auth: { url: `${bench.credgate.url}/auth`, headers: { authorization } },
  };
  const runs: Record<'bare' | 'auth', RateRun[]> = { bare: [], auth: [] };
  for (const side of ['bare', 'auth', 'auth', 'bare'] as const) {
    const n = runs[side].length + 1;
    runs[side].push(await quiet(() => runH2load(`9 ${side} #${n}`, { ...sides[side], connections: CONNECTIONS, rate, seconds: SECONDS, warmupSeconds: WARMUP_SECONDS }, bench.scratch)));
  }
  const combine = (rs: RateRun[]) => {
    const sorted = ascending(rs.flatMap((r) => r.latencies));
    const requests = rs.reduce((t, r) => t + r.requests, 0);
    return {
      requests,
      achieved: requests / (SECONDS * rs.length),
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      p999: percentile(sorted, 99.9),
      max: sorted.at(-1) ?? NaN,
      cpuPerRequest: rs.reduce((t, r) => t + r.server.cpuMicros, 0) / rs.reduce((t, r) => t + r.requests + r.offered * WARMUP_SECONDS, 0),
      bad: rs.reduce((t, r) => t + r.failed + r.non2xx, 0),
      runs: rs.map(({ latencies: _, ...r }) => r),
    };
  };
  const bare = combine(runs.bare);
  const auth = combine(runs.auth);
  results.latencyAtHalfLoad = { offeredRps: rate, bareCapacityRps: capacity, connections: CONNECTIONS, secondsPerRun: SECONDS, bare, auth };
  row('9', 'offered load (half the bare route’s wrk req/s)', rate, 'req/s');
  for (const [label, s] of [['bare GET', bare], ['cached /auth', auth]] as const) {
    row('9', `${label}: answered · CPU`, `${Math.round(s.achieved)} · ${fmt(s.cpuPerRequest)}`, 'req/s · µs CPU/req');
    row('9', `${label}: p50 / p99 / p99.9 / max`, `${s.p50.toFixed(2)} / ${s.p99.toFixed(2)} / ${s.p999.toFixed(2)} / ${s.max.toFixed(1)}`, 'ms');
  }
  // The bare route not keeping up, or errors, make the measurement unusable; cached /auth not
  // keeping up is a result: its capacity is below the load (its p99 is then understated, since a
  // connection waits for its previous answer before sending the next request).
  const problems: string[] = [];
  if (bare.achieved < KEPT_UP * rate) problems.push(`bare answered ${Math.round(bare.achieved)} of ${rate} req/s offered`);
  for (const [label, s] of [['bare', bare], ['/auth', auth]] as const) if (s.bad > 0) problems.push(`${label}: ${s.bad} failed or non-2xx`);
  if (problems.length > 0) row('9', 'measurement problem', problems.join('; '), '');
  const saturated = auth.achieved < KEPT_UP * rate;
  if (saturated) row('9', 'cached /auth did not keep up: answered / offered', `${Math.round(auth.achieved)} / ${rate}`, 'req/s', 'keeps up');
  const ratio = auth.p99 / bare.p99;
  targetRow('9', `cached /auth p99 ÷ bare p99 at the same load${saturated ? ' (saturated: p99 understated)' : ''}`, ratio, '×', `≤ ${P99_RATIO_TARGET}`, problems.length > 0 ? 'invalid' : ratio <= P99_RATIO_TARGET && !saturated);
}
