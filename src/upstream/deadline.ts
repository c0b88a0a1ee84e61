import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * The time by which the decision now being made must be answered (`decisionTimeoutMs`). It travels
 * with the asynchronous context rather than through every signature, so that calls made deep inside
 * oauth4webapi and jose (which know nothing of it) are still cut short: each call to the AS gets
 * min(`upstreamTimeoutMs`, time left), and no retry starts that could not finish in time.
 */
export interface Deadline {
  /** Epoch milliseconds. */
  readonly at: number;
  /** Aborts at `at`. */
  readonly signal: AbortSignal;
  /** Stops the timer once the decision is made (it would keep a short-lived process, the CLI, alive). */
  dispose(): void;
}

const storage = new AsyncLocalStorage<Deadline>();

/** A deadline `ms` from now. Its timer keeps the process alive (unlike AbortSignal.timeout's), so
 * that a decision waiting on nothing else still gets its answer; `dispose` it when done. */
export function deadlineIn(ms: number): Deadline {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new DOMException('decision deadline reached', 'TimeoutError')), Math.max(0, ms));
  return { at: Date.now() + ms, signal: controller.signal, dispose: () => clearTimeout(timer) };
}

/** Runs `fn` with `deadline` as the current decision deadline. */
export function withDeadline<T>(deadline: Deadline, fn: () => Promise<T>): Promise<T> {
  return storage.run(deadline, fn);
}

/** The deadline of the decision being made, if any (start-up warm-up and readiness have none). */
export function currentDeadline(): Deadline | undefined {
  return storage.getStore();
}

/** Milliseconds left before the current deadline; Infinity outside a decision. */
export function remainingMs(): number {
  const deadline = storage.getStore();
  return deadline === undefined ? Infinity : deadline.at - Date.now();
}
