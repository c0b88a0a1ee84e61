/**
 * `npm run bench`: credgate's figures on loopback (see docs/benchmarks.md). Prints a table, the run's
 * validity verdict, and writes bench-results.json at the repository root. A missed target is
 * printed as FAIL, never an exit code; a target of a run that is not valid prints INVALID.
 *
 *   1. upstream calls for 1000 concurrent identical fresh credentials (singleflight)
 *   2. upstream calls and latency for 1000 distinct fresh credentials
 *   3. cached /auth (Basic) vs a bare fastify GET route (wrk): req/s and CPU per request
 *   4. cached POST /v1/verify vs a bare fastify POST route parsing the same JSON
 *   5. cached /auth with a Bearer JWT vs the bare GET route
 *   6. uncached /auth, a fresh Bearer JWT per request, vs the bare GET route and jose alone
 *   7. the miss path: credgate's own CPU per password-grant and per ASP miss (AS in another process)
 *   8. resident memory per cached entry at 100k and 1M entries
 *   9. latency at a fixed offered load of half the bare route's capacity (h2load)
 *  10. what login protection costs: per cached decision (budget 5 vs 0), per miss (local, Redis)
 *  11. what a signed identity token costs a cached decision (policy with and without identityToken)
 *
 *   node --expose-gc dist/bench/run.js --only=3,6    just those figures (e.g. for --cpu-prof)
 *   … --idle-as-is    with the machine's own halt polling (idle.ts), not the haltpoll module's default
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { generateClientKeys } from '../src/upstream/clientKeys.js';
import { AsProcess } from './as.js';
import { distinctFresh, identicalFresh } from './fresh.js';
import { bracket } from './generator.js';
import { latencyAtHalfLoad } from './latency.js';
import { loginProtection } from './ledger.js';
import type { MemoryResult } from './memory.js';
import { closeMissClient, missPath } from './missPath.js';
import { pinBenchProcess, runChild } from './pinning.js';
import { printTable, results, row, rows } from './report.js';
import { AUDIENCE, CLIENT, scratchDirectory, startBareApp, startCredgate, type Bench } from './setup.js';
import { identityTokenCost } from './identityToken.js';
import { cachedBasicAuth, cachedBearer, cachedVerify } from './throughput.js';
import { uncachedBearer } from './uncachedJwt.js';
import { applyIdle } from './idle.js';
import { noteIdle, notePinning, validityReport } from './validity.js';

const BUDGET_MS = 900_000;
const FIGURES = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11'];
const only = new Set((process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length) ?? FIGURES.join(',')).split(','));
const unknown = [...only].filter((f) => !FIGURES.includes(f));
if (unknown.length > 0) {
  console.error(`--only: no figure ${unknown.join(', ')} (there are ${FIGURES.join(', ')})`);
  process.exit(2);
}
const resultsPath = fileURLToPath(new URL('../../bench-results.json', import.meta.url));
const memoryScript = fileURLToPath(new URL('./memory.js', import.meta.url));

async function memory(): Promise<void> {
  results.memory = {};
  for (const [n, label, timeoutMs] of [[100_000, '100k', 40_000], [1_000_000, '1M', 90_000]] as const) {
    // On every CPU: the fill is not a measured figure, and GC helper threads shorten it.
    const r = await runChild<MemoryResult>(['--expose-gc', '--max-old-space-size=8192', memoryScript, String(n)], timeoutMs, 'all');
    if (!r.ok) {
      (results.memory as Record<string, unknown>)[label] = { error: r.why };
      row('8', `${label} entries`, `not measured: ${r.why}`, '', n === 1_000_000 ? '≤ 450 B/entry' : undefined, n === 1_000_000 ? false : undefined);
      continue;
    }
    const m = r.value;
    // What an entry costs is the RSS the second half of the entries added (both ends measured after
    // full collections): the fixed costs — V8's young generation, which V8 sizes by the fill's
    // allocation rate (about 17 MB on Node 20, 109 MB on Node 24, whatever is live), code, the
    // runtime — are not per entry. The whole growth ÷ N is printed beside it.
    const marginal = m.secondHalfRssBytes / (m.entries - (m.entries >> 1));
    (results.memory as Record<string, unknown>)[label] = { ...m, rssPerEntry: m.rssBytes / m.entries, marginalRssPerEntry: marginal, heapPerEntry: m.heapUsedBytes / m.entries };
    row('8', `${label} entries: RSS per entry, from ${label === '1M' ? '500k' : '50k'} to ${label}`, Math.round(marginal), 'bytes', n === 1_000_000 ? '≤ 450 B/entry' : undefined, n === 1_000_000 ? marginal <= 450 : undefined);
    row('8', `${label} entries: all RSS growth ÷ entries`, Math.round(m.rssBytes / m.entries), 'bytes');
    row('8', `${label} entries: of which V8's young generation`, m.youngGenerationBytes / 1e6, 'MB');
    row('8', `${label} entries: heapUsed per entry`, Math.round(m.heapUsedBytes / m.entries), 'bytes');
    row('8', `${label} entries: fill time`, m.fillMs / 1000, 's');
    row('8', `${label} entries: one user's purge`, m.purgeMs, 'ms');
  }
}

const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');

function machine() {
  let kernel = '';
  try {
    kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  } catch {
    // not Linux
  }
  let versions: { wrk: string; h2load?: string } = { wrk: 'unknown' };
  try {
    versions = { wrk: execFileSync('wrk', ['-v'], { encoding: 'utf8' }).split('\n')[0]!.trim() };
  } catch (err) {
    // wrk -v exits 1 after printing its version.
    const out = (err as { stdout?: string }).stdout ?? '';
    versions = { wrk: out.split('\n')[0]?.trim() ?? 'unknown' };
  }
  try {
    versions.h2load = execFileSync('h2load', ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    versions.h2load = 'not installed';
  }
  return { date: new Date().toISOString(), node: process.version, nproc: availableParallelism(), cpu: cpus()[0]?.model ?? 'unknown', platform: `${process.platform}-${process.arch}`, kernel, wrk: versions.wrk, h2load: versions.h2load ?? 'not installed' };
}

function finish(): boolean {
  const validity = validityReport();
  results.validity = validity;
  printTable(validity.valid);
  console.log(`\nRUN ${validity.valid ? 'VALID' : 'INVALID: load targets are printed INVALID, not PASS/FAIL'}`);
  for (const c of validity.checks) console.log(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`);
  return validity.valid;
}

async function main(): Promise<void> {
  const watchdog = setTimeout(() => {
    console.error(`bench: over its ${BUDGET_MS / 1000} s budget; partial results:`);
    finish();
    process.exit(1);
  }, BUDGET_MS);
  watchdog.unref();
  const started = Date.now();
  const m = machine();
  // Before anything starts, so that every thread started later (the libuv pool included) inherits it.
  const pinning = pinBenchProcess();
  notePinning(pinning.pinned, pinning.summary);
  // How an idle CPU waits sets what every wake-up costs the process that wakes it (idle.ts).
  const idleSetting = applyIdle(process.argv.includes('--idle-as-is'));
  noteIdle(idleSetting);
  results.machine = m;
  results.pinning = pinning;
  results.idle = idleSetting;
  results.loadAverageAtStart = load();
  console.log(`credgate bench · ${m.date} · node ${m.node} · ${m.nproc} CPUs · ${m.cpu} · ${m.wrk} · ${m.h2load}`);
  console.log(pinning.summary);
  console.log(idleSetting.summary);
  // The machine's own `node` may be a line credgate does not support (Node 20 here): its figures
  // describe no deployment (node 20 ran the same build 1.4–2.4 × slower than node 24 on one machine).
  const major = Number(process.versions.node.split('.')[0]);
  if (![22, 24, 26].includes(major)) {
    console.log(`note: node ${m.node} is not a supported line (package.json engines: 22.12+, 24, 26); run the bench with one, e.g. PATH=$PWD/.node-lines/v24.22.3/bin:$PATH npm run bench (after npm run test:node)`);
  }
  console.log(`load average at start: ${load()}`);
  // What this process costs doing nothing (timers, metrics probes), over 1 s: it is in every CPU figure.
  const idle = await bracket(() => sleep(1000));
  results.idleServerCpuMicrosPerSecond = idle.server.cpuMicros / idle.server.wallSeconds;
  console.log(`server process idle: ${Math.round(idle.server.cpuMicros / idle.server.wallSeconds)} µs CPU per second\n`);

  const scratch = scratchDirectory();
  try {
    if (FIGURES.filter((f) => f !== '8').some((f) => only.has(f))) {
      // lockoutThreshold: the dev AS's brute-force protection stays out of the way of 1000 ASPs of one user.
      const dev = await AsProcess.start({ audience: AUDIENCE, clients: [CLIENT], lockoutThreshold: 1_000_000 });
      const keys = await generateClientKeys();
      const credgate = await startCredgate(dev, keys);
      await dev.setResourceServerJwksUrl(`${credgate.url}/.well-known/jwks.json`);
      const bare = await startBareApp(dev.bareUpstreamUrl);
      const bench: Bench = { dev, credgate, keys, bareUrl: `http://127.0.0.1:${(bare.server.address() as { port: number }).port}/bare`, scratch };
      try {
        // Figure 9 takes its offered load from figure 3's bare route, so it runs after it.
        const figures: [string, () => Promise<void>][] = [
          ['1', () => identicalFresh(bench)],
          ['2', () => distinctFresh(bench)],
          ['3', () => cachedBasicAuth(bench)],
          ['4', () => cachedVerify(bench)],
          ['5', () => cachedBearer(bench)],
          ['9', () => latencyAtHalfLoad(bench)],
          ['10', () => loginProtection(bench)],
          ['11', () => identityTokenCost(bench)],
          ['6', () => uncachedBearer(bench)],
          ['7', () => missPath(bench)],
        ];
        for (const [figure, run] of figures) {
          if (!only.has(figure)) continue;
          try {
            await run();
          } catch (err) {
            // One figure's failure is reported in its place; the others still run.
            row(figure, 'not measured', err instanceof Error ? err.message : String(err), '');
            const failures = (results.failures ??= {}) as Record<string, string>;
            failures[figure] = err instanceof Error ? (err.stack ?? err.message) : String(err);
          }
        }
      } finally {
        closeMissClient();
        await Promise.all([credgate.close(), bare.close()]);
        await dev.close();
      }
    }
    if (only.has('8')) await memory();
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }

  results.loadAverageAtEnd = load();
  results.totalSeconds = (Date.now() - started) / 1000;
  const valid = finish();
  console.log(`\nload average at end: ${load()} · total ${(results.totalSeconds as number).toFixed(1)} s · results in bench-results.json`);
  writeFileSync(resultsPath, JSON.stringify({ valid, rows, ...results }, null, 2) + '\n');
  clearTimeout(watchdog);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error('bench failed:', err);
    finish();
    process.exit(1);
  },
);
