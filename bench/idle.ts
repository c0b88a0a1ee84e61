/**
 * How this machine's idle CPUs wait for work, and the bench's setting of it for its own run.
 *
 * On a virtual machine whose idle driver is cpuidle-haltpoll (KVM and Firecracker guests), an idle
 * vCPU polls for up to `guest_halt_poll_ns` before it halts. Set to 0 (as this machine's kernel
 * command line does; the module's own default is 200 µs) it halts at once, and then every wake-up of
 * a thread asleep on it — wrk woken by an answer, credgate woken by a request — is an
 * inter-processor interrupt: exits to the hypervisor on both sides, whose time the kernel charges to
 * the process that did the waking. A route that answers more slowly finds the generator asleep more
 * often (figure 6's bare route with jose in its handler: ~0.9 interrupts per answer), so every CPU
 * ratio then weighs the machine's price of a wake-up as much as the work compared. The bench sets
 * halt polling to the module's default for its run, restores the machine's value when it exits, and
 * counts the interrupts each run caused (generator.ts); `--idle-as-is` measures with the machine's own.
 */
import { readFileSync, writeFileSync } from 'node:fs';

const DRIVER = '/sys/devices/system/cpu/cpuidle/current_driver';
const HALT_POLL_NS = '/sys/module/haltpoll/parameters/guest_halt_poll_ns';
/** The haltpoll governor's own default (Linux, drivers/cpuidle/governors/haltpoll.c): 200 µs. */
export const MODULE_DEFAULT_HALT_POLL_NS = 200_000;

export interface IdleState {
  /** The cpuidle driver, or null where there is none to read (not Linux, no cpuidle). */
  driver: string | null;
  /** guest_halt_poll_ns now, or null without the haltpoll module. */
  haltPollNs: number | null;
}

export interface IdleSetting extends IdleState {
  /** The machine's value before the bench changed it (equal to `haltPollNs` when it did not). */
  machineHaltPollNs: number | null;
  /** What the bench did, in a line for its header. */
  summary: string;
}

function readTrimmed(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

export function readIdle(): IdleState {
  const ns = readTrimmed(HALT_POLL_NS);
  return { driver: readTrimmed(DRIVER), haltPollNs: ns === null || !/^\d+$/.test(ns) ? null : Number(ns) };
}

function writeHaltPoll(ns: number): void {
  writeFileSync(HALT_POLL_NS, `${ns}\n`);
}

/**
 * Applies the bench's idle setting: with `asIs`, none; otherwise, where the haltpoll module polls
 * for less than its default, its default until this process exits (restored by an exit handler,
 * which SIGINT and SIGTERM reach too). Cannot write it (not root): says so, and measures as is.
 */
export function applyIdle(asIs: boolean): IdleSetting {
  const before = readIdle();
  const machine = before.haltPollNs;
  const describe = (s: IdleState) => `cpuidle driver ${s.driver ?? 'none'}${s.haltPollNs === null ? '' : `, halt polling ${s.haltPollNs} ns`}`;
  if (machine === null) return { ...before, machineHaltPollNs: null, summary: `idle: ${describe(before)} (no haltpoll module: nothing to set)` };
  if (asIs) return { ...before, machineHaltPollNs: machine, summary: `idle: ${describe(before)}, as the machine has it (--idle-as-is)` };
  if (machine >= MODULE_DEFAULT_HALT_POLL_NS) return { ...before, machineHaltPollNs: machine, summary: `idle: ${describe(before)} (the machine's own; at least the module's default)` };
  try {
    writeHaltPoll(MODULE_DEFAULT_HALT_POLL_NS);
  } catch (err) {
    const why = err instanceof Error && 'code' in err ? String((err as NodeJS.ErrnoException).code) : String(err);
    return { ...before, machineHaltPollNs: machine, summary: `idle: ${describe(before)}; could not set the module's default (${why}): measured as is, each wake-up of an idle CPU an interrupt` };
  }
  const restore = () => {
    try {
      writeHaltPoll(machine);
    } catch {
      // Nothing left to do at exit; the header said what was set.
    }
  };
  process.once('exit', restore);
  process.once('SIGINT', () => process.exit(130));
  process.once('SIGTERM', () => process.exit(143));
  return { ...readIdle(), machineHaltPollNs: machine, summary: `idle: ${describe(before)} → ${MODULE_DEFAULT_HALT_POLL_NS} ns for this run (the haltpoll module's default; the machine's value is restored at exit; --idle-as-is keeps it)` };
}

/**
 * Sets halt polling to `ns` for the length of `work` (figure 3's contrast: the same runs with the
 * machine's own setting), then back to what it was.
 */
export async function withHaltPoll<T>(ns: number, work: () => Promise<T>): Promise<T> {
  const was = readIdle().haltPollNs;
  if (was === null) throw new Error('no haltpoll module');
  writeHaltPoll(ns);
  try {
    return await work();
  } finally {
    writeHaltPoll(was);
  }
}

/**
 * Interrupts that woke or prodded a CPU so far (/proc/interrupts: rescheduling and function-call
 * interrupts, x86's names), by CPU; empty where there is no such file or no such lines.
 */
export function wakeInterrupts(): number[] {
  const text = readTrimmed('/proc/interrupts');
  return text === null ? [] : parseWakeInterrupts(text);
}

/** `wakeInterrupts` from the text of /proc/interrupts. */
export function parseWakeInterrupts(text: string): number[] {
  const perCpu: number[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*(RES|CAL):\s+(.*)$/.exec(line);
    if (!m) continue;
    const counts = m[2]!.trim().split(/\s+/);
    for (let cpu = 0; cpu < counts.length && /^\d+$/.test(counts[cpu]!); cpu++) perCpu[cpu] = (perCpu[cpu] ?? 0) + Number(counts[cpu]);
  }
  return perCpu;
}
