import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UpstreamError } from '../../src/errors.js';
import { Health } from '../../src/health.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics/registry.js';
import { remainingMs } from '../../src/upstream/deadline.js';
import { CredentialCache } from '../../src/verify/cache.js';
import { StaleIdentities } from '../../src/verify/staleIdentities.js';
import type { Strategy } from '../../src/verify/strategy.js';
import type { Credentials, Identity } from '../../src/verify/types.js';
import { Throttle } from '../../src/verify/throttle.js';
import { Verifier } from '../../src/verify/verifier.js';

const identity: Identity = { subject: 'auth0|a', username: 'alice', credential: 'app_password', scopes: ['read:repo'], audience: 'aud', expiresAt: undefined };
const basic: Credentials = { kind: 'basic', username: 'alice', password: 'pw-123456' };
const none: Strategy = { name: 'token', authenticate: async () => null };

function verifier(appPassword: Strategy, o: { decisionTimeoutMs?: number; ttlSeconds?: number; stale?: StaleIdentities } = {}) {
  const metrics = new Metrics('test');
  const v = new Verifier(
    { passwordGrant: none, appPassword, jwt: none },
    new CredentialCache({ ttlSeconds: o.ttlSeconds ?? 60, negativeTtlSeconds: 0, maxEntries: 100, appPasswordMemorySeconds: 0 }),
    new Throttle({ usernameFailures: 0, ipFailures: 0, windowSeconds: 900, baseDelaySeconds: 30 }),
    { defaultAudience: 'aud', strategyOrder: ['app_password'], appPasswordPattern: undefined, tokenUsernames: new Set(), decisionTimeoutMs: o.decisionTimeoutMs ?? 5000, staleIdentities: o.stale },
    metrics,
    new Health({ metadataLoaded: () => true, jwksLoaded: () => true }),
    createLogger({ level: 'silent' }),
  );
  return { v, metrics };
}

test('a strategy that never returns is cut off at the decision deadline: 503, never an allow', async () => {
  const hanging: Strategy = { name: 'app_password', authenticate: () => new Promise(() => {}) };
  const { v, metrics } = verifier(hanging, { decisionTimeoutMs: 150 });
  const started = Date.now();
  const decision = await v.verify(basic, { requiredScopes: [] }, 'verify');
  const ms = Date.now() - started;
  assert.equal(decision.reason, 'upstream_unavailable');
  assert.equal(decision.allow, false);
  assert.ok(ms >= 140 && ms < 400, `${ms} ms`);
  assert.equal((await metrics.decisionTimeouts.get()).values[0]?.value, 1);
});

test('the deadline travels with the decision into the strategies (and is absent outside one)', async () => {
  let seen = Infinity;
  const probe: Strategy = { name: 'app_password', authenticate: async (_c, context) => ((seen = remainingMs(context.deadline)), identity) };
  const { v } = verifier(probe, { decisionTimeoutMs: 1000 });
  await v.verify(basic, { requiredScopes: [] }, 'verify');
  assert.ok(seen > 900 && seen <= 1000, `${seen} ms left`);
  assert.equal(remainingMs(undefined), Infinity);
});

test('an answer that arrives after a waiter gave up is still cached for the next request', async () => {
  let calls = 0;
  const late: Strategy = { name: 'app_password', authenticate: async () => (calls++, await new Promise((r) => setTimeout(r, 200)), identity) };
  const { v } = verifier(late, { decisionTimeoutMs: 100 });
  assert.equal((await v.verify(basic, { requiredScopes: [] }, 'verify')).reason, 'upstream_unavailable');
  await new Promise((r) => setTimeout(r, 150));
  const next = await v.verify(basic, { requiredScopes: [] }, 'verify');
  assert.equal(next.allow, true);
  assert.equal(next.cached, true);
  assert.equal(calls, 1);
});

test('stale-if-error: a recently verified identity answers while the AS fails, with scopes checked; a denial forgets it', async () => {
  let answer: () => Promise<Identity | null> = async () => identity;
  const strategy: Strategy = { name: 'app_password', authenticate: () => answer() };
  const stale = new StaleIdentities(60, 100);
  const { v, metrics } = verifier(strategy, { ttlSeconds: 0, stale }); // nothing fresh in the cache: every request asks
  assert.equal((await v.verify(basic, { requiredScopes: [] }, 'verify')).cached, false);

  answer = async () => { throw new UpstreamError('down', 'introspection', 'unreachable'); };
  const served = await v.verify(basic, { requiredScopes: ['read:repo'] }, 'verify');
  assert.equal(served.allow, true);
  assert.equal(served.cached, true);
  assert.equal(served.identity?.subject, 'auth0|a');
  assert.equal((await v.verify(basic, { requiredScopes: ['write:repo'] }, 'verify')).reason, 'insufficient_scope');
  assert.equal((await v.verify({ ...basic, password: 'another' }, { requiredScopes: [] }, 'verify')).reason, 'upstream_unavailable');
  assert.equal((await metrics.staleIdentitiesServed.get()).values[0]?.value, 2);

  answer = async () => null; // the AS answers again, and says no
  assert.equal((await v.verify(basic, { requiredScopes: [] }, 'verify')).reason, 'invalid_credentials');
  answer = async () => { throw new UpstreamError('down', 'introspection', 'unreachable'); };
  assert.equal((await v.verify(basic, { requiredScopes: [] }, 'verify')).reason, 'upstream_unavailable');
});

test('stale-if-error never outlives the grace period, the credential\'s own exp, or a purge', () => {
  const stale = new StaleIdentities(10, 100);
  const now = 1_000_000_000_000;
  stale.remember('k', identity, 5, 'alice', now);
  assert.ok(stale.get('k', now + 14_000));
  assert.equal(stale.get('k', now + 14_000)?.staleForSeconds, 9);
  stale.remember('e', { ...identity, expiresAt: now / 1000 + 3 }, 5, 'alice', now);
  assert.ok(stale.get('e', now + 2_000));
  assert.equal(stale.get('e', now + 3_000), undefined, 'expired credential');
  stale.remember('p', identity, 5, 'Alice', now);
  assert.equal(stale.purgeUser('ALICE'), 3);
  assert.equal(stale.get('k', now + 1000), undefined);
});
