import { randomBytes } from 'node:crypto';
import type { CredentialCache } from '../verify/cache.js';
import type { FailureThrottle, Throttle, ThrottleVerdict } from '../verify/throttle.js';
import type { RedisClient, SharedRedis } from './redis.js';

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
 * Per-IP failed-login throttling shared by every replica: the same rule as the local `Throttle`,
 * counted in Redis per `ip:HMAC(address group)` (never the clear address), so an attacker who
 * spreads guesses over replicas meets one limit.
 *
 * The local Throttle keeps counting this replica's own failures all along. When Redis is reachable
 * its answer decides; when it is not, or does not answer within `redisTimeoutMs`, the local answer
 * does. (Per-account login protection is the ledger, which never relaxes without Redis.)
 */
export class SharedThrottle implements FailureThrottle {
  constructor(
    private readonly local: Throttle,
    private readonly redis: SharedRedis,
    /** Names addresses in Redis by HMAC. */
    private readonly names: Pick<CredentialCache, 'digest'>,
  ) {}

  /** Registers the scripts on the command connection (EVALSHA, re-sent after a Redis restart flushed them). */
  static define(connection: RedisClient): void {
    connection.defineCommand('credgateThrottleWait', { numberOfKeys: 1, lua: WAIT });
    connection.defineCommand('credgateThrottleRecord', { numberOfKeys: 1, lua: RECORD });
  }

  async check(ip: string | undefined): Promise<ThrottleVerdict> {
    const { windowSeconds, baseDelaySeconds, ipFailures } = this.local.options;
    if (ip === undefined || ipFailures <= 0) return this.local.check(ip);
    const key = this.#key(ip);
    const wait = await this.redis.run('throttle_check', (redis) => (redis as unknown as ThrottleCommands).credgateThrottleWait(key, ipFailures, windowSeconds * 1000, baseDelaySeconds * 1000));
    if (wait === undefined) return this.local.check(ip);
    const ms = Number(wait);
    return ms > 0 ? { throttled: true, retryAfterSeconds: Math.ceil(ms / 1000) } : { throttled: false };
  }

  async recordFailure(ip: string | undefined): Promise<void> {
    this.local.recordFailure(ip);
    const { ipFailures, windowSeconds } = this.local.options;
    if (ip === undefined || ipFailures <= 0) return;
    const member = `${Date.now()}.${randomBytes(6).toString('base64url')}`;
    const key = this.#key(ip);
    await this.redis.run('throttle_record', (redis) => (redis as unknown as ThrottleCommands).credgateThrottleRecord(key, windowSeconds * 1000, ipFailures + 32, member));
  }

  #key(ip: string): string {
    return this.redis.key('throttle', 'ip', this.names.digest('ip', this.local.group(ip)));
  }
}
