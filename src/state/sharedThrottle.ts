import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { CredentialCache } from '../verify/cache.js';
import type { FailureThrottle, Throttle, ThrottleVerdict } from '../verify/throttle.js';
import type { SharedRedis } from './redis.js';

/**
 * Seconds to wait for one failure log (a sorted set: member = failure, score = time in ms), with the
 * local Throttle's rule: fewer than `limit` failures in the window → 0; else the last failure plus
 * `baseDelay · 2^(failures − limit)`, capped at the window. Time is Redis's own (TIME), so replicas
 * with drifting clocks still agree. Read-only. Returns milliseconds.
 */
const WAIT = `
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local limit, window, base = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local count = redis.call('ZCOUNT', KEYS[1], '(' .. (now - window), '+inf')
if count < limit then return 0 end
local last = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
local delay = math.min(window, base * 2 ^ math.min(count - limit, 20))
local left = last + delay - now
if left > 0 then return math.ceil(left) end
return 0`;

/** Adds one failure (unique member ARGV[3]) at Redis's time, drops those outside the window, keeps at most ARGV[2]. */
const RECORD = `
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window, keep = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(keep + 1))
redis.call('PEXPIRE', KEYS[1], window)
return 1`;

interface ThrottleCommands {
  credgateThrottleWait(key: string, limit: number, windowMs: number, baseDelayMs: number): Promise<number>;
  credgateThrottleRecord(key: string, windowMs: number, keep: number, member: string): Promise<number>;
}

/**
 * Failed-login throttling shared by every replica: the same rule as the local `Throttle`, counted in
 * Redis per `u:HMAC(username)` and `ip:HMAC(address)` (never the clear username or address), so an
 * attacker who spreads guesses over replicas meets one limit.
 *
 * The local Throttle keeps counting this replica's own failures all along. When Redis is reachable
 * its answer decides (it includes this replica's failures, and successes clear it everywhere); when
 * it is not, or does not answer within `redisTimeoutMs`, the local answer does — then each replica
 * allows up to the limit on its own, the documented trade-off of deciding without Redis.
 */
export class SharedThrottle implements FailureThrottle {
  constructor(
    private readonly local: Throttle,
    private readonly redis: SharedRedis,
    /** Names usernames and IPs in Redis by HMAC. */
    private readonly names: Pick<CredentialCache, 'userKey' | 'digest'>,
  ) {}

  /** Registers the scripts on the command connection (EVALSHA, re-sent after a Redis restart flushed them). */
  static define(connection: Redis): void {
    connection.defineCommand('credgateThrottleWait', { numberOfKeys: 1, lua: WAIT });
    connection.defineCommand('credgateThrottleRecord', { numberOfKeys: 1, lua: RECORD });
  }

  async check(username: string | undefined, ip: string | undefined): Promise<ThrottleVerdict> {
    const { windowSeconds, baseDelaySeconds } = this.local.options;
    const keys = this.#keys(username, ip);
    if (keys.length === 0) return this.local.check(username, ip);
    const waits = await this.redis.run('throttle_check', (redis) =>
      Promise.all(keys.map(([key, limit]) => (redis as unknown as ThrottleCommands).credgateThrottleWait(key, limit, windowSeconds * 1000, baseDelaySeconds * 1000))),
    );
    if (waits === undefined) return this.local.check(username, ip);
    const wait = Math.max(...waits.map(Number));
    return wait > 0 ? { throttled: true, retryAfterSeconds: Math.ceil(wait / 1000) } : { throttled: false };
  }

  async recordFailure(username: string | undefined, ip: string | undefined): Promise<void> {
    this.local.recordFailure(username, ip);
    const keys = this.#keys(username, ip);
    if (keys.length === 0) return;
    const member = `${Date.now()}.${randomBytes(6).toString('base64url')}`;
    await this.redis.run('throttle_record', (redis) =>
      Promise.all(keys.map(([key, limit]) => (redis as unknown as ThrottleCommands).credgateThrottleRecord(key, this.local.options.windowSeconds * 1000, limit + 32, member))),
    );
  }

  async recordSuccess(username: string | undefined): Promise<void> {
    this.local.recordSuccess(username);
    if (username === undefined || this.local.options.usernameFailures <= 0) return;
    await this.redis.run('throttle_record', (redis) => redis.del(this.#usernameKey(username)));
  }

  #usernameKey(username: string): string {
    return this.redis.key('throttle', 'u', this.names.userKey(username));
  }

  /** The Redis keys to consult and their limits (a limit of 0 is off, as locally). */
  #keys(username: string | undefined, ip: string | undefined): [string, number][] {
    const { usernameFailures, ipFailures } = this.local.options;
    const keys: [string, number][] = [];
    if (username !== undefined && usernameFailures > 0) keys.push([this.#usernameKey(username), usernameFailures]);
    if (ip !== undefined && ipFailures > 0) keys.push([this.redis.key('throttle', 'ip', this.names.digest('ip', ip)), ipFailures]);
    return keys;
  }
}
