import { isIPv6 } from 'node:net';
import { LRUCache } from 'lru-cache';

export interface ThrottleOptions {
  /** Failures per end-user IP (or IPv6 prefix) within the window before throttling; 0 disables. */
  readonly ipFailures: number;
  readonly windowSeconds: number;
  /** First back-off once the limit is hit; doubles per further failure, capped at the window. */
  readonly baseDelaySeconds: number;
  /** IPv6 addresses are counted by this prefix (one subscriber gets a /64 or more). */
  readonly ipv6PrefixBits: number;
  /** Most addresses tracked at once (least recently failed go first). */
  readonly maxTracked?: number;
}

export type ThrottleVerdict = { readonly throttled: false } | { readonly throttled: true; readonly retryAfterSeconds: number };

/**
 * What the verifier asks of the per-IP throttle. The local `Throttle` answers at once; the shared
 * one (`src/state/sharedThrottle.ts`) asks Redis first, so its answers are promises.
 */
export interface FailureThrottle {
  check(ip: string | undefined): ThrottleVerdict | Promise<ThrottleVerdict>;
  recordFailure(ip: string | undefined): void | Promise<void>;
}

const OPEN: ThrottleVerdict = Object.freeze({ throttled: false });

/**
 * The group an address is counted in: an IPv4 address itself; an IPv6 address by its first
 * `prefixBits` bits (written as the expanded prefix, `2001:db8:0:1::/64`), since one subscriber
 * holds a whole /64 and rotating inside it must not reset the count. IPv4-mapped IPv6 is IPv4.
 */
export function ipGroup(ip: string, prefixBits: number): string {
  if (ip.toLowerCase().startsWith('::ffff:') && !isIPv6(ip.slice(7))) return ip.slice(7);
  if (!isIPv6(ip)) return ip;
  const [head = '', tail = ''] = ip.toLowerCase().split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === '' ? [] : tail.split(':');
  // An embedded IPv4 tail (`::1.2.3.4`) is two groups.
  const expand = (groups: string[]) => groups.flatMap((g) => (g.includes('.') ? ipv4Groups(g) : [g]));
  const l = expand(left);
  const r = ip.includes('::') ? expand(right) : [];
  const groups = ip.includes('::') ? [...l, ...Array<string>(8 - l.length - r.length).fill('0'), ...r] : l;
  const bits = groups.map((g) => parseInt(g || '0', 16).toString(2).padStart(16, '0')).join('').slice(0, prefixBits).padEnd(128, '0');
  const out: string[] = [];
  for (let i = 0; i < 128; i += 16) out.push(parseInt(bits.slice(i, i + 16), 2).toString(16));
  return `${out.join(':')}/${prefixBits}`;
}

function ipv4Groups(v4: string): string[] {
  const [a = 0, b = 0, c = 0, d = 0] = v4.split('.').map(Number);
  return [((a << 8) | b).toString(16), ((c << 8) | d).toString(16)];
}

/**
 * Failed-login throttling per end-user IP (Auth0's suspicious-IP throttling counts the same): a
 * sliding window of failure times, and once the limit is reached a back-off that doubles with every
 * further failure. Spraying one password over many usernames from one address is refused without
 * asking the AS. Per-account protection is the login ledger (loginLedger.ts), not this.
 */
export class Throttle implements FailureThrottle {
  readonly #failures: LRUCache<string, number[]>;

  constructor(
    readonly options: ThrottleOptions,
    private readonly now: () => number = Date.now,
  ) {
    this.#failures = new LRUCache<string, number[]>({ max: options.maxTracked ?? 100_000, ttl: options.windowSeconds * 1000, updateAgeOnGet: false });
  }

  group(ip: string): string {
    return ipGroup(ip, this.options.ipv6PrefixBits);
  }

  check(ip: string | undefined): ThrottleVerdict {
    if (ip === undefined || this.options.ipFailures <= 0) return OPEN;
    const wait = this.#wait(this.group(ip), this.options.ipFailures);
    return wait > 0 ? { throttled: true, retryAfterSeconds: wait } : OPEN;
  }

  recordFailure(ip: string | undefined): void {
    if (ip !== undefined && this.options.ipFailures > 0) this.#add(this.group(ip), this.options.ipFailures);
  }

  /** Seconds still to wait for this key, 0 when a request may go through. */
  #wait(key: string, limit: number): number {
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
