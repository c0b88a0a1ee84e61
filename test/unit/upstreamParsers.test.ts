import assert from 'node:assert/strict';
import { test } from 'node:test';
import type * as oauth from 'oauth4webapi';
import { UpstreamError } from '../../src/errors.js';
import { processIntrospection } from '../../src/upstream/introspection.js';
import { classifyGrantError, processPasswordGrantResponse } from '../../src/upstream/passwordGrant.js';

const as: oauth.AuthorizationServer = { issuer: 'https://tenant.auth0.com/', token_endpoint: 'https://tenant.auth0.com/oauth/token' };
const client: oauth.Client = { client_id: 'cid' };
const json = (status: number, body: unknown, type = 'application/json') => new Response(typeof body === 'string' ? body : JSON.stringify(body), { status, headers: { 'content-type': type } });

test('a token response yields the access token and scope', async () => {
  const outcome = await processPasswordGrantResponse(as, client, json(200, { access_token: 'x.y.z', token_type: 'Bearer', expires_in: 86400, scope: 'read:repo' }));
  assert.deepEqual(outcome, { ok: true, accessToken: 'x.y.z', scope: 'read:repo', expiresIn: 86400 });
});

const rejections: Array<[number, string, string]> = [
  [403, 'invalid_grant', 'Wrong email or password.'],
  [400, 'invalid_grant', 'invalid credentials'], // RFC 6749 status, as oidc-provider answers
  [403, 'mfa_required', 'Multifactor authentication required'],
  [429, 'too_many_attempts', 'Your account has been blocked after multiple consecutive login attempts.'],
  [403, 'access_denied', 'denied by an action'],
  [401, 'unauthorized', 'user is blocked'],
];
for (const [status, error, description] of rejections) {
  test(`${status} ${error} means "not this user's password": try the next strategy`, async () => {
    const outcome = await processPasswordGrantResponse(as, client, json(status, { error, error_description: description }));
    assert.deepEqual(outcome, { ok: false, error, description });
  });
}

const failures: Array<[string, Response, string]> = [
  ['401 access_denied (wrong client secret)', json(401, { error: 'access_denied', error_description: 'Unauthorized' }), 'misconfigured'],
  ['403 access_denied "Service not found" (unknown audience)', json(403, { error: 'access_denied', error_description: 'Service not found: https://x' }), 'misconfigured'],
  ['401 invalid_client', json(401, { error: 'invalid_client' }), 'misconfigured'],
  ['403 unauthorized_client (grant not enabled)', json(403, { error: 'unauthorized_client' }), 'misconfigured'],
  ['500 with HTML', json(500, '<html>oops</html>', 'text/html'), 'bad_response'],
  ['200 with HTML', json(200, '<html>login</html>', 'text/html'), 'bad_response'],
  ['200 JSON without access_token', json(200, { token_type: 'Bearer' }), 'bad_response'],
  ['200 truncated JSON', json(200, '{"access_token": "x'), 'bad_response'],
  ['400 with an unknown error', json(400, { error: 'something_new' }), 'bad_response'],
  ['502 JSON error', json(502, { error: 'server_error' }), 'bad_response'],
];
for (const [name, response, failure] of failures) {
  test(`token endpoint ${name} is an upstream failure (${failure}), never a user denial`, async () => {
    await assert.rejects(processPasswordGrantResponse(as, client, response), (err: unknown) => err instanceof UpstreamError && err.failure === failure && err.endpoint === 'token');
  });
}

test('classifyGrantError keeps rejection and misconfiguration apart', () => {
  assert.equal(classifyGrantError(403, 'invalid_grant', undefined), 'rejected');
  assert.equal(classifyGrantError(401, 'access_denied', 'Unauthorized'), 'misconfigured');
  assert.equal(classifyGrantError(401, 'unauthorized', 'something else'), 'bad_response');
});

test('an introspection answer with active: true passes through for the rules to check', async () => {
  const answer = await processIntrospection(as, client, json(200, { active: true, sub: 'a' }));
  assert.equal(answer.active, true);
});

const badIntrospections: Array<[string, Response, string]> = [
  ['active as the string "true"', json(200, { active: 'true', sub: 'a' }), 'bad_response'],
  ['active as 1', json(200, { active: 1 }), 'bad_response'],
  ['missing active', json(200, { sub: 'a' }), 'bad_response'],
  ['HTML', json(200, '<html></html>', 'text/html'), 'bad_response'],
  ['a JSON array', json(200, [{ active: true }]), 'bad_response'],
  ['truncated JSON', json(200, '{"active": tr'), 'bad_response'],
  ['500', json(500, { error: 'server_error' }), 'bad_response'],
  ['401 invalid_client (assertion refused)', json(401, { error: 'invalid_client' }), 'misconfigured'],
];
for (const [name, response, failure] of badIntrospections) {
  test(`introspection answering ${name} is an upstream failure, never an allow`, async () => {
    await assert.rejects(processIntrospection(as, client, response), (err: unknown) => err instanceof UpstreamError && err.failure === failure);
  });
}
