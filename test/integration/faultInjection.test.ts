import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { answers, credgateConfigFor, type FakeAnswer, type FakeAuthorizationServer, startFakeAuthorizationServer } from '../fixtures/fakeAuthorizationServer.js';
import { metricValue } from '../fixtures/metrics.js';
import { freePort } from '../fixtures/processes.js';

const AUDIENCE = 'https://git.example.com';
const USER = { username: 'alice@example.com', password: 'a-password-that-is-long-enough' };
const DECISION_TIMEOUT_MS = 1200;
/** Time an answer may take beyond the decision deadline on a loaded 2-core machine (HTTP, logging). */
const SLACK_MS = 600;
const WRONG_PASSWORD = answers.json(403, { error: 'invalid_grant', error_description: 'Wrong email or password.' });
const INACTIVE = answers.json(200, { active: false });

function base(issuer: string) {
  return {
    ...credgateConfigFor(issuer, AUDIENCE),
    upstreamTimeoutMs: 700,
    upstreamConnectTimeoutMs: 300,
    decisionTimeoutMs: DECISION_TIMEOUT_MS,
    upstreamRetries: 1,
    cacheTtlSeconds: 0,
    negativeCacheTtlSeconds: 0,
  };
}

/** Asks through /v1/verify and /auth; asserts a 503 that is never an allow, each within the deadline. */
async function assertUnavailableInTime(credgate: TestCredgate, what: string): Promise<void> {
  let started = Date.now();
  const { status, body } = await credgate.verify(USER);
  const verifyMs = Date.now() - started;
  assert.equal(status, 503, `${what}: /v1/verify status`);
  assert.equal(body.allow, false);
  assert.equal(body.reason, 'upstream_unavailable');
  assert.ok(verifyMs < DECISION_TIMEOUT_MS + SLACK_MS, `${what}: /v1/verify took ${verifyMs} ms`);
  started = Date.now();
  const auth = await credgate.auth(basicHeader(USER.username, USER.password));
  const authMs = Date.now() - started;
  assert.equal(auth.status, 503, `${what}: /auth status`);
  assert.equal(auth.headers.get('x-auth-subject'), null);
  assert.ok(auth.headers.get('retry-after'));
  assert.ok(authMs < DECISION_TIMEOUT_MS + SLACK_MS, `${what}: /auth took ${authMs} ms`);
}

async function waitFor(what: string, withinMs: number, check: () => Promise<boolean>): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < withinMs) {
    if (await check()) return Date.now() - started;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${what} did not happen within ${withinMs} ms`);
}

const body200 = (text: string | Buffer, contentType = 'application/json'): FakeAnswer => ({ status: 200, body: text, contentType });
const validAsp = { active: true, token_type: 'application_specific_password_token', sub: 'auth0|alice', aud: AUDIENCE, username: USER.username, scope: 'read:repo' };

describe('fault injection: each fault is a 503 within the deadline, never an allow, and the AS recovers', () => {
  let fake: FakeAuthorizationServer;
  let credgate: TestCredgate;

  before(async () => {
    fake = await startFakeAuthorizationServer();
    // No breaker here: every case must reach the AS. The breaker has its own tests below.
    credgate = await startCredgate({ ...base(fake.issuer), breakerFailureThreshold: 0 });
  });
  after(async () => {
    await credgate.close();
    await fake.close();
  });
  beforeEach(() => {
    fake.token = WRONG_PASSWORD;
    fake.introspection = INACTIVE;
  });

  const faults: Array<[string, FakeAnswer]> = [
    ['latency beyond every deadline', { ...WRONG_PASSWORD, delayMs: 5000 }],
    ['a 500 with an OAuth error body', answers.json(500, { error: 'server_error' })],
    ['a 502 HTML page from a gateway', { status: 502, body: '<html><body>Bad Gateway</body></html>' }],
    ['a connection reset before any answer', { ...WRONG_PASSWORD, resetAtOnce: true }],
    ['a connection reset in the middle of the body', { ...answers.json(200, validAsp), resetMidBody: true }],
    ['garbage bytes as a 200 JSON answer', body200(Buffer.from([0x7b, 0xff, 0x00, 0x13, 0x37, 0xfe, 0x22]))],
    ['a truncated body (Content-Length promises more)', { ...answers.json(200, validAsp), truncate: true }],
    ['a slow-drip body, one byte every 100 ms', { ...answers.json(200, validAsp), dripMs: 100 }],
    ['a 10 MB body', body200('{"active":true,"padding":"' + 'x'.repeat(10 * 1024 * 1024) + '"}')],
  ];
  for (const [name, fault] of faults) {
    test(`${name} → 503 within the deadline, then the next good answer is used`, async () => {
      fake.token = fault;
      fake.introspection = fault;
      await assertUnavailableInTime(credgate, name);
      // The AS is back: the very next request gets the real answer (nothing cached, nothing stuck).
      fake.token = WRONG_PASSWORD;
      fake.introspection = answers.json(200, validAsp);
      const { status, body } = await credgate.verify(USER);
      assert.equal(status, 200);
      assert.equal(body.allow, true, `recovered after ${name}`);
    });
  }

  test('a decision deadline shorter than the per-call timeout cuts the call short', async () => {
    const slow = await startCredgate({ ...base(fake.issuer), breakerFailureThreshold: 0, upstreamTimeoutMs: 10_000, decisionTimeoutMs: 800 });
    try {
      fake.token = { ...WRONG_PASSWORD, delayMs: 3000 };
      const started = Date.now();
      const { status, body } = await slow.verify(USER);
      const ms = Date.now() - started;
      assert.equal(status, 503);
      assert.equal(body.reason, 'upstream_unavailable');
      assert.ok(ms >= 750 && ms < 800 + SLACK_MS, `answered after ${ms} ms`);
      assert.equal(await metricValue(slow, 'credgate_decision_timeouts_total'), 1);
    } finally {
      await slow.close();
    }
  });

  test('introspection is retried after a 5xx with a fresh request, and the retry can allow', async () => {
    fake.next.introspection.push(answers.json(503, { error: 'temporarily_unavailable' }));
    fake.introspection = answers.json(200, validAsp);
    const calls = fake.calls.introspection;
    const { body } = await credgate.verify(USER);
    assert.equal(body.allow, true);
    assert.equal(fake.calls.introspection, calls + 2);
    assert.ok((await metricValue(credgate, 'credgate_upstream_retries_total', { endpoint: 'introspection' })) >= 1);
  });

  test('a password grant that may have reached the AS is never sent twice', async () => {
    // A password not seen before (USER proved to be an ASP above, and a remembered ASP is never tried as a password).
    for (const [i, fault] of [{ ...WRONG_PASSWORD, resetAtOnce: true }, { ...WRONG_PASSWORD, delayMs: 2000 }, answers.json(500, { error: 'server_error' })].entries()) {
      fake.token = fault;
      const calls = fake.calls.token;
      assert.equal((await credgate.verify({ ...USER, password: `${USER.password}-${i}` })).status, 503);
      assert.equal(fake.calls.token, calls + 1, 'one attempt only: each one may count as a login');
    }
  });
});

test('a password grant whose connection is refused (never sent) is retried', async () => {
  const fake = await startFakeAuthorizationServer();
  const port = await freePort() /* nothing listens there */;
  const credgate = await startCredgate({ ...base(fake.issuer), upstreamRetries: 2, breakerFailureThreshold: 0, tokenUrl: `http://127.0.0.1:${port}/oauth/token` });
  try {
    assert.equal((await credgate.verify(USER)).status, 503);
    assert.equal(await metricValue(credgate, 'credgate_upstream_retries_total', { endpoint: 'token' }), 2);
  } finally {
    await credgate.close();
    await fake.close();
  }
});

test('an AS whose name does not resolve (DNS failure) → 503 within the deadline on every interface', async () => {
  const credgate = await startCredgate({ ...base('http://credgate-nonexistent.invalid/'), allowInsecureHttp: true });
  try {
    await assertUnavailableInTime(credgate, 'DNS failure');
    const started = Date.now();
    assert.equal((await credgate.auth('Bearer opaque-token-value-1234')).status, 503);
    assert.ok(Date.now() - started < DECISION_TIMEOUT_MS + SLACK_MS);
    const ready = await fetch(`${credgate.url}/readyz`);
    assert.equal(ready.status, 503, 'never reached the AS: nothing to verify with');
    assert.equal((await fetch(`${credgate.url}/healthz`)).status, 200);
  } finally {
    await credgate.close();
  }
});

describe('circuit breaker', () => {
  let fake: FakeAuthorizationServer;
  let credgate: TestCredgate;
  const HALF_OPEN_AFTER_MS = 600;

  before(async () => {
    fake = await startFakeAuthorizationServer();
    credgate = await startCredgate({ ...base(fake.issuer), breakerFailureThreshold: 3, breakerHalfOpenAfterMs: HALF_OPEN_AFTER_MS, upstreamRetries: 0 });
  });
  after(async () => {
    await credgate.close();
    await fake.close();
  });

  test('opens after consecutive failures, answers 503 at once without asking, half-opens, and closes when the AS is back', async () => {
    fake.token = await fake.tokenAnswer('auth0|alice', AUDIENCE);
    assert.equal((await credgate.verify(USER)).body.allow, true, 'the control case allows');

    // The AS goes down: a 503 answer from both endpoints.
    fake.token = { status: 503, body: '<html>down</html>' };
    fake.introspection = { status: 503, body: '<html>down</html>' };
    for (let i = 0; i < 3; i++) assert.equal((await credgate.verify(USER)).status, 503);
    assert.equal(await metricValue(credgate, 'credgate_upstream_circuit_state', { endpoint: 'token' }), 2, 'token circuit open');
    assert.equal(await metricValue(credgate, 'credgate_upstream_circuit_state', { endpoint: 'introspection' }), 2, 'introspection circuit open');

    // While open: fast 503s, and the AS is not asked at all.
    const calls = { ...fake.calls };
    for (let i = 0; i < 5; i++) {
      const started = Date.now();
      const { status, body } = await credgate.verify(USER);
      assert.equal(status, 503);
      assert.equal(body.allow, false);
      assert.ok(Date.now() - started < 200, 'answered at once');
    }
    assert.equal(fake.calls.token, calls.token);
    assert.equal(fake.calls.introspection, calls.introspection);
    assert.ok((await metricValue(credgate, 'credgate_upstream_rejections_total', { endpoint: 'token', cause: 'circuit_open' })) >= 5);

    // Readiness stays green (the AS is shared: see Health) but says why.
    const ready = await fetch(`${credgate.url}/readyz`);
    assert.equal(ready.status, 200);
    const readiness = (await ready.json()) as { checks: { upstream: { ok: boolean; detail?: string } } };
    assert.match(readiness.checks.upstream.detail ?? '', /token circuit open/);

    // Still down after the half-open delay: one probe reaches the AS, fails, and the circuit opens again.
    await new Promise((resolve) => setTimeout(resolve, HALF_OPEN_AFTER_MS + 50));
    const probeCalls = fake.calls.token;
    assert.equal((await credgate.verify(USER)).status, 503);
    assert.equal(fake.calls.token, probeCalls + 1, 'exactly one probe');
    assert.equal(await metricValue(credgate, 'credgate_upstream_circuit_state', { endpoint: 'token' }), 2);

    // The AS is back: allowed again within seconds, and the circuit closes.
    fake.token = await fake.tokenAnswer('auth0|alice', AUDIENCE);
    fake.introspection = INACTIVE;
    const recoveredIn = await waitFor('recovery', 5000, async () => (await credgate.verify(USER)).body.allow === true);
    assert.ok(recoveredIn < 3000, `recovered in ${recoveredIn} ms`);
    assert.equal(await metricValue(credgate, 'credgate_upstream_circuit_state', { endpoint: 'token' }), 0);
    const after = (await (await fetch(`${credgate.url}/readyz`)).json()) as { checks: { upstream: { detail?: string } } };
    assert.doesNotMatch(after.checks.upstream.detail ?? '', /token/);
    assert.ok(credgate.logs.some((l) => l.includes('circuit open: token')));
  });

  test('an AS that is down altogether (connection refused) and comes back is used again within seconds', async () => {
    fake.token = await fake.tokenAnswer('auth0|alice', AUDIENCE);
    await fake.stop();
    for (let i = 0; i < 4; i++) assert.equal((await credgate.verify(USER)).status, 503);
    await fake.start();
    const recoveredIn = await waitFor('recovery', 5000, async () => (await credgate.verify(USER)).body.allow === true);
    assert.ok(recoveredIn < HALF_OPEN_AFTER_MS + 2000, `recovered in ${recoveredIn} ms`);
  });

  test('a wrong password is an answer, not a failure: it never opens the circuit', async () => {
    fake.token = WRONG_PASSWORD;
    fake.introspection = INACTIVE;
    for (let i = 0; i < 6; i++) assert.equal((await credgate.verify({ ...USER, password: `wrong-${i}-password` })).body.reason, 'invalid_credentials');
    assert.equal(await metricValue(credgate, 'credgate_upstream_circuit_state', { endpoint: 'token' }), 0);
  });
});

test('more concurrent AS calls than maxConcurrentUpstream and maxQueuedUpstream: the excess is refused at once with 503', async () => {
  const fake = await startFakeAuthorizationServer();
  const credgate = await startCredgate({ ...base(fake.issuer), maxConcurrentUpstream: 2, maxQueuedUpstream: 0, breakerFailureThreshold: 0, upstreamTimeoutMs: 2000, decisionTimeoutMs: 3000 });
  try {
    fake.introspection = { ...answers.json(200, { ...validAsp, username: undefined }), delayMs: 600 };
    // Opaque bearer tokens: one introspection each, all distinct (no coalescing).
    const results = await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        const started = Date.now();
        const response = await credgate.auth(`Bearer opaque-token-number-${i}-abcdefgh`);
        return { status: response.status, ms: Date.now() - started };
      }),
    );
    const allowed = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 503);
    assert.equal(allowed.length, 2, JSON.stringify(results));
    assert.equal(refused.length, 4);
    // At once: before any call that got a slot could finish (each takes the AS's 600 ms).
    const firstAllowed = Math.min(...allowed.map((r) => r.ms));
    for (const r of refused) assert.ok(r.ms < firstAllowed, `refused after ${r.ms} ms, the first allowed after ${firstAllowed} ms`);
    assert.equal(fake.calls.introspection, 2);
    assert.equal(await metricValue(credgate, 'credgate_upstream_rejections_total', { cause: 'concurrency_limit' }), 4);
  } finally {
    await credgate.close();
    await fake.close();
  }
});

test('a short burst waits for a free slot; a call still waiting at its deadline is dropped without reaching the AS', async () => {
  const fake = await startFakeAuthorizationServer();
  const credgate = await startCredgate({ ...base(fake.issuer), maxConcurrentUpstream: 1, maxQueuedUpstream: 2, breakerFailureThreshold: 0, upstreamTimeoutMs: 2000, decisionTimeoutMs: 1000 });
  const burst = (n: number, tag: string) =>
    Promise.all(Array.from({ length: n }, async (_, i) => {
      const started = Date.now();
      const status = (await credgate.auth(`Bearer opaque-token-${tag}-${i}-abcdefgh`)).status;
      return { status, ms: Date.now() - started };
    }));
  try {
    // One runs, two wait their turn and run: all allowed. A fourth finds the queue full: 503 at once.
    fake.introspection = { ...answers.json(200, { ...validAsp, username: undefined }), delayMs: 150 };
    const absorbed = await burst(4, 'a');
    assert.deepEqual(absorbed.map((r) => r.status).sort(), [200, 200, 200, 503]);
    // At once: before the first call that got a slot could finish (the AS takes 150 ms).
    const refusedMs = absorbed.find((r) => r.status === 503)!.ms;
    assert.ok(refusedMs < Math.min(...absorbed.filter((r) => r.status === 200).map((r) => r.ms)), `refused after ${refusedMs} ms`);
    assert.equal(fake.calls.introspection, 3);

    // The AS is slow: the running call is cut at the deadline, and the two waiting behind it are
    // dropped from the queue at their deadline instead of being sent late.
    fake.introspection = { ...fake.introspection, delayMs: 1500 };
    const calls = fake.calls.introspection;
    const expired = await burst(3, 'b');
    assert.deepEqual(expired.map((r) => r.status), [503, 503, 503]);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(fake.calls.introspection, calls + 1, 'only the running call reached the AS');
  } finally {
    await credgate.close();
    await fake.close();
  }
});

describe('stale-if-error', () => {
  test('off by default: an expired identity is not used when the AS is down', async () => {
    const fake = await startFakeAuthorizationServer();
    const credgate = await startCredgate({ ...base(fake.issuer), cacheTtlSeconds: 1 });
    try {
      fake.introspection = answers.json(200, validAsp);
      assert.equal((await credgate.verify(USER)).body.allow, true);
      await new Promise((resolve) => setTimeout(resolve, 1100));
      await fake.stop();
      assert.equal((await credgate.verify(USER)).status, 503);
    } finally {
      await credgate.close();
      await fake.close();
    }
  });

  test('on: only for an identity verified recently, only while the AS cannot be asked, scopes still checked, never after a denial', async () => {
    const fake = await startFakeAuthorizationServer();
    const credgate = await startCredgate({ ...base(fake.issuer), cacheTtlSeconds: 1, staleIfErrorSeconds: 60, breakerHalfOpenAfterMs: 300 });
    try {
      fake.introspection = answers.json(200, validAsp);
      const fresh = await credgate.verify({ ...USER, scopes: ['read:repo'] });
      assert.equal(fresh.body.allow, true);
      assert.equal(fresh.body.cached, false);
      await new Promise((resolve) => setTimeout(resolve, 1100)); // the cache entry expires

      await fake.stop();
      const stale = await credgate.verify({ ...USER, scopes: ['read:repo'] });
      assert.equal(stale.status, 200);
      assert.equal(stale.body.allow, true, 'served from the stale identity');
      assert.equal(stale.body.cached, true);
      assert.equal(stale.body.subject, 'auth0|alice', 'the subject the AS gave, not one typed');
      assert.equal(await metricValue(credgate, 'credgate_stale_identities_served_total'), 1);
      assert.ok(credgate.logs.some((l) => l.includes('"level":40') && l.includes('stale identity')), 'logged at warn');
      // Scopes are still checked against what the AS granted.
      const needsMore = await credgate.verify({ ...USER, scopes: ['write:repo'] });
      assert.equal(needsMore.body.reason, 'insufficient_scope');
      // Another password of the same user was never verified: no stale answer for it.
      assert.equal((await credgate.verify({ ...USER, password: 'another-password-entirely' })).status, 503);

      // The AS comes back and says no (once the breaker's probe gets through): that credential is
      // forgotten, outage or not. Until then the stale identity still answers.
      await fake.start();
      fake.introspection = INACTIVE;
      await waitFor('the denial', 3000, async () => (await credgate.verify(USER)).body.reason === 'invalid_credentials');
      await fake.stop();
      assert.equal((await credgate.verify(USER)).status, 503, 'a denied credential is never served stale');
    } finally {
      await credgate.close();
      await fake.close();
    }
  });
});
