import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { startCredgate, type TestCredgate } from '../fixtures/credgate.js';

const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-cache', clientSecret: 'cache-client-secret-value' };
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));

describe('decision cache and request coalescing, counted at the dev AS', () => {
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  before(async () => {
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT], lockoutThreshold: 1000 });
    credgate = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
  });
  after(async () => {
    await credgate.close();
    await dev.close();
  });

  test('a second identical request is served from the cache without asking the AS', async () => {
    const first = await credgate.verify({ username: 'alice', password: users.alice!.password });
    assert.equal(first.body.cached, false);
    const requests = dev.stats().tokenRequests;
    const second = await credgate.verify({ username: 'alice', password: users.alice!.password, scopes: ['read:repo'] });
    assert.equal(second.body.allow, true);
    assert.equal(second.body.cached, true);
    assert.equal(second.body.subject, users.alice!.sub);
    assert.equal(dev.stats().tokenRequests, requests);
  });

  test('a wrong password after a cached right one is still denied', async () => {
    await credgate.verify({ username: 'alice', password: users.alice!.password });
    const wrong = await credgate.verify({ username: 'alice', password: users.alice!.password + 'x' });
    assert.equal(wrong.body.reason, 'invalid_credentials');
    assert.equal(wrong.body.cached, false);
  });

  test('a request needing a scope the cached identity lacks is denied from the cache', async () => {
    await credgate.verify({ username: 'carol', password: users.carol!.password, scopes: ['read:repo'] });
    const requests = dev.stats().tokenRequests;
    const push = await credgate.auth('Basic ' + Buffer.from(`carol:${users.carol!.password}`).toString('base64'), '/auth?scope=write:repo');
    assert.equal(push.status, 403);
    assert.equal(dev.stats().tokenRequests, requests);
  });

  test('200 concurrent identical fresh passwords make exactly one password-grant call', async () => {
    await credgate.service.purge({ username: 'alice' });
    const tokenBefore = dev.stats().tokenRequests;
    const results = await Promise.all(Array.from({ length: 200 }, () => credgate.verify({ username: 'alice', password: users.alice!.password })));
    assert.ok(results.every((r) => r.body.allow === true));
    assert.equal(dev.stats().tokenRequests - tokenBefore, 1);
    const metrics = await (await fetch(`${credgate.url}/metrics`)).text();
    // Each of the other 199 either waited for the one flight or found its result in the cache.
    const count = (re: RegExp) => Number(re.exec(metrics)?.[1] ?? 0);
    assert.ok(count(/credgate_coalesced_requests_total (\d+)/) + count(/credgate_cache_requests_total\{result="hit"\} (\d+)/) >= 199);
    assert.match(metrics, /credgate_cache_entries [1-9]/);
  });

  test('200 concurrent identical fresh app passwords make one introspection call and no password-grant call', async () => {
    const asp = dev.createAppPassword('alice').password;
    const tokenBefore = dev.stats().tokenRequests;
    const introspectionBefore = dev.stats().introspectionRequests;
    const results = await Promise.all(Array.from({ length: 200 }, () => credgate.verify({ username: 'alice', password: asp })));
    assert.ok(results.every((r) => r.body.allow === true && r.body.credential === 'app_password'));
    assert.equal(dev.stats().introspectionRequests - introspectionBefore, 1);
    assert.equal(dev.stats().tokenRequests - tokenBefore, 0, 'an ASP-shaped secret is introspected first');
  });

  test('a long generated password (ASP-shaped) is introspected first once, then goes to the password grant alone', async () => {
    const password = 'Xq7vT2mLp9sR4wZk8bN3cF6hJ1dG5yA0eU'; // 34 characters of base64url: looks like an ASP
    dev.addUser({ sub: 'auth0|gen', username: 'gen', email: 'gen@example.com', password, permissions: ['read:repo'] });
    const count = () => ({ grants: dev.stats().tokenRequests, introspections: dev.stats().introspectionRequests });
    const before = count();
    assert.equal((await credgate.verify({ username: 'gen', password })).body.allow, true);
    const first = count();
    assert.equal(first.grants - before.grants, 1);
    assert.ok(first.introspections - before.introspections >= 1, 'unknown: introspected first');
    await credgate.service.purge({ username: 'gen' }); // the decision goes; what credgate learnt stays
    const second = await credgate.verify({ username: 'gen', password });
    assert.equal(second.body.allow, true);
    assert.equal(second.body.cached, false);
    assert.deepEqual({ grants: count().grants - first.grants, introspections: count().introspections - first.introspections }, { grants: 1, introspections: 0 }, 'known as a password: the grant alone');
  });

  test('a purge makes the next request ask the AS again', async () => {
    await credgate.verify({ username: 'alice', password: users.alice!.password });
    assert.ok((await credgate.service.purge({ username: 'alice' })).purged >= 1);
    const requests = dev.stats().tokenRequests;
    const after = await credgate.verify({ username: 'alice', password: users.alice!.password });
    assert.equal(after.body.cached, false);
    assert.equal(dev.stats().tokenRequests, requests + 1);
  });

  test('the cache holds no secret in its keys and no key reached the logs', () => {
    const text = credgate.logs.join('');
    for (const user of Object.values(users)) assert.ok(!text.includes(user.password));
  });
});
