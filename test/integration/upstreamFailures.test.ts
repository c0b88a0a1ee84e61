import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { answers, credgateConfigFor, type FakeAuthorizationServer, startFakeAuthorizationServer } from '../fixtures/fakeAuthorizationServer.js';
import { freePort } from '../fixtures/processes.js';

const AUDIENCE = 'https://git.example.com';
const USER = { username: 'alice@example.com', password: 'a-password-that-is-long-enough' };

/** The same credentials go through every case, so the decision cache is off: each case must reach the AS. */
function base(issuer: string) {
  return { ...credgateConfigFor(issuer, AUDIENCE), upstreamTimeoutMs: 400, cacheTtlSeconds: 0, negativeCacheTtlSeconds: 0 };
}

describe('fail closed when the authorization server cannot be asked', () => {
  let fake: FakeAuthorizationServer;
  let credgate: TestCredgate;

  before(async () => {
    fake = await startFakeAuthorizationServer();
    credgate = await startCredgate(base(fake.issuer));
  });
  after(async () => {
    await credgate.close();
    await fake.close();
  });
  beforeEach(() => {
    fake.token = answers.json(403, { error: 'invalid_grant', error_description: 'Wrong email or password.' });
    fake.introspection = answers.json(200, { active: false });
  });

  test('a plain denial from both paths is 401 invalid_credentials (the control case)', async () => {
    const { status, body } = await credgate.verify(USER);
    assert.equal(status, 200);
    assert.equal(body.reason, 'invalid_credentials');
    assert.equal(body.status, 401);
  });

  const cases: Array<[string, () => void]> = [
    ['both endpoints answer 500 with HTML', () => {
      fake.token = { status: 500, body: '<html>Internal error</html>' };
      fake.introspection = { status: 500, body: '<html>Internal error</html>' };
    }],
    ['introspection answers active: "true" (a string)', () => {
      fake.introspection = answers.json(200, { active: 'true', token_type: 'application_specific_password_token', sub: 'auth0|x', aud: AUDIENCE, username: USER.username });
    }],
    ['introspection answers without active', () => {
      fake.introspection = answers.json(200, { token_type: 'application_specific_password_token', sub: 'auth0|x', aud: AUDIENCE, username: USER.username });
    }],
    ['introspection answers active: 1', () => {
      fake.introspection = answers.json(200, { active: 1, token_type: 'application_specific_password_token', sub: 'auth0|x', aud: AUDIENCE, username: USER.username });
    }],
    ['introspection answers an HTML page with status 200', () => {
      fake.introspection = { status: 200, body: '<html>{"active": true}</html>' };
    }],
    ['introspection answers truncated JSON', () => {
      fake.introspection = { status: 200, body: '{"active": true, "sub": "auth0|x"', contentType: 'application/json' };
    }],
    ['the token endpoint never answers and introspection is down', () => {
      fake.token = { status: 0, body: '', hang: true };
      fake.introspection = { status: 503, body: 'unavailable' };
    }],
    ['the token endpoint issues a token that does not verify against the JWKS', () => {
      fake.token = answers.json(200, { access_token: 'eyJhbGciOiJSUzI1NiIsImtpZCI6Im5vcGUifQ.eyJzdWIiOiJhdXRoMHx4In0.c2ln', token_type: 'Bearer', expires_in: 60 });
    }],
  ];

  for (const [name, arrange] of cases) {
    test(`${name} → 503 upstream_unavailable, never an allow`, async () => {
      arrange();
      const started = Date.now();
      const { status, body } = await credgate.verify(USER);
      assert.equal(status, 503);
      assert.equal(body.allow, false);
      assert.equal(body.reason, 'upstream_unavailable');
      const auth = await credgate.auth(basicHeader(USER.username, USER.password));
      assert.equal(auth.status, 503);
      assert.equal(auth.headers.get('x-auth-subject'), null);
      assert.ok(Date.now() - started < 5000, 'answered within the deadline');
    });
  }

  test('a wrong client secret (401 access_denied) is 503, logged loudly and reported by /readyz', async () => {
    fake.token = answers.json(401, { error: 'access_denied', error_description: 'Unauthorized' });
    const { status, body } = await credgate.verify(USER);
    assert.equal(status, 503);
    assert.equal(body.reason, 'upstream_unavailable');
    const ready = await fetch(`${credgate.url}/readyz`);
    assert.equal(ready.status, 503);
    const readiness = (await ready.json()) as { checks: { client: { ok: boolean; detail: string } } };
    assert.equal(readiness.checks.client.ok, false);
    assert.match(readiness.checks.client.detail, /access_denied/);
    assert.ok(credgate.logs.some((l) => l.includes('"level":50') && l.includes("rejected credgate's configuration") && l.includes('"asError":"access_denied"')), "the AS's error code is a field of its own");
  });

  test('no secret reaches the logs in any of these failures', () => {
    const text = credgate.logs.join('');
    for (const secret of [USER.password, 'client-secret-value', 'introspection-secret-value']) assert.ok(!text.includes(secret), `log holds ${secret.slice(0, 3)}…`);
  });
});

test('an authorization server that is not listening → 503 on every interface and /readyz not ready', async () => {
  const port = await freePort() /* nothing listens there */;
  const credgate = await startCredgate(base(`http://127.0.0.1:${port}/`));
  try {
    const { status, body } = await credgate.verify(USER);
    assert.equal(status, 503);
    assert.equal(body.reason, 'upstream_unavailable');
    assert.equal((await credgate.auth(basicHeader(USER.username, USER.password))).status, 503);
    assert.equal((await credgate.auth('Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln')).status, 503);
    assert.equal((await fetch(`${credgate.url}/readyz`)).status, 503);
    assert.equal((await fetch(`${credgate.url}/healthz`)).status, 200);
  } finally {
    await credgate.close();
  }
});

test('an upstream failure is never cached: the next request asks again and gets the real answer', async () => {
  const fake = await startFakeAuthorizationServer();
  const credgate = await startCredgate({ ...base(fake.issuer), cacheTtlSeconds: 300, negativeCacheTtlSeconds: 60 });
  try {
    fake.token = { status: 502, body: '<html>bad gateway</html>' };
    assert.equal((await credgate.verify(USER)).status, 503);
    fake.token = answers.json(403, { error: 'invalid_grant', error_description: 'Wrong email or password.' });
    const calls = fake.calls.token;
    const { status, body } = await credgate.verify(USER);
    assert.equal(status, 200);
    assert.equal(body.reason, 'invalid_credentials');
    assert.equal(fake.calls.token, calls + 1, 'asked the AS again');
    // The denial itself is remembered (briefly): the AS is not asked a third time.
    assert.equal((await credgate.verify(USER)).body.cached, true);
    assert.equal(fake.calls.token, calls + 1);
  } finally {
    await credgate.close();
    await fake.close();
  }
});
