import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';

const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-protect', clientSecret: 'protect-client-secret-value', trustForwardedFor: true };
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));
/** Failed logins the dev AS itself counted for an account (all IPs): what Auth0's lockout reads. */
const failedLogins = (dev: DevAuthorizationServer, username: string) =>
  Object.entries(dev.stats().failedLogins).filter(([k]) => k.startsWith(`${username}|`)).reduce((n, [, v]) => n + v, 0);
const BUDGET = 5;

/**
 * The guarantee, measured at the dev AS's own brute-force counter (which, like Auth0, counts per
 * account and blocks at 10): the AS never sees `passwordFailureBudget` consecutive failures caused by
 * credgate for one account, under concurrency and across aliases; using ASPs never counts; the real
 * user still gets in while an attacker spends the budget.
 */
describe('login protection against the real dev AS', () => {
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
      passwordFailureBudget: BUDGET,
      throttleIpFailures: 30,
      // The test process is the trusted caller whose `clientIp` is believed.
      trustedProxies: ['loopback'],
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

  test('a concurrent burst of 40 wrong passwords reaches the AS below the budget; the user is not blocked; her new ASP gets in meanwhile', async () => {
    const before = dev.stats().tokenRequests;
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => credgate.verify({ username: 'carol', password: `guess-${i}`, clientIp: '203.0.113.7' })));
    const sent = dev.stats().tokenRequests - before;
    assert.ok(sent <= BUDGET - 2, `${sent} grants reached the AS`);
    assert.ok(failedLogins(dev, 'carol') < BUDGET);
    assert.deepEqual(dev.stats().blocked, []);
    const throttled = answers.find((a) => a.body.reason === 'throttled')!.body;
    assert.equal(throttled.status, 429);
    assert.ok(Number(throttled.retryAfterSeconds) > 0);
    // The end-user's IP reached the AS (auth0-forwarded-for), believed from the trusted caller.
    assert.ok(Object.keys(dev.stats().failedLogins).includes('carol|203.0.113.7'));
    const asp = dev.createAppPassword('carol', { scope: 'read:repo' }).password;
    const tokens = dev.stats().tokenRequests;
    assert.equal((await credgate.verify({ username: 'carol', password: asp })).body.allow, true, 'an ASP is introspected while the account is throttled');
    assert.equal(dev.stats().tokenRequests, tokens, 'and costs no login attempt');
    assert.equal((await credgate.verify({ username: 'carol', password: 'yet-another-guess' })).body.reason, 'throttled');
    // Another user, from the same IP, is unaffected.
    assert.equal((await credgate.verify({ username: 'alice', password: users.alice!.password, clientIp: '203.0.113.7' })).body.allow, true);
  });

  test('aliases: once alice succeeded under both names, guesses spread over them share one budget', async () => {
    assert.equal((await credgate.verify({ username: 'alice@example.com', password: users.alice!.password })).body.allow, true);
    const before = failedLogins(dev, 'alice');
    for (let i = 0; i < 6; i++) {
      await credgate.verify({ username: 'alice', password: `a-guess-${i}` });
      await credgate.verify({ username: 'Alice@Example.com', password: `b-guess-${i}` });
    }
    assert.ok(failedLogins(dev, 'alice') - before <= BUDGET - 2, `${failedLogins(dev, 'alice') - before} failures at the AS`);
    assert.deepEqual(dev.stats().blocked, []);
    // Her known-good password still gets in (the slot kept for it), and its success clears the count at both ends.
    assert.equal((await credgate.verify({ username: 'alice', password: users.alice!.password })).body.allow, true);
  });

  test('an ASP sent with the e-mail alias or for another audience is never tried as a password', async () => {
    const before = dev.stats().tokenRequests;
    const asp = dev.createAppPassword('bob', { scope: 'read:repo' }).password;
    for (let i = 0; i < 3; i++) assert.equal((await credgate.verify({ username: 'bob@example.com', password: asp })).body.reason, 'invalid_credentials');
    assert.equal(dev.stats().tokenRequests, before, 'no failed login at the AS');
    assert.equal((await credgate.verify({ username: 'bob', password: asp })).body.allow, true, 'under its own name it works');
  });

  test('an admin purge resets the account ledger: a new password works again at once', async () => {
    for (let i = 0; i < 5; i++) await credgate.verify({ username: 'carol', password: `more-guesses-${i}` });
    assert.equal((await credgate.verify({ username: 'carol', password: users.carol!.password })).body.reason, 'throttled', 'not known to be good yet: it waits');
    await credgate.service.purge({ username: 'carol' });
    assert.equal((await credgate.verify({ username: 'carol', password: users.carol!.password })).body.allow, true);
  });

  test('/auth answers throttled as 401 with Retry-After (nginx passes only 401 and 403)', async () => {
    for (let i = 0; i < 4; i++) await credgate.auth(basicHeader('dave-unknown', `g-${i}`));
    const response = await credgate.auth(basicHeader('dave-unknown', 'yet-another-guess'));
    assert.equal(response.status, 401);
    assert.ok(Number(response.headers.get('retry-after')) > 0);
    assert.equal(((await response.json()) as { reason: string }).reason, 'throttled');
  });

  test('per end-user IP: 30 failures across many usernames throttle that IP (its whole IPv6 /64), not others', async () => {
    for (let i = 0; i < 30; i++) await credgate.verify({ username: `nobody${i}@example.com`, password: 'spray-password', clientIp: '192.0.2.66' });
    assert.equal((await credgate.verify({ username: 'fresh-user@example.com', password: 'spray-password', clientIp: '192.0.2.66' })).body.reason, 'throttled');
    assert.equal((await credgate.verify({ username: 'fresh-user@example.com', password: 'spray-password', clientIp: '192.0.2.67' })).body.reason, 'invalid_credentials');
    for (let i = 0; i < 30; i++) await credgate.verify({ username: `v6-nobody${i}@example.com`, password: 'spray', clientIp: `2001:db8:66:1::${(i + 1).toString(16)}` });
    assert.equal((await credgate.verify({ username: 'v6-fresh@example.com', password: 'spray', clientIp: '2001:db8:66:1:ffff:1:2:3' })).body.reason, 'throttled', 'rotating inside the /64 does not help');
    assert.equal((await credgate.verify({ username: 'v6-fresh@example.com', password: 'spray', clientIp: '2001:db8:66:2::1' })).body.reason, 'invalid_credentials');
  });

  test('throttled can be answered as 429 on /auth for proxies that pass it on', async () => {
    const strict = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, clientId: CLIENT.clientId, clientSecret: CLIENT.clientSecret, passwordFailureBudget: 3, authThrottledStatus: 429 }, { keys: credgate.keys });
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

describe('clientIp of /v1/verify', () => {
  test('is believed only from a trusted caller: anyone else is the end user itself', async () => {
    const dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
    const credgate = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, clientId: CLIENT.clientId, clientSecret: CLIENT.clientSecret, forwardClientIp: true, throttleIpFailures: 3, trustedProxies: ['10.0.0.0/8'] });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
    try {
      // An untrusted caller naming other addresses: each guess counts against its own address.
      for (let i = 0; i < 3; i++) await credgate.verify({ username: `x${i}`, password: 'p', clientIp: `198.51.100.${i + 1}` });
      assert.equal((await credgate.verify({ username: 'y', password: 'p', clientIp: '198.51.100.200' })).body.reason, 'throttled');
      // And what reached the AS as auth0-forwarded-for was its own address, not the one it chose.
      assert.ok(Object.keys(dev.stats().failedLogins).every((k) => !k.includes('198.51.100.')), JSON.stringify(dev.stats().failedLogins));
    } finally {
      await credgate.close();
      await dev.close();
    }
  });
});

describe('login protection across a restart (ledgerFile, no Redis)', () => {
  let dir: string;
  let dev: DevAuthorizationServer;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'credgate-ledger-'));
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
  });
  after(async () => {
    await dev?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('guesses before a restart still count after it: the AS sees no more than budget − 2 for the account', async () => {
    const settings = { issuer: dev.issuer, audience: AUDIENCE, clientId: CLIENT.clientId, clientSecret: CLIENT.clientSecret, passwordFailureBudget: BUDGET, throttleIpFailures: 0, ledgerFile: join(dir, 'ledger.jsonl') };
    for (let round = 0; round < 3; round++) {
      const credgate = await startCredgate(settings);
      try {
        for (let i = 0; i < BUDGET; i++) await credgate.verify({ username: 'bob', password: `guess-${round}-${i}` });
      } finally {
        await credgate.close();
      }
      assert.equal(failedLogins(dev, 'bob'), BUDGET - 2, `after restart ${round}`);
    }
    // A password that never succeeded through credgate is a new one: throttled, not sent. An ASP gets in.
    const credgate = await startCredgate(settings);
    try {
      dev.setResourceServerJwksUrl(credgate.jwksUrl);
      assert.equal((await credgate.verify({ username: 'bob', password: users.bob!.password })).body.reason, 'throttled');
      const asp = dev.createAppPassword('bob', { scope: 'read:repo' }).password;
      assert.equal((await credgate.verify({ username: 'bob', password: asp })).body.allow, true);
    } finally {
      await credgate.close();
    }
    assert.equal(failedLogins(dev, 'bob'), BUDGET - 2);
    assert.deepEqual(dev.stats().blocked, []);
  });

  test('a replica that keeps its ledger in memory only (no ledgerFile, no Redis) warns at start-up; with ledgerFile it does not', async () => {
    const settings = { issuer: dev.issuer, audience: AUDIENCE, clientId: CLIENT.clientId, clientSecret: CLIENT.clientSecret, passwordFailureBudget: BUDGET };
    const warned = (logs: string[]) => logs.some((line) => JSON.parse(line).level === 40 && /ledger kept in memory only: each restart gives an attacker another 3 guesses per account \(set ledgerFile or redisUrl\)/.test(JSON.parse(line).msg));
    for (const [extra, expected] of [[{}, true], [{ ledgerFile: join(dir, 'other-ledger.jsonl') }, false], [{ passwordFailureBudget: 0 }, false]] as const) {
      const credgate = await startCredgate({ ...settings, ...extra });
      await credgate.close();
      assert.equal(warned(credgate.logs), expected, JSON.stringify(extra));
    }
  });
});
