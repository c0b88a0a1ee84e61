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
}

const storage = new AsyncLocalStorage<Deadline>();

export function deadlineIn(ms: number): Deadline {
  return { at: Date.now() + ms, signal: AbortSignal.timeout(Math.max(0, ms)) };
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
