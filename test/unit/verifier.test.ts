import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UpstreamError } from '../../src/errors.js';
import type { SharedMemory } from '../../src/verify/shared.js';
import type { Strategy } from '../../src/verify/strategy.js';
import type { Credentials, Identity } from '../../src/verify/types.js';
import { grantOk, grantStrategy, grantWrong, scripted, testVerifier, type TestVerifierOptions } from '../fixtures/verifier.js';

const identity: Identity = { subject: 'auth0|a', username: 'alice', credential: 'password', scopes: ['read:repo'], audience: 'aud', expiresAt: undefined };

function verifier(strategies: { passwordGrant: Strategy; appPassword: Strategy; jwt: Strategy }, options: TestVerifierOptions = {}) {
  return testVerifier(() => ({ password_grant: strategies.passwordGrant, app_password: strategies.appPassword, token: strategies.jwt }), options);
}
const basic: Credentials = { kind: 'basic', username: 'alice', password: 'pw-123456' };

test('concurrent identical requests share one strategy run (singleflight)', async () => {
  const password = scripted('password_grant', async () => identity);
  const { v, metrics } = verifier({ passwordGrant: password, appPassword: scripted('app_password', async () => null), jwt: scripted('token', async () => null) });
  const decisions = await Promise.all(Array.from({ length: 50 }, () => v.verify(basic, { requiredScopes: [] })));
  assert.ok(decisions.every((d) => d.allow));
  assert.equal(password.calls, 1);
  assert.equal((await metrics.coalescedRequests.get()).values[0]?.value, 49);
});

test('a request still asking shared state when an identical flight ends takes that answer instead of asking the AS again', async () => {
  // With Redis, a miss waits on the network (recall, throttle) before it looks for a flight: the
  // flight it should have joined can end meanwhile. Its answer is in the local cache by then.
  const password = scripted('password_grant', async () => identity);
  let releaseSecond!: () => void;
  const secondRecall = new Promise<void>((r) => (releaseSecond = r));
  let recalls = 0;
  const shared: SharedMemory = {
    async recall() {
      if (++recalls === 2) await secondRecall;
      return { denied: false, appPassword: false, knownPassword: false };
    },
    async rememberDenied() {},
    async rememberAppPassword() {},
    async rememberPassword() {},
    async forgetPassword() {},
  };
  const { v, metrics } = verifier({ passwordGrant: password, appPassword: scripted('app_password', async () => null), jwt: scripted('token', async () => null) }, { shared });
  const first = v.verify(basic, { requiredScopes: [] });
  const second = v.verify(basic, { requiredScopes: [] });
  assert.equal((await first).allow, true);
  releaseSecond();
  const late = await second;
  assert.equal(late.allow, true);
  assert.equal(late.cached, false, 'it missed the cache and shared a flight, as a coalesced request does');
  assert.equal(password.calls, 1, 'one call to the AS');
  assert.equal((await metrics.coalescedRequests.get()).values[0]?.value, 1);
});

test('different credentials are not coalesced', async () => {
  const password = scripted('password_grant', async () => identity);
  const { v } = verifier({ passwordGrant: password, appPassword: scripted('app_password', async () => null), jwt: scripted('token', async () => null) });
  await Promise.all([v.verify(basic, { requiredScopes: [] }), v.verify({ ...basic, password: 'other-password' }, { requiredScopes: [] })]);
  assert.equal(password.calls, 2);
});

test('strategies run in order: password grant, then app password; an upstream error with no allow is 503', async () => {
  const down = scripted('password_grant', async () => {
    throw new UpstreamError('down', 'token', 'unreachable');
  });
  const asp = scripted('app_password', async () => ({ ...identity, credential: 'app_password' }));
  const { v } = verifier({ passwordGrant: down, appPassword: asp, jwt: scripted('token', async () => null) });
  const allowed = await v.verify(basic, { requiredScopes: [] });
  assert.equal(allowed.allow, true, 'a later strategy may still allow');
  assert.equal(allowed.identity?.credential, 'app_password');

  const none = scripted('app_password', async () => null);
  const { v: v2 } = verifier({ passwordGrant: down, appPassword: none, jwt: scripted('token', async () => null) });
  const unavailable = await v2.verify(basic, { requiredScopes: [] });
  assert.equal(unavailable.status, 503);
  assert.equal(unavailable.reason, 'upstream_unavailable');
  // Not cached: the next request asks again.
  await v2.verify(basic, { requiredScopes: [] });
  assert.equal(none.calls, 2);
});

test('a bug in a strategy (a plain exception) fails closed as 503, never an allow', async () => {
  const buggy = scripted('password_grant', async () => {
    throw new TypeError('boom');
  });
  const { v } = verifier({ passwordGrant: buggy, appPassword: scripted('app_password', async () => null), jwt: scripted('token', async () => null) });
  assert.equal((await v.verify(basic, { requiredScopes: [] })).status, 503);
});

test('a JWT-shaped secret never goes to the password grant', async () => {
  const password = scripted('password_grant', async () => identity);
  const jwt = scripted('token', async () => null);
  const { v } = verifier({ passwordGrant: password, appPassword: scripted('app_password', async () => null), jwt });
  const token = `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from('{}').toString('base64url')}.sig`;
  await v.verify({ kind: 'basic', username: 'alice', password: token }, { requiredScopes: [] });
  assert.equal(password.calls, 0);
  assert.equal(jwt.calls, 1);
});

const aspLike = 'Zm9vYmFyYmF6cXV4cXV1eHh4eHh4eHh4eHh4eHh4eHg';

test('an ASP-shaped password is introspected first: a valid ASP never reaches the password grant', async () => {
  const password = scripted('password_grant', async () => null);
  const asp = scripted('app_password', async () => ({ ...identity, credential: 'app_password' }));
  const { v } = verifier({ passwordGrant: password, appPassword: asp, jwt: scripted('token', async () => null) });
  assert.equal((await v.verify({ kind: 'basic', username: 'alice', password: aspLike }, { requiredScopes: [] })).allow, true);
  assert.equal(password.calls, 0);
});

test('a long random user password that only looks like an ASP still works as a password', async () => {
  const password = scripted('password_grant', async () => identity);
  const asp = scripted('app_password', async () => null);
  const { v } = verifier({ passwordGrant: password, appPassword: asp, jwt: scripted('token', async () => null) });
  const d = await v.verify({ kind: 'basic', username: 'alice', password: aspLike }, { requiredScopes: [] });
  assert.equal(d.identity?.credential, 'password');
  assert.deepEqual([asp.calls, password.calls], [1, 1]);
});

test('a short ASP that proved itself once is introspected first from then on', async () => {
  const password = scripted('password_grant', async () => null);
  const asp = scripted('app_password', async () => ({ ...identity, credential: 'app_password' }));
  const { v } = verifier({ passwordGrant: password, appPassword: asp, jwt: scripted('token', async () => null) });
  const short: Credentials = { kind: 'basic', username: 'alice', password: 'short-asp' };
  await v.verify(short, { requiredScopes: [] });
  assert.equal(password.calls, 1, 'unknown the first time: password grant first');
  await v.purgeAccount(v.accountOf({ username: 'alice' })); // drop the cached decision, keep the ASP memory
  await v.verify(short, { requiredScopes: [] });
  assert.equal(password.calls, 1, 'remembered: introspected first, no second failed login');
});


// ---- Login protection (the ledger, through the real password-grant strategy) ----------------------

const ALICE = { sub: 'auth0|alice', username: 'alice', email: 'alice@example.com', scope: 'read:repo' };
/** A token endpoint that knows one password per name (alice's two login names). */
const aliceAs = (good = 'alices-real-pw') => async (username: string, password: string) =>
  (username === 'alice' || username === 'alice@example.com') && password === good ? grantOk(ALICE) : grantWrong;
const aspOfAlice = (aud = 'aud') => async (password: string) =>
  password.startsWith('asp-') ? ({ kind: 'identity', identity: { ...identity, subject: ALICE.sub, credential: 'app_password', audience: aud }, loginNames: ['alice', 'alice@example.com'] } as const) : null;
const as = (v: ReturnType<typeof testVerifier>['v'], username: string, password: string) => v.verify({ kind: 'basic', username, password }, { requiredScopes: [] });

test('an ASP-shaped password that succeeded as a password goes to the grant first from then on (no introspection it would lose)', async () => {
  let current = aspLike;
  let grant!: ReturnType<typeof grantStrategy>;
  const asp = scripted('app_password', async () => null);
  const { v } = testVerifier(({ ledger, cache }) => ({ password_grant: (grant = grantStrategy(async (_u, p) => (p === current ? grantOk(ALICE) : grantWrong), ledger, cache)), app_password: asp }), { ttlSeconds: 0 });
  assert.equal((await as(v, 'alice', aspLike)).allow, true);
  assert.deepEqual([asp.calls, grant.calls], [1, 1], 'unknown the first time: introspected first');
  assert.equal((await as(v, 'alice', aspLike)).allow, true);
  assert.deepEqual([asp.calls, grant.calls], [1, 2], 'known as a password: the grant alone');
  // Changed at the AS meanwhile: the grant fails, introspection still gets its turn, and the
  // password is no longer known, so the next try is introspected first again.
  current = 'a-new-password';
  assert.equal((await as(v, 'alice', aspLike)).reason, 'invalid_credentials');
  assert.deepEqual([asp.calls, grant.calls], [2, 3]);
  await as(v, 'alice', aspLike);
  assert.deepEqual([asp.calls, grant.calls], [3, 4], 'forgotten after the failure: introspected first');
});

test('a concurrent burst of 40 wrong passwords sends at most budget − 2 grants; the rest are throttled', async () => {
  let grant!: ReturnType<typeof grantStrategy>;
  const { v } = testVerifier(({ ledger, cache }) => ({ password_grant: (grant = grantStrategy(aliceAs(), ledger, cache)), app_password: scripted('app_password', async () => null) }));
  const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => as(v, 'alice', `guess-${i}`)));
  assert.equal(grant.calls, 3, 'reserved before sending, atomically');
  assert.equal(answers.filter((d) => d.reason === 'throttled').length, 37);
  assert.equal(answers.filter((d) => d.reason === 'invalid_credentials').length, 3);
});

test('a slow drip over weeks never gets past the budget: failures are forgotten only after the memory (30 days)', async () => {
  let clock = 1_000_000_000;
  let grant!: ReturnType<typeof grantStrategy>;
  const { v } = testVerifier(({ ledger, cache }) => ({ password_grant: (grant = grantStrategy(aliceAs(), ledger, cache)) }), { now: () => clock });
  for (let day = 0; day < 29; day++) {
    await as(v, 'alice', `guess-${day}`);
    clock += 86_400_000;
  }
  assert.equal(grant.calls, 3, 'one guess a day for 29 days: still only 3 reached the AS');
  assert.equal((await as(v, 'alice', 'guess-29')).reason, 'throttled', '29 days after the last failure that reached the AS');
  clock += 4 * 86_400_000; // 30 days after the last failure the AS has forgotten it too
  await as(v, 'alice', 'guess-late');
  assert.equal(grant.calls, 4);
});

test('the real user gets in while the budget is spent: a known-good password, then an ASP; the success clears the ledger', async () => {
  let grant!: ReturnType<typeof grantStrategy>;
  const asp = scripted('app_password', aspOfAlice(), 0);
  const { v, ledger } = testVerifier(({ ledger, cache }) => ({ password_grant: (grant = grantStrategy(aliceAs(), ledger, cache)), app_password: asp }), { ttlSeconds: 0 });
  assert.equal((await as(v, 'alice', 'alices-real-pw')).allow, true, 'remembered as good');
  for (let i = 0; i < 10; i++) await as(v, 'alice', `attacker-${i}`);
  assert.equal((await as(v, 'alice', 'attacker-x')).reason, 'throttled');
  const sent = grant.calls;
  assert.equal((await as(v, 'alice', 'asp-brand-new')).allow, true, 'a new ASP is introspected although the account is throttled');
  assert.equal(grant.calls, sent, 'and sends no grant');
  assert.equal((await as(v, 'alice', 'a-new-password')).reason, 'throttled', 'a password not known to be good waits');
  assert.equal((await as(v, 'alice', 'alices-real-pw')).allow, true, 'the known-good password uses the slot kept for it');
  assert.equal(ledger.unsettled('alice'), 0, 'its success cleared the account, as at the AS');
  assert.equal((await as(v, 'alice', 'attacker-y')).reason, 'invalid_credentials', 'guesses start again from zero');
});

test('aliases share one budget once an account succeeded under them (username and e-mail claims)', async () => {
  let grant!: ReturnType<typeof grantStrategy>;
  const { v } = testVerifier(({ ledger, cache }) => ({ password_grant: (grant = grantStrategy(aliceAs(), ledger, cache)) }));
  assert.equal((await as(v, 'alice', 'alices-real-pw')).allow, true);
  for (let i = 0; i < 5; i++) {
    await as(v, 'alice', `a-${i}`);
    await as(v, 'ALICE@example.com', `b-${i}`);
  }
  assert.equal(grant.calls - 1, 3, 'both names together: budget − 2 guesses');
});

test('an ASP sent with another name or for another audience is refused and never tried as a password', async () => {
  let grant!: ReturnType<typeof grantStrategy>;
  const asp = scripted('app_password', async (p) => (p.startsWith('asp-') ? { kind: 'refused' } : null), 0);
  const { v } = testVerifier(({ ledger, cache }) => ({ password_grant: (grant = grantStrategy(aliceAs(), ledger, cache)), app_password: asp }));
  const aspShaped = 'asp-' + 'x'.repeat(40);
  for (let i = 0; i < 5; i++) assert.equal((await as(v, 'alice@example.com', aspShaped + i)).reason, 'invalid_credentials');
  assert.equal(grant.calls, 0);
});

test('wrong password, then introspection down: the failure counts and the answer is 503; the budget still holds', async () => {
  let grant!: ReturnType<typeof grantStrategy>;
  const down = scripted('app_password', async () => { throw new UpstreamError('down', 'introspection', 'unreachable'); }, 0);
  const { v } = testVerifier(({ ledger, cache }) => ({ password_grant: (grant = grantStrategy(aliceAs(), ledger, cache)), app_password: down }));
  const answers = [];
  for (let i = 0; i < 40; i++) answers.push((await as(v, 'alice', `guess-${i}`)).reason);
  assert.equal(grant.calls, 3, 'not an unthrottled password oracle');
  assert.ok(answers.every((r) => r === 'upstream_unavailable'));
});

test('a stale identity is never served for a password the AS has just rejected', async () => {
  const { StaleIdentities } = await import('../../src/verify/staleIdentities.js');
  let good = 'old-password';
  const down = scripted('app_password', async () => { throw new UpstreamError('down', 'introspection', 'unreachable'); }, 0);
  const { v } = testVerifier(({ ledger, cache }) => ({ password_grant: grantStrategy((u, p) => aliceAs(good)(u, p), ledger, cache), app_password: down }), { ttlSeconds: 0, stale: new StaleIdentities(3600, 100) });
  assert.equal((await as(v, 'alice', 'old-password')).allow, true);
  good = 'changed-password';
  const after = await as(v, 'alice', 'old-password');
  assert.equal(after.allow, false);
  assert.equal(after.reason, 'upstream_unavailable');
});

test('a grant that never settles counts as a failure once its reservation expires', async () => {
  let clock = 1_000_000_000;
  const { ledger } = testVerifier(() => ({}), { now: () => clock });
  const a = ledger.admitNow('carol', false);
  assert.ok(a.admitted);
  assert.equal(ledger.unsettled('carol'), 1);
  clock += 11_000;
  assert.equal(ledger.unsettled('carol'), 1, 'counted as a failure now');
  await ledger.settle(a, 'failure');
  assert.equal(ledger.unsettled('carol'), 1, 'and not twice when it settles late');
  const b = ledger.admitNow('carol', false);
  assert.ok(b.admitted);
  await ledger.settle(b, 'success');
  assert.equal(ledger.unsettled('carol'), 0);
});

test('confusable names of two accounts: one account\'s success does not clear failures typed under the other\'s name', async () => {
  const { ledger, accounts } = testVerifier(() => ({}));
  accounts.link('auth0|victim', ['jos\u00e9']);
  accounts.link('auth0|attacker', ['jose\u0301']); // the same ledger name (NFKC): shared
  for (let i = 0; i < 2; i++) {
    const a = ledger.admitNow('jos\u00e9', false);
    assert.ok(a.admitted);
    await ledger.settle(a, 'failure');
  }
  const own = ledger.admitNow('jose\u0301', true);
  assert.ok(own.admitted);
  await ledger.settle(own, 'success', 'auth0|attacker');
  await ledger.link('auth0|attacker', ['jose\u0301']);
  assert.equal(ledger.unsettled('jos\u00e9'), 2, "the attacker's own login cleared nothing typed as the victim's name");
});

test('a decision this process has cached is made at once (no promise); one that must ask the AS or shared state is a promise', async () => {
  const password = scripted('password_grant', async (given) => (given === basic.password ? identity : null));
  const { v } = verifier({ passwordGrant: password, appPassword: scripted('app_password', async () => null), jwt: scripted('token', async () => null) }, { negativeTtlSeconds: 30 });
  const first = v.verify(basic, { requiredScopes: [] });
  assert.ok(first instanceof Promise, 'a miss waits for the AS');
  assert.equal((await first).allow, true);
  const again = v.verify(basic, { requiredScopes: [] });
  assert.ok(!(again instanceof Promise), 'a cached identity answers on the same turn');
  assert.deepEqual([again.allow, again.cached], [true, true]);
  // Scopes are still checked per request on the synchronous path.
  const more = v.verify(basic, { requiredScopes: ['write:repo'] });
  assert.ok(!(more instanceof Promise));
  assert.deepEqual([more.allow, more.reason, more.missingScopes], [false, 'insufficient_scope', ['write:repo']]);
  // A known-wrong credential too.
  const wrong = { ...basic, password: 'not-it-123' };
  assert.equal((await v.verify(wrong, { requiredScopes: [] })).allow, false);
  const denied = v.verify(wrong, { requiredScopes: [] });
  assert.ok(!(denied instanceof Promise));
  assert.deepEqual([denied.reason, denied.cached], ['invalid_credentials', true]);
  assert.equal(password.calls, 2);
});

test('a JWT is not remembered as an app password (it is only ever checked as a token); an opaque token that introspection accepted is', async () => {
  const jwt = `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from('{"sub":"auth0|a"}').toString('base64url')}.c2ln`;
  const asToken: Identity = { ...identity, credential: 'access_token' };
  const remembered: string[] = [];
  const shared: SharedMemory = {
    async recall() {
      return { denied: false, appPassword: false, knownPassword: false };
    },
    async rememberDenied() {},
    async rememberAppPassword(key) {
      remembered.push(key);
    },
    async rememberPassword() {},
    async forgetPassword() {},
  };
  const { v, cache } = verifier({ passwordGrant: scripted('password_grant', async () => null), appPassword: scripted('app_password', async () => asToken), jwt: scripted('token', async () => asToken) }, { shared });
  const bearerJwt: Credentials = { kind: 'bearer', token: jwt };
  const opaque: Credentials = { kind: 'bearer', token: 'opaque-token-1234567890' };
  assert.equal((await v.verify(bearerJwt, { requiredScopes: [] })).allow, true);
  assert.equal((await v.verify(opaque, { requiredScopes: [] })).allow, true);
  assert.equal(cache.isKnownAppPassword(cache.keyFor(bearerJwt, 'aud')), false);
  assert.equal(cache.isKnownAppPassword(cache.keyFor(opaque, 'aud')), true);
  assert.deepEqual(remembered, [cache.keyFor(opaque, 'aud')], 'only the opaque token reached the shared state');
});
