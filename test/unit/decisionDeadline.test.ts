import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UpstreamError } from '../../src/errors.js';
import { remainingMs } from '../../src/upstream/deadline.js';
import { StaleIdentities } from '../../src/verify/staleIdentities.js';
import type { Strategy } from '../../src/verify/strategy.js';
import type { Credentials, Identity } from '../../src/verify/types.js';
import { outcomeOf, testVerifier } from '../fixtures/verifier.js';

const identity: Identity = { subject: 'auth0|a', username: 'alice', credential: 'app_password', scopes: ['read:repo'], audience: 'aud', expiresAt: undefined };
const basic: Credentials = { kind: 'basic', username: 'alice', password: 'pw-123456' };

function verifier(appPassword: Strategy, o: { decisionTimeoutMs?: number; ttlSeconds?: number; stale?: StaleIdentities } = {}) {
  return testVerifier(() => ({ app_password: appPassword }), { ttlSeconds: o.ttlSeconds, stale: o.stale, extra: { strategyOrder: ['app_password'], appPasswordPattern: undefined, decisionTimeoutMs: o.decisionTimeoutMs ?? 5000 } });
}
const strategy = (authenticate: Strategy['authenticate']): Strategy => ({ name: 'app_password', costsLoginAttempt: false, authenticate });

test('a strategy that never returns is cut off at the decision deadline: 503, never an allow', async () => {
  const hanging = strategy(() => new Promise(() => {}));
  const { v, metrics } = verifier(hanging, { decisionTimeoutMs: 150 });
  const started = Date.now();
  const decision = await v.verify(basic, { requiredScopes: [] });
  const ms = Date.now() - started;
  assert.equal(decision.reason, 'upstream_unavailable');
  assert.equal(decision.allow, false);
  assert.ok(ms >= 140 && ms < 400, `${ms} ms`);
  assert.equal((await metrics.decisionTimeouts.get()).values[0]?.value, 1);
});

test('at the deadline the calls a decision made are abandoned: the signal they carry aborts; a decision made in time leaves none behind', async () => {
  let signal: AbortSignal | undefined;
  const calling = strategy((_c, context) => ((signal = context.deadline!.signal), new Promise(() => {})));
  const { v } = verifier(calling, { decisionTimeoutMs: 150 });
  assert.equal((await v.verify(basic, { requiredScopes: [] })).reason, 'upstream_unavailable');
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(signal?.aborted, true, 'the call to the AS is aborted, not left to its own timeout');
  assert.equal((signal?.reason as Error).name, 'TimeoutError');

  let answered: AbortSignal | undefined;
  const quick = strategy(async (_c, context) => ((answered = context.deadline!.signal), outcomeOf(identity)));
  const { v: v2 } = verifier(quick, { decisionTimeoutMs: 100 });
  assert.equal((await v2.verify(basic, { requiredScopes: [] })).allow, true);
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(answered?.aborted, false, 'disposed with the decision: its timer never fired');
});

test('the deadline travels with the decision into the strategies (and is absent outside one)', async () => {
  let seen = Infinity;
  const probe = strategy(async (_c, context) => ((seen = remainingMs(context.deadline)), outcomeOf(identity)));
  const { v } = verifier(probe, { decisionTimeoutMs: 1000 });
  await v.verify(basic, { requiredScopes: [] });
  assert.ok(seen > 900 && seen <= 1000, `${seen} ms left`);
  assert.equal(remainingMs(undefined), Infinity);
});

test('an answer that arrives after a waiter gave up is still cached for the next request', async () => {
  let calls = 0;
  const late = strategy(async () => (calls++, await new Promise((r) => setTimeout(r, 200)), outcomeOf(identity)));
  const { v } = verifier(late, { decisionTimeoutMs: 100 });
  assert.equal((await v.verify(basic, { requiredScopes: [] })).reason, 'upstream_unavailable');
  await new Promise((r) => setTimeout(r, 150));
  const next = await v.verify(basic, { requiredScopes: [] });
  assert.equal(next.allow, true);
  assert.equal(next.cached, true);
  assert.equal(calls, 1);
});

test('stale-if-error: a recently verified identity answers while the AS fails, with scopes checked; a denial forgets it', async () => {
  let answer: () => Promise<Identity | null> = async () => identity;
  const scriptedStale = strategy(async () => outcomeOf(await answer()));
  const stale = new StaleIdentities(60, 100);
  const { v, metrics } = verifier(scriptedStale, { ttlSeconds: 0, stale }); // nothing fresh in the cache: every request asks
  assert.equal((await v.verify(basic, { requiredScopes: [] })).cached, false);

  answer = async () => { throw new UpstreamError('down', 'introspection', 'unreachable'); };
  const served = await v.verify(basic, { requiredScopes: ['read:repo'] });
  assert.equal(served.allow, true);
  assert.equal(served.cached, true);
  assert.equal(served.identity?.subject, 'auth0|a');
  assert.equal((await v.verify(basic, { requiredScopes: ['write:repo'] })).reason, 'insufficient_scope');
  assert.equal((await v.verify({ ...basic, password: 'another' }, { requiredScopes: [] })).reason, 'upstream_unavailable');
  assert.equal((await metrics.staleIdentitiesServed.get()).values[0]?.value, 2);

  answer = async () => null; // the AS answers again, and says no
  assert.equal((await v.verify(basic, { requiredScopes: [] })).reason, 'invalid_credentials');
  answer = async () => { throw new UpstreamError('down', 'introspection', 'unreachable'); };
  assert.equal((await v.verify(basic, { requiredScopes: [] })).reason, 'upstream_unavailable');
});

test('stale-if-error never outlives the grace period, the credential\'s own exp, or a purge', () => {
  const stale = new StaleIdentities(10, 100);
  const now = 1_000_000_000_000;
  stale.remember('k', identity, 5, now);
  assert.ok(stale.get('k', now + 14_000));
  assert.equal(stale.get('k', now + 14_000)?.staleForSeconds, 9);
  stale.remember('e', { ...identity, expiresAt: now / 1000 + 3 }, 5, now);
  assert.ok(stale.get('e', now + 2_000));
  assert.equal(stale.get('e', now + 3_000), undefined, 'expired credential');
  stale.remember('p', identity, 5, now);
  stale.remember('q', { ...identity, subject: 'auth0|other' }, 5, now);
  assert.equal(stale.purgeSubjects(new Set(['auth0|a'])), 3, 'every entry of the account, none of another');
  assert.ok(stale.get('q', now + 1000));
  assert.equal(stale.get('k', now + 1000), undefined);
});
