/**
 * Figures 3–5 of `npm run bench`: a cached decision against a bare fastify route, both served by
 * this process (pinned to the server CPU), loaded by wrk on the other CPU, in interleaved runs (see
 * docs/benchmarks.md); the method (`interleave`) and the rows figures 6 and 10 share.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunningServer } from '../src/main.js';
import { quiet, runWrk, type WrkOptions, type WrkRun } from './generator.js';
import { withHaltPoll, type IdleSetting } from './idle.js';
import { fmt, results, row, targetRow } from './report.js';
import { ALICE, AUDIENCE, CLIENT, copyAllowAnswer, purgeAlice, scrape, sumOf, until200, type Bench } from './setup.js';
import { bareSteady, discardBare, noteBare } from './validity.js';

export const CONNECTIONS = 50;
const HALF_SECONDS = 2;
const WARMUP_SECONDS = 1;
export const RATIO_TARGET = 0.55;
export const CPU_RATIO_TARGET = 1.8;
/** Passes of the cached figures (3–5): ten pairs give an interval of their ratios about two thirds as wide as six (Student's t, 9 against 5 degrees of freedom); six left ±0.25 × on this machine. */
const RATIO_ROUNDS = 10;

export interface Side {
  name: string;
  /** The credgate serving it, for its cache and AS-call counters; none for the bare app. */
  server?: RunningServer;
  /** The bare GET route: its measured runs must agree with each other (and with CREDGATE_BENCH_BARE_RANGE, if set). */
  bareGet?: boolean;
  /** Options of run `n`: 0 is the warm-up, 1… the measured runs in order (a repeated run gets the next number). */
  options(run: number): WrkOptions | Promise<WrkOptions>;
}

export interface SideResult {
  name: string;
  runs: WrkRun[];
  requests: number;
  seconds: number;
  rps: number;
  /** Server CPU time over the measured runs ÷ their responses, µs. */
  cpuPerRequest: number;
  /** Of `cpuPerRequest`, time in the kernel, µs. */
  kernelPerRequest: number;
  /**
   * Wake-up interrupts the generator's CPU received per response (idle.ts): an answer that found
   * the generator asleep on a halted CPU costs the server one, in kernel time.
   */
  generatorInterruptsPerRequest: number;
  /** The server's main-thread GC pauses over the measured runs ÷ their responses, µs; and its full collections. */
  gcPausePerRequest: number;
  majorGcs: number;
  /** wrk's (closed-loop) latency: the runs' mean p50, worst p99, ms. */
  p50: number;
  p99: number;
  non2xx: number;
  socketErrors: number;
  tokensOver: number;
  /** credgate's counters over the measured runs (from /metrics, read between runs). */
  counters?: { hits: number; misses: number; upstream: number };
}

async function counters(server: RunningServer): Promise<{ hits: number; misses: number; upstream: number }> {
  const m = await scrape(server);
  return { hits: sumOf(m, 'credgate_cache_requests_total', 'result="hit"'), misses: sumOf(m, 'credgate_cache_requests_total', 'result="miss"'), upstream: sumOf(m, 'credgate_upstream_requests_total') };
}

/**
 * One warm-up run per side (JIT, connections), then `rounds` passes over the sides, every other
 * pass in reverse (A B C, C B A, A B C, …), so that a neighbour's load drifting up or down during
 * the figure favours no side. Every run is bracketed with this process's CPU time (generator.ts).
 * `paired`: the figure judges its targets on per-pass ratios (ratioTargets), so its bare runs are
 * not required to agree with each other and the figure is not measured again when they do not.
 */
export async function interleave(figure: string, sides: Side[], o: { halfSeconds?: number; warmupSeconds?: number; rounds?: number; paired?: boolean } = {}): Promise<Map<string, SideResult>> {
  const half = o.halfSeconds ?? HALF_SECONDS;
  const rounds = o.rounds ?? 2;
  const runs = new Map<string, (WrkRun & { counted?: { hits: number; misses: number; upstream: number } })[]>(sides.map((s) => [s.name, []]));
  /** Options handed out per side: 0 the warm-up, then one per attempt (a repeated run gets new ones). */
  const issued = new Map<string, number>(sides.map((s) => [s.name, 0]));
  for (const side of sides) await runWrk(`${figure} ${side.name} warm-up`, { ...(await side.options(0)), seconds: o.warmupSeconds ?? WARMUP_SECONDS }, true);
  // A figure whose bare runs disagree (the machine's speed changed during it) is measured again,
  // all of its sides, at most three times; what was thrown away is reported (validity.ts).
  for (let attempt = 1; ; attempt++) {
    for (let r = 0; r < rounds; r++) {
      for (const side of r % 2 === 0 ? sides : [...sides].reverse()) {
        const n = runs.get(side.name)!.length + 1;
        const label = `${figure} ${side.name} #${n}${attempt > 1 ? ` (attempt ${attempt})` : ''}`;
        const run = await quiet(async () => {
          const k = issued.get(side.name)! + 1;
          issued.set(side.name, k);
          const options = await side.options(k);
          const before = side.server ? await counters(side.server) : undefined;
          const result = await runWrk(label, { ...options, seconds: half });
          if (!side.server || !before) return result;
          const after = await counters(side.server);
          return { ...result, counted: { hits: after.hits - before.hits, misses: after.misses - before.misses, upstream: after.upstream - before.upstream } };
        });
        if (side.bareGet) noteBare(figure, label, run.rps, o.paired === true);
        runs.get(side.name)!.push(run);
      }
    }
    if (bareSteady(figure) || attempt >= 3) break;
    discardBare(figure);
    for (const side of sides) runs.set(side.name, []);
  }
  const counted = new Map<string, { hits: number; misses: number; upstream: number }>();
  for (const [name, rs] of runs) {
    for (const r of rs) {
      if (!r.counted) continue;
      const sum = counted.get(name) ?? { hits: 0, misses: 0, upstream: 0 };
      counted.set(name, { hits: sum.hits + r.counted.hits, misses: sum.misses + r.counted.misses, upstream: sum.upstream + r.counted.upstream });
    }
  }
  const out = new Map<string, SideResult>();
  for (const side of sides) {
    const rs = runs.get(side.name)!;
    const sum = (f: (r: WrkRun) => number) => rs.reduce((t, r) => t + f(r), 0);
    const requests = sum((r) => r.requests);
    const seconds = sum((r) => r.seconds);
    out.set(side.name, {
      name: side.name,
      runs: rs,
      requests,
      seconds,
      rps: requests / seconds,
      cpuPerRequest: sum((r) => r.server.cpuMicros) / requests,
      kernelPerRequest: sum((r) => r.server.systemMicros) / requests,
      generatorInterruptsPerRequest: sum((r) => r.server.loadCpuInterrupts) / requests,
      gcPausePerRequest: sum((r) => r.server.gcPauseMicros) / requests,
      majorGcs: sum((r) => r.server.majorGcs),
      p50: sum((r) => r.p50) / rs.length,
      p99: Math.max(...rs.map((r) => r.p99)),
      non2xx: sum((r) => r.non2xx),
      socketErrors: sum((r) => r.socketErrors),
      tokensOver: sum((r) => r.tokensOver ?? 0),
      ...(counted.has(side.name) ? { counters: counted.get(side.name)! } : {}),
    });
  }
  return out;
}

/** req/s and CPU per request on one line, as every load figure prints them. */
export function sideRows(figure: string, s: SideResult, label = s.name): void {
  row(figure, label, `${Math.round(s.rps)} · ${fmt(s.cpuPerRequest)}`, 'req/s · µs CPU/req');
  row(figure, `${label}: p50 / p99 (wrk, ${CONNECTIONS} conns)`, `${s.p50.toFixed(2)} / ${s.p99.toFixed(2)}`, 'ms');
  row(figure, `${label}: of the CPU, kernel · wake-up interrupts to the generator's CPU, per request`, `${fmt(s.kernelPerRequest)} µs · ${s.generatorInterruptsPerRequest.toFixed(2)}`, '');
}

/** Why a cached figure's own measurement does not show what it claims, or undefined. */
export function cachedProblems(s: SideResult, expect: 'hits' | 'misses'): string | undefined {
  const problems: string[] = [];
  if (s.non2xx > 0) problems.push(`${s.non2xx} non-2xx`);
  if (s.socketErrors > 0) problems.push(`${s.socketErrors} socket errors`);
  if (s.tokensOver > 0) problems.push(`RAN OUT of tokens: ${s.tokensOver} requests repeated one`);
  if (s.counters) {
    if (expect === 'hits' && s.counters.misses > 0) problems.push(`${s.counters.misses} cache misses`);
    if (expect === 'misses' && s.counters.hits > 0) problems.push(`${s.counters.hits} cache hits`);
    if (s.counters.upstream > 0) problems.push(`${s.counters.upstream} calls to the AS`);
  }
  return problems.length > 0 ? problems.join(', ') : undefined;
}

/**
 * The two targets of a cached figure: ≥ 0.55 × the bare route's req/s, ≤ 1.8 × its CPU per request,
 * judged on the 95 % interval of the per-pass ratios (a pass's two runs are adjacent in time; see
 * pairedInterval): on a shared machine a credgate side's runs can spread by half within a figure, and
 * one ratio of totals then passes or fails by chance.
 */
export function ratioTargets(figure: string, name: string, bare: SideResult, subject: SideResult, problem: string | undefined): void {
  const ratio = pairedRatio(bare, subject, (r) => r.rps);
  const cpuRatio = pairedRatio(bare, subject, (r) => r.cpuPerRequest);
  if (subject.counters) row(figure, `${name}: cache hits / misses / AS calls`, `${subject.counters.hits} / ${subject.counters.misses} / ${subject.counters.upstream}`, '');
  if (problem) row(figure, `${name}: measurement problem`, problem, '');
  targetRow(figure, `${name} ÷ bare: req/s (paired runs)`, ratio.text, '×', `≥ ${RATIO_TARGET}`, problem ? 'invalid' : atLeast(ratio, RATIO_TARGET));
  targetRow(figure, `${name} ÷ bare: CPU per request (paired runs)`, cpuRatio.text, '×', `≤ ${CPU_RATIO_TARGET}`, problem ? 'invalid' : atMost(cpuRatio, CPU_RATIO_TARGET));
}

/** A side's figure over the bare route's, pass by pass (the runs of one pass are adjacent in time). */
function pairedRatio(bare: SideResult, subject: SideResult, f: (r: WrkRun) => number): ReturnType<typeof pairedInterval> {
  const n = Math.min(bare.runs.length, subject.runs.length);
  return pairedInterval(Array.from({ length: n }, (_, i) => f(subject.runs[i]!) / f(bare.runs[i]!)));
}

const summary = (s: SideResult) => ({
  rps: s.rps,
  cpuMicrosPerRequest: s.cpuPerRequest,
  kernelMicrosPerRequest: s.kernelPerRequest,
  generatorInterruptsPerRequest: s.generatorInterruptsPerRequest,
  requests: s.requests,
  seconds: s.seconds,
  p50Ms: s.p50,
  p99Ms: s.p99,
  non2xx: s.non2xx,
  socketErrors: s.socketErrors,
  counters: s.counters,
  runs: s.runs.map((r) => ({ label: r.label, rps: r.rps, cpuPerRequest: r.cpuPerRequest, generatorShare: r.generator.share, neighbourShare: r.server.neighbourShare, p99: r.p99, non2xx: r.non2xx })),
});

export function record(key: string, sides: Map<string, SideResult>, extra: Record<string, unknown> = {}): void {
  results[key] = { connections: CONNECTIONS, ...extra, sides: Object.fromEntries([...sides].map(([k, v]) => [k, summary(v)])) };
}

/** Student's t at 97.5 % for 1–10 degrees of freedom: two-sided 95 % intervals from a few runs. */
const T_975 = [Number.NaN, 12.71, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228];

/**
 * The mean of per-pass values (a difference or a ratio of two sides' runs of the same pass, which
 * are adjacent in time) with its 95 % interval (Student's t over the passes). A target is judged on
 * the interval: PASS when all of it meets the target, FAIL when none of it does, INVALID (the runs
 * spread too widely to tell) otherwise — a neighbour slowing some passes shows as a wide interval,
 * not as a verdict.
 */
export function pairedInterval(values: readonly number[]): { mean: number; low: number; high: number; text: string } {
  const n = values.length;
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const sd = n > 1 ? Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : Number.POSITIVE_INFINITY;
  const half = (T_975[n - 1] ?? 1.96) * (sd / Math.sqrt(n));
  return { mean, low: mean - half, high: mean + half, text: `${fmt(mean)} (95 % interval ${fmt(mean - half)} … ${fmt(mean + half)}, ${n} paired runs)` };
}

type Interval = { readonly low: number; readonly high: number };
/** "≤ limit" on an interval: PASS (true) when all of it is, FAIL when none of it is, INVALID otherwise. */
const atMost = (i: Interval, limit: number): boolean | 'invalid' => (i.high <= limit ? true : i.low > limit ? false : 'invalid');
/** "≥ limit" on an interval, likewise. */
const atLeast = (i: Interval, limit: number): boolean | 'invalid' => (i.low >= limit ? true : i.high < limit ? false : 'invalid');

/** A cost measured as the difference between two interleaved sides (figures 10 and 11), judged against `limit`. */
export function pairedDifference(on: SideResult, off: SideResult, limit: number): { text: string; verdict: boolean | 'invalid' } {
  const n = Math.min(on.runs.length, off.runs.length);
  const d = pairedInterval(Array.from({ length: n }, (_, i) => on.runs[i]!.cpuPerRequest - off.runs[i]!.cpuPerRequest));
  return { text: d.text, verdict: atMost(d, limit) };
}

export const basicAuthorization = (): string => 'Basic ' + Buffer.from(`alice:${ALICE.password}`, 'utf8').toString('base64');

export function bareGet(bench: Bench): Side {
  return { name: 'bare GET', bareGet: true, options: () => ({ url: bench.bareUrl, connections: CONNECTIONS, seconds: HALF_SECONDS }) };
}

/** Figure 3's subject: `/auth` with alice's Basic credentials, a cache hit once she has been seen. */
const cachedAuth = (bench: Bench, authorization: string): Side => ({ name: 'cached /auth', server: bench.credgate, options: () => ({ url: `${bench.credgate.url}/auth`, connections: CONNECTIONS, seconds: HALF_SECONDS, headers: { authorization } }) });

/**
 * Figure 3: cached `/auth` (Basic) against the bare GET route, with more sides that show where the
 * gap goes: `/healthz` (credgate's app, no decision), `/auth` with no credentials (the whole
 * pipeline up to a 401, no cache look-up), and the bare app answering the cached allow's own
 * request and answer (`/bare/allow`: the same Authorization header in, the same headers and body
 * out, written the same way, no decision): cached `/auth` less that side is credgate's decision.
 */
export async function cachedBasicAuth(bench: Bench): Promise<void> {
  const authorization = basicAuthorization();
  await purgeAlice(bench.credgate);
  const first = await until200(`${bench.credgate.url}/auth`, { headers: { authorization } });
  if (first.status !== 200) throw new Error(`/auth answered ${first.status} for alice`);
  await copyAllowAnswer((await until200(`${bench.credgate.url}/auth`, { headers: { authorization } })));
  const url = `${bench.credgate.url}/auth`;
  const sides = await interleave('3', [
    bareGet(bench),
    { name: SAME_ANSWER, options: () => ({ url: `${bench.bareUrl}/allow`, connections: CONNECTIONS, seconds: HALF_SECONDS, headers: { authorization } }) },
    { name: 'credgate /healthz', options: () => ({ url: `${bench.credgate.url}/healthz`, connections: CONNECTIONS, seconds: HALF_SECONDS }) },
    { name: 'credgate /auth, no credentials (401)', options: () => ({ url, connections: CONNECTIONS, seconds: HALF_SECONDS }) },
    cachedAuth(bench, authorization),
  ], { rounds: RATIO_ROUNDS, paired: true });
  record('cachedAuth', sides);
  for (const s of sides.values()) sideRows('3', s);
  const bare = sides.get('bare GET')!;
  (results as { bareGetRps?: number; bareGetCpu?: number }).bareGetRps = bare.rps;
  (results as { bareGetRps?: number; bareGetCpu?: number }).bareGetCpu = bare.cpuPerRequest;
  const subject = sides.get('cached /auth')!;
  const same = sides.get(SAME_ANSWER)!;
  row('3', 'bare with the same request and answer ÷ bare: CPU per request', same.cpuPerRequest / bare.cpuPerRequest, '×');
  row('3', "credgate's decision: cached /auth − bare with the same request and answer", subject.cpuPerRequest - same.cpuPerRequest, 'µs CPU');
  row('3', `what ${CPU_RATIO_TARGET} × bare leaves for the decision after that answer`, CPU_RATIO_TARGET * bare.cpuPerRequest - same.cpuPerRequest, 'µs CPU');
  ratioTargets('3', 'cached /auth', bare, subject, cachedProblems(subject, 'hits'));
  await underMachineIdle(bench, authorization);
}

/** Passes of figure 3's contrast with the machine's own idle setting. */
const CONTRAST_ROUNDS = 4;

/**
 * Where the bench changed how idle CPUs wait (idle.ts), the bare route and cached `/auth` again
 * with the machine's own setting, paired the same way: what a halting idle CPU does to the figure,
 * from this run. Not a target.
 */
async function underMachineIdle(bench: Bench, authorization: string): Promise<void> {
  const idle = results.idle as IdleSetting | undefined;
  const ns = idle?.machineHaltPollNs;
  if (idle === undefined || ns === null || ns === undefined || ns === idle.haltPollNs) return;
  const label = `halt polling ${ns} ns (the machine's own)`;
  const sides = await withHaltPoll(ns, () =>
    interleave(`3, ${label}`, [
      bareGet(bench),
      cachedAuth(bench, authorization),
    ], { rounds: CONTRAST_ROUNDS, paired: true }),
  );
  record('cachedAuthMachineIdle', sides, { haltPollNs: ns });
  for (const s of sides.values()) sideRows('3', s, `${s.name}, ${label}`);
  const bare = sides.get('bare GET')!;
  const subject = sides.get('cached /auth')!;
  row('3', `cached /auth ÷ bare, ${label}: req/s · CPU per request (paired runs; not a target)`, `${pairedRatio(bare, subject, (r) => r.rps).text} · ${pairedRatio(bare, subject, (r) => r.cpuPerRequest).text}`, '×');
}

/** Figure 3's side that answers like a cached allow without deciding. */
const SAME_ANSWER = 'bare GET, same request and answer as a cached allow';

/** Figure 4: cached `POST /v1/verify` against a bare POST route parsing the same JSON body. */
export async function cachedVerify(bench: Bench): Promise<void> {
  const body = JSON.stringify({ username: 'alice', password: ALICE.password });
  const headers = { 'content-type': 'application/json' };
  await purgeAlice(bench.credgate);
  const first = await until200(`${bench.credgate.url}/v1/verify`, { method: 'POST', headers, body });
  const decision = (await first.json()) as { allow?: boolean };
  if (decision.allow !== true) throw new Error(`/v1/verify did not allow alice: ${JSON.stringify(decision)}`);
  const bodyFile = join(bench.scratch, 'verify-body.json');
  writeFileSync(bodyFile, body, { mode: 0o600 });
  const post = (url: string): WrkOptions => ({ url, connections: CONNECTIONS, seconds: HALF_SECONDS, method: 'POST', headers, bodyFile });
  const sides = await interleave('4', [
    { name: 'bare POST (JSON)', options: () => post(bench.bareUrl) },
    { name: 'cached POST /v1/verify', server: bench.credgate, options: () => post(`${bench.credgate.url}/v1/verify`) },
  ], { rounds: RATIO_ROUNDS, paired: true });
  record('cachedVerify', sides, { body: '{"username":"alice","password":…}' });
  for (const s of sides.values()) sideRows('4', s);
  const subject = sides.get('cached POST /v1/verify')!;
  ratioTargets('4', 'cached /v1/verify', sides.get('bare POST (JSON)')!, subject, cachedProblems(subject, 'hits'));
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

/** Figure 5: a cached Bearer JWT on `/auth` against the bare GET route. */
export async function cachedBearer(bench: Bench): Promise<void> {
  const token = await passwordGrantToken(bench);
  const authorization = `Bearer ${token}`;
  const first = await until200(`${bench.credgate.url}/auth`, { headers: { authorization } });
  if (first.status !== 200 || first.headers.get('x-auth-credential') !== 'access_token') throw new Error(`/auth answered ${first.status} for alice's access token`);
  const sides = await interleave('5', [
    bareGet(bench),
    { name: 'cached Bearer JWT', server: bench.credgate, options: () => ({ url: `${bench.credgate.url}/auth`, connections: CONNECTIONS, seconds: HALF_SECONDS, headers: { authorization } }) },
  ], { rounds: RATIO_ROUNDS, paired: true });
  record('cachedBearer', sides, { tokenBytes: token.length });
  for (const s of sides.values()) sideRows('5', s);
  const subject = sides.get('cached Bearer JWT')!;
  ratioTargets('5', 'cached Bearer JWT', sides.get('bare GET')!, subject, cachedProblems(subject, 'hits'));
}
