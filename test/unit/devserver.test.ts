import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { createRemoteJWKSet, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import type { CryptoKey, JWK } from 'jose';
import { defaultDevUsers, startDevServer } from '../../src/devserver/index.js';
import type { DevAuthorizationServer } from '../../src/devserver/index.js';

const AUDIENCE = 'https://git.example.com';
const OTHER_AUDIENCE = 'https://mail.example.com';
const CLIENT = { clientId: 'credgate', clientSecret: 'credgate-secret' };
const PROXY_CLIENT = { clientId: 'proxy', clientSecret: 'proxy-secret', trustForwardedFor: true };
const ALICE_PASSWORD = 'correct horse battery staple';

interface Fixture {
  as: DevAuthorizationServer;
  /** Signs a client assertion as the resource server (ES256, key served by a local JWKS). */
  assertion(claims?: Record<string, unknown>, key?: CryptoKey): Promise<string>;
}

/** A JWKS server standing in for credgate's /.well-known/jwks.json. */
type Cleanup = (fn: () => Promise<void>) => void;

async function startJwksServer(cleanup: Cleanup, jwk: JWK): Promise<string> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
}

async function start(cleanup: Cleanup, extra: { lockoutThreshold?: number } = {}): Promise<Fixture> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: 'rs-1', alg: 'ES256' };
  const jwksUrl = await startJwksServer(cleanup, jwk);
  const as = await startDevServer({
    audience: AUDIENCE,
    extraAudiences: [OTHER_AUDIENCE],
    resourceServerJwksUrl: jwksUrl,
    users: defaultDevUsers(),
    clients: [CLIENT, PROXY_CLIENT],
    ...extra,
  });
  cleanup(() => as.close());
  const assertion = async (claims: Record<string, unknown> = {}, key: CryptoKey = privateKey): Promise<string> => {
    const now = Math.floor(Date.now() / 1000);
    const payload = { iss: AUDIENCE, sub: AUDIENCE, aud: as.issuer, iat: now, exp: now + 60, jti: randomUUID(), ...claims };
    return new SignJWT(payload).setProtectedHeader({ alg: 'ES256', kid: 'rs-1' }).sign(key);
  };
  return { as, assertion };
}

// One server for the tests that do not depend on counters: RSA key generation dominates run time.
let sharedFixture: Promise<Fixture> | undefined;
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn();
});
function shared(): Promise<Fixture> {
  sharedFixture ??= start((fn) => cleanups.push(fn));
  return sharedFixture;
}

async function post(
  url: string,
  params: Record<string, string>,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(params).toString(),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

function passwordGrant(as: DevAuthorizationServer, params: Record<string, string>, headers?: Record<string, string>) {
  return post(
    `${as.url}/oauth/token`,
    { grant_type: 'password', client_id: CLIENT.clientId, client_secret: CLIENT.clientSecret, audience: AUDIENCE, ...params },
    headers,
  );
}

async function introspect(f: Fixture, token: string, assertion?: string) {
  return post(`${f.as.url}/oauth/introspect`, {
    token,
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: assertion ?? (await f.assertion()),
  });
}

test('discovery is Auth0-shaped and lists no introspection endpoint', async (t) => {
  const { as } = await shared();
  assert.match(as.issuer, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  assert.equal(as.url, as.issuer.slice(0, -1));
  const doc = (await (await fetch(`${as.url}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
  assert.equal(doc['issuer'], as.issuer);
  assert.equal(doc['token_endpoint'], `${as.issuer}oauth/token`);
  assert.equal(doc['jwks_uri'], `${as.issuer}.well-known/jwks.json`);
  assert.equal('introspection_endpoint' in doc, false);
  assert.deepEqual(doc['token_endpoint_auth_methods_supported'], ['client_secret_basic', 'client_secret_post', 'private_key_jwt']);
});

test('password grant returns an RS256 access token verifiable against the JWKS', async (t) => {
  const { as } = await shared();
  const { status, body } = await passwordGrant(as, { username: 'Alice@Example.com', password: ALICE_PASSWORD, scope: 'read:repo delete:world' });
  assert.equal(status, 200);
  assert.equal(body['token_type'], 'Bearer');
  assert.equal(body['scope'], 'read:repo');
  assert.equal(body['expires_in'], 3600);
  assert.equal(body['refresh_token'], undefined);
  const jwks = createRemoteJWKSet(new URL(`${as.issuer}.well-known/jwks.json`));
  const { payload, protectedHeader } = await jwtVerify(String(body['access_token']), jwks, { issuer: as.issuer, audience: AUDIENCE });
  assert.equal(protectedHeader.alg, 'RS256');
  assert.equal(protectedHeader.kid, as.signingKey.kid);
  assert.equal(payload.sub, 'auth0|alice0001');
  assert.equal(payload.aud, AUDIENCE);
  assert.equal(payload['azp'], CLIENT.clientId);
  assert.equal(payload['gty'], 'password');
  assert.equal(payload['scope'], 'read:repo');
  assert.deepEqual(payload['permissions'], ['read:repo', 'write:repo', 'read:mail', 'send:mail'], 'as Auth0 RBAC: all the user holds, not what was asked');
});

test('password grant without scope grants all permissions; openid adds the userinfo audience', async (t) => {
  const { as } = await shared();
  const all = await passwordGrant(as, { username: 'alice', password: ALICE_PASSWORD });
  assert.equal(all.body['scope'], 'read:repo write:repo read:mail send:mail');
  const oidc = await passwordGrant(as, { username: 'alice', password: ALICE_PASSWORD, scope: 'openid write:repo' });
  const jwks = createRemoteJWKSet(new URL(`${as.url}/.well-known/jwks.json`));
  const { payload } = await jwtVerify(String(oidc.body['access_token']), jwks, { issuer: as.issuer, audience: AUDIENCE });
  assert.deepEqual(payload.aud, [AUDIENCE, `${as.issuer}userinfo`]);
  assert.equal(payload['scope'], 'openid write:repo');
});

test('password grant also takes JSON and HTTP Basic client authentication', async (t) => {
  const { as } = await shared();
  const res = await fetch(`${as.url}/oauth/token`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: `Basic ${Buffer.from(`${CLIENT.clientId}:${CLIENT.clientSecret}`).toString('base64')}`,
    },
    body: JSON.stringify({ grant_type: 'password', username: 'carol', password: 'carol-password-1' }),
  });
  assert.equal(res.status, 200);
  assert.equal(((await res.json()) as Record<string, unknown>)['scope'], 'read:repo');
});

test('wrong password and unknown user both answer 403 invalid_grant', async (t) => {
  const { as } = await shared();
  for (const username of ['alice', 'nobody@example.com']) {
    const { status, body } = await passwordGrant(as, { username, password: 'wrong' });
    assert.equal(status, 403);
    assert.deepEqual(body, { error: 'invalid_grant', error_description: 'Wrong email or password.' });
  }
});

test('unknown client and wrong client secret answer 401 access_denied', async (t) => {
  const { as } = await shared();
  for (const client of [{ client_id: 'nope', client_secret: 'x' }, { client_id: CLIENT.clientId, client_secret: 'wrong' }]) {
    const { status, body } = await passwordGrant(as, { ...client, username: 'alice', password: ALICE_PASSWORD });
    assert.equal(status, 401);
    assert.deepEqual(body, { error: 'access_denied', error_description: 'Unauthorized' });
  }
});

test('unknown audience answers 403 Service not found; missing password 400', async (t) => {
  const { as } = await shared();
  const other = await passwordGrant(as, { username: 'alice', password: ALICE_PASSWORD, audience: 'https://nope' });
  assert.equal(other.status, 403);
  assert.equal(other.body['error_description'], 'Service not found: https://nope');
  const missing = await passwordGrant(as, { username: 'alice' });
  assert.equal(missing.status, 400);
  assert.equal(missing.body['error'], 'invalid_request');
});

test('MFA user with the right password answers 403 mfa_required', async (t) => {
  const { as } = await shared();
  const { status, body } = await passwordGrant(as, { username: 'bob', password: 'hunter2-but-longer' });
  assert.equal(status, 403);
  assert.equal(body['error'], 'mfa_required');
  assert.equal(typeof body['mfa_token'], 'string');
  const wrong = await passwordGrant(as, { username: 'bob', password: 'nope' });
  assert.equal(wrong.body['error'], 'invalid_grant');
});

test('brute-force protection blocks a (username, IP) pair after 10 failures until unblocked', async (t) => {
  const { as } = await start((fn) => t.after(fn));
  const proxy = (ip: string, password: string) =>
    passwordGrant(
      as,
      { client_id: PROXY_CLIENT.clientId, client_secret: PROXY_CLIENT.clientSecret, username: 'alice', password },
      { 'auth0-forwarded-for': ip },
    );
  for (let i = 0; i < 10; i++) assert.equal((await proxy('203.0.113.7', 'wrong')).status, 403);
  const blocked = await proxy('203.0.113.7', ALICE_PASSWORD);
  assert.equal(blocked.status, 429);
  assert.deepEqual(blocked.body, {
    error: 'too_many_attempts',
    error_description: 'Your account has been blocked after multiple consecutive login attempts.',
  });
  assert.equal((await proxy('203.0.113.8', ALICE_PASSWORD)).status, 200, 'another IP is unaffected');
  assert.deepEqual(as.stats().blocked, ['alice|203.0.113.7']);
  as.unblock('alice@example.com');
  assert.equal((await proxy('203.0.113.7', ALICE_PASSWORD)).status, 200);
  assert.deepEqual(as.stats().blocked, []);
});

test('an untrusted client cannot move failures to another IP with auth0-forwarded-for', async (t) => {
  const { as } = await start((fn) => t.after(fn), { lockoutThreshold: 3 });
  for (let i = 0; i < 3; i++) {
    await passwordGrant(as, { username: 'unknown-user', password: 'x' }, { 'auth0-forwarded-for': `198.51.100.${i}` });
  }
  assert.deepEqual(as.stats().blocked, ['unknown-user|127.0.0.1']);
  const res = await passwordGrant(as, { username: 'unknown-user', password: 'x' }, { 'auth0-forwarded-for': '198.51.100.99' });
  assert.equal(res.status, 429);
});

test('a successful login resets the failure count', async (t) => {
  const { as } = await start((fn) => t.after(fn), { lockoutThreshold: 2 });
  await passwordGrant(as, { username: 'alice', password: 'wrong' });
  assert.equal((await passwordGrant(as, { username: 'alice', password: ALICE_PASSWORD })).status, 200);
  await passwordGrant(as, { username: 'alice', password: 'wrong' });
  assert.equal((await passwordGrant(as, { username: 'alice', password: ALICE_PASSWORD })).status, 200);
  assert.deepEqual(as.stats().failedLogins, {});
});

test('introspection with private_key_jwt answers the ASP shape', async (t) => {
  const f = await shared();
  const asp = f.as.createAppPassword('bob', { scope: 'read:mail' });
  assert.match(asp.password, /^[A-Za-z0-9_-]{43}$/);
  const { status, body } = await introspect(f, asp.password);
  assert.equal(status, 200);
  assert.equal(typeof body['iat'], 'number');
  assert.deepEqual(
    { ...body, iat: 0 },
    {
      active: true,
      token_type: 'application_specific_password_token',
      scope: 'read:mail',
      sub: 'auth0|bob00001',
      aud: AUDIENCE,
      iss: f.as.issuer,
      iat: 0,
      username: 'bob',
    },
  );
  assert.ok(f.as.stats().introspectionRequests >= 1);
});

test('revoked, expired and unknown tokens introspect as inactive', async (t) => {
  const f = await shared();
  const revoked = f.as.createAppPassword('alice');
  f.as.revokeAppPassword(revoked.id);
  const expired = f.as.createAppPassword('alice', { expiresInSeconds: -1 });
  const expiredJwt = await f.as.issueAccessToken('alice', { expiresInSeconds: -120 });
  for (const token of [revoked.password, expired.password, 'not-a-token', expiredJwt]) {
    const { status, body } = await introspect(f, token);
    assert.equal(status, 200);
    assert.deepEqual(body, { active: false });
  }
  const expiring = f.as.createAppPassword('alice', { expiresInSeconds: 600 });
  const live = await introspect(f, expiring.password);
  assert.equal(typeof live.body['exp'], 'number');
});

test('introspection refuses a replayed jti, a bad signature, a wrong audience and no authentication', async (t) => {
  const f = await shared();
  const asp = f.as.createAppPassword('alice');
  const assertion = await f.assertion();
  assert.equal((await introspect(f, asp.password, assertion)).status, 200);
  const replay = await introspect(f, asp.password, assertion);
  assert.equal(replay.status, 401);
  assert.equal(replay.body['error'], 'invalid_client');

  const { privateKey: otherKey } = await generateKeyPair('ES256');
  assert.equal((await introspect(f, asp.password, await f.assertion({}, otherKey))).status, 401);
  assert.equal((await introspect(f, asp.password, await f.assertion({ aud: 'https://elsewhere/' }))).status, 401);
  assert.equal((await introspect(f, asp.password, await f.assertion({ iss: 'https://not-an-api' }))).status, 401);
  const tooLong = await f.assertion({ exp: Math.floor(Date.now() / 1000) + 3600 });
  assert.equal((await introspect(f, asp.password, tooLong)).status, 401);
  const none = await post(`${f.as.url}/oauth/introspect`, { token: asp.password });
  assert.equal(none.status, 401);
  assert.equal(none.body['error'], 'invalid_client');
  const noToken = await post(`${f.as.url}/oauth/introspect`, {
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: await f.assertion(),
  });
  assert.equal(noToken.status, 400);
  assert.equal(noToken.body['error'], 'invalid_request');
});

test('refresh tokens and access tokens introspect with their token_type', async (t) => {
  const f = await shared();
  const grant = await passwordGrant(f.as, { username: 'alice', password: ALICE_PASSWORD, scope: 'offline_access read:repo' });
  assert.equal(grant.status, 200);
  const refresh = await introspect(f, String(grant.body['refresh_token']));
  assert.equal(refresh.body['active'], true);
  assert.equal(refresh.body['token_type'], 'refresh_token');
  assert.equal(refresh.body['sub'], 'auth0|alice0001');
  assert.equal(refresh.body['username'], 'alice');
  const access = await introspect(f, String(grant.body['access_token']));
  assert.equal(access.body['active'], true);
  assert.equal(access.body['token_type'], 'access_token');
  assert.equal(access.body['scope'], 'offline_access read:repo');
  const seededRefresh = f.as.createAppPassword('alice', { tokenType: 'refresh_token' });
  assert.equal((await introspect(f, seededRefresh.password)).body['token_type'], 'refresh_token');
});

test('introspection also accepts the resource server client secret when configured', async (t) => {
  const as = await startDevServer({ audience: AUDIENCE, resourceServerClientSecret: 'rs-secret', users: defaultDevUsers() });
  t.after(() => as.close());
  const asp = as.createAppPassword('carol');
  const ok = await post(`${as.url}/oauth/introspect`, { token: asp.password, client_id: AUDIENCE, client_secret: 'rs-secret' });
  assert.equal(ok.body['active'], true);
  const wrong = await post(`${as.url}/oauth/introspect`, { token: asp.password, client_id: AUDIENCE, client_secret: 'nope' });
  assert.equal(wrong.status, 401);
});

test('admin API creates, lists and deletes app passwords without showing them', async (t) => {
  const { as } = await shared();
  const created = await fetch(`${as.url}/dev/users/carol/app-passwords`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ scope: 'read:repo', expiresInSeconds: 60 }),
  });
  assert.equal(created.status, 201);
  const { id, password } = (await created.json()) as { id: string; password: string };
  assert.equal(password.length, 43);
  const listText = await (await fetch(`${as.url}/dev/users/carol/app-passwords`)).text();
  assert.equal(listText.includes(password), false);
  const list = JSON.parse(listText) as Array<Record<string, unknown>>;
  assert.equal(list.length, 1);
  assert.equal(list[0]?.['id'], id);
  assert.equal(list[0]?.['audience'], AUDIENCE);
  assert.equal((await fetch(`${as.url}/dev/app-passwords/${id}`, { method: 'DELETE' })).status, 204);
  assert.equal((await fetch(`${as.url}/dev/app-passwords/${id}`, { method: 'DELETE' })).status, 404);
  assert.deepEqual(await (await fetch(`${as.url}/dev/users/carol/app-passwords`)).json(), []);
  assert.equal((await fetch(`${as.url}/dev/users/nobody/app-passwords`)).status, 404);
  const stats = (await (await fetch(`${as.url}/dev/stats`)).json()) as Record<string, unknown>;
  assert.equal(typeof stats['tokenRequests'], 'number');
});

test('bad input answers 400 invalid_request, never 500', async (t) => {
  const { as } = await shared();
  const cases: Array<{ type: string; body: string }> = [
    { type: 'application/json', body: '{"grant_type": "password",' },
    { type: 'application/json', body: '[1,2]' },
    { type: 'application/json', body: JSON.stringify({ client_id: CLIENT.clientId, client_secret: CLIENT.clientSecret, grant_type: 'password', username: ['a'], password: 'x' }) },
    { type: 'application/x-www-form-urlencoded', body: 'grant_type=password&grant_type=password' },
    { type: 'application/x-www-form-urlencoded', body: '%ZZ=%' },
    { type: 'application/x-www-form-urlencoded', body: 'a='.padEnd(70_000, 'x') },
  ];
  for (const c of cases) {
    const res = await fetch(`${as.url}/oauth/token`, { method: 'POST', headers: { 'content-type': c.type }, body: c.body });
    assert.ok(res.status >= 400 && res.status < 500, `${c.body.slice(0, 40)} → ${res.status}`);
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(typeof body['error'], 'string');
  }
});
