import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, before, describe, test } from 'node:test';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { freePort, waitFor } from '../fixtures/processes.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics/registry.js';
import { SharedRedis } from '../../src/state/redis.js';
import { redisClusterAvailable, startRedisCluster, type TestCluster } from '../fixtures/redisCluster.js';
import { scrapedMetric as metric } from '../fixtures/metrics.js';

/** The CRC16 slot function ioredis's Cluster routes by. */
const calculateSlot = createRequire(import.meta.url)('cluster-key-slot') as (key: string) => number;

const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-cluster', clientSecret: 'cluster-client-secret-value' };
const CACHE_KEY_SECRET = 'Y2x1c3Rlci1jYWNoZS1rZXktc2VjcmV0LWZvci1yZXBsaWNhcy0wMTIzNDU2Nzg=';
const ADMIN_TOKEN = 'admin-token-for-cluster-0123456789abcdef';
const REDIS_PASSWORD = 'redis-cluster-password-never-logged-77';
const LIMIT = 3;
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));


/**
 * Two credgate replicas share a real three-node Redis Cluster. The ledger's Lua scripts read keys
 * named from data (aliases), which a cluster runs only when every key is in one slot: this runs
 * them there for real, across both replicas, and looks where the keys landed.
 */
describe('shared state through Redis Cluster: the login ledger runs in one slot and holds one budget across replicas', { skip: !redisClusterAvailable() && 'redis-server/redis-cli are not installed (test/setup.sh installs them)', timeout: 60_000 }, () => {
  let cluster: TestCluster;
  let dev: DevAuthorizationServer;
  let a: TestCredgate;
  let b: TestCredgate;
  let config: Parameters<typeof startCredgate>[0];

  /** Every key on every node: node port → keys. */
  async function keysByNode(): Promise<Map<number, string[]>> {
    const found = new Map<number, string[]>();
    for (const port of cluster.ports) {
      const node = cluster.node(port);
      try {
        await node.connect();
        found.set(port, await node.keys('*'));
      } finally {
        node.disconnect();
      }
    }
    return found;
  }

  before(async () => {
    cluster = await startRedisCluster({ password: REDIS_PASSWORD });
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT], lockoutThreshold: 1000 });
    config = {
      issuer: dev.issuer,
      audience: AUDIENCE,
      ...CLIENT,
      cacheKeySecret: CACHE_KEY_SECRET,
      // One seed node is enough: the rest are discovered.
      redisClusterNodes: cluster.nodes.slice(0, 1),
      redisPassword: REDIS_PASSWORD,
      redisTimeoutMs: 400,
      passwordFailureBudget: LIMIT + 2,
      throttleIpFailures: 20,
      adminToken: ADMIN_TOKEN,
    };
    a = await startCredgate(config);
    b = await startCredgate(config, { keys: a.keys });
    dev.setResourceServerJwksUrl(a.jwksUrl);
  });

  after(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await dev?.close();
    await cluster?.close();
  });

  test('both replicas connect to the cluster', async () => {
    for (const server of [a, b]) {
      await waitFor('the replica to connect', async () => (await metric(server, 'credgate_shared_state_up')) === 1, 5000);
      const ready = (await (await fetch(`${server.url}/readyz`)).json()) as { checks: Record<string, { ok: boolean; detail?: string }> };
      assert.equal(ready.checks.sharedState?.ok, true);
      assert.match(String(ready.checks.sharedState?.detail), /cluster 127\.0\.0\.1:\d+/);
    }
  });

  test('wrong passwords alternating between replicas meet one per-account budget: the AS is asked 3 times, not 3 per replica', async () => {
    const before = dev.stats().tokenRequests;
    const reasons: unknown[] = [];
    for (let i = 0; i < 10; i++) reasons.push((await (i % 2 === 0 ? a : b).verify({ username: 'carol', password: `cluster-guess-${i}`, clientIp: '203.0.113.9' })).body.reason);
    assert.deepEqual(reasons, [...Array(LIMIT).fill('invalid_credentials'), ...Array(10 - LIMIT).fill('throttled')]);
    assert.equal(dev.stats().tokenRequests - before, LIMIT);
    for (const server of [a, b]) assert.equal(await metric(server, 'credgate_shared_state_errors_total', 'operation="ledger"'), 0, 'no ledger script refused (CROSSSLOT) or failed');
  });

  test('a success links names and clears the account on the other replica; an admin reset clears it everywhere', async () => {
    const alice = users.alice!;
    for (let i = 0; i < LIMIT; i++) await (i % 2 === 0 ? a : b).verify({ username: 'alice', password: `wrong-${i}` });
    assert.equal((await b.verify({ username: 'alice', password: 'yet-another' })).body.reason, 'throttled');
    // Known good nowhere yet (never succeeded): the purge resets her ledger in the cluster (RESET script).
    const response = await fetch(`${a.url}/admin/purge`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice' }) });
    assert.equal(response.status, 200);
    assert.equal(((await response.json()) as { broadcast?: boolean }).broadcast, true);
    assert.equal((await b.verify({ username: 'alice', password: alice.password })).body.allow, true, 'SETTLE and LINK ran in the cluster');
    assert.equal((await a.verify({ username: 'alice', password: 'wrong-after-success' })).body.reason, 'invalid_credentials');
    for (const server of [a, b]) assert.equal(await metric(server, 'credgate_shared_state_errors_total', 'operation="ledger"'), 0);
  });

  test('every ledger key is under one hash tag, in one slot on one node; the other keys spread over the cluster', async () => {
    const byNode = await keysByNode();
    const all = [...byNode.values()].flat();
    const ledger = all.filter((k) => k.startsWith('credgate:{credgate:ledger}:'));
    assert.ok(ledger.some((k) => /:ledger:[A-Za-z0-9_-]{43}$/.test(k)));
    assert.ok(ledger.some((k) => /:alias:[A-Za-z0-9_-]{43}$/.test(k)));
    assert.ok(ledger.some((k) => /:account:[A-Za-z0-9_-]{43}$/.test(k)));
    assert.ok(ledger.includes('credgate:{credgate:ledger}:ledger:seq'));
    assert.equal(new Set(ledger.map((k) => calculateSlot(k))).size, 1);
    assert.equal([...byNode.values()].filter((keys) => keys.some((k) => ledger.includes(k))).length, 1, 'on one node');
    // Nothing of the ledger outside the tag, and no clear name anywhere.
    assert.deepEqual(all.filter((k) => /ledger|alias|account/.test(k) && !k.startsWith('credgate:{credgate:ledger}:')), []);
    for (const secret of ['alice', 'carol', '203.0.113']) assert.ok(!all.join(' ').includes(secret));
    assert.ok(all.some((k) => k.startsWith('credgate:throttle:ip:')), 'per-IP counters are shared too');
  });

  test('a purge on one replica reaches the other through the cluster', async () => {
    const alice = users.alice!;
    await a.verify({ username: 'alice', password: alice.password });
    assert.equal((await a.verify({ username: 'alice', password: alice.password })).body.cached, true);
    const received = await metric(a, 'credgate_shared_state_purges_received_total');
    const response = await fetch(`${b.url}/admin/purge`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice' }) });
    const body = (await response.json()) as { broadcast?: boolean; names: number };
    assert.equal(body.broadcast, true);
    // One message per name of the account, then one for its subject (which drops the identity): wait for all.
    await waitFor('a to receive the purge', async () => (await metric(a, 'credgate_shared_state_purges_received_total')) >= received + body.names + 1, 3000);
    assert.equal((await a.verify({ username: 'alice', password: alice.password })).body.cached, false);
  });

  test('with redisMinReplicas and primaries that have no replica, the WAIT after a ledger script is routed with it and fails closed: 503, nothing sent', async () => {
    const c = await startCredgate({ ...config, adminToken: undefined, redisMinReplicas: 1 }, { keys: a.keys });
    try {
      await waitFor('c to connect', async () => (await metric(c, 'credgate_shared_state_up')) === 1, 5000);
      const before = dev.stats().tokenRequests;
      const answer = await c.verify({ username: 'dave@example.com', password: 'never-sent' });
      assert.deepEqual([answer.status, answer.body.reason], [503, 'upstream_unavailable']);
      assert.equal(dev.stats().tokenRequests - before, 0);
      assert.ok((await metric(c, 'credgate_shared_state_errors_total', 'operation="ledger",reason="unacknowledged"')) >= 1);
      assert.equal(await metric(c, 'credgate_shared_state_errors_total', 'operation="ledger",reason="error"'), 0, 'no CROSSSLOT or routing error');
    } finally {
      await c.close();
    }
  });

  test('a purge subscriber whose node is gone moves on to another node, renews the subscription and receives purges again', async () => {
    const dead = await freePort(); // nothing listens there: a node that is gone
    const purges: string[] = [];
    let renewals = 0;
    const options = { keyPrefix: 'credgate:', timeoutMs: 400, log: createLogger({ level: 'silent' }), metrics: new Metrics('t').sharedState(), onPurge: (k: string) => void purges.push(k), onSubscribed: () => void renewals++ };
    // The purge subscriber starts on the first seed node (the Cluster has not told it about the others yet).
    const listener = new SharedRedis({ ...options, cluster: { nodes: [{ host: '127.0.0.1', port: dead }, ...cluster.ports.map((port) => ({ host: '127.0.0.1', port }))], password: REDIS_PASSWORD } });
    const sender = new SharedRedis({ ...options, onPurge: () => undefined, onSubscribed: () => undefined, metrics: new Metrics('t').sharedState(), cluster: { nodes: [{ host: '127.0.0.1', port: cluster.ports[1]! }], password: REDIS_PASSWORD } });
    try {
      await Promise.all([listener.start(100), sender.start(5000)]);
      assert.equal(listener.up, false, 'not subscribed on a node that is gone');
      await waitFor('the subscriber to move to a live node', () => listener.up, 10_000);
      assert.equal(renewals, 1);
      const userKey = 'A'.repeat(43);
      assert.equal(await sender.publishPurge(userKey), true);
      await waitFor('the purge to arrive', () => purges.includes(userKey), 3000);
    } finally {
      await Promise.all([listener.close(), sender.close()]);
    }
  });

  test('the Redis password never reaches the logs', () => {
    const text = [a, b].flatMap((s) => s.logs).join('');
    assert.ok(!text.includes(REDIS_PASSWORD));
  });
});
