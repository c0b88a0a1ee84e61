import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { redisServerAvailable, startRedis, type TestRedis } from '../fixtures/redis.js';
import { runLedgerTable } from '../fixtures/ledgerTable.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics/registry.js';
import { SharedRedis } from '../../src/state/redis.js';
import { RedisLoginLedger } from '../../src/state/redisLedger.js';
import { AccountDirectory } from '../../src/verify/accounts.js';
import { CredentialCache } from '../../src/verify/cache.js';
import { LocalLoginLedger } from '../../src/verify/loginLedger.js';
import { scrapedMetric as metric } from '../fixtures/metrics.js';

const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-replicas', clientSecret: 'replicas-client-secret-value' };
const CACHE_KEY_SECRET = 'c2hhcmVkLWNhY2hlLWtleS1zZWNyZXQtZm9yLXJlcGxpY2FzLTAxMjM0NTY3ODk=';
const ADMIN_TOKEN = 'admin-token-for-replicas-0123456789abcdef';
const REDIS_PASSWORD = 'redis-password-never-logged-4711';
const LIMIT = 3;
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));
const alice = users.alice!;

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return Date.now() - started;
}


const sharedUp = (server: TestCredgate) => metric(server, 'credgate_shared_state_up');

async function readyz(server: TestCredgate) {
  const response = await fetch(`${server.url}/readyz`);
  return { status: response.status, body: (await response.json()) as { status: string; checks: Record<string, { ok: boolean; detail?: string; required?: boolean }> } };
}

async function purge(server: TestCredgate, username: string) {
  const response = await fetch(`${server.url}/admin/purge`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ username }),
  });
  return { status: response.status, body: (await response.json()) as { purged: number; broadcast?: boolean } };
}

/**
 * Two credgate replicas (different ports) share one real redis-server and one dev AS. What the
 * issue asks: guesses spread over replicas meet one throttle limit; a purge on one is honoured by
 * the other; with Redis killed both keep deciding correctly from local state, and they recover by
 * themselves when it returns. Counted at the dev AS.
 */
describe('several replicas sharing state through Redis', { skip: !redisServerAvailable() && 'redis-server is not installed (test/setup.sh installs it)' }, () => {
  let redis: TestRedis;
  let dev: DevAuthorizationServer;
  let a: TestCredgate;
  let b: TestCredgate;
  let inspector: Redis;
  let config: Parameters<typeof startCredgate>[0];

  before(async () => {
    redis = await startRedis({ password: REDIS_PASSWORD });
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT], lockoutThreshold: 1000 });
    config = {
      issuer: dev.issuer,
      audience: AUDIENCE,
      ...CLIENT,
      cacheKeySecret: CACHE_KEY_SECRET,
      redisUrl: redis.url,
      passwordFailureBudget: LIMIT + 2,
      throttleIpFailures: 20,
      adminToken: ADMIN_TOKEN,
      // ASPs are recognised only by the shared marker, not by their shape, so that the marker shows.
      appPasswordPattern: '',
    };
    a = await startCredgate(config);
    b = await startCredgate(config, { keys: a.keys }); // one client key: the dev AS verifies both replicas' assertions
    dev.setResourceServerJwksUrl(a.jwksUrl);
    inspector = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => 200 });
    inspector.on('error', () => undefined);
  });

  after(async () => {
    inspector?.disconnect();
    await Promise.all([a?.close(), b?.close()]);
    await dev?.close();
    await redis?.close();
  });

  test('both replicas start connected, and /readyz says so', async () => {
    for (const server of [a, b]) {
      assert.equal(await sharedUp(server), 1);
      const { status, body } = await readyz(server);
      assert.equal(status, 200);
      assert.equal(body.checks.sharedState?.ok, true);
      assert.equal(body.checks.sharedState?.required, false);
    }
  });

  test('the Redis scripts follow the one rule table, row for row like the local ledger', async () => {
    const opened: SharedRedis[] = [];
    try {
      await runLedgerTable(async (row, rule) => {
        let clock = 1_000_000;
        const shared = new SharedRedis({ url: redis.url, keyPrefix: `table:${row.length}:${opened.length}:`, timeoutMs: 1000, log: createLogger({ level: 'silent' }), metrics: new Metrics('t').sharedState(), onPurge: () => undefined, onSubscribed: () => undefined });
        opened.push(shared);
        RedisLoginLedger.define(shared.commandConnection);
        await shared.start(3000);
        const names = new CredentialCache({ ttlSeconds: 1, negativeTtlSeconds: 1, maxEntries: 10, appPasswordMemorySeconds: 1, keySecret: CACHE_KEY_SECRET });
        const local = new LocalLoginLedger(rule, new AccountDirectory(100), 100, () => clock);
        return { ledger: new RedisLoginLedger(shared, local, names, rule, () => clock), advance: (ms) => void (clock += ms) };
      });
    } finally {
      await Promise.all(opened.map((r) => r.close()));
    }
  });

  test('an upgrade keeps the failures and grants under way that an earlier version left in Redis (a count, bare reservation ids)', async () => {
    let clock = 5_000_000;
    const prefix = 'upgrade:';
    const rule = { budget: 5, memoryMs: 60_000, reservationMs: 1_000 };
    const shared = new SharedRedis({ url: redis.url, keyPrefix: prefix, timeoutMs: 1000, log: createLogger({ level: 'silent' }), metrics: new Metrics('t').sharedState(), onPurge: () => undefined, onSubscribed: () => undefined });
    RedisLoginLedger.define(shared.commandConnection);
    await shared.start(3000);
    const direct = new Redis(redis.url, { maxRetriesPerRequest: 0 });
    try {
      const names = new CredentialCache({ ttlSeconds: 1, negativeTtlSeconds: 1, maxEntries: 10, appPasswordMemorySeconds: 1, keySecret: CACHE_KEY_SECRET });
      const ledger = new RedisLoginLedger(shared, new LocalLoginLedger(rule, new AccountDirectory(100), 100, () => clock), names, rule, () => clock);
      // What the earlier scripts wrote: {f: count, l: last, q: order} and reservations scored by due time, member = id.
      const key = `${prefix}ledger:${names.digest('login', 'olga')}`;
      await direct.hset(key, 'f', 1, 'l', clock - 10, 'q', 7);
      await direct.zadd(`${key}:r`, clock - 1, `${clock - 2_000}.oldgrant`);
      await direct.pexpire(key, 60_000);
      await direct.pexpire(`${key}:r`, 60_000);
      const first = await ledger.admit('olga', false);
      assert.ok(first.admitted, 'one failure and one overdue grant of the earlier version: 2 < 3');
      assert.equal((await ledger.admit('olga', false)).admitted, false, 'both are counted');
      await ledger.settle(first, 'failure');
      const known = await ledger.admit('olga', true);
      assert.ok(known.admitted, '3 failures: only the known-good slot is left');
      await ledger.settle(known, 'unsent');
      assert.equal((await ledger.admit('olga', false)).admitted, false);
      // A success of the account clears what the earlier version counted, as that version did.
      await direct.hset(key, 'f', 2);
      const fresh = new RedisLoginLedger(shared, new LocalLoginLedger({ ...rule, budget: 8 }, new AccountDirectory(100), 100, () => clock), names, { ...rule, budget: 8 }, () => clock);
      const ok = await fresh.admit('olga', true);
      assert.ok(ok.admitted);
      await fresh.settle(ok, 'success', 'sub-olga');
      await fresh.link('sub-olga', ['olga']);
      assert.equal(await direct.exists(key), 0, 'every failure cleared, the legacy ones included');
    } finally {
      direct.disconnect();
      await shared.close();
    }
  });

  test('wrong passwords alternating between replicas meet one per-account budget: the AS is asked 3 times, not 3 per replica', async () => {
    const before = dev.stats().tokenRequests;
    const reasons: unknown[] = [];
    for (let i = 0; i < 12; i++) reasons.push((await (i % 2 === 0 ? a : b).verify({ username: 'carol', password: `guess-${i}`, clientIp: '203.0.113.7' })).body.reason);
    assert.equal(dev.stats().tokenRequests - before, LIMIT);
    assert.deepEqual(reasons.slice(0, LIMIT), Array(LIMIT).fill('invalid_credentials'));
    // The 4th guess goes to b, which itself saw only one failure: throttled by the shared count.
    assert.deepEqual(reasons.slice(LIMIT), Array(12 - LIMIT).fill('throttled'));
    // Another user is unaffected on both replicas.
    for (const server of [a, b]) assert.equal((await server.verify({ username: 'alice', password: alice.password })).body.allow, true);
  });

  test('a password that succeeded on one replica is known good on a replica started later: it gets the slot kept for the real user', async () => {
    // alice's password succeeded on both replicas above; an attacker spends her budget.
    for (let i = 0; i < 3; i++) await (i % 2 === 0 ? a : b).verify({ username: 'alice', password: `spend-${i}` });
    assert.equal((await b.verify({ username: 'alice', password: 'a-new-password' })).body.reason, 'throttled');
    const c = await startCredgate({ ...config, adminToken: undefined }, { keys: a.keys });
    try {
      const answer = await c.verify({ username: 'alice', password: alice.password });
      assert.equal(answer.body.allow, true, 'known good through Redis, on a replica that never saw it');
    } finally {
      await c.close();
    }
  });

  test('a wrong password answered by one replica is answered from the shared negative cache by the other', async () => {
    const before = dev.stats().tokenRequests;
    const first = await a.verify({ username: 'alice', password: 'not-alices-password' });
    assert.deepEqual([first.body.reason, first.body.cached], ['invalid_credentials', false]);
    const second = await b.verify({ username: 'alice', password: 'not-alices-password' });
    assert.deepEqual([second.body.reason, second.body.cached], ['invalid_credentials', true]);
    assert.equal(dev.stats().tokenRequests - before, 1);
    // The right password is not caught by it.
    assert.equal((await b.verify({ username: 'alice', password: alice.password })).body.allow, true);
  });

  test('an ASP proved on one replica is introspected first on the other: no failed password login there', async () => {
    const asp = dev.createAppPassword('alice', { scope: 'read:repo' }).password;
    let tokens = dev.stats().tokenRequests;
    assert.equal((await a.verify({ username: 'alice', password: asp })).body.credential, 'app_password');
    assert.equal(dev.stats().tokenRequests - tokens, 1, 'a: tried as a password first (no shape rule here)');
    tokens = dev.stats().tokenRequests;
    const onB = await b.verify({ username: 'alice', password: asp });
    assert.deepEqual([onB.body.allow, onB.body.credential, onB.body.cached], [true, 'app_password', false]);
    assert.equal(dev.stats().tokenRequests - tokens, 0, 'b: introspected only');
    // An ASP no replica has seen is still tried as a password first.
    const fresh = dev.createAppPassword('alice', { scope: 'read:repo' }).password;
    tokens = dev.stats().tokenRequests;
    assert.equal((await b.verify({ username: 'alice', password: fresh })).body.allow, true);
    assert.equal(dev.stats().tokenRequests - tokens, 1);
  });

  test("a purge on one replica is honoured by the other: its next request for that user asks the AS; other users' entries stay", async () => {
    const bobAsp = dev.createAppPassword('bob', { scope: 'read:repo' }).password;
    for (const server of [a, b]) {
      await server.verify({ username: 'alice', password: alice.password });
      assert.equal((await server.verify({ username: 'alice', password: alice.password })).body.cached, true);
    }
    await b.verify({ username: 'bob', password: bobAsp });
    const received = await metric(b, 'credgate_shared_state_purges_received_total');
    const answer = await purge(a, 'ALICE');
    assert.equal(answer.status, 200);
    assert.equal(answer.body.broadcast, true);
    assert.ok(answer.body.purged >= 1);
    await waitFor('b to receive the purge', async () => (await metric(b, 'credgate_shared_state_purges_received_total')) > received, 2000);
    const tokens = dev.stats().tokenRequests;
    const again = await b.verify({ username: 'alice', password: alice.password });
    assert.deepEqual([again.body.allow, again.body.cached], [true, false]);
    assert.equal(dev.stats().tokenRequests - tokens, 1);
    const introspections = dev.stats().introspectionRequests;
    assert.equal((await b.verify({ username: 'bob', password: bobAsp })).body.cached, true);
    assert.equal(dev.stats().introspectionRequests, introspections);
  });

  test('Redis holds HMACs only: no username, password or IP in any key or value', async () => {
    await inspector.connect();
    const keys = (await inspector.keys('*')).filter((k) => !k.startsWith('table:') && !k.startsWith('upgrade:'));
    assert.ok(keys.length > 0);
    for (const key of keys) {
      // Credential keys (neg, asp) are 128-bit HMACs, usernames and IPs (throttle, purged) 256-bit ones.
      assert.match(key, /^credgate:((neg|asp|pw):[A-Za-z0-9_-]{22}|(throttle:ip|purged|alias|account):[A-Za-z0-9_-]{43}|ledger:([A-Za-z0-9_-]{43}(:r)?|seq))$/, key);
      const type = await inspector.type(key);
      const values =
        type === 'string' ? [await inspector.get(key)] : type === 'set' ? await inspector.smembers(key) : type === 'hash' ? Object.values(await inspector.hgetall(key)) : await inspector.zrange(key, '0', '-1');
      // Failures: "seq:class:reservation" separated by spaces; reservations "id|class|seq"; classes are HMACs.
      const failure = '\\d+:[A-Za-z0-9_-]{43}:(\\d+\\.[A-Za-z0-9_-]+)?';
      const shapes = new RegExp(`^(1|\\d+|\\d+\\.[A-Za-z0-9_-]+|[A-Za-z0-9_-]{43}|${failure}( ${failure})*|\\d+\\.[A-Za-z0-9_-]+\\|[A-Za-z0-9_-]{43}\\|\\d+)$`);
      for (const value of values) assert.match(String(value), shapes, `${key} = ${value}`);
    }
    const text = keys.join(' ');
    assert.match(text, /credgate:throttle:ip:/);
    // Outside the digests (every key matched its shape above): a digest is random base64url, and one
    // in thirty runs some digest holds "bob" in some case by chance (a CI run failed on that).
    const outsideDigests = text.replace(/[A-Za-z0-9_-]{22,}/g, '<digest>');
    for (const secret of ['alice', 'carol', 'bob', 'guess-', '203.0.113']) assert.ok(!outsideDigests.toLowerCase().includes(secret), `${secret} in ${outsideDigests}`);
    assert.ok(!text.includes(alice.password));
    inspector.disconnect();
  });

  test('a hung Redis costs a decision at most its timeout, then is skipped; /readyz says so without failing', async () => {
    redis.pause();
    try {
      const started = performance.now();
      const answer = await a.verify({ username: 'alice', password: 'wrong-while-redis-hangs' });
      assert.equal(answer.body.reason, 'upstream_unavailable', 'a new password waits for the shared login budget');
      assert.ok(performance.now() - started < 1500, `took ${Math.round(performance.now() - started)} ms`);
      assert.ok((await metric(a, 'credgate_shared_state_errors_total', 'reason="timeout"')) >= 1);
      const { status, body } = await readyz(a);
      assert.equal(status, 200);
      assert.match(String(body.checks.sharedState?.detail), /not answering in time/);
      assert.equal((await a.verify({ username: 'alice', password: alice.password })).body.allow, true);
    } finally {
      redis.resume();
    }
  });

  test('with Redis killed, cached identities, ASPs and known-good passwords still work; no replica spends the login budget alone (503 for a new password)', async () => {
    await redis.kill();
    for (const server of [a, b]) await waitFor('the replica to notice', async () => (await sharedUp(server)) === 0, 3000);
    for (const server of [a, b]) {
      const asp = dev.createAppPassword('alice', { scope: 'read:repo' }).password;
      const allowed = await server.verify({ username: 'alice', password: asp });
      assert.deepEqual([allowed.body.allow, allowed.body.cached], [true, false]);
      assert.equal((await server.verify({ username: 'alice', password: alice.password })).body.allow, true);
      // A password not known to be good is not sent: R replicas would otherwise spend R budgets.
      const refused = await server.verify({ username: 'alice', password: 'wrong-while-redis-is-down' });
      assert.deepEqual([refused.status, refused.body.reason], [503, 'upstream_unavailable']);
      const { status, body } = await readyz(server);
      assert.equal(status, 200, 'deciding with local state is not a reason to take the replica out');
      assert.equal(body.status, 'ready');
      assert.deepEqual(body.checks.sharedState, { ok: false, detail: 'redis unreachable: using local state', required: false });
      assert.ok((await metric(server, 'credgate_shared_state_errors_total', 'reason="unavailable"')) >= 1);
      assert.match(server.logs.join(''), /shared state unreachable: deciding with local state/);
    }
    // Guesses during the outage reach the AS not at all, on either replica.
    const tokens = dev.stats().tokenRequests;
    for (let i = 0; i < 5; i++) for (const server of [a, b]) assert.equal((await server.verify({ username: 'erin@example.com', password: `outage-guess-${i}` })).body.reason, 'upstream_unavailable');
    assert.equal(dev.stats().tokenRequests - tokens, 0);
  });

  test('when Redis returns on the same port, both reconnect by themselves within seconds and share again', async () => {
    await redis.restart();
    for (const server of [a, b]) {
      const waited = await waitFor('the replica to reconnect', async () => (await sharedUp(server)) === 1, 8000);
      assert.ok(waited < 8000);
      assert.equal((await readyz(server)).body.checks.sharedState?.ok, true);
    }
    // Purges sent while the subscription was down were missed, so each replica dropped its cached decisions.
    const tokens = dev.stats().tokenRequests;
    assert.equal((await a.verify({ username: 'alice', password: alice.password })).body.cached, false);
    assert.equal(dev.stats().tokenRequests - tokens, 1);
    // Negative cache and purges are shared again.
    const wrong = await b.verify({ username: 'alice', password: 'wrong-after-recovery' });
    assert.equal(wrong.body.cached, false);
    const shared = await a.verify({ username: 'alice', password: 'wrong-after-recovery' });
    assert.deepEqual([shared.body.reason, shared.body.cached], ['invalid_credentials', true]);
    assert.equal((await a.verify({ username: 'alice', password: alice.password })).body.cached, true);
    const received = await metric(a, 'credgate_shared_state_purges_received_total');
    assert.equal((await purge(b, 'alice')).body.broadcast, true);
    await waitFor('a to receive the purge', async () => (await metric(a, 'credgate_shared_state_purges_received_total')) > received, 2000);
    assert.equal((await a.verify({ username: 'alice', password: alice.password })).body.cached, false);
    assert.match(a.logs.join(''), /shared state connected/);
  });

  test('neither the Redis password nor any user password reached the logs', () => {
    const text = [a, b].flatMap((s) => s.logs).join('');
    assert.ok(!text.includes(REDIS_PASSWORD));
    assert.ok(!text.includes(alice.password));
    assert.ok(!text.includes('guess-1"'));
  });
});
