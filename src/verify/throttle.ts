import { LRUCache } from 'lru-cache';
import { normaliseUsername } from './strategy.js';

export interface ThrottleOptions {
  /** Failures per username within the window before throttling; 0 disables. */
  readonly usernameFailures: number;
  /** Failures per client IP within the window before throttling; 0 disables. */
  readonly ipFailures: number;
  readonly windowSeconds: number;
  /** First back-off once a limit is hit; doubles per further failure, capped at the window. */
  readonly baseDelaySeconds: number;
  /** Most usernames and IPs tracked at once (least recently failed go first). */
  readonly maxTracked?: number;
}

export type ThrottleVerdict = { readonly throttled: false } | { readonly throttled: true; readonly retryAfterSeconds: number };

/**
 * What the verifier asks of a throttle. The local `Throttle` answers at once; the shared one
 * (`src/state/sharedThrottle.ts`) asks Redis first, so its answers are promises.
 */
export interface FailureThrottle {
  check(username: string | undefined, ip: string | undefined): ThrottleVerdict | Promise<ThrottleVerdict>;
  recordFailure(username: string | undefined, ip: string | undefined): void | Promise<void>;
  recordSuccess(username: string | undefined): void | Promise<void>;
}

const OPEN: ThrottleVerdict = Object.freeze({ throttled: false });

/**
 * Failed-login throttling per username and per client IP: a sliding window of failure times, and
 * once a limit is reached a back-off that doubles with every further failure. While backing off,
 * credgate answers `throttled` without asking the AS, so an attacker's burst reaches the AS a
 * bounded number of times and the user's own AS lockout counter is spared. Not a lockout weapon:
 * the verifier serves known-good (cached) credentials and remembered ASPs before asking here.
 */
export class Throttle implements FailureThrottle {
  readonly #failures: LRUCache<string, number[]>;

  constructor(
    readonly options: ThrottleOptions,
    private readonly now: () => number = Date.now,
  ) {
    this.#failures = new LRUCache<string, number[]>({ max: options.maxTracked ?? 100_000, ttl: options.windowSeconds * 1000, updateAgeOnGet: false });
  }

  check(username: string | undefined, ip: string | undefined): ThrottleVerdict {
    const waits = [
      username !== undefined ? this.#wait(`u:${normaliseUsername(username)}`, this.options.usernameFailures) : 0,
      ip !== undefined ? this.#wait(`i:${ip}`, this.options.ipFailures) : 0,
    ];
    const wait = Math.max(...waits);
    return wait > 0 ? { throttled: true, retryAfterSeconds: wait } : OPEN;
  }

  recordFailure(username: string | undefined, ip: string | undefined): void {
    if (username !== undefined && this.options.usernameFailures > 0) this.#add(`u:${normaliseUsername(username)}`, this.options.usernameFailures);
    if (ip !== undefined && this.options.ipFailures > 0) this.#add(`i:${ip}`, this.options.ipFailures);
  }

  /** A successful login clears the username's failures (the IP's stay: one IP may try many users). */
  recordSuccess(username: string | undefined): void {
    if (username !== undefined) this.#failures.delete(`u:${normaliseUsername(username)}`);
  }

  /** Seconds still to wait for this key, 0 when a request may go through. */
  #wait(key: string, limit: number): number {
    if (limit <= 0) return 0;
    const times = this.#recent(key);
    if (times.length < limit) return 0;
    const beyond = times.length - limit;
    const delayMs = Math.min(this.options.windowSeconds, this.options.baseDelaySeconds * 2 ** Math.min(beyond, 20)) * 1000;
    const until = times[times.length - 1]! + delayMs;
    const left = until - this.now();
    return left > 0 ? Math.ceil(left / 1000) : 0;
  }

  #recent(key: string): number[] {
    const times = this.#failures.get(key);
    if (!times) return [];
    const since = this.now() - this.options.windowSeconds * 1000;
    while (times.length > 0 && times[0]! <= since) times.shift();
    return times;
  }

  #add(key: string, limit: number): void {
    const times = this.#recent(key);
    times.push(this.now());
    // Only the last `limit + 32` failures matter for the back-off; older ones are dropped early.
    if (times.length > limit + 32) times.splice(0, times.length - (limit + 32));
    this.#failures.set(key, times);
  }
}

