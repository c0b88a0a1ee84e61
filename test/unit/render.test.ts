import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ALLOW_BODY, allowHeaders, decisionJson, decisionText, headerValue, identityHeaders } from '../../src/http/render.js';

test('header values keep printable ASCII and percent-encode UTF-8 and % itself', () => {
  assert.equal(headerValue('auth0|123 read:repo'), 'auth0|123 read:repo');
  assert.equal(headerValue('jürgen'), 'j%C3%BCrgen');
  assert.equal(headerValue('100%'), '100%25');
  assert.equal(decodeURIComponent(headerValue('名前@例え.jp')), '名前@例え.jp');
  assert.equal(headerValue('a\r\nX-Injected: 1'), 'a%0D%0AX-Injected: 1');
});

test('an allow carries the identity; a denial carries none of it', () => {
  const identity = { subject: 'auth0|1', username: 'alice', credential: 'password' as const, scopes: ['read:repo'], audience: 'https://git', expiresAt: 1_800_000_000 };
  const allow = decisionJson({ allow: true, status: 200, reason: 'ok', identity, cached: false });
  assert.equal(allow.subject, 'auth0|1');
  assert.equal(allow.expiresAt, '2027-01-15T08:00:00Z');
  const deny = decisionJson({ allow: false, status: 403, reason: 'insufficient_scope', identity, missingScopes: ['write:repo'], cached: false });
  assert.equal(deny.subject, undefined);
  assert.deepEqual(deny.missingScopes, ['write:repo']);
});

test('identity headers: rendered once per identity object, encoded like any header value', () => {
  const identity = { subject: 'auth0|1', username: 'jürgen', credential: 'app_password' as const, scopes: ['read:repo', 'write:repo'], audience: 'https://git', expiresAt: undefined };
  const headers = identityHeaders(identity);
  assert.deepEqual({ ...headers }, { 'x-auth-subject': 'auth0|1', 'x-auth-user': 'j%C3%BCrgen', 'x-auth-scopes': 'read:repo write:repo', 'x-auth-credential': 'app_password' });
  assert.equal(identityHeaders(identity), headers, 'the same object for the same identity');
  assert.ok(!('x-auth-user' in identityHeaders({ ...identity, username: undefined })), 'no user header for a token without a username');
});

test("an allow's whole header block: the identity's headers, then no-store, JSON type and the body's length, in that order", () => {
  const identity = { subject: 'auth0|1', username: 'alice', credential: 'password' as const, scopes: ['read:repo'], audience: 'https://git', expiresAt: undefined };
  const headers = allowHeaders(identity);
  assert.deepEqual(Object.entries(headers), [
    ['x-auth-subject', 'auth0|1'], ['x-auth-user', 'alice'], ['x-auth-scopes', 'read:repo'], ['x-auth-credential', 'password'],
    ['cache-control', 'no-store'], ['content-type', 'application/json; charset=utf-8'], ['content-length', String(Buffer.byteLength(ALLOW_BODY))],
  ]);
  assert.equal(ALLOW_BODY, '{"reason":"ok"}');
  assert.equal(allowHeaders(identity), headers, 'the same object for the same identity');
  assert.notEqual(allowHeaders({ ...identity }), headers, 'another identity object, its own block');
});

test('the /v1/verify answer text is JSON.stringify of the decision, allows remembered per identity and cached flag', () => {
  const identity = { subject: 'auth0|1', username: 'jürgen', credential: 'app_password' as const, scopes: ['read:repo'], audience: 'https://git', expiresAt: 1_800_000_000 };
  const decisions = [
    { allow: true, status: 200 as const, reason: 'ok' as const, identity, cached: true },
    { allow: true, status: 200 as const, reason: 'ok' as const, identity, cached: false },
    { allow: true, status: 200 as const, reason: 'ok' as const, identity, cached: true, identityToken: { header: 'X-Auth-Token', value: 'eyJ.x.y' } },
    { allow: true, status: 200 as const, reason: 'ok' as const, identity: { ...identity, username: undefined, expiresAt: undefined }, cached: false },
    { allow: false, status: 403 as const, reason: 'insufficient_scope' as const, identity, missingScopes: ['write:repo'], cached: true },
    { allow: false, status: 429 as const, reason: 'throttled' as const, retryAfterSeconds: 30, cached: false },
  ];
  for (const decision of decisions) {
    assert.equal(decisionText(decision), JSON.stringify(decisionJson(decision)));
    assert.equal(decisionText(decision), JSON.stringify(decisionJson(decision)), 'the same text the second time');
  }
  assert.notEqual(decisionText(decisions[0]!), decisionText(decisions[1]!), 'cached and not cached are told apart');
  assert.match(decisionText(decisions[2]!), /"identityToken":"eyJ.x.y"/);
});
