import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics/registry.js';
import { endpointTarget, SharedRedis } from '../../src/state/redis.js';
import { redisEndpoint } from '../../src/state/sharedState.js';
import { REQUIRED_ENV } from '../fixtures/configEnv.js';

/** The CRC16 slot function ioredis's Cluster routes by (the package ships no types). */
const calculateSlot = createRequire(import.meta.url)('cluster-key-slot') as (key: string) => number;
const required = REQUIRED_ENV;
const SECRET = 'a'.repeat(64);
const withSecret = { ...required, CREDGATE_CACHE_KEY_SECRET: SECRET };

/** Asserts that loading `env` fails with a ConfigError whose message matches `message` and holds none of `secrets`. */
function refused(env: Record<string, string>, message: RegExp, secrets: string[] = []): void {
  assert.throws(
    () => loadConfig({ env }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.match(err.message, message);
      for (const secret of secrets) assert.ok(!err.message.includes(secret), `${err.message} holds a secret`);
      return true;
    },
  );
}

test('Sentinel settings come from the environment: sentinels as a comma-separated host:port list, the primary by name', () => {
  const config = loadConfig({
    env: {
      ...withSecret,
      CREDGATE_REDIS_SENTINELS: 'sentinel-a.internal:26379, 10.0.0.7:26380,[fd00::7]:26381',
      CREDGATE_REDIS_SENTINEL_NAME: 'credgate',
      CREDGATE_REDIS_SENTINEL_PASSWORD: 'sentinel-pw',
      CREDGATE_REDIS_PASSWORD: 'data-pw',
      CREDGATE_REDIS_MIN_REPLICAS: '1',
    },
  });
  assert.deepEqual(config.redisSentinels, ['sentinel-a.internal:26379', '10.0.0.7:26380', '[fd00::7]:26381']);
  assert.equal(config.redisMinReplicas, 1);
  const endpoint = redisEndpoint(config);
  assert.ok('sentinel' in endpoint);
  assert.deepEqual(endpoint.sentinel.sentinels, [{ host: 'sentinel-a.internal', port: 26379 }, { host: '10.0.0.7', port: 26380 }, { host: 'fd00::7', port: 26381 }]);
  assert.equal(endpoint.sentinel.name, 'credgate');
  assert.equal(endpoint.sentinel.sentinelPassword, 'sentinel-pw');
  assert.equal(endpoint.sentinel.password, 'data-pw');
  // What the logs say names the sentinels and the primary, never a password.
  assert.equal(endpointTarget(endpoint), 'sentinel credgate via sentinel-a.internal:26379,10.0.0.7:26380,[fd00::7]:26381');
});

test('Cluster settings: seed nodes as host:port; without redisMinReplicas nothing is waited for', () => {
  const config = loadConfig({ env: { ...withSecret, CREDGATE_REDIS_CLUSTER_NODES: 'redis-0:6379,redis-1:6379', CREDGATE_REDIS_PASSWORD: 'data-pw' } });
  assert.equal(config.redisMinReplicas, 0);
  const endpoint = redisEndpoint(config);
  assert.ok('cluster' in endpoint);
  assert.deepEqual(endpoint.cluster.nodes, [{ host: 'redis-0', port: 6379 }, { host: 'redis-1', port: 6379 }]);
  assert.equal(endpointTarget(endpoint), 'cluster redis-0:6379,redis-1:6379');
});

test('two ways to reach Redis at once are refused, naming both keys', () => {
  refused({ ...withSecret, CREDGATE_REDIS_URL: 'redis://:hunter2@r:6379', CREDGATE_REDIS_SENTINELS: 's:26379', CREDGATE_REDIS_SENTINEL_NAME: 'm' }, /redisSentinels \(CREDGATE_REDIS_SENTINELS\): set only one of redisUrl, redisSentinels, redisClusterNodes \(here: redisUrl and redisSentinels\)/, ['hunter2']);
  refused({ ...withSecret, CREDGATE_REDIS_SENTINELS: 's:26379', CREDGATE_REDIS_SENTINEL_NAME: 'm', CREDGATE_REDIS_CLUSTER_NODES: 'c:6379' }, /redisClusterNodes .*here: redisSentinels and redisClusterNodes/);
  refused({ ...withSecret, CREDGATE_REDIS_URL: 'redis://r:6379', CREDGATE_REDIS_CLUSTER_NODES: 'c:6379' }, /here: redisUrl and redisClusterNodes/);
});

test('Sentinel settings that do not fit together are refused, naming the key', () => {
  refused({ ...withSecret, CREDGATE_REDIS_SENTINELS: 's:26379' }, /redisSentinelName \(CREDGATE_REDIS_SENTINEL_NAME\): is required when redisSentinels is set/);
  refused({ ...withSecret, CREDGATE_REDIS_URL: 'redis://r:6379', CREDGATE_REDIS_SENTINEL_NAME: 'm' }, /redisSentinelName \(CREDGATE_REDIS_SENTINEL_NAME\): is only used with redisSentinels/);
  refused({ ...withSecret, CREDGATE_REDIS_CLUSTER_NODES: 'c:6379', CREDGATE_REDIS_SENTINEL_PASSWORD: 'sentinel-secret' }, /redisSentinelPassword \(CREDGATE_REDIS_SENTINEL_PASSWORD\): is only used with redisSentinels/, ['sentinel-secret']);
  // Sentinels without cacheKeySecret: as for redisUrl, the replicas would not name anything alike.
  refused({ ...required, CREDGATE_REDIS_SENTINELS: 's:26379', CREDGATE_REDIS_SENTINEL_NAME: 'm' }, /cacheKeySecret \(CREDGATE_CACHE_KEY_SECRET\): is required when redisSentinels \(CREDGATE_REDIS_SENTINELS\) is set/);
  refused({ ...required, CREDGATE_REDIS_CLUSTER_NODES: 'c:6379' }, /cacheKeySecret .*is required when redisClusterNodes \(CREDGATE_REDIS_CLUSTER_NODES\) is set/);
});

test('malformed sentinel or cluster addresses are refused', () => {
  for (const value of ['sentinel-a', 'sentinel-a:0', 'sentinel-a:70000', 'fd00::7:26379', 'http://s:26379', 's:26379/0', ' :26379']) {
    refused({ ...withSecret, CREDGATE_REDIS_SENTINELS: value, CREDGATE_REDIS_SENTINEL_NAME: 'm' }, /redisSentinels\.0 \(CREDGATE_REDIS_SENTINELS\): must (be host:port|have a port)/);
  }
  refused({ ...withSecret, CREDGATE_REDIS_CLUSTER_NODES: 'c:6379,nope' }, /redisClusterNodes\.1 \(CREDGATE_REDIS_CLUSTER_NODES\): must be host:port/);
});

test('data-node credentials go in redisUrl with a URL, and are refused without any Redis; their value is never echoed', () => {
  refused({ ...withSecret, CREDGATE_REDIS_URL: 'redis://r:6379', CREDGATE_REDIS_PASSWORD: 'pw-in-the-wrong-place' }, /redisPassword \(CREDGATE_REDIS_PASSWORD\): is not used with redisUrl: put the credentials in the URL/, ['pw-in-the-wrong-place']);
  refused({ ...withSecret, CREDGATE_REDIS_USERNAME: 'credgate' }, /redisUsername \(CREDGATE_REDIS_USERNAME\): is only used with redisSentinels or redisClusterNodes/);
});

test('redisMinReplicas needs a shared Redis and stays within 0 to 16', () => {
  refused({ ...withSecret, CREDGATE_REDIS_MIN_REPLICAS: '1' }, /redisMinReplicas \(CREDGATE_REDIS_MIN_REPLICAS\): needs a shared Redis/);
  refused({ ...withSecret, CREDGATE_REDIS_URL: 'redis://r:6379', CREDGATE_REDIS_MIN_REPLICAS: '-1' }, /redisMinReplicas/);
  refused({ ...withSecret, CREDGATE_REDIS_URL: 'redis://r:6379', CREDGATE_REDIS_MIN_REPLICAS: '17' }, /redisMinReplicas/);
  assert.equal(loadConfig({ env: { ...withSecret, CREDGATE_REDIS_URL: 'redis://r:6379', CREDGATE_REDIS_MIN_REPLICAS: '2' } }).redisMinReplicas, 2);
});

test('with a Cluster, a key prefix holding a brace is refused: credgate makes the hash tags', () => {
  refused({ ...withSecret, CREDGATE_REDIS_CLUSTER_NODES: 'c:6379', CREDGATE_REDIS_KEY_PREFIX: 'app{1}:' }, /redisKeyPrefix \(CREDGATE_REDIS_KEY_PREFIX\): must not contain \{ or \} with redisClusterNodes/);
  assert.equal(loadConfig({ env: { ...withSecret, CREDGATE_REDIS_URL: 'redis://r:6379', CREDGATE_REDIS_KEY_PREFIX: 'app{1}:' } }).redisKeyPrefix, 'app{1}:');
});

/** Every key name the ledger scripts build from ARGV[1] (the prefix) and data (names, subjects), as the Lua does. */
function ledgerKeys(prefix: string, name: string, subject: string): string[] {
  return [`${prefix}ledger:${name}`, `${prefix}ledger:${name}:r`, `${prefix}alias:${name}`, `${prefix}account:${subject}`, `${prefix}ledger:seq`];
}

test('in a Cluster every key the ledger scripts touch, for any name and prefix, hashes to the slot of the key the script is routed by', () => {
  const shared = (keyPrefix: string, cluster: boolean) =>
    new SharedRedis({
      ...(cluster ? { cluster: { nodes: [{ host: '127.0.0.1', port: 1 }] } } : { url: 'redis://127.0.0.1:1' }),
      keyPrefix,
      timeoutMs: 100,
      log: createLogger({ level: 'silent' }),
      metrics: new Metrics('t').sharedState(),
      onPurge: () => undefined,
      onSubscribed: () => undefined,
    });
  for (const keyPrefix of ['credgate:', 'git-prod:', 'a', 'x:y:z:']) {
    const redis = shared(keyPrefix, true);
    const prefix = redis.slotPrefix('ledger');
    assert.ok(prefix.startsWith(keyPrefix), 'still under redisKeyPrefix (ACL key patterns keep working)');
    const slot = calculateSlot(`${prefix}ledger:any`);
    const names = ['AAAA', 'zzzz', 'x'.repeat(43), 'a{b}c', '}{', '{', 'Q8h-_3', ''];
    for (const name of names) for (const key of ledgerKeys(prefix, name, names[(name.length + 3) % names.length]!)) assert.equal(calculateSlot(key), slot, key);
    // Two deployments (prefixes) sharing a cluster do not share a slot by construction.
    assert.notEqual(prefix, shared('other:', true).slotPrefix('ledger'));
  }
  // Without the tag the same keys would spread over slots (what Cluster refuses in one script).
  const plain = shared('credgate:', false).slotPrefix('ledger');
  assert.equal(plain, 'credgate:', 'outside a Cluster the key names are unchanged (an upgrade keeps its ledger)');
  assert.ok(new Set(['AAAA', 'zzzz', 'x', 'Q8h'].map((n) => calculateSlot(`${plain}ledger:${n}`))).size > 1);
});
