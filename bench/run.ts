/**
 * `npm run bench`: credgate's figures on loopback (see BENCHMARKS.md). Prints a table and writes
 * bench-results.json at the repository root. A missed target is printed as FAIL, never an exit code.
 *
 *   1. upstream calls for 1000 concurrent identical fresh credentials (singleflight)
 *   2. upstream calls and latency for 1000 distinct fresh credentials
 *   3. cached /auth (Basic) vs a bare fastify route: req/s, p50, p99, ratio
 *   4. resident memory per cached entry at 100k and 1M entries
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import Fastify from 'fastify';
import { destination } from 'pino';
import { configSchema } from '../src/config/schema.js';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../src/devserver/index.js';
import { createLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/main.js';
import { requireServiceConfig } from '../src/service.js';
import { generateClientKeys } from '../src/upstream/clientKeys.js';
import type { FireInput, FireOutput } from './fire.js';
import type { LoadOptions, LoadResult } from './load.js';
import type { MemoryResult } from './memory.js';

const BUDGET_MS = 170_000;
const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-bench', clientSecret: 'bench-client-secret-value' };
const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));
/** `--only=1,3`: run just those figures (for profiling); default all four. */
const only = new Set((process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length) ?? '1,2,3,4').split(','));
const resultsPath = fileURLToPath(new URL('../../bench-results.json', import.meta.url));

interface Row {
  figure: string;
  measure: string;
  value: string;
  unit: string;
  target?: string;
  pass?: boolean;
}
const rows: Row[] = [];
const results: Record<string, unknown> = {};

function row(figure: string, measure: string, value: number | string, unit: string, target?: string, pass?: boolean): void {
  const shown = typeof value === 'number' ? (Number.isInteger(value) ? String(value) : value.toFixed(value < 10 ? 2 : 1)) : value;
  rows.push({ figure, measure, value: shown, unit, ...(target === undefined ? {} : { target }), ...(pass === undefined ? {} : { pass }) });
}

function printTable(): void {
  const header = ['#', 'measure', 'value', 'unit', 'target', 'result'];
  const lines = rows.map((r) => [r.figure, r.measure, r.value, r.unit, r.target ?? '', r.pass === undefined ? '' : r.pass ? 'PASS' : 'FAIL']);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cells: string[]) => cells.map((c, i) => (i === 2 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  console.log(fmt(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  let last = '';
  for (const l of lines) {
    if (last !== '' && l[0] !== last) console.log('');
    last = l[0]!;
    console.log(fmt(l));
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function fire(input: FireInput): Promise<FireOutput> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(here('./fire.js'), { workerData: input });
    worker.once('message', (m: FireOutput) => resolve(m));
    worker.once('error', reject);
    worker.once('exit', (code) => code !== 0 && reject(new Error(`fire worker exited with ${code}`)));
  });
}

function child<T>(args: string[], timeoutMs: number): Promise<{ ok: true; value: T } | { ok: false; why: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const why = err.killed ? `killed after ${timeoutMs / 1000} s (time limit)` : `exit ${err.code ?? err.signal}: ${stderr.trim().split('\n').slice(-1)[0] ?? ''}`;
        resolve({ ok: false, why });
        return;
      }
      try {
        resolve({ ok: true, value: JSON.parse(stdout.trim().split('\n').pop()!) as T });
      } catch {
        resolve({ ok: false, why: `unreadable output: ${stdout.slice(0, 200)}` });
      }
    });
  });
}

const load = (options: LoadOptions) => child<LoadResult>([here('./load.js'), JSON.stringify(options)], (options.duration + 30) * 1000);

async function metric(server: RunningServer, name: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const match = new RegExp(`^${name} (\\d+(?:\\.\\d+)?)$`, 'm').exec(text);
  return Number(match?.[1] ?? 0);
}

async function figure1(dev: DevAuthorizationServer, credgate: RunningServer): Promise<void> {
  const asp = dev.createAppPassword('alice').password;
  const before = dev.stats();
  const coalescedBefore = await metric(credgate, 'credgate_coalesced_requests_total');
  const out = await fire({ url: `${credgate.url}/v1/verify`, bodies: Array.from({ length: 1000 }, () => ({ username: 'alice', password: asp })), concurrency: 1000 });
  const after = dev.stats();
  const grants = after.tokenRequests - before.tokenRequests;
  const introspections = after.introspectionRequests - before.introspectionRequests;
  const coalesced = (await metric(credgate, 'credgate_coalesced_requests_total')) - coalescedBefore;
  results.identicalFresh = { requests: 1000, grants, introspections, allowed: out.allowed, servedFromCache: out.cached, coalesced, wallMs: out.wallMs, statuses: out.statuses, failures: out.failures };
  row('1', 'password-grant calls', grants, 'calls', '1 (≤1: one flight)', grants <= 1 && out.allowed === 1000);
  row('1', 'introspection calls', introspections, 'calls', '≤1', introspections <= 1);
  row('1', 'allowed', `${out.allowed}/1000`, 'requests');
  row('1', 'coalesced / cache hits', `${coalesced} / ${out.cached}`, 'requests');
  row('1', 'wall time', out.wallMs, 'ms');
}

async function figure2(dev: DevAuthorizationServer, credgate: RunningServer): Promise<void> {
  const asps = Array.from({ length: 1000 }, () => dev.createAppPassword('alice').password);
  const before = dev.stats();
  const out = await fire({ url: `${credgate.url}/v1/verify`, bodies: asps.map((password) => ({ username: 'alice', password })), concurrency: 100 });
  const after = dev.stats();
  const sorted = [...out.latencies].sort((a, b) => a - b);
  const grants = after.tokenRequests - before.tokenRequests;
  const introspections = after.introspectionRequests - before.introspectionRequests;
  results.distinctFresh = {
    requests: 1000, concurrency: 100, grants, introspections, allowed: out.allowed, wallMs: out.wallMs,
    p50Ms: percentile(sorted, 50), p99Ms: percentile(sorted, 99), maxMs: sorted.at(-1), statuses: out.statuses, failures: out.failures,
  };
  row('2', 'password-grant calls', grants, 'calls');
  row('2', 'introspection calls', introspections, 'calls');
  row('2', 'allowed', `${out.allowed}/1000`, 'requests');
  row('2', 'answered 503 (upstream_unavailable)', out.statuses['503'] ?? 0, 'requests');
  row('2', 'latency p50', percentile(sorted, 50), 'ms');
  row('2', 'latency p99', percentile(sorted, 99), 'ms');
  row('2', 'wall time (100 in flight)', out.wallMs, 'ms');
  row('2', 'throughput', 1000 / (out.wallMs / 1000), 'decisions/s');
}

/** Two halves of one measurement: throughput over both; p50 the mean, p99 and max the worse of the two. */
function combine(halves: LoadResult[]): LoadResult {
  const sum = (f: (r: LoadResult) => number) => halves.reduce((t, r) => t + f(r), 0);
  const worst = (f: (r: LoadResult) => number) => Math.max(...halves.map(f));
  return {
    requests: sum((r) => r.requests),
    requestsPerSecond: sum((r) => r.requestsPerSecond) / halves.length,
    p50: sum((r) => r.p50) / halves.length,
    p90: worst((r) => r.p90),
    p99: worst((r) => r.p99),
    max: worst((r) => r.max),
    non2xx: sum((r) => r.non2xx),
    errors: sum((r) => r.errors),
    timeouts: sum((r) => r.timeouts),
  };
}

async function figure3(credgate: RunningServer): Promise<void> {
  const alice = defaultDevUsers().find((u) => u.username === 'alice')!;
  const authorization = 'Basic ' + Buffer.from(`alice:${alice.password}`, 'utf8').toString('base64');
  const first = await fetch(`${credgate.url}/auth`, { headers: { authorization } });
  if (first.status !== 200) throw new Error(`/auth answered ${first.status} for alice`);
  const bare = Fastify();
  bare.get('/bare', async () => ({ reason: 'ok' }));
  await bare.listen({ host: '127.0.0.1', port: 0 });
  const address = bare.server.address() as { port: number };
  try {
    const auth: LoadOptions = { url: `${credgate.url}/auth`, connections: 50, duration: 2.5, headers: { authorization } };
    const plain: LoadOptions = { url: `http://127.0.0.1:${address.port}/bare`, connections: 50, duration: 2.5 };
    // Warm-up (JIT, connection set-up), then 5 s each as two 2.5 s halves in A B B A order, so a
    // neighbour's load drifting up or down during the run does not favour either side.
    await load({ ...plain, duration: 1 });
    await load({ ...auth, duration: 1 });
    const halves = { bare: [] as LoadResult[], auth: [] as LoadResult[] };
    const failed: string[] = [];
    for (const [name, options] of [['bare', plain], ['auth', auth], ['auth', auth], ['bare', plain]] as const) {
      const r = await load(options);
      if (r.ok) halves[name].push(r.value);
      else failed.push(`${name}: ${r.why}`);
    }
    if (failed.length > 0) {
      row('3', 'load run', `failed: ${failed.join('; ')}`, '');
      return;
    }
    const a = { value: combine(halves.auth) };
    const b = { value: combine(halves.bare) };
    const ratio = a.value.requestsPerSecond / b.value.requestsPerSecond;
    results.cachedAuth = { connections: 50, durationSeconds: 5, order: 'bare auth auth bare, 2.5 s each', auth: a.value, bare: b.value, halves, ratio };
    const bad = (r: LoadResult) => r.non2xx + r.errors + r.timeouts;
    row('3', 'bare fastify: throughput', b.value.requestsPerSecond, 'req/s');
    row('3', 'bare fastify: latency p50', b.value.p50, 'ms');
    row('3', 'bare fastify: latency p99', b.value.p99, 'ms');
    row('3', 'cached /auth: throughput', a.value.requestsPerSecond, 'req/s');
    row('3', 'cached /auth: latency p50', a.value.p50, 'ms');
    row('3', 'cached /auth: latency p99', a.value.p99, 'ms', '≤ 3 ms', a.value.p99 <= 3);
    row('3', '/auth ÷ bare throughput', ratio, '×', '≥ 0.55', ratio >= 0.55);
    row('3', 'non-2xx/errors/timeouts', `${bad(a.value)} /auth, ${bad(b.value)} bare`, 'responses');
  } finally {
    await bare.close();
  }
}

async function figure4(): Promise<void> {
  results.memory = {};
  for (const [n, label, timeoutMs] of [[100_000, '100k', 40_000], [1_000_000, '1M', 90_000]] as const) {
    const r = await child<MemoryResult>(['--expose-gc', '--max-old-space-size=8192', here('./memory.js'), String(n)], timeoutMs);
    if (!r.ok) {
      (results.memory as Record<string, unknown>)[label] = { error: r.why };
      row('4', `${label} entries`, `not measured: ${r.why}`, '', n === 1_000_000 ? '≤ 450 B/entry' : undefined, n === 1_000_000 ? false : undefined);
      continue;
    }
    const m = r.value;
    (results.memory as Record<string, unknown>)[label] = { ...m, rssPerEntry: m.rssBytes / m.entries, heapPerEntry: m.heapUsedBytes / m.entries };
    const rss = m.rssBytes / m.entries;
    row('4', `${label} entries: RSS per entry`, Math.round(rss), 'bytes', n === 1_000_000 ? '≤ 450 B/entry' : undefined, n === 1_000_000 ? rss <= 450 : undefined);
    row('4', `${label} entries: heapUsed per entry`, Math.round(m.heapUsedBytes / m.entries), 'bytes');
    row('4', `${label} entries: fill time`, m.fillMs / 1000, 's');
  }
}

async function main(): Promise<void> {
  const watchdog = setTimeout(() => {
    console.error(`bench: over its ${BUDGET_MS / 1000} s budget; partial results:`);
    printTable();
    process.exit(1);
  }, BUDGET_MS);
  watchdog.unref();
  const started = Date.now();
  const machine = { date: new Date().toISOString(), node: process.version, nproc: availableParallelism(), cpu: cpus()[0]?.model ?? 'unknown', platform: `${process.platform}-${process.arch}` };
  results.machine = machine;
  console.log(`credgate bench · ${machine.date} · node ${machine.node} · nproc ${machine.nproc} · ${machine.cpu}\n`);

  const dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT], lockoutThreshold: 1_000_000 });
  // As in production: info level, decision lines written (to /dev/null), metrics on.
  const sink = destination({ dest: '/dev/null', sync: true });
  const config = requireServiceConfig(
    configSchema.parse({
      issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, host: '127.0.0.1', port: 0, logLevel: 'info',
      // credgate's own brute-force throttle would stop figure 2 (1000 ASPs of one user, each a failed login when tried as a password).
      throttleUsernameFailures: 0, throttleIpFailures: 0,
    }),
    { inMemoryKeys: true },
  );
  const credgate = await startServer(config, createLogger({ level: config.logLevel, destination: sink as unknown as NodeJS.WritableStream }), { keys: await generateClientKeys() });
  dev.setResourceServerJwksUrl(`${credgate.url}/.well-known/jwks.json`);
  try {
    if (only.has('1')) await figure1(dev, credgate);
    if (only.has('2')) await figure2(dev, credgate);
    if (only.has('3')) await figure3(credgate);
  } finally {
    await credgate.close();
    await dev.close();
  }
  if (only.has('4')) await figure4();

  results.totalSeconds = (Date.now() - started) / 1000;
  printTable();
  console.log(`\ntotal ${(results.totalSeconds as number).toFixed(1)} s · results in bench-results.json`);
  writeFileSync(resultsPath, JSON.stringify({ rows, ...results }, null, 2) + '\n');
  clearTimeout(watchdog);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error('bench failed:', err);
    process.exit(1);
  },
);
