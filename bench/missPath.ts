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
 * Times any thread of this process (credgate's) went to sleep and was woken since it started: the
 * sum of every thread's voluntary context switches (/proc/self/task/<tid>/status). A thread that
 * ended meanwhile drops out; none do during a figure (the thread pool and V8's workers stay).
 */
function wakeups(): number {
  let total = 0;
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      total += Number(/^voluntary_ctxt_switches:\s+(\d+)$/m.exec(readFileSync(`/proc/self/task/${tid}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return total;
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
export const WARMUP = 50;
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
}

/** Bodies sent one at a time, not measured (JIT, connections, the twin's first grant). */
export async function warm(bench: Bench, name: string, url: string, bodies: Record<string, unknown>[]): Promise<void> {
  await sequential(bench, `${name}-warm-up`, { url, bodies, warmup: 0 });
}

type Bodies = Record<string, unknown>[] | (() => Promise<Record<string, unknown>[]>);
const bodiesOf = async (b: Bodies) => (typeof b === 'function' ? await b() : b);

/**
 * `warmup` bodies first (not measured), then `bodies` (a function: new ones for each attempt, when
 * they are single-use such as fresh ASPs), one at a time; the measured part is bracketed with this
 * process's CPU time and the AS's, and repeated while a neighbour took the server's CPU (`quiet`).
 */
export async function misses(bench: Bench, name: string, url: string, warmup: Record<string, unknown>[], bodies: Bodies): Promise<MissRun> {
  if (warmup.length > 0) await warm(bench, name, url, warmup);
  return quiet(async () => measuredMisses(bench, name, url, await bodiesOf(bodies)));
}

async function measuredMisses(bench: Bench, name: string, url: string, bodies: Record<string, unknown>[]): Promise<MissRun> {
  const [stats0, as0] = [await bench.dev.stats(), await bench.dev.cpuMicros()];
  const woken0 = wakeups();
  const { value: out, server } = await bracket(() => sequential(bench, name, { url, bodies, warmup: 0 }));
  const woken = wakeups() - woken0;
  const [stats1, as1] = [await bench.dev.stats(), await bench.dev.cpuMicros()];
  noteRun({ label: name, tool: 'node client', neighbourShare: server.neighbourShare });
  const latency = ascending(out.samples.map((s) => s.ms));
  const n = bodies.length;
  return {
    requests: out.samples.length,
    uncachedAllows: out.samples.filter((s) => s.status === 200 && s.allow && !s.cached).length,
    failures: out.failures,
    latencyMs: { p50: percentile(latency, 50), p99: percentile(latency, 99) },
    cpuPerRequest: server.cpuMicros / n,
    asCpuPerRequest: (as1 - as0) / n,
    grantsPerRequest: (stats1.tokenRequests - stats0.tokenRequests) / n,
    introspectionsPerRequest: (stats1.introspectionRequests - stats0.introspectionRequests) / n,
    neighbourShare: server.neighbourShare,
    wakeupsPerRequest: woken / n,
  };
}

/** The same misses, `IN_FLIGHT` under way at once (fire.ts): credgate's CPU per miss when requests overlap. */
export async function concurrentMisses(bench: Bench, name: string, url: string, bodies: Bodies): Promise<{ cpuPerRequest: number; uncachedAllows: number; requests: number; neighbourShare: number }> {
  return quiet(async () => measuredConcurrentMisses(bench, name, url, await bodiesOf(bodies)));
}

async function measuredConcurrentMisses(bench: Bench, name: string, url: string, bodies: Record<string, unknown>[]): Promise<{ cpuPerRequest: number; uncachedAllows: number; requests: number; neighbourShare: number }> {
  const file = join(bench.scratch, `${name}.json`);
  const input: FireInput = { url, bodies, concurrency: IN_FLIGHT };
  writeFileSync(file, JSON.stringify(input), { mode: 0o600 });
  const { value: r, server } = await bracket(() => runChild<FireOutput>([fireScript, file], 90_000, 'load'));
  if (!r.ok) throw new Error(`concurrent client (${name}): ${r.why}`);
  noteRun({ label: name, tool: 'node client', neighbourShare: server.neighbourShare });
  return { cpuPerRequest: server.cpuMicros / bodies.length, uncachedAllows: r.value.allowed - r.value.cached, requests: bodies.length, neighbourShare: server.neighbourShare };
}

export function missRows(figure: string, label: string, r: MissRun): void {
  row(figure, `${label}: credgate CPU per miss`, r.cpuPerRequest, 'µs');
  row(figure, `${label}: latency p50 / p99 (one at a time)`, `${r.latencyMs.p50.toFixed(2)} / ${r.latencyMs.p99.toFixed(2)}`, 'ms');
  row(figure, `${label}: AS calls per request; AS's CPU per request`, `${r.grantsPerRequest.toFixed(2)} grant, ${r.introspectionsPerRequest.toFixed(2)} introspection; ${fmt(r.asCpuPerRequest)} µs`, '');
  row(figure, `${label}: uncached allows`, `${r.uncachedAllows}/${MEASURED}`, 'requests');
  row(figure, `${label}: wake-ups of credgate's threads per miss`, r.wakeupsPerRequest, '');
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
  const assertion = await cpuPer(400, 50, () => Promise.resolve(auth(as, { client_id: AUDIENCE }, new URLSearchParams(), new Headers())));
  const token = await passwordGrantToken(bench);
  const keySet = createLocalJWKSet({ keys: [(await bench.dev.keys()).publicJwk] });
  const checks = { issuer: bench.dev.issuer, audience: AUDIENCE, algorithms: new Set(['RS256']), clockToleranceSeconds: 30 };
  const tokenCheck = await cpuPer(400, 50, async () => {
    if ((await verifyJwt(token, keySet, checks)) === null) throw new Error('the AS\'s token did not pass credgate\'s check');
  });
  return { assertion, tokenCheck };
}

export async function missPath(bench: Bench): Promise<void> {
  const { dev, credgate } = bench;
  // After figure 2's burst, load shedding may still answer 503 for a moment; /readyz says when it stops.
  const ready = await until200(`${credgate.url}/readyz`);
  if (ready.status !== 200) throw new Error(`credgate not ready: /readyz answered ${ready.status}`);
  const same = (k: number) => Array.from({ length: k }, aliceBody);

  // The floor: the same client and body against the bare POST route (no decision, no AS).
  const floor = await misses(bench, '7 floor', bench.bareUrl, same(WARMUP), same(MEASURED));
  row('7', 'bare POST, one at a time: server CPU per request', floor.cpuPerRequest, 'µs');
  row('7', 'bare POST, one at a time: round trip p50', floor.latencyMs.p50, 'ms');

  // A fresh ASP per request: introspection (recognised by its shape) with a private_key_jwt assertion.
  const freshAsps = async (n: number) => (await dev.appPasswords('alice', n)).map((password) => ({ username: 'alice', password }));
  const asp = await misses(bench, '7 ASP', `${credgate.url}/v1/verify`, await freshAsps(WARMUP), () => freshAsps(MEASURED));
  missRows('7', 'ASP miss (introspection)', asp);
  const aspConcurrent = await concurrentMisses(bench, `7 ASP, ${IN_FLIGHT} in flight`, `${credgate.url}/v1/verify`, () => freshAsps(MEASURED));

  // alice's password, every time, at a twin that caches nothing: the password grant (behind the
  // login ledger, budget 5), then the access token's signature checked locally.
  const twin = await startUncachedTwin(bench);
  let password: MissRun;
  let passwordConcurrent: Awaited<ReturnType<typeof concurrentMisses>>;
  try {
    password = await misses(bench, '7 password', `${twin.url}/v1/verify`, same(WARMUP), same(MEASURED));
    // Distinct users, so that requests under way together are not one flight (singleflight).
    const users = await dev.users(4 * IN_FLIGHT);
    await warm(bench, `7 password, ${IN_FLIGHT} in flight`, `${twin.url}/v1/verify`, users);
    passwordConcurrent = await concurrentMisses(bench, `7 password, ${IN_FLIGHT} in flight`, `${twin.url}/v1/verify`, Array.from({ length: MEASURED }, (_, i) => users[i % users.length]!));
  } finally {
    await twin.close();
  }
  missRows('7', 'password miss (grant + JWT)', password);
  const p = await pieces(bench);
  results.missPath = { measured: MEASURED, warmup: WARMUP, floor, appPassword: asp, passwordGrant: password, pieces: p, inFlight: IN_FLIGHT, appPasswordConcurrent: aspConcurrent, passwordGrantConcurrent: passwordConcurrent };
  const allowed = (r: { uncachedAllows: number; requests: number }) => (r.uncachedAllows === r.requests ? '' : ` (${r.uncachedAllows}/${r.requests} uncached allows)`);
  row('7', `${IN_FLIGHT} in flight: credgate CPU per ASP miss · per password miss`, `${fmt(aspConcurrent.cpuPerRequest)} · ${fmt(passwordConcurrent.cpuPerRequest)}${allowed(aspConcurrent)}${allowed(passwordConcurrent)}`, 'µs');
  // Where a miss's CPU goes, from this run's own numbers: what is left is credgate's own code, its
  // HTTP client, the log line and metrics.
  row('7', 'alone, one at a time: client assertion · access token check', `${fmt(p.assertion)} · ${fmt(p.tokenCheck)}`, 'µs CPU');
  row('7', 'ASP miss − bare POST − assertion', asp.cpuPerRequest - floor.cpuPerRequest - p.assertion, 'µs CPU');
  row('7', 'password miss − bare POST − token check', password.cpuPerRequest - floor.cpuPerRequest - p.tokenCheck, 'µs CPU');
  // One at a time, every step of a miss ends in a sleep (for the client, the AS, the thread pool), and
  // each wake-up is charged by this machine whatever the work: one round trip with a peer on the
  // other CPU (one wake-up, one packet sent back), measured alone at the pace of each run.
  const pace = (r: MissRun) => r.latencyMs.p50 / Math.max(1, r.wakeupsPerRequest);
  const trip = { floor: await roundTripCost(pace(floor)), asp: await roundTripCost(pace(asp)), password: await roundTripCost(pace(password)) };
  row('7', 'bare POST, one at a time: wake-ups of credgate\'s threads per request', floor.wakeupsPerRequest, '');
  row('7', 'a wake-up alone (a round trip with the other CPU, nothing else), at the pace of bare POST · ASP · password', `${fmt(trip.floor)} · ${fmt(trip.asp)} · ${fmt(trip.password)}`, 'µs CPU');
  const awake = (r: MissRun, cost: number) => fmt(r.cpuPerRequest - r.wakeupsPerRequest * cost);
  row('7', 'bare POST · ASP miss · password miss, less wake-ups × that', `${awake(floor, trip.floor)} · ${awake(asp, trip.asp)} · ${awake(password, trip.password)}`, 'µs CPU');
  (results.missPath as Record<string, unknown>).roundTripCost = trip;
  const ok = (r: MissRun) => r.uncachedAllows === MEASURED && r.failures.length === 0;
  targetRow('7', 'password-grant miss: credgate CPU', password.cpuPerRequest, 'µs', `≤ ${PASSWORD_TARGET_MICROS} µs`, ok(password) ? password.cpuPerRequest <= PASSWORD_TARGET_MICROS : 'invalid');
  targetRow('7', 'ASP miss (assertion included): credgate CPU', asp.cpuPerRequest, 'µs', `≤ ${ASP_TARGET_MICROS} µs`, ok(asp) ? asp.cpuPerRequest <= ASP_TARGET_MICROS : 'invalid');
}
