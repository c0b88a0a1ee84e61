/**
 * The time by which the decision now being made must be answered (`decisionTimeoutMs`). It is
 * handed down explicitly (strategy context → upstream call → guard and fetch), so that every call
 * to the AS gets min(`upstreamTimeoutMs`, time left) and no retry starts that could not finish in
 * time. (It once travelled in an AsyncLocalStorage; on Node 20 that turns on promise hooks for the
 * whole process, a cost every request paid, cached ones included.)
 */
export interface Deadline {
  /** Epoch milliseconds. */
  readonly at: number;
  /** Aborts at `at`. */
  readonly signal: AbortSignal;
  /** Stops the timer once the decision is made (it would keep a short-lived process, the CLI, alive). */
  dispose(): void;
}

/** A deadline `ms` from now. Its timer keeps the process alive (unlike AbortSignal.timeout's), so
 * that a decision waiting on nothing else still gets its answer; `dispose` it when done. */
export function deadlineIn(ms: number): Deadline {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new DOMException('decision deadline reached', 'TimeoutError')), Math.max(0, ms));
  return { at: Date.now() + ms, signal: controller.signal, dispose: () => clearTimeout(timer) };
}

/** Milliseconds left before `deadline`; Infinity without one (start-up warm-up, JWKS refreshes). */
export function remainingMs(deadline: Deadline | undefined): number {
  return deadline === undefined ? Infinity : deadline.at - Date.now();
}

/** `work`, or a rejection once `deadline` passes first (the work itself goes on, bounded by its own timeouts). */
export function within<T>(deadline: Deadline, work: Promise<T>): Promise<T> {
  if (deadline.signal.aborted) return Promise.reject(deadline.signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const expire = () => reject(deadline.signal.reason as Error);
    deadline.signal.addEventListener('abort', expire, { once: true });
    work.then(resolve, reject).finally(() => deadline.signal.removeEventListener('abort', expire));
  });
}
