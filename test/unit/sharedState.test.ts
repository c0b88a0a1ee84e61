import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { Health } from '../../src/health.js';
import { reconnectDelay, redisTarget } from '../../src/state/redis.js';
import { CredentialCache } from '../../src/verify/cache.js';
import type { Identity } from '../../src/verify/types.js';
import { REQUIRED_ENV } from '../fixtures/configEnv.js';

const required = REQUIRED_ENV;
const SECRET = 'a'.repeat(64);
const OTHER_SECRET = 'b'.repeat(64);

test('redisUrl without cacheKeySecret stops start-up with an error naming both keys', () => {
  assert.throws(
    () => loadConfig({ env: { ...required, CREDGATE_REDIS_URL: 'redis://127.0.0.1:6379' } }),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.key === 'cacheKeySecret' &&
      /cacheKeySecret \(CREDGATE_CACHE_KEY_SECRET\): is required when redisUrl \(CREDGATE_REDIS_URL\) is set/.test(err.message),
  );
});

test('redisUrl with cacheKeySecret is accepted, with the documented defaults; without redisUrl nothing is required', () => {
  const config = loadConfig({ env: { ...required, CREDGATE_REDIS_URL: 'rediss://:pw@redis.internal:6380/2', CREDGATE_CACHE_KEY_SECRET: SECRET } });
  assert.equal(config.redisUrl, 'rediss://:pw@redis.internal:6380/2');
  assert.equal(config.redisKeyPrefix, 'credgate:');
  assert.equal(config.redisTimeoutMs, 100);
  assert.equal(loadConfig({ env: required }).redisUrl, undefined);
  assert.equal(loadConfig({ env: { ...required, CREDGATE_REDIS_KEY_PREFIX: 'git-prod:', CREDGATE_REDIS_TIMEOUT_MS: '250', CREDGATE_REDIS_URL: 'redis://r:6379', CREDGATE_CACHE_KEY_SECRET: SECRET } }).redisKeyPrefix, 'git-prod:');
});

test('a redisUrl that is not redis:// or rediss:// is refused without echoing it (it may hold a password)', () => {
  for (const url of ['http://user:hunter2@redis:6379', 'not a url', 'unix:/run/redis.sock']) {
    assert.throws(
      () => loadConfig({ env: { ...required, CREDGATE_REDIS_URL: url, CREDGATE_CACHE_KEY_SECRET: SECRET } }),
      (err: unknown) => err instanceof ConfigError && /redisUrl \(CREDGATE_REDIS_URL\): must be a redis:\/\/ or rediss:\/\/ URL/.test(err.message) && !err.message.includes('hunter2'),
      url,
    );
  }
  assert.throws(() => loadConfig({ env: { ...required, CREDGATE_REDIS_KEY_PREFIX: 'has space', CREDGATE_REDIS_URL: 'redis://r', CREDGATE_CACHE_KEY_SECRET: SECRET } }), /redisKeyPrefix/);
  assert.throws(() => loadConfig({ env: { ...required, CREDGATE_REDIS_TIMEOUT_MS: '0' } }), /redisTimeoutMs/);
});

test('logs name the Redis server without its user or password', () => {
  assert.equal(redisTarget('redis://default:s3cret@redis.internal:6380/2'), 'redis://redis.internal:6380/2');
  assert.equal(redisTarget('rediss://:s3cret@redis.internal'), 'rediss://redis.internal:6379');
  assert.equal(redisTarget('redis://127.0.0.1:6379'), 'redis://127.0.0.1:6379');
});

test('reconnect back-off grows from about 100 ms and is capped at 2 s (±20 % jitter)', () => {
  assert.equal(reconnectDelay(1, () => 0.5), 100);
  assert.equal(reconnectDelay(3, () => 0.5), 400);
  assert.equal(reconnectDelay(50, () => 0.5), 2000);
  assert.equal(reconnectDelay(50, () => 1), 2400);
  assert.equal(reconnectDelay(50, () => 0), 1600);
});

const identity = (username: string): Identity => ({ subject: `auth0|${username}`, username, scopes: ['read:repo'], credential: 'password', audience: 'https://git.example.com', expiresAt: undefined });
const cache = (keySecret?: string) => new CredentialCache({ ttlSeconds: 300, negativeTtlSeconds: 5, maxEntries: 100, appPasswordMemorySeconds: 3600, keySecret });

test('replicas sharing cacheKeySecret name a user alike (purge broadcasts carry only that HMAC); another key names it differently', () => {
  const one = cache(SECRET);
  const two = cache(SECRET);
  assert.equal(one.userKey('Alice'), two.userKey('alice'));
  assert.match(one.userKey('alice'), /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(one.userKey('alice'), cache(OTHER_SECRET).userKey('alice'));
  assert.notEqual(one.userKey('alice'), one.userKey('bob'));
  // Labels keep usernames, IP addresses and credentials apart.
  assert.notEqual(one.digest('user', 'alice'), one.digest('ip', 'alice'));
});

test("a purge broadcast (a name's userKey and the account's subjectKey) drops that account's positive and negative entries and nobody else's", () => {
  const local = cache(SECRET);
  const aliceKey = local.keyFor({ kind: 'basic', username: 'alice', password: 'pw' }, 'aud');
  const aliceWrong = local.keyFor({ kind: 'basic', username: 'alice', password: 'wrong' }, 'aud');
  const bobKey = local.keyFor({ kind: 'basic', username: 'bob', password: 'pw' }, 'aud');
  local.set(aliceKey, { kind: 'identity', identity: identity('alice') }, 'alice');
  local.set(aliceWrong, { kind: 'denied' }, 'alice');
  local.set(bobKey, { kind: 'identity', identity: identity('bob') }, 'bob');
  assert.equal(local.purgeUserKey(cache(SECRET).userKey('ALICE')), 1, 'the name: its negative entry');
  assert.equal(local.purgeUserKey(cache(SECRET).subjectKey(identity('alice').subject)), 1, 'the account: its identity');
  assert.equal(local.get(aliceKey), undefined);
  assert.equal(local.get(aliceWrong), undefined);
  const bob = local.get(bobKey);
  assert.ok(typeof bob === 'object' && bob.username === 'bob', 'bob keeps his entry');
  assert.equal(local.purgeUserKey(local.userKey('alice')), 0);
  assert.equal(local.purgeUserKey(local.subjectKey(identity('alice').subject)), 0);
});

test('clear() drops every decision but keeps remembered ASPs', () => {
  const local = cache(SECRET);
  const key = local.keyFor({ kind: 'basic', username: 'alice', password: 'pw' }, 'aud');
  local.set(key, { kind: 'identity', identity: identity('alice') }, 'alice');
  local.rememberAppPassword('asp-key');
  assert.equal(local.clear(), 1);
  assert.equal(local.size, 0);
  assert.equal(local.get(key), undefined);
  assert.equal(local.isKnownAppPassword('asp-key'), true);
  assert.equal(local.purgeUser('alice'), 0);
});

test('/readyz reports an unreachable shared state without making the replica unready; other checks still decide', () => {
  let shared = { ok: false, detail: 'redis unreachable: using local state' };
  let jwks = true;
  const health = new Health({ metadataLoaded: () => true, jwksLoaded: () => jwks, sharedState: () => shared });
  assert.deepEqual(health.status().checks.sharedState, { ok: false, detail: 'redis unreachable: using local state', required: false });
  assert.equal(health.status().ready, true);
  jwks = false;
  assert.equal(health.status().ready, false);
  jwks = true;
  shared = { ok: true, detail: 'redis redis://127.0.0.1:6379' };
  assert.equal(health.status().checks.sharedState?.ok, true);
  assert.equal(new Health({ metadataLoaded: () => true, jwksLoaded: () => true }).status().checks.sharedState, undefined);
});
