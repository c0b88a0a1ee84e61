/**
 * The load generators of `npm run bench`: `wrk` (throughput, closed loop) and `h2load --h1 --rps`
 * (a fixed offered load, for latency). Both are C programs on their own core (the load CPU), one
 * thread each, so that they are not what limits the server. Every run reports, beside its own
 * figures:
 *  - the server's CPU time over the run: this process's `process.cpuUsage()` (user + system, every
 *    thread: credgate, the bare app, V8's helpers, libuv's pool), ÷ the responses counted;
 *  - the generator's own CPU time, from the shell's `times` after it exits (its children's user +
 *    system), as a share of its core: the headroom check;
 *  - the share of the server's CPU that other processes took meanwhile (/proc/stat).
 */
import { execFile } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { constants as perfConstants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { wakeInterrupts } from './idle.js';
import { currentPinning, pinnedCommand } from './pinning.js';
import { ascending, percentile } from './report.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { discardLast, NEIGHBOUR_MAX_SHARE, noteRun } from './validity.js';

/** Attempts of one measured run while other processes keep taking the server's CPU. */
const ATTEMPTS = 4;

/**
 * Runs a measurement (one that notes itself in validity.ts last) and, while other processes took
 * more than the limit of the server's CPU (or of the generator's, for wrk and h2load) during it,
 * throws it away and runs it again after 5 s, up to `ATTEMPTS` in all; the last attempt stands
 * whatever it shows (the verdict then says so).
 */
export async function quiet<T extends { server: ServerSide; generator?: GeneratorSide } | { neighbourShare: number }>(run: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const r = await run();
    const share = 'server' in r ? Math.max(r.server.neighbourShare, r.generator?.neighbourShare ?? 0) : r.neighbourShare;
    if (!(share > NEIGHBOUR_MAX_SHARE) || attempt >= ATTEMPTS) return r;
    discardLast();
    await sleep(5000);
  }
}

/** From dist/bench/ back to the source: wrk reads the script itself. */
const WRK_SCRIPT = fileURLToPath(new URL('../../bench/wrk.lua', import.meta.url));

export interface ServerSide {
  /** Server (this process) CPU time during the run, µs. */
  cpuMicros: number;
  /** Of that, time in the kernel (system time: socket calls, and on a VM the exits they cause), µs. */
  systemMicros: number;
  /** The load CPU's busy time (user + nice + system, plus steal) during the run, µs. */
  loadCpuBusyMicros: number;
  /** Other processes' share of the server's CPU (user + nice + system beyond ours, plus steal). */
  neighbourShare: number;
  /** Wall time of the run as this process saw it, s. */
  wallSeconds: number;
  /** This process's garbage-collection pauses on its main thread during the run (V8's 'gc' entries), µs. */
  gcPauseMicros: number;
  /** Of those, full (mark-compact) collections. */
  majorGcs: number;
  /** Wake-up interrupts (idle.ts) the load CPU received during the run; NaN where not counted. */
  loadCpuInterrupts: number;
}

/** This process's garbage collections since the bench started: main-thread pauses, and how many were full ones. */
const gcTotals = { pauseMicros: 0, major: 0 };
function countGc(entries: PerformanceEntry[]): void {
  for (const entry of entries) {
    gcTotals.pauseMicros += entry.duration * 1000;
    if ((entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) gcTotals.major++;
  }
}
const gcObserver = new PerformanceObserver((list) => countGc(list.getEntries()));
gcObserver.observe({ entryTypes: ['gc'] });
/** The totals now, entries not yet handed to the observer's callback included. */
function gcSoFar(): { pauseMicros: number; major: number } {
  countGc(gcObserver.takeRecords());
  return { ...gcTotals };
}

export interface GeneratorSide {
  /** The generator's CPU time (user + system), s. */
  cpuSeconds: number;
  /** ÷ its run's duration: the share of its core it used. */
  share: number;
  /** Other processes' share of the generator's CPU during the run (its busy time less the generator's). */
  neighbourShare: number;
}

/** Others on the load CPU: its busy time less the generator's own, ÷ wall time. */
const generatorSide = (server: ServerSide, cpuSeconds: number, seconds: number): GeneratorSide => ({
  cpuSeconds,
  share: cpuSeconds / seconds,
  neighbourShare: Math.max(0, server.loadCpuBusyMicros - cpuSeconds * 1e6) / (server.wallSeconds * 1e6),
});

export interface WrkOptions {
  url: string;
  connections: number;
  /** Whole seconds (wrk takes no fractions). */
  seconds: number;
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  /** A file whose bytes are the request body. */
  bodyFile?: string;
  /** A file of tokens, one a line, each sent once as `Authorization: Bearer`. */
  tokensFile?: string;
}

export interface WrkRun {
  label: string;
  requests: number;
  seconds: number;
  rps: number;
  /** Server CPU µs per response. */
  cpuPerRequest: number;
  /** Responses with status ≥ 400 (wrk's `status` errors). */
  non2xx: number;
  /** Connect, read, write errors and timeouts. */
  socketErrors: number;
  /** wrk's latency percentiles (closed loop, ms). */
  p50: number;
  p90: number;
  p99: number;
  max: number;
  tokensUsed?: number;
  /** Requests that had to repeat the last token (the file ran out). */
  tokensOver?: number;
  server: ServerSide;
  generator: GeneratorSide;
}

/** `cpuN` line of /proc/stat → [user+nice+system, steal] in clock ticks. */
function cpuTicks(cpu: number | undefined): [number, number] {
  if (cpu === undefined) return [0, 0];
  const line = readFileSync('/proc/stat', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`cpu${cpu} `));
  if (!line) return [0, 0];
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal …
  return [f[0]! + f[1]! + f[2]!, f[7] ?? 0];
}

/** Wake-up interrupts `cpu` received between two readings of `wakeInterrupts`, or NaN. */
function interruptsOn(cpu: number | undefined, before: number[], after: number[]): number {
  if (cpu === undefined || before[cpu] === undefined || after[cpu] === undefined) return NaN;
  return after[cpu] - before[cpu];
}

/** USER_HZ: /proc/stat counts in 1/100 s on Linux. */
const TICK_MICROS = 10_000;

/** Brackets `work` with this process's CPU time and the server CPU's /proc/stat counters. */
export async function bracket<T>(work: () => Promise<T>): Promise<{ value: T; server: ServerSide }> {
  const cpu = currentPinning().serverCpu;
  const loadCpu = currentPinning().loadCpu;
  const [busy0, steal0] = cpuTicks(cpu);
  const [loadBusy0, loadSteal0] = cpuTicks(loadCpu);
  const gc0 = gcSoFar();
  const irq0 = wakeInterrupts();
  const usage0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await work();
  const wallMicros = (performance.now() - t0) * 1000;
  const used = process.cpuUsage(usage0);
  const gc1 = gcSoFar();
  const irq1 = wakeInterrupts();
  const [busy1, steal1] = cpuTicks(cpu);
  const [loadBusy1, loadSteal1] = cpuTicks(loadCpu);
  const ours = used.user + used.system;
  const others = Math.max(0, (busy1 - busy0) * TICK_MICROS - ours) + (steal1 - steal0) * TICK_MICROS;
  const loadCpuBusyMicros = (loadBusy1 - loadBusy0 + loadSteal1 - loadSteal0) * TICK_MICROS;
  return {
    value,
    server: { cpuMicros: ours, systemMicros: used.system, loadCpuBusyMicros, neighbourShare: cpu === undefined ? NaN : others / wallMicros, wallSeconds: wallMicros / 1e6, gcPauseMicros: gc1.pauseMicros - gc0.pauseMicros, majorGcs: gc1.major - gc0.major, loadCpuInterrupts: interruptsOn(loadCpu, irq0, irq1) },
  };
}

/** Runs `command args` on the load CPU under bash, which prints `times` after it: [stdout, children's CPU seconds]. */
function runTimed(command: string, args: string[], timeoutMs: number): Promise<{ stdout: string; cpuSeconds: number }> {
  // `times` prints the shell's own user/system times, then its children's: the generator's.
  const script = '"$@"; s=$?; times; exit $s';
  const [cmd, ...rest] = pinnedCommand('bash', ['-c', script, 'bench-generator', command, ...args], 'load');
  return new Promise((resolve, reject) => {
    execFile(cmd, rest, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${command}: ${err.killed ? `killed after ${timeoutMs / 1000} s` : `exit ${err.code ?? err.signal}`}: ${(stderr || stdout).trim().split('\n').slice(-2).join(' / ')}`));
      const lines = stdout.trimEnd().split('\n');
      const children = /^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$/.exec(lines.at(-1) ?? '');
      if (!children) return reject(new Error(`${command}: no CPU times in its output`));
      const cpuSeconds = Number(children[1]) * 60 + Number(children[2]) + Number(children[3]) * 60 + Number(children[4]);
      resolve({ stdout: lines.slice(0, -2).join('\n'), cpuSeconds });
    });
  });
}

/** One wrk run (one thread, on the load CPU). `warmUp`: not noted for the verdict. */
export async function runWrk(label: string, o: WrkOptions, warmUp = false): Promise<WrkRun> {
  if (!Number.isInteger(o.seconds) || o.seconds < 1) throw new Error(`wrk takes whole seconds (${label}: ${o.seconds})`);
  const args = ['-t1', `-c${o.connections}`, `-d${o.seconds}s`, '--timeout', '5s', '-s', WRK_SCRIPT];
  for (const [name, value] of Object.entries(o.headers ?? {})) args.push('-H', `${name}: ${value}`);
  args.push(o.url, '--');
  if (o.method) args.push(`method=${o.method}`);
  if (o.bodyFile) args.push(`body=${o.bodyFile}`);
  if (o.tokensFile) args.push(`tokens=${o.tokensFile}`);
  const { value: out, server } = await bracket(() => runTimed('wrk', args, (o.seconds + 30) * 1000));
  const line = out.stdout.split('\n').find((l) => l.startsWith('BENCHJSON '));
  if (!line) throw new Error(`wrk (${label}): no result line`);
  const r = JSON.parse(line.slice('BENCHJSON '.length)) as Record<string, number>;
  const seconds = r.durationUs! / 1e6;
  const generator = generatorSide(server, out.cpuSeconds, seconds);
  if (!warmUp) noteRun({ label, tool: 'wrk', generatorShare: generator.share, neighbourShare: server.neighbourShare, generatorNeighbourShare: generator.neighbourShare });
  return {
    label,
    requests: r.requests!,
    seconds,
    rps: r.requests! / seconds,
    cpuPerRequest: server.cpuMicros / r.requests!,
    non2xx: r.status!,
    socketErrors: r.connect! + r.read! + r.write! + r.timeout!,
    p50: r.p50! / 1000,
    p90: r.p90! / 1000,
    p99: r.p99! / 1000,
    max: r.max! / 1000,
    ...(o.tokensFile ? { tokensUsed: r.tokensUsed!, tokensOver: r.tokensOver! } : {}),
    server,
    generator,
  };
}

export interface RateOptions {
  url: string;
  connections: number;
  /** Requests per second offered, all connections together. */
  rate: number;
  seconds: number;
  warmupSeconds: number;
  headers?: Record<string, string>;
  /** POST this file's bytes. */
  bodyFile?: string;
}

export interface RateRun {
  label: string;
  offered: number;
  /** Responses per second during the measured time. */
  achieved: number;
  requests: number;
  failed: number;
  non2xx: number;
  /** Every measured response's own time (h2load's log), ms. */
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  /** The measured responses' times (ms), for combining runs. */
  latencies: number[];
  cpuPerRequest: number;
  server: ServerSide;
  generator: GeneratorSide;
}

/**
 * One `h2load --h1` run at a fixed offered rate: each connection sends `rate ÷ connections`
 * requests a second on its own timer, one at a time (HTTP/1.1, no pipelining); latency is every
 * response's own time from h2load's per-request log (warm-up excluded). Open loop only while the
 * server keeps up (a connection whose previous request has not answered waits): at half the
 * server's capacity it does.
 */
export async function runH2load(label: string, o: RateOptions, scratch: string): Promise<RateRun> {
  const log = join(scratch, `h2load-${process.hrtime.bigint()}.log`);
  const perConnection = o.rate / o.connections;
  const args = ['--h1', '-t1', `-c${o.connections}`, `--rps=${perConnection.toFixed(3)}`, `-D${o.seconds}`, `--warm-up-time=${o.warmupSeconds}`, `--log-file=${log}`];
  for (const [name, value] of Object.entries(o.headers ?? {})) args.push('-H', `${name}: ${value}`);
  if (o.bodyFile) args.push('-d', o.bodyFile);
  args.push(o.url);
  const { value: out, server } = await bracket(() => runTimed('h2load', args, (o.seconds + o.warmupSeconds + 30) * 1000));
  try {
    const counts = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed/.exec(out.stdout);
    const statuses = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out.stdout);
    if (!counts || !statuses) throw new Error(`h2load (${label}): unreadable output: ${out.stdout.slice(-300)}`);
    // Each line: start time (µs since the epoch), status, response time (µs).
    const latencies = readFileSync(log, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => Number(l.split('\t')[2]) / 1000);
    const sorted = ascending(latencies);
    const requests = latencies.length;
    // The server's CPU covers the warm-up too: charged per request over all of it (see RateRun).
    const allRequests = requests + (o.warmupSeconds * o.rate);
    const wall = o.seconds + o.warmupSeconds;
    const generator = generatorSide(server, out.cpuSeconds, wall);
    noteRun({ label, tool: 'h2load', generatorShare: generator.share, neighbourShare: server.neighbourShare, generatorNeighbourShare: generator.neighbourShare });
    return {
      label,
      offered: o.rate,
      achieved: requests / o.seconds,
      requests,
      failed: Number(counts[5]),
      non2xx: Number(statuses[3]) + Number(statuses[4]),
      p50: percentile(sorted, 50),
      p90: percentile(sorted, 90),
      p99: percentile(sorted, 99),
      p999: percentile(sorted, 99.9),
      max: sorted.at(-1) ?? NaN,
      latencies,
      cpuPerRequest: server.cpuMicros / allRequests,
      server,
      generator,
    };
  } finally {
    rmSync(log, { force: true });
  }
}
