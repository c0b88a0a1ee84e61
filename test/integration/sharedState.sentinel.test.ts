import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { waitFor } from '../fixtures/processes.js';
import { redisSentinelAvailable, startSentinelGroup, type SentinelGroup } from '../fixtures/redisSentinel.js';
import { scrapedMetric as metric } from '../fixtures/metrics.js';

const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-sentinel', clientSecret: 'sentinel-client-secret-value' };
const CACHE_KEY_SECRET = 'c2VudGluZWwtY2FjaGUta2V5LXNlY3JldC1mb3ItcmVwbGljYXMtMDEyMzQ1Njc=';
const ADMIN_TOKEN = 'admin-token-for-sentinel-0123456789abcdef';
const REDIS_PASSWORD = 'redis-data-password-never-logged-0815';
const SENTINEL_PASSWORD = 'sentinel-password-never-logged-4242';
/** passwordFailureBudget 5: a password not known to be good is sent while fewer than 3 failures stand. */
const LIMIT = 3;
const alice = defaultDevUsers().find((u) => u.username === 'alice')!;

const sharedUp = (server: TestCredgate) => metric(server, 'credgate_shared_state_up');
const unacknowledged = (server: TestCredgate) => metric(server, 'credgate_shared_state_errors_total', 'operation="ledger",reason="unacknowledged"');

/**
 * Two credgate replicas reach Redis only through three real redis-sentinel processes (a primary, one
 * replica), with `redisMinReplicas: 1`. The primary is killed mid-run: what the issue asks is that
 * no ledger entry a grant was sent on is lost, that nothing unknown is sent while there is no
 * primary (or no replica to acknowledge), and that both replicas follow the failover by themselves,
 * purge subscription included. Counted at the dev AS.
 */
describe('shared state through Redis Sentinel: a failover loses no acknowledged login-ledger entry', { skip: !redisSentinelAvailable() && 'redis-sentinel is not installed (test/setup.sh installs it)', timeout: 60_000 }, () => {
  let group: SentinelGroup;
  let dev: DevAuthorizationServer;
  let a: TestCredgate;
  let b: TestCredgate;
  let carolGrants = 0;

  /** carol's wrong passwords that reached the AS so far. */
  const grantsSince = (before: number) => dev.stats().tokenRequests - before;

  /** The failures the ledger holds for carol on the Redis node at `port` (0 if her entry is missing). */
  async function ledgerFailures(port: number): Promise<number[]> {
    const node = group.node(port);
    try {
      await node.connect();
      const keys = (await node.keys('credgate:ledger:*')).filter((k) => /^credgate:ledger:[A-Za-z0-9_-]{43}$/.test(k));
      // (`fl`: the failures, one "seq:class:reservation" item each, separated by spaces.)
      return Promise.all(keys.map(async (k) => ((await node.hget(k, 'fl')) ?? '').split(' ').filter(Boolean).length));
    } finally {
      node.disconnect();
    }
  }

  before(async () => {
    group = await startSentinelGroup({ password: REDIS_PASSWORD, sentinelPassword: SENTINEL_PASSWORD });
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT], lockoutThreshold: 1000 });
    const config = {
      issuer: dev.issuer,
      audience: AUDIENCE,
      ...CLIENT,
      cacheKeySecret: CACHE_KEY_SECRET,
      redisSentinels: group.sentinels,
      redisSentinelName: group.name,
      redisSentinelPassword: SENTINEL_PASSWORD,
      redisPassword: REDIS_PASSWORD,
      redisMinReplicas: 1,
      // Room for WAIT on a machine shared with other test runs.
      redisTimeoutMs: 400,
      passwordFailureBudget: LIMIT + 2,
      adminToken: ADMIN_TOKEN,
    };
    a = await startCredgate(config);
    b = await startCredgate(config, { keys: a.keys });
    dev.setResourceServerJwksUrl(a.jwksUrl);
  });

  after(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await dev?.close();
    await group?.close();
  });

  test('both replicas find the primary through the sentinels, and every ledger write is on the replica before a grant is sent', async () => {
    for (const server of [a, b]) assert.equal(await sharedUp(server), 1);
    const before = dev.stats().tokenRequests;
    for (const server of [a, b]) assert.equal((await server.verify({ username: 'carol', password: `guess-${carolGrants++}` })).body.reason, 'invalid_credentials');
    assert.equal(grantsSince(before), 2);
    for (const server of [a, b]) assert.equal(await unacknowledged(server), 0);
    // Read from the replica itself: WAIT returned only once it had them.
    assert.deepEqual(await ledgerFailures(group.replica.port), [2]);
  });

  test('with the primary killed, a password not known to be good is answered 503 and never sent, until a replica is promoted', async () => {
    const oldPrimary = group.primary.port;
    await group.primary.kill();
    const before = dev.stats().tokenRequests;
    let attempts = 0;
    await waitFor('the sentinels to promote the replica', async () => {
      for (const server of [a, b]) {
        const answer = await server.verify({ username: 'carol', password: `outage-guess-${attempts++}` });
        assert.deepEqual([answer.status, answer.body.reason], [503, 'upstream_unavailable']);
      }
      return (await group.primaryPort()) === group.replica.port;
    }, 20_000, group.output);
    assert.notEqual(group.replica.port, oldPrimary);
    assert.ok(attempts >= 2);
    assert.equal(grantsSince(before), 0, 'no grant while no primary could acknowledge the reservation');
  });

  test('both replicas follow the failover; the new primary has every acknowledged entry; with no replica left to acknowledge, unknown passwords stay 503', async () => {
    for (const server of [a, b]) await waitFor('the replica to reconnect to the new primary', async () => (await sharedUp(server)) === 1, 10_000);
    assert.deepEqual(await ledgerFailures(group.replica.port), [2], 'no acknowledged failure lost in the failover');
    const before = dev.stats().tokenRequests;
    for (const server of [a, b]) {
      const unacked = await unacknowledged(server);
      const answer = await server.verify({ username: 'carol', password: 'guess-without-a-replica' });
      assert.deepEqual([answer.status, answer.body.reason], [503, 'upstream_unavailable']);
      assert.ok((await unacknowledged(server)) > unacked, 'counted as a write no replica acknowledged');
    }
    assert.equal(grantsSince(before), 0);
  });

  test('once the old primary is back as a replica, the budget goes on where it stood: one more grant, then throttled on both replicas', async () => {
    await group.primary.restartAsReplicaOf(group.replica.port);
    await group.waitForReplica(group.primary.port, 10_000);
    const before = dev.stats().tokenRequests;
    const reasons: unknown[] = [];
    for (let i = 0; i < 6; i++) reasons.push((await (i % 2 === 0 ? a : b).verify({ username: 'carol', password: `after-failover-${i}` })).body.reason);
    assert.deepEqual(reasons, ['invalid_credentials', ...Array(5).fill('throttled')]);
    carolGrants += grantsSince(before);
    assert.equal(carolGrants, LIMIT, 'the AS saw exactly the budget for carol, failover or not');
    assert.deepEqual(await ledgerFailures(group.primary.port), [LIMIT], 'and the rejoined node has it too');
  });

  test('the purge subscription works again on the new primary, and each replica dropped its cached decisions when it renewed it', async () => {
    for (const server of [a, b]) assert.match(server.logs.join(''), /purge subscription renewed/);
    for (const server of [a, b]) {
      assert.equal((await server.verify({ username: 'alice', password: alice.password })).body.allow, true);
      assert.equal((await server.verify({ username: 'alice', password: alice.password })).body.cached, true);
    }
    const received = await metric(b, 'credgate_shared_state_purges_received_total');
    const response = await fetch(`${a.url}/admin/purge`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice' }) });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { broadcast?: boolean; names: number };
    assert.equal(body.broadcast, true);
    // One message per name of the account, then one for its subject (which drops the identity): wait for all.
    await waitFor('b to receive the purge', async () => (await metric(b, 'credgate_shared_state_purges_received_total')) >= received + body.names + 1, 3000);
    assert.equal((await b.verify({ username: 'alice', password: alice.password })).body.cached, false);
  });

  test('a graceful SENTINEL FAILOVER (the primary demoted, not dead): both replicas move to the new primary and the ledger goes on', async () => {
    const [newPrimary, demoted] = [group.primary.port, group.replica.port];
    await waitFor('the sentinels to accept a failover', async () => {
      try {
        await group.failover();
        return true;
      } catch {
        return false; // NOGOODSLAVE until the sentinels have seen the rejoined node's INFO
      }
    }, 15_000, group.output);
    await waitFor('the sentinels to announce the new primary', async () => (await group.primaryPort()) === newPrimary, 15_000, group.output);
    await group.waitForReplica(demoted, 15_000);
    // The sentinels kill the demoted primary's client connections: each replica reconnects through them.
    const before = dev.stats().tokenRequests;
    await waitFor('both replicas to write acknowledged to the new primary', async () => {
      for (const server of [a, b]) {
        if ((await sharedUp(server)) !== 1) return false;
        const answer = await server.verify({ username: `dave-${server === a ? 'a' : 'b'}@example.com`, password: `after-switch-${Date.now()}` });
        if (answer.body.reason !== 'invalid_credentials') {
          assert.equal(answer.body.reason, 'upstream_unavailable', 'never an allow while switching');
          return false;
        }
      }
      return true;
    }, 15_000);
    assert.ok(dev.stats().tokenRequests - before >= 2);
    assert.equal((await a.verify({ username: 'carol', password: 'after-switch' })).body.reason, 'throttled', "carol's spent budget survived both failovers");
    assert.deepEqual(await ledgerFailures(demoted).then((f) => f.filter((n) => n === LIMIT)), [LIMIT]);
  });

  test('the logs name the sentinels and the primary, never a Redis, sentinel or user password', () => {
    const text = [a, b].flatMap((s) => s.logs).join('');
    assert.match(text, new RegExp(`sentinel ${group.name} via 127\\.0\\.0\\.1:\\d+`));
    for (const secret of [REDIS_PASSWORD, SENTINEL_PASSWORD, alice.password, 'guess-1"']) assert.ok(!text.includes(secret), `logs hold ${secret}`);
  });
});
