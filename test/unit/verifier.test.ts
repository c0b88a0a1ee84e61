import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UpstreamError } from '../../src/errors.js';
import { Health } from '../../src/health.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics/registry.js';
import { CredentialCache } from '../../src/verify/cache.js';
import type { Strategy } from '../../src/verify/strategy.js';
import type { Credentials, Identity } from '../../src/verify/types.js';
import { Throttle } from '../../src/verify/throttle.js';
import { Verifier, type VerifierOptions } from '../../src/verify/verifier.js';

const identity: Identity = { subject: 'auth0|a', username: 'alice', credential: 'password', scopes: ['read:repo'], audience: 'aud', expiresAt: undefined };

/** A strategy whose answers the test scripts, slow enough for requests to overlap. */
function scripted(name: Strategy['name'], answer: () => Promise<Identity | null>): Strategy & { calls: number } {
  const s = {
    name,
    calls: 0,
    async authenticate() {
      s.calls++;
      await new Promise((r) => setTimeout(r, 30));
      return answer();
    },
  };
  return s;
}

function verifier(strategies: { passwordGrant: Strategy; appPassword: Strategy; jwt: Strategy }, options: { usernameFailures?: number; now?: () => number; ttlSeconds?: number; negativeTtlSeconds?: number; extra?: Partial<VerifierOptions> } = {}) {
  const metrics = new Metrics('test');
  const v = new Verifier(
    strategies,
    new CredentialCache({ ttlSeconds: options.ttlSeconds ?? 60, negativeTtlSeconds: options.negativeTtlSeconds ?? 0, maxEntries: 100, appPasswordMemorySeconds: 3600 }),
    new Throttle({ usernameFailures: options.usernameFailures ?? 0, ipFailures: 0, windowSeconds: 900, baseDelaySeconds: 30 }, options.now),
    { defaultAudience: 'aud', strategyOrder: ['password_grant', 'app_password'], appPasswordPattern: /^[A-Za-z0-9_-]{32,}$/, tokenUsernames: new Set(['x-access-token', 'oauth2']), decisionTimeoutMs: 5000, ...options.extra },
    metrics,
    new Health({ metadataLoaded: () => true, jwksLoaded: () => true }),
    createLogger({ level: 'silent' }),
  );
  return { v, metrics };
}
const basic: Credentials = { kind: 'basic', username: 'alice', password: 'pw-123456' };

test('concurrent identical requests share one strategy run (singleflight)', async () => {
  const password = scripted('password_grant', async () => identity);
  const { v, metrics } = verifier({ passwordGrant: password, appPassword: scripted('app_password', async () => null), jwt: scripted('token', async () => null) });
  const decisions = await Promise.all(Array.from({ length: 50 }, () => v.verify(basic, { requiredScopes: [] }, 'verify')));
  assert.ok(decisions.every((d) => d.allow));
  assert.equal(password.calls, 1);
  assert.equal((await metrics.coalescedRequests.get()).values[0]?.value, 49);
});

test('different credentials are not coalesced', async () => {
  const password = scripted('password_grant', async () => identity);
  const { v } = verifier({ passwordGrant: password, appPassword: scripted('app_password', async () => null), jwt: scripted('token', async () => null) });
  await Promise.all([v.verify(basic, { requiredScopes: [] }, 'verify'), v.verify({ ...basic, password: 'other-password' }, { requiredScopes: [] }, 'verify')]);
  assert.equal(password.calls, 2);
});

test('strategies run in order: password grant, then app password; an upstream error with no allow is 503', async () => {
  const down = scripted('password_grant', async () => {
    throw new UpstreamError('down', 'token', 'unreachable');
  });
  const asp = scripted('app_password', async () => ({ ...identity, credential: 'app_password' }));
  const { v } = verifier({ passwordGrant: down, appPassword: asp, jwt: scripted('token', async () => null) });
  const allowed = await v.verify(basic, { requiredScopes: [] }, 'verify');
  assert.equal(allowed.allow, true, 'a later strategy may still allow');
  assert.equal(allowed.identity?.credential, 'app_password');

  const none = scripted('app_password', async () => null);
  const { v: v2 } = verifier({ passwordGrant: down, appPassword: none, jwt: scripted('token', async () => null) });
  const unavailable = await v2.verify(basic, { requiredScopes: [] }, 'verify');
  assert.equal(unavailable.status, 503);
  assert.equal(unavailable.reason, 'upstream_unavailable');
  // Not cached: the next request asks again.
  await v2.verify(basic, { requiredScopes: [] }, 'verify');
  assert.equal(none.calls, 2);
});

test('a bug in a strategy (a plain exception) fails closed as 503, never an allow', async () => {
  const buggy = scripted('password_grant', async () => {
    throw new TypeError('boom');
  });
  const { v } = verifier({ passwordGrant: buggy, appPassword: scripted('app_password', async () => null), jwt: scripted('token', async () => null) });
  assert.equal((await v.verify(basic, { requiredScopes: [] }, 'verify')).status, 503);
});

test('a JWT-shaped secret never goes to the password grant', async () => {
  const password = scripted('password_grant', async () => identity);
  const jwt = scripted('token', async () => null);
  const { v } = verifier({ passwordGrant: password, appPassword: scripted('app_password', async () => null), jwt });
  const token = `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from('{}').toString('base64url')}.sig`;
  await v.verify({ kind: 'basic', username: 'alice', password: token }, { requiredScopes: [] }, 'verify');
  assert.equal(password.calls, 0);
  assert.equal(jwt.calls, 1);
});

const aspLike = 'Zm9vYmFyYmF6cXV4cXV1eHh4eHh4eHh4eHh4eHh4eHg';

test('an ASP-shaped password is introspected first: a valid ASP never reaches the password grant', async () => {
  const password = scripted('password_grant', async () => null);
  const asp = scripted('app_password', async () => ({ ...identity, credential: 'app_password' }));
  const { v } = verifier({ passwordGrant: password, appPassword: asp, jwt: scripted('token', async () => null) });
  assert.equal((await v.verify({ kind: 'basic', username: 'alice', password: aspLike }, { requiredScopes: [] }, 'verify')).allow, true);
  assert.equal(password.calls, 0);
});

test('a long random user password that only looks like an ASP still works as a password', async () => {
  const password = scripted('password_grant', async () => identity);
  const asp = scripted('app_password', async () => null);
  const { v } = verifier({ passwordGrant: password, appPassword: asp, jwt: scripted('token', async () => null) });
  const d = await v.verify({ kind: 'basic', username: 'alice', password: aspLike }, { requiredScopes: [] }, 'verify');
  assert.equal(d.identity?.credential, 'password');
  assert.deepEqual([asp.calls, password.calls], [1, 1]);
});

test('a short ASP that proved itself once is introspected first from then on', async () => {
  const password = scripted('password_grant', async () => null);
  const asp = scripted('app_password', async () => ({ ...identity, credential: 'app_password' }));
  const { v } = verifier({ passwordGrant: password, appPassword: asp, jwt: scripted('token', async () => null) });
  const short: Credentials = { kind: 'basic', username: 'alice', password: 'short-asp' };
  await v.verify(short, { requiredScopes: [] }, 'verify');
  assert.equal(password.calls, 1, 'unknown the first time: password grant first');
  v.purgeUser('alice'); // drop the cached decision, keep the ASP memory
  await v.verify(short, { requiredScopes: [] }, 'verify');
  assert.equal(password.calls, 1, 'remembered: introspected first, no second failed login');
});

test('throttling: after the limit the AS is not asked, the back-off grows, and the window forgets', async () => {
  let clock = 1_000_000;
  const password = scripted('password_grant', async () => null);
  const asp = scripted('app_password', async () => null);
  const { v, metrics } = verifier({ passwordGrant: password, appPassword: asp, jwt: scripted('token', async () => null) }, { usernameFailures: 3, now: () => clock });
  const guess = (i: number) => v.verify({ kind: 'basic', username: 'alice', password: `guess-${i}` }, { requiredScopes: [] }, 'verify');
  for (let i = 0; i < 3; i++) assert.equal((await guess(i)).reason, 'invalid_credentials');
  assert.equal(password.calls, 3);
  const throttled = await guess(3);
  assert.deepEqual([throttled.status, throttled.reason, throttled.retryAfterSeconds], [429, 'throttled', 30]);
  assert.equal(password.calls, 3, 'not asked while throttled');
  clock += 29_000;
  assert.equal((await guess(4)).reason, 'throttled', 'state survives within its back-off');
  clock += 1_000;
  assert.equal((await guess(5)).reason, 'invalid_credentials', 'one try after the back-off');
  assert.equal((await guess(6)).retryAfterSeconds, 60, 'the back-off doubles');
  // Another user is unaffected.
  assert.equal((await v.verify({ kind: 'basic', username: 'bob', password: 'x-1' }, { requiredScopes: [] }, 'verify')).reason, 'invalid_credentials');
  clock += 901_000;
  assert.equal((await guess(7)).reason, 'invalid_credentials', 'the window forgets');
  assert.ok(((await metrics.throttledRequests.get()).values[0]?.value ?? 0) >= 3);
});

test('throttling is not a lockout weapon: a cached good credential and a remembered ASP still get in', async () => {
  const grants: string[] = [];
  const passwordGrant: Strategy = {
    name: 'password_grant',
    async authenticate(c) {
      if (c.kind === 'basic') grants.push(c.password);
      return c.kind === 'basic' && c.password === 'alices-real-pw' ? identity : null;
    },
  };
  const appPassword: Strategy = {
    name: 'app_password',
    async authenticate(c) {
      return c.kind === 'basic' && c.password === aspLike ? { ...identity, credential: 'app_password' } : null;
    },
  };
  const { v } = verifier({ passwordGrant, appPassword, jwt: scripted('token', async () => null) }, { usernameFailures: 2 });
  const as = (password: string) => v.verify({ kind: 'basic', username: 'alice', password }, { requiredScopes: [] }, 'verify');
  assert.equal((await as('alices-real-pw')).allow, true);
  assert.equal((await as(aspLike)).allow, true);
  for (let i = 0; i < 5; i++) await as(`attacker-${i}`);
  assert.equal((await as('attacker-9')).reason, 'throttled');
  assert.equal((await as('alices-real-pw')).allow, true, 'a cached good password still gets in');
  v.purgeUser('alice'); // decisions gone; the ASP memory stays
  const grantsBefore = grants.length;
  assert.equal((await as(aspLike)).allow, true, 'a remembered ASP is introspected even while throttled');
  assert.equal(grants.length, grantsBefore, 'and never tried as a password');
  assert.equal((await as('alices-real-pw')).reason, 'throttled', 'an uncached password waits like any other');
});
