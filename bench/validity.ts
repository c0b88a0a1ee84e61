/**
 * Whether this run's load figures can be believed, decided from the run itself and printed with
 * the table. A run is VALID only if
 *  - the bench was pinned: the server (every thread) on one CPU, the generators on the other;
 *  - the idle setting it measured under (idle.ts: halt polling) was still in force at the end;
 *  - every load generator had headroom: its own CPU time (user + system, from the shell's `times`)
 *    below 90 % of its core over every run, so it was not what limited the rate;
 *  - the bare fastify GET route, driven by wrk, was steady within each figure: its runs there (the
 *    A and the A' of A-B-B-A) within `BARE_MAX_SPREAD` of the figure's fastest. Every ratio divides
 *    by the bare runs of its own figure, so what must not change is the machine's speed during a
 *    figure; a core slowed by a neighbour or by the hypervisor for part of it shows up here first.
 *    A figure whose bare runs disagree is measured again (`interleave`, at most three times) and the
 *    runs thrown away are reported. When `CREDGATE_BENCH_BARE_RANGE` names this machine's known
 *    range, every run must also be within it;
 *  - other processes took at most 10 % of the server's CPU during every measured run (from
 *    /proc/stat: the CPU's user + nice + system time less this process's own, plus steal), nor of
 *    the generator's CPU during a wrk or h2load run (its busy time less the generator's own). A run
 *    over that is thrown away and repeated, up to three times (`quiet` in generator.ts), and reported.
 * When it is not, every target that depends on load prints INVALID instead of PASS/FAIL.
 */
import { readIdle } from './idle.js';

/**
 * An absolute range of requests per second for the bare GET route (wrk, one thread, 50 connections,
 * on the other core), for a machine whose figure is known: CREDGATE_BENCH_BARE_RANGE=MIN-MAX. Not
 * built in: machines of one "kind" differ several-fold (a 2-core KVM guest did 52–70k on an Intel
 * Xeon host and 14–28k on an AMD EPYC one, node 20), so a fixed range only said which host a run
 * landed on. The steadiness check below needs no such knowledge.
 */
export const KNOWN_BARE_RANGE: readonly [number, number] | undefined = parseRange(process.env.CREDGATE_BENCH_BARE_RANGE);
/** Largest distance of a figure's bare run below the fastest bare run of that figure, as a share of it. */
export const BARE_MAX_SPREAD = 0.15;
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
const bareRps: { label: string; figure: string; rps: number; paired?: boolean }[] = [];
/** Bare runs of figure attempts thrown away because they disagreed (the figure was measured again). */
const discardedBare: { label: string; rps: number }[] = [];
let pinned = false;
let pinningSummary = 'not pinned';

/** The idle setting the bench measured under (idle.ts), once it is applied. */
let idle: { summary: string; haltPollNs: number | null } | undefined;

export function noteIdle(setting: { summary: string; haltPollNs: number | null }): void {
  idle = { summary: setting.summary, haltPollNs: setting.haltPollNs };
}

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

/**
 * A measured (not warm-up) run of the bare GET route under wrk, in `figure`. `paired`: the figure
 * judges its targets on the interval of per-pass ratios (throughput.ts pairedInterval), which takes
 * the machine's drift between passes into account; its bare runs need not agree with each other,
 * and are only held against CREDGATE_BENCH_BARE_RANGE when that is set.
 */
export function noteBare(figure: string, label: string, rps: number, paired = false): void {
  bareRps.push({ label, figure, rps, ...(paired ? { paired } : {}) });
}

/** Whether the bare runs noted so far for `figure` agree (see BARE_MAX_SPREAD); a paired figure's always do. */
export function bareSteady(figure: string): boolean {
  const rs = bareRps.filter((b) => b.figure === figure && !b.paired).map((b) => b.rps);
  return rs.length < 2 || Math.min(...rs) >= (1 - BARE_MAX_SPREAD) * Math.max(...rs);
}

/** Throws the bare runs of `figure` away (the figure is measured again); they are reported. */
export function discardBare(figure: string): void {
  for (let i = bareRps.length - 1; i >= 0; i--) {
    if (bareRps[i]!.figure === figure) discardedBare.unshift(...bareRps.splice(i, 1));
  }
}

export interface Verdict {
  valid: boolean;
  /** One line per check, each with its numbers. */
  checks: { name: string; ok: boolean; detail: string }[];
}

export function verdict(): Verdict {
  const checks: Verdict['checks'] = [];
  checks.push({ name: 'pinned', ok: pinned, detail: pinningSummary });
  if (idle !== undefined) {
    // Something else setting halt polling meanwhile would change what a wake-up costs mid-run.
    const now = readIdle().haltPollNs;
    checks.push({ name: 'idle setting held', ok: now === idle.haltPollNs, detail: `${idle.summary}; at the end: ${now === null ? 'no haltpoll module' : `${now} ns`}` });
  }
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
  const figures = [...new Set(bareRps.map((b) => b.figure))];
  if (figures.length > 0) {
    const unsteady = figures.filter((f) => !bareSteady(f));
    const sorted = bareRps.map((b) => b.rps).sort((a, b) => a - b);
    const each = figures.map((f) => `${f}${bareRps.some((b) => b.figure === f && b.paired) ? ' (paired: judged on intervals)' : ''}: ${bareRps.filter((b) => b.figure === f).map((b) => Math.round(b.rps)).join(' · ')}`).join('; ');
    checks.push({
      name: 'bare route steady within each figure',
      ok: unsteady.length === 0,
      detail:
        `bare GET req/s by figure ${each} (all: ${Math.round(sorted[0]!)}–${Math.round(sorted.at(-1)!)}); an unpaired figure's runs within ${pct(BARE_MAX_SPREAD)} of its fastest` +
        (unsteady.length ? `; not in figure ${unsteady.join(', ')}` : '') +
        (discardedBare.length ? `; ${discardedBare.length} bare runs of figures measured again thrown away (${discardedBare.map((b) => `${b.label} ${Math.round(b.rps)}`).join(', ')})` : ''),
    });
  } else {
    checks.push({ name: 'bare route steady within each figure', ok: false, detail: 'no bare GET run in this run (run figure 3 with the others)' });
  }
  if (KNOWN_BARE_RANGE !== undefined) {
    const [lo, hi] = KNOWN_BARE_RANGE;
    const out = bareRps.filter((b) => b.rps < lo || b.rps > hi);
    checks.push({
      name: 'bare route in known range',
      ok: bareRps.length > 0 && out.length === 0,
      detail: `known range ${lo}–${hi} (CREDGATE_BENCH_BARE_RANGE)${out.length ? `; outside: ${out.map((b) => `${b.label} ${Math.round(b.rps)}`).join(', ')}` : ''}`,
    });
  }
  return { valid: checks.every((c) => c.ok), checks };
}

export function validityReport(): { valid: boolean; checks: Verdict['checks']; runs: RunCheck[]; discarded: RunCheck[]; bare: typeof bareRps; knownBareRange: readonly [number, number] | undefined } {
  const v = verdict();
  return { ...v, runs, discarded, bare: bareRps, knownBareRange: KNOWN_BARE_RANGE };
}

const pct = (share: number) => `${(share * 100).toFixed(1)} %`;
