import { parseHostPort, type Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/registry.js';
import type { CredentialCache } from '../verify/cache.js';
import type { LedgerRule, LocalLoginLedger } from '../verify/loginLedger.js';
import type { Throttle } from '../verify/throttle.js';
import { SharedRedis, type RedisEndpoint } from './redis.js';
import { RedisLoginLedger } from './redisLedger.js';
import { RedisSharedMemory } from './sharedMemory.js';
import { SharedThrottle } from './sharedThrottle.js';

/** How long start-up waits for Redis before serving with local state (it keeps connecting in the background). */
const START_WAIT_MS = 2000;

/** State shared by the replicas of one deployment through Redis (`redisUrl`, `redisSentinels` or `redisClusterNodes`). */
export interface SharedState {
  readonly throttle: SharedThrottle;
  readonly memory: RedisSharedMemory;
  /** Login protection for every replica together; undefined when it is off. */
  readonly ledger: RedisLoginLedger | undefined;
  /** For `/readyz` (reported, never failing readiness). */
  status(): { ok: boolean; detail?: string };
  close(): Promise<void>;
}

/**
 * Connects to Redis and wires it to this replica's cache: purges from other replicas drop local
 * entries, and each time the purge subscription is (re)established every local decision is dropped,
 * because purges published while it was down were lost — a revoked ASP must not outlive a Redis
 * outage in some replica's memory. Waits up to 2 s for Redis, then serves with local state and keeps
 * reconnecting by itself.
 */
export async function startSharedState(config: Config, deps: { cache: CredentialCache; throttle: Throttle; ledger: { local: LocalLoginLedger; rule: LedgerRule } | undefined; log: Logger; metrics: Metrics }): Promise<SharedState> {
  const { cache, log } = deps;
  let subscriptions = 0;
  const redis = new SharedRedis({
    ...redisEndpoint(config),
    keyPrefix: config.redisKeyPrefix,
    timeoutMs: config.redisTimeoutMs,
    minReplicas: config.redisMinReplicas,
    log,
    metrics: deps.metrics.sharedState(),
    onPurge: (userKey) => {
      const purged = cache.purgeUserKey(userKey);
      if (purged > 0) log.info({ purged }, 'purge received from the shared state: dropped cached decisions');
    },
    onSubscribed: () => {
      const dropped = cache.clear();
      if (subscriptions++ > 0 || dropped > 0) log.info({ dropped }, 'purge subscription renewed: dropped every cached decision (purges sent meanwhile were missed)');
    },
  });
  SharedThrottle.define(redis.commandConnection);
  RedisLoginLedger.define(redis.commandConnection);
  const shared: SharedState = {
    throttle: new SharedThrottle(deps.throttle, redis, cache),
    ledger: deps.ledger === undefined ? undefined : new RedisLoginLedger(redis, deps.ledger.local, cache, deps.ledger.rule),
    memory: new RedisSharedMemory(redis, cache, { negativeTtlSeconds: config.negativeCacheTtlSeconds, appPasswordMemorySeconds: config.appPasswordMemorySeconds }),
    status: () => redis.status(),
    close: () => redis.close(),
  };
  await redis.start(START_WAIT_MS);
  return shared;
}

/** Where Redis is, from whichever of `redisUrl`, `redisSentinels`, `redisClusterNodes` is set (the schema allows one). */
export function redisEndpoint(config: Config): RedisEndpoint {
  const credentials = { username: config.redisUsername, password: config.redisPassword };
  if (config.redisSentinels !== undefined) {
    return {
      sentinel: {
        ...credentials,
        sentinels: config.redisSentinels.map(parseHostPort),
        name: config.redisSentinelName!,
        sentinelUsername: config.redisSentinelUsername,
        sentinelPassword: config.redisSentinelPassword,
      },
    };
  }
  if (config.redisClusterNodes !== undefined) return { cluster: { ...credentials, nodes: config.redisClusterNodes.map(parseHostPort) } };
  if (config.redisUrl !== undefined) return { url: config.redisUrl };
  throw new Error('no shared Redis is configured');
}
