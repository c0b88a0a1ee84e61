/**
 * Figure 7 of `npm run bench`: credgate's own CPU time on a cache miss. The dev AS runs in its own
 * process on the load CPU, so this process's CPU time (`process.cpuUsage()`, every thread) over a
 * run of misses is credgate's alone: the HTTP request in, the decision, the call(s) to the AS
 * (client assertion, undici, parsing), the token check, the log line and metrics. A client child
 * (sequential.ts, on the load CPU) sends the requests one at a time.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLocalJWKSet } from 'jose';
import * as oauth from 'oauth4webapi';
import type { RunningServer } from '../src/main.js';
import { privateKeyJwt } from '../src/upstream/clientAssertion.js';
import { verifyJwt } from '../src/upstream/jws.js';
import { bracket, quiet } from './generator.js';
import { pinnedCommand, runChild } from './pinning.js';
import { ascending, fmt, percentile, results, row, targetRow } from './report.js';
import type { FireInput, FireOutput } from './fire.js';
import type { SequentialInput, SequentialOutput } from './sequential.js';
import type { WakeResult } from './wake.js';
import { ALICE, AUDIENCE, startCredgate, until200, type Bench } from './setup.js';
import { passwordGrantToken } from './throughput.js';
import { noteRun } from './validity.js';

const sequentialScript = fileURLToPath(new URL('./sequential.js', import.meta.url));
const fireScript = fileURLToPath(new URL('./fire.js', import.meta.url));
const wakeScript = fileURLToPath(new URL('./wake.js', import.meta.url));

/**
 * Times this process's threads went to sleep and were woken since they started: the sum of every
 * thread's voluntary context switches (/proc/self/task/<tid>/status), and of those the part of V8's
 * worker threads ("V8Worker": its background JIT compilers and GC helpers). A thread that ended
 * meanwhile drops out; none do during a figure (the thread pool and V8's workers stay).
 */
function wakeups(): { all: number; v8Workers: number } {
  let all = 0;
  let v8Workers = 0;
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const n = Number(/^voluntary_ctxt_switches:\s+(\d+)$/m.exec(readFileSync(`/proc/self/task/${tid}/status`, 'utf8'))?.[1] ?? 0);
      all += n;
      if (readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() === 'V8Worker') v8Workers += n;
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return { all, v8Workers };
}

/**
 * What this machine charges a process for one round trip with a peer on the other CPU, doing nothing
 * else (wake.ts: a sleeper on the server's CPU echoes a byte a waker on the load CPU sends every
 * `intervalMs` over loopback TCP; this process idle meanwhile): woken by the peer's packet, then
 * waking the peer with its own. A miss makes such round trips with its client and with the AS. On a
 * virtual machine each is exits to the hypervisor (the interrupt that ends the idle, the
 * inter-processor wake-up of the peer) whose time lands on the process; measured, not assumed.
 */
async function roundTripCost(intervalMs: number): Promise<number> {
  const [sleeperCommand, ...sleeperArgs] = pinnedCommand(process.execPath, [wakeScript, 'sleeper'], 'server');
  const sleeper = spawn(sleeperCommand, sleeperArgs, { stdio: ['ignore', 'pipe', 'inherit'] });
  const timer = setTimeout(() => sleeper.kill('SIGKILL'), 60_000);
  try {
    const lines = createInterface({ input: sleeper.stdout });
    const read = lines[Symbol.asyncIterator]();
    const { port } = JSON.parse(String((await read.next()).value)) as { port: number };
    const [wakerCommand, ...wakerArgs] = pinnedCommand(process.execPath, [wakeScript, 'waker', String(port), String(intervalMs), String(MEASURED)], 'load');
    const waker = spawn(wakerCommand, wakerArgs, { stdio: ['ignore', 'ignore', 'inherit'] });
    const result = JSON.parse(String((await read.next()).value)) as WakeResult;
    await new Promise((resolve) => (waker.exitCode === null ? waker.once('exit', resolve) : resolve(undefined)));
    if (!(result.roundTrips >= MEASURED)) throw new Error(`${result.roundTrips} round trips`);
    return result.cpuMicrosPerRoundTrip;
  } catch (err) {
    throw new Error(`round-trip cost: ${err instanceof Error ? err.message : String(err)}`);
  } finally {
    clearTimeout(timer);
    sleeper.kill();
  }
}
/** Misses under way at once in the concurrent variant (not a target: for comparison). */
export const IN_FLIGHT = 16;
/**
 * Warm-up: rounds of `WARMUP_ROUND` misses one at a time until V8 has compiled what a miss runs.
 * Until then each miss also pays the JIT (here ~300 functions were still being compiled on V8's
 * worker threads during 400 misses after a warm-up of 50, and credgate's CPU per miss was twice
 * its settled figure). Settled: a round in which V8's workers woke at most `SETTLED_V8_WAKEUPS`
 * times per miss (they also run GC helpers: a little never stops). At most `MAX_WARMUP_ROUNDS`.
 */
export const WARMUP_ROUND = 250;
export const MAX_WARMUP_ROUNDS = 16;
export const SETTLED_V8_WAKEUPS = 0.25;
export const MEASURED = 400;
export const PASSWORD_TARGET_MICROS = 400;
export const ASP_TARGET_MICROS = 600;

async function sequential(bench: Bench, name: string, input: SequentialInput): Promise<SequentialOutput> {
  const file = join(bench.scratch, `${name}.json`);
  writeFileSync(file, JSON.stringify(input), { mode: 0o600 });
  const r = await runChild<SequentialOutput>([sequentialScript, file], 90_000, 'load');
  if (!r.ok) throw new Error(`sequential client (${name}): ${r.why}`);
  return r.value;
}

export interface MissRun {
  requests: number;
  /** Answers that were `allow: true, cached: false`. */
  uncachedAllows: number;
  failures: string[];
  latencyMs: { p50: number; p99: number };
  /** This process's CPU time ÷ requests, µs. */
  cpuPerRequest: number;
  /** The AS process's CPU time ÷ requests, µs (for comparison; not credgate's). */
  asCpuPerRequest: number;
  grantsPerRequest: number;
  introspectionsPerRequest: number;
  neighbourShare: number;
  /** Times one of credgate's threads slept and was woken, ÷ requests. */
  wakeupsPerRequest: number;
  /** Of those, V8's worker threads (JIT compilers, GC helpers): above `SETTLED_V8_WAKEUPS` the JIT was still at work. */
  v8WakeupsPerRequest: number;
  /** Misses sent one at a time before the measured ones, until V8 had settled. */
  warmedUpWith: number;
  /** Every measured request's latency, ms, ascending. */
  latencies: number[];
  /** CPU per request of each pass (interleaved runs), µs; one entry for a single run. */
  perPass: number[];
}

/** Bodies sent one at a time, not measured (JIT, connections, the twin's first grant). */
export async function warm(bench: Bench, name: string, url: string, bodies: Record<string, unknown>[]): Promise<void> {
  await sequential(bench, `${name}-warm-up`, { url, bodies, warmup: 0 });
}

/** `n` request bodies: the same ones each time, or new ones for single-use secrets such as fresh ASPs. */
export type Bodies = (n: number) => Record<string, unknown>[] | Promise<Record<string, unknown>[]>;

/**
 * Rounds of misses one at a time, not measured, until V8's workers stay nearly asleep through a
 * round (see `WARMUP_ROUND`). Returns how many misses that took.
 */
export async function settle(bench: Bench, name: string, url: string, bodies: Bodies): Promise<number> {
  let sent = 0;
  for (let round = 0; round < MAX_WARMUP_ROUNDS; round++) {
    const round0 = wakeups().v8Workers;
    await warm(bench, name, url, await bodies(WARMUP_ROUND));
    sent += WARMUP_ROUND;
    if ((wakeups().v8Workers - round0) / WARMUP_ROUND <= SETTLED_V8_WAKEUPS) break;
  }
  return sent;
}

/**
 * Misses one at a time until V8 has settled (`settle`, skipped when `warmup` is false: the caller
 * settled it), then `count` (default `MEASURED`) more, bracketed with this process's CPU time and the AS's, and
 * repeated (new bodies each time) while a neighbour took the server's CPU (`quiet`).
 */
export async function misses(bench: Bench, name: string, url: string, bodies: Bodies, o: { warmup?: boolean; count?: number } = {}): Promise<MissRun> {
  const warmedUpWith = o.warmup === false ? 0 : await settle(bench, name, url, bodies);
  return quiet(async () => {
    const run = await measuredMisses(bench, name, url, await bodies(o.count ?? MEASURED));
    return { ...run, warmedUpWith, perPass: [run.cpuPerRequest] };
  });
}

/** One kind of request of figure 7, sent one at a time. */
export interface MissSide {
  name: string;
  url: string;
  bodies: Bodies;
}

/** Passes over the sides in `interleavedMisses`, `MEASURED / PASSES` requests each. */
export const PASSES = 4;

/**
 * The sides' misses measured in turns: each side settled first (`settle`), then `PASSES` passes of
 * `MEASURED / PASSES` requests per side, every other pass in reverse order, so that a machine whose
 * speed drifts (this VM's cost of one request one at a time changed two- to threefold between runs
 * minutes apart) favours no side. A side's figures are over all its passes; `perPass` keeps each.
 */
export async function interleavedMisses(bench: Bench, figure: string, sides: MissSide[]): Promise<Map<string, MissRun>> {
  const warmedUpWith = new Map<string, number>();
  for (const side of sides) warmedUpWith.set(side.name, await settle(bench, `${figure} ${side.name}`, side.url, side.bodies));
  const runs = new Map<string, Omit<MissRun, 'warmedUpWith' | 'perPass'>[]>(sides.map((s) => [s.name, []]));
  for (let pass = 0; pass < PASSES; pass++) {
    for (const side of pass % 2 === 0 ? sides : [...sides].reverse()) {
      runs.get(side.name)!.push(await quiet(async () => measuredMisses(bench, `${figure} ${side.name} #${pass + 1}`, side.url, await side.bodies(MEASURED / PASSES))));
    }
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  return new Map(sides.map((side) => {
    const rs = runs.get(side.name)!;
    const latencies = ascending(rs.flatMap((r) => r.latencies));
    const combined: MissRun = {
      requests: rs.reduce((t, r) => t + r.requests, 0),
      uncachedAllows: rs.reduce((t, r) => t + r.uncachedAllows, 0),
      failures: rs.flatMap((r) => r.failures),
      latencyMs: { p50: percentile(latencies, 50), p99: percentile(latencies, 99) },
      latencies,
      // Every pass sends the same number of requests: means of per-request figures are the totals' ratios.
      cpuPerRequest: mean(rs.map((r) => r.cpuPerRequest)),
      asCpuPerRequest: mean(rs.map((r) => r.asCpuPerRequest)),
      grantsPerRequest: mean(rs.map((r) => r.grantsPerRequest)),
      introspectionsPerRequest: mean(rs.map((r) => r.introspectionsPerRequest)),
      neighbourShare: Math.max(...rs.map((r) => r.neighbourShare)),
      wakeupsPerRequest: mean(rs.map((r) => r.wakeupsPerRequest)),
      v8WakeupsPerRequest: mean(rs.map((r) => r.v8WakeupsPerRequest)),
      warmedUpWith: warmedUpWith.get(side.name)!,
      perPass: rs.map((r) => r.cpuPerRequest),
    };
    return [side.name, combined];
  }));
}

async function measuredMisses(bench: Bench, name: string, url: string, bodies: Record<string, unknown>[]): Promise<Omit<MissRun, 'warmedUpWith' | 'perPass'>> {
  const [stats0, as0] = [await bench.dev.stats(), await bench.dev.cpuMicros()];
  const woken0 = wakeups();
  const { value: out, server } = await bracket(() => sequential(bench, name, { url, bodies, warmup: 0 }));
  const woken1 = wakeups();
  const [stats1, as1] = [await bench.dev.stats(), await bench.dev.cpuMicros()];
  noteRun({ label: name, tool: 'node client', neighbourShare: server.neighbourShare });
  const latency = ascending(out.samples.map((s) => s.ms));
  const n = bodies.length;
  return {
    requests: out.samples.length,
    uncachedAllows: out.samples.filter((s) => s.status === 200 && s.allow && !s.cached).length,
    failures: out.failures,
    latencyMs: { p50: percentile(latency, 50), p99: percentile(latency, 99) },
    latencies: latency,
    cpuPerRequest: server.cpuMicros / n,
    asCpuPerRequest: (as1 - as0) / n,
    grantsPerRequest: (stats1.tokenRequests - stats0.tokenRequests) / n,
    introspectionsPerRequest: (stats1.introspectionRequests - stats0.introspectionRequests) / n,
    neighbourShare: server.neighbourShare,
    wakeupsPerRequest: (woken1.all - woken0.all) / n,
    v8WakeupsPerRequest: (woken1.v8Workers - woken0.v8Workers) / n,
  };
}

export interface ConcurrentRun {
  cpuPerRequest: number;
  uncachedAllows: number;
  requests: number;
  neighbourShare: number;
  /** The AS's grant and introspection calls ÷ requests. */
  asCallsPerRequest: number;
}

/** The same misses, `IN_FLIGHT` under way at once (fire.ts): credgate's CPU per miss when requests overlap. */
export async function concurrentMisses(bench: Bench, name: string, url: string, bodies: Bodies): Promise<ConcurrentRun> {
  return quiet(async () => measuredConcurrentMisses(bench, name, url, await bodies(MEASURED)));
}

async function measuredConcurrentMisses(bench: Bench, name: string, url: string, bodies: Record<string, unknown>[]): Promise<ConcurrentRun> {
  const file = join(bench.scratch, `${name}.json`);
  const input: FireInput = { url, bodies, concurrency: IN_FLIGHT };
  writeFileSync(file, JSON.stringify(input), { mode: 0o600 });
  const stats0 = await bench.dev.stats();
  const { value: r, server } = await bracket(() => runChild<FireOutput>([fireScript, file], 90_000, 'load'));
  const stats1 = await bench.dev.stats();
  if (!r.ok) throw new Error(`concurrent client (${name}): ${r.why}`);
  noteRun({ label: name, tool: 'node client', neighbourShare: server.neighbourShare });
  const asCalls = stats1.tokenRequests - stats0.tokenRequests + stats1.introspectionRequests - stats0.introspectionRequests;
  return { cpuPerRequest: server.cpuMicros / bodies.length, uncachedAllows: r.value.allowed - r.value.cached, requests: bodies.length, neighbourShare: server.neighbourShare, asCallsPerRequest: asCalls / bodies.length };
}

/** A side's CPU per request, then each pass's: `mean (pass · pass · …)`. */
const withPasses = (r: MissRun) => `${fmt(r.cpuPerRequest)} (${r.perPass.map((v) => fmt(v)).join(' · ')})`;

export function missRows(figure: string, label: string, r: MissRun): void {
  row(figure, `${label}: credgate CPU per miss (each pass)`, withPasses(r), 'µs');
  row(figure, `${label}: latency p50 / p99 (one at a time)`, `${r.latencyMs.p50.toFixed(2)} / ${r.latencyMs.p99.toFixed(2)}`, 'ms');
  row(figure, `${label}: AS calls per request; AS's CPU per request`, `${r.grantsPerRequest.toFixed(2)} grant, ${r.introspectionsPerRequest.toFixed(2)} introspection; ${fmt(r.asCpuPerRequest)} µs`, '');
  row(figure, `${label}: uncached allows`, `${r.uncachedAllows}/${r.requests}`, 'requests');
  row(figure, `${label}: wake-ups of credgate's threads per miss (of which V8's workers: JIT, GC helpers)`, `${r.wakeupsPerRequest.toFixed(2)} (${r.v8WakeupsPerRequest.toFixed(2)})`, '');
  row(figure, `${label}: warmed up with (one at a time, until V8 settled)`, r.warmedUpWith, 'misses');
}

export const aliceBody = (): Record<string, unknown> => ({ username: 'alice', password: ALICE.password });

/** A credgate that caches nothing: every request with alice's password is a password grant. */
export const startUncachedTwin = (bench: Bench, overrides: Record<string, unknown> = {}): Promise<RunningServer> => startCredgate(bench.dev, bench.keys, { cacheTtlSeconds: 0, ...overrides });

/** This process's CPU time per call of `f`, one at a time, after `warm` unmeasured calls, µs. */
async function cpuPer(n: number, warm: number, f: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < warm; i++) await f();
  const cpu = process.cpuUsage();
  for (let i = 0; i < n; i++) await f();
  const used = process.cpuUsage(cpu);
  return (used.user + used.system) / n;
}

/**
 * Pieces of a miss measured alone in this process, one at a time: the client assertion credgate
 * signs for each introspection (src/upstream/clientAssertion.ts's privateKeyJwt with credgate's key),
 * and credgate's check of an access token from the AS (src/upstream/jws.ts, the key from a jose key
 * set as credgate gets it).
 */
async function pieces(bench: Bench): Promise<{ assertion: number; tokenCheck: number }> {
  const auth = privateKeyJwt(bench.keys.signing);
  const as: oauth.AuthorizationServer = { issuer: bench.dev.issuer, introspection_endpoint: `${bench.dev.url}/oauth/introspect` };
  const assertion = await cpuPer(400, 2000, () => Promise.resolve(auth(as, { client_id: AUDIENCE }, new URLSearchParams(), new Headers())));
  const token = await passwordGrantToken(bench);
  const keySet = createLocalJWKSet({ keys: [(await bench.dev.keys()).publicJwk] });
  const checks = { issuer: bench.dev.issuer, audience: AUDIENCE, algorithms: new Set(['RS256']), clockToleranceSeconds: 30 };
  const tokenCheck = await cpuPer(400, 2000, async () => {
    if ((await verifyJwt(token, keySet, checks)) === null) throw new Error('the AS\'s token did not pass credgate\'s check');
  });
  return { assertion, tokenCheck };
}

export async function missPath(bench: Bench): Promise<void> {
  const { dev, credgate } = bench;
  // After figure 2's burst, load shedding may still answer 503 for a moment; /readyz says when it stops.
  const ready = await until200(`${credgate.url}/readyz`);
  if (ready.status !== 200) throw new Error(`credgate not ready: /readyz answered ${ready.status}`);
  const same = (n: number) => Array.from({ length: n }, aliceBody);

  // A fresh ASP per request: introspection (recognised by its shape) with a private_key_jwt assertion.
  const freshAsps = async (n: number) => (await dev.appPasswords('alice', n)).map((password) => ({ username: 'alice', password }));
  // alice's password, every time, at a twin that caches nothing: the password grant (behind the
  // login ledger, budget 5), then the access token's signature checked locally.
  const twin = await startUncachedTwin(bench);
  let floor: MissRun, relay: MissRun, asp: MissRun, password: MissRun;
  let aspConcurrent: ConcurrentRun, passwordConcurrent: ConcurrentRun;
  try {
    const runs = await interleavedMisses(bench, '7', [
      // The floors: the same client and body against the bare POST route (no decision, no AS), and
      // against a bare route that waits on one call to a bare upstream in the AS's process.
      { name: 'floor', url: bench.bareUrl, bodies: same },
      { name: 'relay floor', url: `${bench.bareUrl}/relay`, bodies: same },
      { name: 'ASP', url: `${credgate.url}/v1/verify`, bodies: freshAsps },
      { name: 'password', url: `${twin.url}/v1/verify`, bodies: same },
    ]);
    [floor, relay, asp, password] = [runs.get('floor')!, runs.get('relay floor')!, runs.get('ASP')!, runs.get('password')!];
    aspConcurrent = await concurrentMisses(bench, `7 ASP, ${IN_FLIGHT} in flight`, `${credgate.url}/v1/verify`, freshAsps);
    // Distinct users, so that requests under way together are not one flight (singleflight).
    const users = await dev.users(4 * IN_FLIGHT);
    await warm(bench, `7 password, ${IN_FLIGHT} in flight`, `${twin.url}/v1/verify`, users);
    passwordConcurrent = await concurrentMisses(bench, `7 password, ${IN_FLIGHT} in flight`, `${twin.url}/v1/verify`, (n) => Array.from({ length: n }, (_, i) => users[i % users.length]!));
  } finally {
    await twin.close();
  }
  row('7', `bare POST, one at a time: server CPU per request (each of ${PASSES} passes)`, withPasses(floor), 'µs');
  row('7', 'bare POST, one at a time: round trip p50', floor.latencyMs.p50, 'ms');
  row('7', 'relay floor (bare POST that calls a bare upstream once, undici), one at a time: server CPU per request', withPasses(relay), 'µs');
  row('7', 'relay floor: round trip p50', relay.latencyMs.p50, 'ms');
  missRows('7', 'ASP miss (introspection)', asp);
  missRows('7', 'password miss (grant + JWT)', password);
  const p = await pieces(bench);
  results.missPath = { measured: MEASURED, floor, relay, appPassword: asp, passwordGrant: password, pieces: p, inFlight: IN_FLIGHT, appPasswordConcurrent: aspConcurrent, passwordGrantConcurrent: passwordConcurrent };
  const allowed = (r: { uncachedAllows: number; requests: number }) => (r.uncachedAllows === r.requests ? '' : ` (${r.uncachedAllows}/${r.requests} uncached allows)`);
  row('7', `${IN_FLIGHT} in flight: credgate CPU per ASP miss · per password miss (AS calls per miss)`, `${fmt(aspConcurrent.cpuPerRequest)} (${aspConcurrent.asCallsPerRequest.toFixed(2)}) · ${fmt(passwordConcurrent.cpuPerRequest)} (${passwordConcurrent.asCallsPerRequest.toFixed(2)})${allowed(aspConcurrent)}${allowed(passwordConcurrent)}`, 'µs');
  // Where a miss's CPU goes, from this run's own numbers: what is left is credgate's own code, its
  // HTTP client, the log line and metrics.
  row('7', 'alone, one at a time: client assertion · access token check', `${fmt(p.assertion)} · ${fmt(p.tokenCheck)}`, 'µs CPU');
  // Paired by pass: a miss and the relay floor measured minutes apart would differ by the machine's drift.
  const overRelay = (r: MissRun, piece: number) => {
    const d = r.perPass.map((v, i) => v - relay.perPass[i]! - piece);
    return `${fmt(d.reduce((a, b) => a + b, 0) / d.length)} (passes: ${fmt(Math.min(...d))} … ${fmt(Math.max(...d))})`;
  };
  row('7', 'ASP miss − the relay floor − assertion (paired by pass)', overRelay(asp, p.assertion), 'µs CPU');
  row('7', 'password miss − the relay floor − token check (paired by pass)', overRelay(password, p.tokenCheck), 'µs CPU');
  // One at a time, every step of a miss ends in a sleep (for the client, the AS, the thread pool), and
  // each wake-up is charged by this machine whatever the work: one round trip with a peer on the
  // other CPU (one wake-up, one packet sent back), measured alone at the pace of each run.
  const pace = (r: MissRun) => r.latencyMs.p50 / Math.max(1, r.wakeupsPerRequest);
  const trip = { floor: await roundTripCost(pace(floor)), relay: await roundTripCost(pace(relay)), asp: await roundTripCost(pace(asp)), password: await roundTripCost(pace(password)) };
  row('7', 'wake-ups of credgate\'s threads per request, one at a time: bare POST · relay floor', `${floor.wakeupsPerRequest.toFixed(2)} · ${relay.wakeupsPerRequest.toFixed(2)}`, '');
  row('7', 'a wake-up alone (a round trip with the other CPU, nothing else), at the pace of bare POST · relay floor · ASP · password', `${fmt(trip.floor)} · ${fmt(trip.relay)} · ${fmt(trip.asp)} · ${fmt(trip.password)}`, 'µs CPU');
  const awake = (r: MissRun, cost: number) => fmt(r.cpuPerRequest - r.wakeupsPerRequest * cost);
  row('7', 'bare POST · relay floor · ASP miss · password miss, less wake-ups × that', `${awake(floor, trip.floor)} · ${awake(relay, trip.relay)} · ${awake(asp, trip.asp)} · ${awake(password, trip.password)}`, 'µs CPU');
  (results.missPath as Record<string, unknown>).roundTripCost = trip;
  // Each target beside the floor this run measured under it: one upstream call with no decision
  // (the relay floor) plus the piece of crypto a miss of that kind cannot skip. What is left of the
  // target is what credgate's own code may cost on this machine, one at a time.
  const left = (target: number, piece: number) => `${fmt(relay.cpuPerRequest + piece)} µs (${fmt(target - relay.cpuPerRequest - piece)} µs of the ${target} µs left)`;
  row('7', 'the floor under each target, one at a time: relay floor + token check (password) · relay floor + assertion (ASP)', `${left(PASSWORD_TARGET_MICROS, p.tokenCheck)} · ${left(ASP_TARGET_MICROS, p.assertion)}`, '');
  const ok = (r: MissRun) => r.uncachedAllows === MEASURED && r.failures.length === 0;
  targetRow('7', 'password-grant miss: credgate CPU', password.cpuPerRequest, 'µs', `≤ ${PASSWORD_TARGET_MICROS} µs`, ok(password) ? password.cpuPerRequest <= PASSWORD_TARGET_MICROS : 'invalid');
  targetRow('7', 'ASP miss (assertion included): credgate CPU', asp.cpuPerRequest, 'µs', `≤ ${ASP_TARGET_MICROS} µs`, ok(asp) ? asp.cpuPerRequest <= ASP_TARGET_MICROS : 'invalid');
}
