/**
 * CPU pinning for `npm run bench`, and the one way it starts child processes. With `taskset` and at
 * least two usable CPUs, every thread of the bench process (credgate, the bare apps, V8's helper
 * threads and the libuv thread pool that WebCrypto signature checks run on) is pinned to the first
 * CPU, and the load generators, their clients and the dev AS's process to the second, so "on one
 * core" is true and the two do not take turns on the same core. Otherwise nothing is pinned, the
 * header says so, and the run is not valid (validity.ts).
 */
import { execFile, execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

export interface Pinning {
  readonly pinned: boolean;
  /** CPU of the bench process (credgate, bare apps); undefined when not pinned. */
  readonly serverCpu?: number;
  /** CPU of the load generators. */
  readonly loadCpu?: number;
  /** Every CPU the bench was allowed at start, as taskset takes it (for children that may use all). */
  readonly allCpus: string;
  /** One line for the header. */
  readonly summary: string;
}

/** `0-2,5` → [0, 1, 2, 5]. */
function cpuList(text: string): number[] {
  return text.split(',').flatMap((part) => {
    const [from, to] = part.split('-').map(Number);
    if (from === undefined || !Number.isInteger(from)) return [];
    return to === undefined ? [from] : Array.from({ length: to - from + 1 }, (_, i) => from + i);
  });
}

function threadCpus(): string[] {
  return readdirSync('/proc/self/task').map((tid) => /^Cpus_allowed_list:\s*(\S+)$/m.exec(readFileSync(`/proc/self/task/${tid}/status`, 'utf8'))?.[1] ?? '?');
}

let current: Pinning = { pinned: false, allCpus: '', summary: 'not pinned' };

/** Pins this process (all its threads) to its first allowed CPU; call once, before starting anything. */
export function pinBenchProcess(): Pinning {
  let allowed: number[];
  try {
    // "pid 123's current affinity list: 0,1"
    const out = execFileSync('taskset', ['-pc', String(process.pid)], { encoding: 'utf8', timeout: 5000 });
    allowed = cpuList(out.slice(out.lastIndexOf(':') + 1).trim());
  } catch {
    current = { pinned: false, allCpus: '', summary: 'NOT PINNED (no taskset): server and load generators share all CPUs' };
    return current;
  }
  const allCpus = allowed.join(',');
  if (allowed.length < 2) {
    current = { pinned: false, allCpus, summary: `NOT PINNED (only CPU ${allCpus} available): server and load generators share it` };
    return current;
  }
  const [serverCpu, loadCpu] = allowed as [number, number];
  try {
    // -a: every thread, including those V8 started before this line; threads started later inherit it.
    execFileSync('taskset', ['-a', '-pc', String(serverCpu), String(process.pid)], { stdio: 'ignore', timeout: 5000 });
  } catch (err) {
    current = { pinned: false, allCpus, summary: `NOT PINNED (taskset failed: ${err instanceof Error ? err.message.split('\n')[0] : String(err)})` };
    return current;
  }
  const threads = threadCpus();
  const stray = threads.filter((c) => c !== String(serverCpu)).length;
  current = {
    pinned: stray === 0,
    serverCpu,
    loadCpu,
    allCpus,
    summary:
      stray === 0
        ? `pinned: bench process (credgate, bare apps; all ${threads.length} threads) on CPU ${serverCpu}; load generators, clients and the dev AS on CPU ${loadCpu}`
        : `NOT PINNED: ${stray} of ${threads.length} threads kept other CPUs after taskset`,
  };
  return current;
}

export type ChildResult<T> = { ok: true; value: T } | { ok: false; why: string };

/** Where a child runs: `load` the generators' CPU, `server` the bench's own, `all` every CPU the bench started with. */
export type Placement = 'load' | 'all' | 'server';

export function currentPinning(): Pinning {
  return current;
}

/** `[command, ...args]`, prefixed with `taskset -c <cpu>` when pinned. */
export function pinnedCommand(command: string, args: string[], cpu: Placement): [string, ...string[]] {
  const cpus = cpu === 'load' ? current.loadCpu : cpu === 'server' ? current.serverCpu : current.allCpus;
  return current.pinned && cpus !== undefined ? ['taskset', '-c', String(cpus), command, ...args] : [command, ...args];
}

/** Moves a running process (every thread; threads it starts later inherit it) to `cpu`. */
export function pinProcess(pid: number, cpu: Placement): void {
  const cpus = cpu === 'load' ? current.loadCpu : cpu === 'server' ? current.serverCpu : current.allCpus;
  if (!current.pinned || cpus === undefined) return;
  execFileSync('taskset', ['-a', '-pc', String(cpus), String(pid)], { stdio: 'ignore', timeout: 5000 });
}

/**
 * Runs `node <args>` and parses the last line of its stdout as JSON. `cpu`: `load` runs it on the
 * load generators' CPU, `all` on every CPU the bench started with (minting, memory), `server` on
 * the bench's own. SIGKILL after `timeoutMs`; a failure is returned, never thrown.
 */
export function runChild<T>(args: string[], timeoutMs: number, cpu: Placement): Promise<ChildResult<T>> {
  const [command, ...rest] = pinnedCommand(process.execPath, args, cpu);
  return new Promise((resolve) => {
    // taskset execs node in its own place, so the timeout's SIGKILL reaches node itself.
    execFile(command!, rest, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
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
