import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { SignJWT, createRemoteJWKSet, exportJWK, generateKeyPair, jwtVerify, type CryptoKey } from 'jose';
import { startOidcProvider } from '../fixtures/oidcProvider.js';

const AUDIENCE = 'https://git.example.com';
const OTHER_AUDIENCE = 'https://mail.example.com';
const PASSWORD_CLIENT = { clientId: 'credgate-password-client', clientSecret: 'password-client-secret' };
const INTROSPECTION_CLIENT_ID = 'credgate-introspection-client';

async function json(res: Response): Promise<Record<string, unknown>> {
  return (await res.json()) as Record<string, unknown>;
}

test('oidc-provider fixture: password grant, introspection with private_key_jwt, ASPs, refresh tokens', async (t) => {
  // Stand-in for credgate's /.well-known/jwks.json.
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const kid = 'credgate-test-key';
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' };
  const jwksServer = createServer((req, res) => {
    if (req.url === '/.well-known/jwks.json') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [publicJwk] }));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => jwksServer.close(() => resolve())));
  const jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/.well-known/jwks.json`;

  const op = await startOidcProvider({
    audience: AUDIENCE,
    extraAudiences: [OTHER_AUDIENCE],
    passwordClient: PASSWORD_CLIENT,
    introspectionClientId: INTROSPECTION_CLIENT_ID,
    introspectionClientJwksUrl: () => jwksUrl, // resolved lazily
    users: [
      { username: 'alice', email: 'alice@example.com', password: 'correct horse', sub: 'user|alice', scopes: ['read:repo', 'write:repo'] },
      { username: 'bob', password: 'bob-password', sub: 'user|bob', scopes: ['read:mail'] },
    ],
  });
  t.after(() => op.close());
  assert.match(op.issuer, /^http:\/\/127\.0\.0\.1:\d+$/);

  const discovery = await json(await fetch(`${op.issuer}/.well-known/openid-configuration`));
  assert.equal(discovery.issuer, op.issuer);
  for (const key of ['token_endpoint', 'jwks_uri', 'introspection_endpoint']) {
    assert.equal(typeof discovery[key], 'string', key);
  }
  const tokenEndpoint = discovery.token_endpoint as string;
  const introspectionEndpoint = discovery.introspection_endpoint as string;
  const jwks = createRemoteJWKSet(new URL(discovery.jwks_uri as string));

  const passwordGrant = (fields: Record<string, string>, basic = false) => {
    const body = new URLSearchParams({ grant_type: 'password', audience: AUDIENCE, ...fields });
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
    if (basic) {
      headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(PASSWORD_CLIENT.clientId)}:${encodeURIComponent(PASSWORD_CLIENT.clientSecret)}`).toString('base64')}`;
    } else {
      body.set('client_id', PASSWORD_CLIENT.clientId);
      body.set('client_secret', PASSWORD_CLIENT.clientSecret);
    }
    return fetch(tokenEndpoint, { method: 'POST', headers, body });
  };

  const assertion = (key: CryptoKey, alg: string, keyId: string, overrides: Record<string, unknown> = {}) =>
    new SignJWT({ iss: INTROSPECTION_CLIENT_ID, sub: INTROSPECTION_CLIENT_ID, aud: op.issuer, jti: randomUUID(), ...overrides })
      .setProtectedHeader({ alg, kid: keyId })
      .setIssuedAt()
      .setExpirationTime('60s')
      .sign(key);

  const introspect = async (token: string, key: CryptoKey = privateKey, alg = 'ES256', keyId = kid) =>
    fetch(introspectionEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams({
        token,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await assertion(key, alg, keyId),
      }),
    });

  await t.test('password grant (client_secret_post) returns a verifiable RS256 JWT', async () => {
    const res = await passwordGrant({ username: 'Alice@Example.com', password: 'correct horse', scope: 'read:repo admin' });
    assert.equal(res.status, 200);
    const body = await json(res);
    assert.equal(body.token_type, 'Bearer');
    assert.equal(body.scope, 'read:repo');
    assert.equal(typeof body.expires_in, 'number');
    const { payload, protectedHeader } = await jwtVerify(body.access_token as string, jwks, {
      issuer: op.issuer,
      audience: AUDIENCE,
      algorithms: ['RS256'],
    });
    assert.equal(protectedHeader.typ, 'at+jwt');
    assert.equal(payload.sub, 'user|alice');
    assert.equal(payload.scope, 'read:repo');
    assert.equal(payload.client_id, PASSWORD_CLIENT.clientId);
  });

  await t.test('password grant (client_secret_basic), all scopes by default, other audience', async () => {
    const res = await passwordGrant({ username: 'alice', password: 'correct horse', audience: OTHER_AUDIENCE }, true);
    assert.equal(res.status, 200);
    const body = await json(res);
    assert.equal(body.scope, 'read:repo write:repo');
    const { payload } = await jwtVerify(body.access_token as string, jwks, { issuer: op.issuer, audience: OTHER_AUDIENCE });
    assert.equal(payload.aud, OTHER_AUDIENCE);
  });

  await t.test('wrong password and unknown user give 400 invalid_grant; unknown audience invalid_target', async () => {
    for (const fields of [{ username: 'alice', password: 'wrong' }, { username: 'nobody', password: 'x' }]) {
      const res = await passwordGrant(fields);
      assert.equal(res.status, 400);
      assert.equal((await json(res)).error, 'invalid_grant');
    }
    const res = await passwordGrant({ username: 'alice', password: 'correct horse', audience: 'https://unknown.example.com' });
    assert.equal(res.status, 400);
    assert.equal((await json(res)).error, 'invalid_target');
  });

  await t.test('ASP introspection: active with username, then revoked', async () => {
    const asp = await op.mintAppPassword('alice', { scope: 'read:repo' });
    const res = await introspect(asp);
    assert.equal(res.status, 200);
    const body = await json(res);
    t.diagnostic(`ASP introspection: ${JSON.stringify(body)}`);
    assert.equal(body.active, true);
    assert.equal(body.username, 'alice');
    assert.equal(body.email, 'alice@example.com');
    assert.equal(body.sub, 'user|alice');
    assert.equal(body.aud, AUDIENCE);
    assert.equal(body.scope, 'read:repo');
    assert.equal(body.token_type, 'Bearer');
    assert.equal(body.iss, op.issuer);
    assert.ok(typeof body.exp === 'number' && body.exp > Date.now() / 1000 + 29 * 24 * 3600);

    await op.revoke(asp);
    assert.deepEqual(await json(await introspect(asp)), { active: false });
  });

  await t.test('expired ASP and unknown token are inactive', async () => {
    // The live control gets minutes: oidc-provider counts exp from a whole-second iat, so a 1 s
    // lifetime could end a few milliseconds after minting, before the introspection arrived.
    const asp = await op.mintAppPassword('bob', { expiresInSeconds: 300, audience: OTHER_AUDIENCE });
    const live = await json(await introspect(asp));
    assert.equal(live.active, true);
    assert.equal(live.username, 'bob');
    assert.equal(live.aud, OTHER_AUDIENCE);
    assert.equal(live.email, undefined);
    assert.deepEqual(await json(await introspect('not-a-token')), { active: false });
    const expired = await op.mintAppPassword('bob', { expiresInSeconds: 0 });
    assert.deepEqual(await json(await introspect(expired)), { active: false });
  });

  await t.test('refresh token introspection says token_type refresh_token', async () => {
    const rt = await op.mintRefreshToken('alice');
    const body = await json(await introspect(rt));
    t.diagnostic(`refresh token introspection: ${JSON.stringify(body)}`);
    assert.equal(body.active, true);
    assert.equal(body.token_type, 'refresh_token');
    await op.revoke(rt);
    assert.equal((await json(await introspect(rt))).active, false);
  });

  await t.test('client assertion signed by a foreign key is 401 invalid_client', async () => {
    const foreign = await generateKeyPair('ES256');
    const asp = await op.mintAppPassword('alice');
    for (const keyId of [kid, 'other-kid']) {
      const res = await introspect(asp, foreign.privateKey, 'ES256', keyId);
      assert.equal(res.status, 401);
      assert.equal((await json(res)).error, 'invalid_client');
    }
  });

  await t.test('client assertion with a wrong aud is 401 invalid_client', async () => {
    const asp = await op.mintAppPassword('alice');
    const res = await fetch(introspectionEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        token: asp,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await assertion(privateKey, 'ES256', kid, { aud: 'https://elsewhere.example.com' }),
      }),
    });
    assert.equal(res.status, 401);
    assert.equal((await json(res)).error, 'invalid_client');
  });
});
