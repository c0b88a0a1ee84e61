/**
 * Figure 6 of `npm run bench`: `/auth` with a different, valid, never-seen Bearer JWT on every
 * request (so every request is a cache miss that checks an RS256 signature), against the bare GET
 * route and against jose's `jwtVerify` alone on the same core. Target: credgate's CPU per request ≤
 * the bare route's + jose alone's + 40 µs, all three measured in this run on the server's core.
 * Beside them, for the reader: the bare route with jose's check in its handler, served like the
 * others (`/bare/jose`): what serving the sum as one route costs beyond the sum of its parts.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { JWK } from 'jose';
import type { JoseInput, JoseResult } from './jose.js';
import type { MintResult, MintSpec } from './mint.js';
import { bracket, quiet } from './generator.js';
import { runChild } from './pinning.js';
import { noteRun } from './validity.js';
import { fmt, row, targetRow } from './report.js';
import { AUDIENCE, until200, useBareJose, type Bench } from './setup.js';
import { bareGet, cachedProblems, CONNECTIONS, interleave, passwordGrantToken, record, sideRows } from './throughput.js';

/** Figure 6's side that serves the bare route plus jose's check (setup.ts, /bare/jose). */
const IN_SITU = 'bare GET + jose in situ';
const mintScript = fileURLToPath(new URL('./mint.js', import.meta.url));
const joseScript = fileURLToPath(new URL('./jose.js', import.meta.url));
const HALF_SECONDS = 1;
const WARMUP_SECONDS = 1;
const JOSE_SECONDS = 1;
/** What credgate adds to the bare route and jose alone, µs of CPU per request. */
export const OVERHEAD_TARGET_MICROS = 40;
/**
 * Tokens per run: credgate cannot answer faster than its own check alone (or jose alone, the faster
 * of the two) on the same core, so that rate × this margin × the run's seconds, plus one per
 * connection at each end, is more than any run uses.
 */
const MARGIN = 1.15;
const MAX_TOKENS_PER_RUN = 60_000;

const decode = (part: string) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;

/** Signs `count` tokens into `name`.tokens, copies of `template` with their own iat/exp/jti. */
async function mint(bench: Bench, privateJwk: JWK, template: string, name: string, count: number): Promise<{ path: string; ms: number }> {
  const [header, claims] = template.split('.');
  const out = join(bench.scratch, `${name}.tokens`);
  const spec: MintSpec = { privateJwk: privateJwk as MintSpec['privateJwk'], header: decode(header!), claims: decode(claims!), count, out };
  const specFile = join(bench.scratch, `${name}.mint.json`);
  writeFileSync(specFile, JSON.stringify(spec), { mode: 0o600 });
  // ~1 ms of CPU a token, on every CPU, before any measured run.
  const r = await runChild<MintResult>([mintScript, specFile], 30_000 + count * 3, 'all');
  if (!r.ok) throw new Error(`minting ${count} tokens: ${r.why}`);
  return { path: out, ms: r.value.ms };
}

/**
 * jose alone, in its own process on the server's CPU while this process idles; repeated like a load
 * run while other processes took the CPU (their share: the CPU's busy time less jose's and ours).
 */
async function joseAlone(bench: Bench, publicJwk: JWK, tokensFile: string, label: string): Promise<JoseResult> {
  const input: JoseInput = { publicJwk, issuer: bench.dev.issuer, audience: AUDIENCE, tokensFile, seconds: JOSE_SECONDS, inFlight: CONNECTIONS };
  return quiet(async () => {
    const { value: r, server } = await bracket(() => runChild<JoseResult>([joseScript, JSON.stringify(input)], 30_000, 'server'));
    if (!r.ok) throw new Error(`jose alone: ${r.why}`);
    const neighbourShare = Math.max(0, server.neighbourShare - r.value.totalCpuMicros / (server.wallSeconds * 1e6));
    noteRun({ label, tool: 'node client', neighbourShare });
    return { ...r.value, neighbourShare };
  });
}

export async function uncachedBearer(bench: Bench): Promise<void> {
  const template = await passwordGrantToken(bench);
  const keys = await bench.dev.keys();
  // A first batch for jose and credgate's check alone, whose speed sets how many tokens the load runs need.
  const small = await mint(bench, keys.privateJwk, template, 'jose', 2000);
  const jose: JoseResult[] = [await joseAlone(bench, keys.publicJwk, small.path, '6 jose alone, before')];
  const first = jose[0]!;
  const rate = 1e6 / Math.min(first.serial.cpuMicros, first.inFlight.cpuMicros, first.check.serial.cpuMicros, first.check.inFlight.cpuMicros);
  const perRun = (seconds: number) => Math.min(MAX_TOKENS_PER_RUN, Math.ceil(MARGIN * rate * seconds) + 2 * CONNECTIONS);
  // Run 0 is the warm-up, runs 1 and 2 the measured ones; a run repeated (a neighbour took the
  // server's CPU) gets a file minted for it then, so that no token is ever sent twice.
  const counts = [perRun(WARMUP_SECONDS), perRun(HALF_SECONDS), perRun(HALF_SECONDS)];
  const files: string[] = [];
  let mintMs = small.ms;
  const tokensFor = async (run: number): Promise<string> => {
    while (files.length <= run) {
      const count = counts[files.length] ?? (counts[files.length] = perRun(HALF_SECONDS));
      const m = await mint(bench, keys.privateJwk, template, `run${files.length}`, count);
      files.push(m.path);
      mintMs += m.ms;
    }
    return files[run]!;
  };
  await tokensFor(2);
  // The minted tokens pass (one of jose's batch; the load runs use the others).
  const [someToken] = readFileSync(small.path, 'utf8').split('\n', 1);
  const check = await until200(`${bench.credgate.url}/auth`, { headers: { authorization: `Bearer ${someToken}` } });
  if (check.status !== 200) throw new Error(`/auth answered ${check.status} for a minted token`);

  await useBareJose(keys.publicJwk, bench.dev.issuer, AUDIENCE);
  const joseCheck = await until200(`${bench.bareUrl}/jose`, { headers: { authorization: `Bearer ${someToken}` } });
  if (joseCheck.status !== 200) throw new Error(`/bare/jose answered ${joseCheck.status} for a minted token`);
  const sides = await interleave(
    '6',
    [
      bareGet(bench),
      // The bare route and jose together, in situ: served at the rate such a route reaches, each of
      // its answers wakes the generator as often as credgate's do (jose alone runs in a loop).
      // Its tokens are the uncached side's for the same run: jose keeps nothing between calls.
      { name: IN_SITU, options: async (run) => ({ url: `${bench.bareUrl}/jose`, connections: CONNECTIONS, seconds: HALF_SECONDS, tokensFile: await tokensFor(run) }) },
      { name: 'uncached Bearer JWT', server: bench.credgate, options: async (run) => ({ url: `${bench.credgate.url}/auth`, connections: CONNECTIONS, seconds: HALF_SECONDS, tokensFile: await tokensFor(run) }) },
    ],
    { halfSeconds: HALF_SECONDS, warmupSeconds: WARMUP_SECONDS },
  );
  jose.push(await joseAlone(bench, keys.publicJwk, small.path, '6 jose alone, after'));
  const mean = (f: (j: JoseResult) => number) => jose.reduce((t, j) => t + f(j), 0) / jose.length;
  const joseCpu = { serial: mean((j) => j.serial.cpuMicros), inFlight: mean((j) => j.inFlight.cpuMicros) };
  const joseRate = { serial: mean((j) => j.serial.rate), inFlight: mean((j) => j.inFlight.rate) };
  const bare = sides.get('bare GET')!;
  const inSitu = sides.get(IN_SITU)!;
  const subject = sides.get('uncached Bearer JWT')!;
  const tokensUsed = subject.runs.reduce((t, r) => t + (r.tokensUsed ?? 0), 0);
  record('uncachedBearer', sides, { tokensMinted: counts, tokensUsed, mintMs, joseAlone: jose });
  for (const s of sides.values()) sideRows('6', s);
  // The uncached side's CPU per request swings between runs while the bare route's does not: how
  // much of each run went to garbage collection on the main thread (helpers on V8's threads are in
  // the CPU figure, not here).
  row('6', 'main-thread GC pauses per request: bare GET · uncached (full collections)', `${fmt(bare.gcPausePerRequest)} · ${fmt(subject.gcPausePerRequest)} (${bare.majorGcs} · ${subject.majorGcs})`, 'µs');
  const eachRun = (runs: typeof subject.runs) => runs.map((r) => `${fmt(r.cpuPerRequest)} · ${fmt(r.server.systemMicros / r.requests)} · ${fmt(r.server.gcPauseMicros / r.requests)}`).join('; ');
  row('6', 'bare GET, each measured run: CPU · of which kernel · GC pauses, per request', eachRun(bare.runs), 'µs');
  row('6', 'bare GET + jose in situ, each measured run: CPU · of which kernel · GC pauses, per request', eachRun(inSitu.runs), 'µs');
  row('6', 'uncached, each measured run: CPU · of which kernel · GC pauses, per request', eachRun(subject.runs), 'µs');
  row('6', 'jose jwtVerify alone, 1 at a time', `${Math.round(joseRate.serial)} · ${fmt(joseCpu.serial)}`, 'verifies/s · µs CPU/verify');
  row('6', `jose jwtVerify alone, ${CONNECTIONS} in flight`, `${Math.round(joseRate.inFlight)} · ${fmt(joseCpu.inFlight)}`, 'verifies/s · µs CPU/verify');
  const checkCpu = { serial: mean((j) => j.check.serial.cpuMicros), inFlight: mean((j) => j.check.inFlight.cpuMicros) };
  row('6', `credgate's check alone (jws.ts, node:crypto), 1 at a time · ${CONNECTIONS} in flight`, `${fmt(checkCpu.serial)} · ${fmt(checkCpu.inFlight)}`, 'µs CPU/verify');
  row('6', 'tokens for the measured runs / used', `${counts.slice(1).reduce((t, c) => t + c, 0)} / ${tokensUsed}`, 'tokens');
  if (subject.counters) row('6', 'cache hits / misses / AS calls', `${subject.counters.hits} / ${subject.counters.misses} / ${subject.counters.upstream}`, '');
  const problem = cachedProblems(subject, 'misses');
  if (problem) row('6', 'measurement problem', problem, '');
  const inSituProblem = cachedProblems(inSitu, 'misses');
  if (inSituProblem) row('6', 'bare GET + jose in situ: measurement problem', inSituProblem, '');
  // jose with as many verifications under way as credgate has requests (50 connections).
  const bound = bare.cpuPerRequest + joseCpu.inFlight + OVERHEAD_TARGET_MICROS;
  const credgateOwn = subject.cpuPerRequest - bare.cpuPerRequest - joseCpu.inFlight;
  row('6', "credgate's own: uncached − bare − jose (50 in flight)", credgateOwn, 'µs CPU/req', `≤ ${OVERHEAD_TARGET_MICROS}`);
  row('6', "uncached − bare − credgate's check alone (50 in flight)", subject.cpuPerRequest - bare.cpuPerRequest - checkCpu.inFlight, 'µs CPU/req');
  // The sum above adds parts measured at very different rates (the bare route at ~50k req/s, jose in
  // a loop with no HTTP); a slower route's answers find the generator asleep more often, and with
  // a halting idle CPU (idle.ts) waking it costs the writer kernel time (each side's kernel time and
  // interrupts per request are in its rows above). The same sum served as one route shows that premium.
  row('6', 'bare GET + jose in situ − (bare GET + jose alone, 50 in flight): the in-situ premium', inSitu.cpuPerRequest - bare.cpuPerRequest - joseCpu.inFlight, 'µs CPU/req');
  row('6', 'uncached − bare GET + jose in situ (credgate\'s own, measured as one route)', subject.cpuPerRequest - inSitu.cpuPerRequest, 'µs CPU/req', `(≤ ${OVERHEAD_TARGET_MICROS})`);
  targetRow('6', 'uncached Bearer JWT: CPU per request', subject.cpuPerRequest, 'µs', `≤ bare + jose + ${OVERHEAD_TARGET_MICROS} = ${fmt(bound)}`, problem ? 'invalid' : subject.cpuPerRequest <= bound);
}
