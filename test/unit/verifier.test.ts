import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UpstreamError } from '../../src/errors.js';
import { Health } from '../../src/health.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics/registry.js';
import { CredentialCache } from '../../src/verify/cache.js';
import type { Strategy } from '../../src/verify/strategy.js';
import type { Credentials, Identity } from '../../src/verify/types.js';
import { Verifier } from '../../src/verify/verifier.js';

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

function verifier(strategies: { passwordGrant: Strategy; appPassword: Strategy; jwt: Strategy }) {
  const metrics = new Metrics('test');
  const v = new Verifier(strategies, new CredentialCache({ ttlSeconds: 60, negativeTtlSeconds: 5, maxEntries: 10 }), 'aud', metrics, new Health({ metadataLoaded: () => true, jwksLoaded: () => true }), createLogger({ level: 'silent' }));
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
