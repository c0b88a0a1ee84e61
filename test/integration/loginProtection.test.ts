import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';

const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-protect', clientSecret: 'protect-client-secret-value', trustForwardedFor: true };
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));
const failedLogins = (dev: DevAuthorizationServer, username: string) =>
  Object.entries(dev.stats().failedLogins).filter(([k]) => k.startsWith(`${username}|`)).reduce((n, [, v]) => n + v, 0);

/**
 * Measured at the dev AS's own brute-force counter (Auth0 blocks a user after 10 consecutive
 * failed logins from one IP): using ASPs must never count, and an attacker's burst must reach the
 * AS a bounded number of times.
 */
describe('protecting users from AS lockout and from guessing', () => {
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  before(async () => {
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
    credgate = await startCredgate({
      issuer: dev.issuer,
      audience: AUDIENCE,
      clientId: CLIENT.clientId,
      clientSecret: CLIENT.clientSecret,
      forwardClientIp: true,
      throttleUsernameFailures: 5,
      throttleIpFailures: 30,
    });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
  });
  after(async () => {
    await credgate.close();
    await dev.close();
  });

  test('using 30 new app-specific passwords adds no failed login at the AS, and the password keeps working', async () => {
    for (let i = 0; i < 30; i++) {
      const asp = dev.createAppPassword('alice', { scope: 'read:repo' }).password;
      const { body } = await credgate.verify({ username: 'alice', password: asp, clientIp: '198.51.100.10' });
      assert.equal(body.credential, 'app_password');
      assert.equal((await credgate.auth(basicHeader('alice', asp))).status, 200);
    }
    assert.equal(failedLogins(dev, 'alice'), 0);
    assert.deepEqual(dev.stats().blocked, []);
    assert.equal((await credgate.verify({ username: 'alice', password: users.alice!.password })).body.allow, true);
  });

  test('a burst of 50 wrong passwords for one user reaches the AS at most 5 times; the user is not blocked there; others are unaffected', async () => {
    const before = dev.stats().tokenRequests;
    const answers = [];
    for (let i = 0; i < 50; i++) answers.push((await credgate.verify({ username: 'carol', password: `guess-${i}`, clientIp: '203.0.113.7' })).body);
    assert.ok(dev.stats().tokenRequests - before <= 5, `AS asked ${dev.stats().tokenRequests - before} times`);
    assert.ok(failedLogins(dev, 'carol') < 10);
    assert.deepEqual(dev.stats().blocked, []);
    const throttled = answers.at(-1)!;
    assert.equal(throttled.reason, 'throttled');
    assert.equal(throttled.status, 429);
    assert.ok(Number(throttled.retryAfterSeconds) > 0);
    // The end-user's IP reached the AS, so its counters are per attacker, not per credgate.
    assert.ok(Object.keys(dev.stats().failedLogins).includes('carol|203.0.113.7'));
    // Another user, even from the same IP, is unaffected: the IP limit (30) has room left… until it does not.
    assert.equal((await credgate.verify({ username: 'alice', password: users.alice!.password, clientIp: '198.51.100.99' })).body.allow, true);
  });

  test('/auth answers throttled as 401 with Retry-After (nginx passes only 401 and 403)', async () => {
    const response = await credgate.auth(basicHeader('carol', 'yet-another-guess'));
    assert.equal(response.status, 401);
    assert.ok(Number(response.headers.get('retry-after')) > 0);
    assert.equal(((await response.json()) as { reason: string }).reason, 'throttled');
  });

  test('per client IP: 30 failures across many usernames throttle that IP, not others', async () => {
    for (let i = 0; i < 30; i++) await credgate.verify({ username: `nobody${i}@example.com`, password: 'spray-password', clientIp: '192.0.2.66' });
    const sprayed = await credgate.verify({ username: 'fresh-user@example.com', password: 'spray-password', clientIp: '192.0.2.66' });
    assert.equal(sprayed.body.reason, 'throttled');
    const elsewhere = await credgate.verify({ username: 'fresh-user@example.com', password: 'spray-password', clientIp: '192.0.2.67' });
    assert.equal(elsewhere.body.reason, 'invalid_credentials');
  });

  test('throttled can be answered as 429 on /auth for proxies that pass it on', async () => {
    const strict = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, clientId: CLIENT.clientId, clientSecret: CLIENT.clientSecret, throttleUsernameFailures: 1, authThrottledStatus: 429 }, { keys: credgate.keys });
    try {
      await strict.auth(basicHeader('nobody', 'wrong-one'));
      const response = await strict.auth(basicHeader('nobody', 'wrong-two'));
      assert.equal(response.status, 429);
      assert.ok(Number(response.headers.get('retry-after')) > 0);
    } finally {
      await strict.close();
    }
  });

  test('no password reached the logs', () => {
    const text = credgate.logs.join('');
    for (const user of Object.values(users)) assert.ok(!text.includes(user.password));
    assert.ok(!text.includes('guess-1"'));
  });
});
