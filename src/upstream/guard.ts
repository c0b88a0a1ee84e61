import {
  BrokenCircuitError,
  bulkhead,
  BulkheadRejectedError,
  circuitBreaker,
  CircuitState,
  ConsecutiveBreaker,
  ExponentialBackoff,
  handleWhen,
  IsolatedCircuitError,
  noop,
  retry,
  TaskCancelledError,
  type BulkheadPolicy,
  type CircuitBreakerPolicy,
  type IPolicy,
  type RetryPolicy,
} from 'cockatiel';
import { UpstreamError } from '../errors.js';
import { remainingMs, type Deadline } from './deadline.js';

/** Which authorization-server endpoint a call goes to; a fixed set, safe as a metric label. */
export type Endpoint = 'discovery' | 'token' | 'introspection' | 'jwks';
export const ENDPOINTS: readonly Endpoint[] = ['discovery', 'token', 'introspection', 'jwks'];

/**
 * When a failed call may be made again:
 * - `transient`: reads with no side effect at the AS (discovery, JWKS, introspection): after a
 *   network failure, a timeout or a 5xx. Each attempt is the whole operation, so an introspection
 *   retry signs a fresh client assertion (a new `jti`, RFC 7523 §3) rather than replaying one;
 * - `unsent`: the password grant, where every attempt that reaches the AS may count as a login
 *   (and a failed one towards its brute-force lockout): only when the request surely never left
 *   (connection refused, DNS failure, connect timeout), never once bytes may have been written.
 */
export type RetryMode = 'transient' | 'unsent';
const RETRY_MODE: Record<Endpoint, RetryMode> = { discovery: 'transient', jwks: 'transient', introspection: 'transient', token: 'unsent' };

/** `credgate_upstream_circuit_state`: 0 closed, 1 half-open (a probe is under way), 2 open. */
export type CircuitGauge = 0 | 1 | 2;

export interface GuardOptions {
  /** Further attempts after the first, where the retry mode allows one. */
  readonly retries: number;
  /** Consecutive failures that open an endpoint's circuit; 0: no breaker. */
  readonly breakerFailureThreshold: number;
  /** How long an open circuit refuses calls before it lets one probe through. */
  readonly breakerHalfOpenAfterMs: number;
  /** Calls to the AS under way at once. */
  readonly maxConcurrent: number;
  /** Calls that may wait for a free slot (each no longer than its decision's deadline); beyond that, refused at once. Default 0. */
  readonly maxQueued?: number;
  readonly onCircuitChange?: (endpoint: Endpoint, state: CircuitGauge, lastFailure: string | undefined) => void;
  readonly onRetry?: (endpoint: Endpoint, failure: string) => void;
  readonly onRejected?: (endpoint: Endpoint, cause: 'circuit_open' | 'concurrency_limit') => void;
}

/** Back-off between attempts: decorrelated jitter from 50 ms, never more than RETRY_MAX_DELAY_MS. */
const RETRY_INITIAL_DELAY_MS = 50;
export const RETRY_MAX_DELAY_MS = 400;
/** A retry is started only if this much time is left before the decision's deadline after the back-off. */
const MIN_ATTEMPT_MS = 100;

/** Failures that say the AS is unwell (and so count towards opening its circuit): no answer, a 5xx,
 * a 429, or an answer that is not what the protocol promises. A 4xx the AS chose to send (which a
 * client's input might provoke) and credgate's own misconfiguration do not count. */
export function countsAgainstCircuit(err: unknown): boolean {
  if (!(err instanceof UpstreamError)) return false;
  if (err.failure === 'unreachable' || err.failure === 'timeout') return true;
  if (err.failure !== 'bad_response') return false;
  return err.status === undefined || err.status >= 500 || err.status === 429 || err.status < 400;
}

/** Failures after which too little of the decision's time was left for another attempt. */
const lastAttempt = new WeakSet<object>();

function retryable(err: unknown, mode: RetryMode): boolean {
  if (!(err instanceof UpstreamError)) return false;
  if (lastAttempt.has(err)) return false;
  if (mode === 'unsent') return err.sent === false && err.failure !== 'circuit_open' && err.failure !== 'overloaded';
  if (err.failure === 'unreachable' || err.failure === 'timeout') return true;
  return err.failure === 'bad_response' && err.status !== undefined && err.status >= 500;
}

const GAUGE: Record<CircuitState, CircuitGauge> = {
  [CircuitState.Closed]: 0,
  [CircuitState.HalfOpen]: 1,
  [CircuitState.Open]: 2,
  [CircuitState.Isolated]: 2,
};

/**
 * Discipline around every call to the authorization server (cockatiel policies):
 * retry (per endpoint, by RetryMode) → concurrency limit with a short queue (one for the whole
 * process) → circuit breaker (one per endpoint) → the call. An open circuit or a full limit and
 * queue answer at once with an UpstreamError, which the verifier turns into 503
 * `upstream_unavailable`, never an allow.
 */
export class UpstreamGuard {
  readonly #breakers = new Map<Endpoint, CircuitBreakerPolicy>();
  readonly #retries = new Map<Endpoint, RetryPolicy>();
  readonly #bulkhead: BulkheadPolicy;
  readonly #options: GuardOptions;

  constructor(options: GuardOptions) {
    this.#options = options;
    this.#bulkhead = bulkhead(options.maxConcurrent, options.maxQueued ?? 0);
    if (options.breakerFailureThreshold > 0) {
      for (const endpoint of ENDPOINTS) {
        const breaker = circuitBreaker(handleWhen(countsAgainstCircuit), {
          halfOpenAfter: options.breakerHalfOpenAfterMs,
          breaker: new ConsecutiveBreaker(options.breakerFailureThreshold),
        });
        breaker.onStateChange((state) => {
          const last = breaker.lastFailure;
          const reason = last && 'error' in last ? last.error.message : undefined;
          options.onCircuitChange?.(endpoint, GAUGE[state], reason);
        });
        this.#breakers.set(endpoint, breaker);
      }
    }
    if (options.retries > 0) {
      for (const endpoint of ENDPOINTS) {
        const policy = retry(handleWhen((err) => retryable(err, RETRY_MODE[endpoint])), {
          maxAttempts: options.retries,
          backoff: new ExponentialBackoff({ initialDelay: RETRY_INITIAL_DELAY_MS, maxDelay: RETRY_MAX_DELAY_MS }),
        });
        policy.onRetry((event) => options.onRetry?.(endpoint, 'error' in event && event.error instanceof UpstreamError ? event.error.failure : 'error'));
        this.#retries.set(endpoint, policy);
      }
    }
  }

  /** Runs one operation against `endpoint` (request and parsing together: a retry repeats both)
   * for the decision whose deadline is `deadline`, if any. */
  run<T>(endpoint: Endpoint, operation: () => Promise<T>, deadline?: Deadline): Promise<T> {
    const breaker: IPolicy = this.#breakers.get(endpoint) ?? noop;
    // A call queued for a slot is dropped when its decision's deadline passes (TaskCancelledError).
    const guarded = () =>
      this.#bulkhead.execute(() => breaker.execute(operation), deadline?.signal).catch((err: unknown) => {
        const failure = this.#translate(endpoint, err);
        if (typeof failure === 'object' && failure !== null && remainingMs(deadline) < RETRY_MAX_DELAY_MS + MIN_ATTEMPT_MS) lastAttempt.add(failure);
        throw failure;
      });
    return this.#retries.get(endpoint)?.execute(guarded) ?? guarded();
  }

  /** The circuit of each endpoint, for `/readyz`. */
  circuits(): Record<Endpoint, { state: 'closed' | 'half_open' | 'open'; lastFailure?: string }> {
    const out = {} as Record<Endpoint, { state: 'closed' | 'half_open' | 'open'; lastFailure?: string }>;
    for (const endpoint of ENDPOINTS) {
      const breaker = this.#breakers.get(endpoint);
      const gauge = breaker ? GAUGE[breaker.state] : 0;
      const last = breaker?.lastFailure;
      out[endpoint] = gauge === 0 ? { state: 'closed' } : { state: gauge === 1 ? 'half_open' : 'open', lastFailure: last && 'error' in last ? last.error.message : undefined };
    }
    return out;
  }

  /** Calls to the AS under way now. */
  get inFlight(): number {
    return this.#options.maxConcurrent - this.#bulkhead.executionSlots;
  }

  #translate(endpoint: Endpoint, err: unknown): unknown {
    if (err instanceof BrokenCircuitError || err instanceof IsolatedCircuitError) {
      this.#options.onRejected?.(endpoint, 'circuit_open');
      return new UpstreamError(`${endpoint}: circuit open after repeated failures; not asking the authorization server until a probe succeeds`, endpoint, 'circuit_open', { sent: false });
    }
    if (err instanceof BulkheadRejectedError) {
      this.#options.onRejected?.(endpoint, 'concurrency_limit');
      return new UpstreamError(`${endpoint}: ${this.#options.maxConcurrent} calls to the authorization server already under way and ${this.#options.maxQueued ?? 0} waiting`, endpoint, 'overloaded', { sent: false });
    }
    if (err instanceof TaskCancelledError) return new UpstreamError(`${endpoint}: still waiting for a free slot at the decision's deadline`, endpoint, 'timeout', { cause: err, sent: false });
    return err;
  }
}
