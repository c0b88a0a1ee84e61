import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { answers, credgateConfigFor, type FakeAnswer, type FakeAuthorizationServer, startFakeAuthorizationServer } from '../fixtures/fakeAuthorizationServer.js';

const AUDIENCE = 'https://git.example.com';
const USER = { username: 'alice', password: 'an-app-password-that-is-not-a-password' };
const honest = { active: true, token_type: 'application_specific_password_token', sub: 'auth0|alice', aud: AUDIENCE, username: 'alice', scope: 'read:repo' };
const raw = (body: string, contentType = 'application/json'): FakeAnswer => ({ status: 200, body, contentType });
const lie = (patch: Record<string, unknown>) => answers.json(200, { ...honest, ...patch });

/**
 * An authorization server whose introspection answers lie or are broken (RFC 7662 §2.2). Nothing
 * here may ever allow. A well-formed answer that simply does not qualify (another audience, a
 * username that is not a string) is a denial, 401; an answer that is not what the protocol
 * promises (active not a boolean, not JSON, ambiguous JSON) means credgate could not ask: 503.
 */
describe('introspection answers that lie are never an allow', () => {
  let fake: FakeAuthorizationServer;
  let credgate: TestCredgate;
  before(async () => {
    fake = await startFakeAuthorizationServer();
    credgate = await startCredgate({
      ...credgateConfigFor(fake.issuer, AUDIENCE),
      cacheTtlSeconds: 0,
      negativeCacheTtlSeconds: 0,
      breakerFailureThreshold: 0,
      upstreamRetries: 0,
    });
  });
  after(async () => {
    await credgate.close();
    await fake.close();
  });

  test('the honest answer allows (the control case), with an array aud that includes the audience too', async () => {
    fake.introspection = answers.json(200, honest);
    assert.equal((await credgate.verify(USER)).body.allow, true);
    fake.introspection = lie({ aud: ['https://other.example.com', AUDIENCE] });
    assert.equal((await credgate.verify(USER)).body.allow, true);
  });

  // [name, answer, expected for the Basic pair, expected for the same secret as a Bearer token when it differs]
  const cases: Array<[string, FakeAnswer, 401 | 503, 200?]> = [
    ['active: "true" (a string)', lie({ active: 'true' }), 503],
    ['active: 1', lie({ active: 1 }), 503],
    ['active: [true]', lie({ active: [true] }), 503],
    ['active missing', lie({ active: undefined }), 503],
    ['active: false with every other claim right', lie({ active: false }), 401],
    ['another audience', lie({ aud: 'https://other.example.com' }), 401],
    ['an aud array without the audience', lie({ aud: ['https://a.example.com', 'https://b.example.com'] }), 401],
    ['the audience nested one array too deep', lie({ aud: [[AUDIENCE]] }), 401],
    ['aud as an object', lie({ aud: { 0: AUDIENCE } }), 401],
    // A Bearer token is bound to no username: the identity is the token's own, so these allow it.
    ['the username as an array', lie({ username: ['alice'] }), 401, 200],
    ['another user\'s username', lie({ username: 'mallory' }), 401, 200],
    ['sub as a number', lie({ sub: 12345 }), 401],
    ['sub as an array', lie({ sub: ['auth0|alice'] }), 401],
    ['an empty sub', lie({ sub: '' }), 401],
    ['sub missing', lie({ sub: undefined }), 401],
    ['token_type missing', lie({ token_type: undefined }), 401],
    ['aud missing', lie({ aud: undefined }), 401],
    ['token_type as an array', lie({ token_type: ['application_specific_password_token'] }), 401],
    ['a refresh token', lie({ token_type: 'refresh_token' }), 401],
    ['exp as a string', lie({ exp: '99999999999' }), 401],
    ['exp in the past', lie({ exp: Math.floor(Date.now() / 1000) - 60 }), 401],
    ['nbf in the future', lie({ nbf: Math.floor(Date.now() / 1000) + 3600 }), 401],
    ['another issuer', lie({ iss: 'https://evil.example.com/' }), 401],
    ['a duplicated "active", false then true', raw(`{"active":false,"token_type":"application_specific_password_token","sub":"auth0|alice","aud":"${AUDIENCE}","username":"alice","active":true}`), 503],
    ['a duplicated "active", true then false', raw(`{"active":true,"token_type":"application_specific_password_token","sub":"auth0|alice","aud":"${AUDIENCE}","username":"alice","active":false}`), 503],
    ['a duplicated key spelled with an escape', raw(`{"active":false,"\\u0061ctive":true,"token_type":"application_specific_password_token","sub":"auth0|alice","aud":"${AUDIENCE}","username":"alice"}`), 503],
    ['a duplicated "sub"', raw(`{"active":true,"token_type":"application_specific_password_token","sub":"auth0|mallory","aud":"${AUDIENCE}","username":"alice","sub":"auth0|alice"}`), 503],
    // A fetch Response's json() drops a leading byte-order mark: the duplicate check must see past it too.
    ['a duplicated "active" behind a byte-order mark', raw(`\uFEFF{"active":false,"token_type":"application_specific_password_token","sub":"auth0|alice","aud":"${AUDIENCE}","username":"alice","active":true}`), 503],
    ['a duplicated "sub" behind a byte-order mark and whitespace', raw(`\uFEFF \n{"active":true,"token_type":"application_specific_password_token","sub":"auth0|mallory","aud":"${AUDIENCE}","username":"alice","sub":"auth0|alice"}`), 503],
    ['an HTML page with status 200', raw('<html><body>{"active": true}</body></html>', 'text/html'), 503],
    ['an HTML page labelled as JSON', raw('<html>{"active": true}</html>'), 503],
    ['truncated JSON', raw('{"active": true, "sub": "auth0|alice", "aud"'), 503],
    ['a JSON array', raw(JSON.stringify([honest])), 503],
    ['JSON null', raw('null'), 503],
    ['an empty body', raw(''), 503],
    ['a 10 MB body', raw(JSON.stringify({ ...honest, padding: 'x'.repeat(10 * 1024 * 1024) })), 503],
  ];
  for (const [name, answer, expected, asBearer = expected] of cases) {
    test(`${name} → ${expected === 401 ? '401 invalid_credentials' : '503 upstream_unavailable'}`, async () => {
      fake.introspection = answer;
      const { status, body } = await credgate.verify(USER);
      assert.equal(body.allow, false);
      if (expected === 401) {
        assert.equal(status, 200);
        assert.equal(body.reason, 'invalid_credentials');
      } else {
        assert.equal(status, 503);
        assert.equal(body.reason, 'upstream_unavailable');
      }
      // The same answer to an opaque Bearer token and to /auth: never an allow either.
      const auth = await credgate.auth(basicHeader(USER.username, USER.password));
      assert.equal(auth.status, expected);
      assert.equal(auth.headers.get('x-auth-subject'), null);
      const bearer = await credgate.auth(`Bearer ${USER.password}`);
      assert.equal(bearer.status, asBearer);
      if (asBearer === 200) assert.equal(bearer.headers.get('x-auth-subject'), 'auth0|alice', 'the subject the AS gave');
    });
  }
});
