/**
 * Whether this run's load figures can be believed, decided from the run itself and printed with
 * the table. A run is VALID only if
 *  - the bench was pinned: the server (every thread) on one CPU, the generators on the other;
 *  - every load generator had headroom: its own CPU time (user + system, from the shell's `times`)
 *    below 90 % of its core over every run, so it was not what limited the rate;
 *  - the bare fastify GET route, driven by wrk, reached this machine's known range (a generator or
 *    a server core slowed by something else shows up here first);
 *  - other processes took at most 10 % of the server's CPU during every measured run (from
 *    /proc/stat: the CPU's user + nice + system time less this process's own, plus steal), nor of
 *    the generator's CPU during a wrk or h2load run (its busy time less the generator's own). A run
 *    over that is thrown away and repeated, up to three times (`quiet` in generator.ts), and reported.
 * When it is not, every target that depends on load prints INVALID instead of PASS/FAIL.
 */

/**
 * Requests per second wrk (one thread, 50 connections, on the other core) gets from the bare fastify
 * GET route on one pinned core of this machine class (2-core KVM guest, Intel Xeon) with nothing
 * else running (load average < 0.5): 52–70k on node 20, 86–87k on node 24; 6–14k while other test
 * suites ran (the 22–23k once reported for it was such a reading). Below the floor the server core
 * or the generator was slowed by something else; above the ceiling the machine is not the one these
 * figures describe. Another machine or node line sets its own with CREDGATE_BENCH_BARE_RANGE=MIN-MAX.
 */
const MEASURED_BARE_RANGES: Record<number, [number, number]> = { 20: [45_000, 80_000], 24: [70_000, 110_000] };
const nodeMajor = Number(process.versions.node.split('.')[0]);
export const KNOWN_BARE_RANGE: readonly [number, number] = parseRange(process.env.CREDGATE_BENCH_BARE_RANGE) ?? MEASURED_BARE_RANGES[nodeMajor] ?? [45_000, 110_000];
export const GENERATOR_MAX_SHARE = 0.9;
export const NEIGHBOUR_MAX_SHARE = 0.1;

function parseRange(text: string | undefined): [number, number] | undefined {
  const m = /^(\d+)-(\d+)$/.exec(text ?? '');
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

export interface RunCheck {
  /** Figure and what ran, e.g. `3 bare #1`. */
  label: string;
  tool: 'wrk' | 'h2load' | 'node client';
  /** Generator CPU time ÷ the run's wall time (share of its one core); not for the one-at-a-time node client. */
  generatorShare?: number;
  /** Other processes' share of the server's CPU during the run. */
  neighbourShare: number;
  /** wrk and h2load: other processes' share of the generator's CPU (its busy time less the generator's). */
  generatorNeighbourShare?: number;
}

const runs: RunCheck[] = [];
/** Runs taken while a neighbour was busy on the server's CPU, thrown away and repeated. */
const discarded: RunCheck[] = [];
const bareRps: { label: string; rps: number }[] = [];
let pinned = false;
let pinningSummary = 'not pinned';

export function notePinning(isPinned: boolean, summary: string): void {
  pinned = isPinned;
  pinningSummary = summary;
}

export function noteRun(check: RunCheck): void {
  runs.push(check);
}

/** Throws the last noted run away (it is repeated): it no longer counts, but is reported. */
export function discardLast(): void {
  const r = runs.pop();
  if (r) discarded.push(r);
}

/** A measured (not warm-up) run of the bare GET route under wrk. */
export function noteBare(label: string, rps: number): void {
  bareRps.push({ label, rps });
}

export interface Verdict {
  valid: boolean;
  /** One line per check, each with its numbers. */
  checks: { name: string; ok: boolean; detail: string }[];
}

export function verdict(): Verdict {
  const checks: Verdict['checks'] = [];
  checks.push({ name: 'pinned', ok: pinned, detail: pinningSummary });
  const generated = runs.filter((r) => r.generatorShare !== undefined);
  if (generated.length > 0) {
    const worstGen = generated.reduce((a, b) => (b.generatorShare! > a.generatorShare! ? b : a));
    checks.push({
      name: 'generator headroom',
      ok: worstGen.generatorShare! < GENERATOR_MAX_SHARE,
      detail: `busiest generator ${pct(worstGen.generatorShare!)} of its core (${worstGen.tool}, ${worstGen.label}); limit < ${pct(GENERATOR_MAX_SHARE)}; ${generated.length} runs`,
    });
  }
  if (runs.length > 0) {
    const others = (r: RunCheck) => Math.max(r.neighbourShare, r.generatorNeighbourShare ?? 0);
    const worstN = runs.reduce((a, b) => (others(b) > others(a) ? b : a));
    checks.push({
      name: 'quiet cores',
      ok: others(worstN) <= NEIGHBOUR_MAX_SHARE,
      detail:
        `other processes took at most ${pct(others(worstN))} of the server's or the generator's CPU (${worstN.label}); limit ${pct(NEIGHBOUR_MAX_SHARE)}` +
        (discarded.length > 0 ? `; ${discarded.length} runs over the limit thrown away and repeated (${discarded.map((d) => `${d.label} ${pct(others(d))}`).join(', ')})` : ''),
    });
  }
  if (bareRps.length > 0) {
    const [lo, hi] = KNOWN_BARE_RANGE;
    const out = bareRps.filter((b) => b.rps < lo || b.rps > hi);
    const min = Math.min(...bareRps.map((b) => b.rps));
    const max = Math.max(...bareRps.map((b) => b.rps));
    checks.push({
      name: 'bare route in known range',
      ok: out.length === 0,
      detail: `bare GET ${Math.round(min)}–${Math.round(max)} req/s over ${bareRps.length} runs; known range ${lo}–${hi}${out.length ? `; outside: ${out.map((b) => `${b.label} ${Math.round(b.rps)}`).join(', ')}` : ''}`,
    });
  } else {
    checks.push({ name: 'bare route in known range', ok: false, detail: 'no bare GET run in this run (run figure 3 with the others)' });
  }
  return { valid: checks.every((c) => c.ok), checks };
}

export function validityReport(): { valid: boolean; checks: Verdict['checks']; runs: RunCheck[]; discarded: RunCheck[]; bare: typeof bareRps; knownBareRange: readonly [number, number] } {
  const v = verdict();
  return { ...v, runs, discarded, bare: bareRps, knownBareRange: KNOWN_BARE_RANGE };
}

const pct = (share: number) => `${(share * 100).toFixed(1)} %`;
