import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { IdentityTokens } from '../../src/identity/tokens.js';
import { Policy } from '../../src/policy/policy.js';
import { policySchema } from '../../src/policy/schema.js';
import { generateClientKeys } from '../../src/upstream/clientKeys.js';
import type { Identity } from '../../src/verify/types.js';

const identity = (o: Partial<Identity> = {}): Identity => ({ subject: 'auth0|alice', username: 'alice', credential: 'app_password', scopes: ['read:repo', 'write:repo'], audience: 'https://git', expiresAt: undefined, ...o });
const spec = { audience: 'https://app.example.com', ttlSeconds: 60, header: 'X-Auth-Token' };

test('claims: iss, sub, aud, iat, exp, jti, scope, credential, username; signed with the identity key, its kid in the JWKS', async () => {
  const keys = await generateClientKeys('ed25519');
  const tokens = new IdentityTokens(keys.signing, 'https://credgate.example.com');
  const jwt = await tokens.tokenFor(identity(), spec);
  const { payload, protectedHeader } = await jwtVerify(jwt, createLocalJWKSet(keys.jwks), { issuer: 'https://credgate.example.com', audience: spec.audience });
  assert.equal(protectedHeader.alg, 'EdDSA');
  assert.equal(protectedHeader.kid, keys.signing.kid);
  assert.equal(payload.sub, 'auth0|alice');
  assert.deepEqual([payload.scope, payload.credential, payload.username], ['read:repo write:repo', 'app_password', 'alice']);
  assert.equal(payload.exp! - payload.iat!, 60);
  assert.match(String(payload.jti), /^[A-Za-z0-9_-]{22}$/);
  assert.deepEqual(Object.keys(payload).sort(), ['aud', 'credential', 'exp', 'iat', 'iss', 'jti', 'scope', 'sub', 'username']);
  // Deny beside the allow: another audience, or a key that is not credgate's, does not verify.
  await assert.rejects(jwtVerify(jwt, createLocalJWKSet(keys.jwks), { issuer: 'https://credgate.example.com', audience: 'https://other.example.com' }));
  await assert.rejects(jwtVerify(jwt, createLocalJWKSet((await generateClientKeys('ed25519')).jwks), { issuer: 'https://credgate.example.com', audience: spec.audience }));
});

test('exp is never past the identity\'s own expiry; a token without username claim has none', async () => {
  const keys = await generateClientKeys('ed25519');
  const tokens = new IdentityTokens(keys.signing, 'iss');
  const soon = Math.floor(Date.now() / 1000) + 10;
  const claims = decodeJwt(await tokens.tokenFor(identity({ expiresAt: soon, username: undefined }), spec));
  assert.equal(claims.exp, soon);
  assert.equal(claims.username, undefined);
});

test('signed once per identity and audience, then answered at once from the cache; re-signed off the request path near expiry', async () => {
  const keys = await generateClientKeys('ed25519');
  let clock = 1_800_000_000_000;
  const tokens = new IdentityTokens(keys.signing, 'iss', () => clock);
  const id = identity();
  const first = await tokens.tokenFor(id, spec);
  const again = tokens.tokenFor(id, spec);
  assert.equal(typeof again, 'string', 'a cached token is returned synchronously');
  assert.equal(again, first);
  assert.notEqual(await tokens.tokenFor(id, { ...spec, audience: 'https://other' }), first, 'one per audience');
  clock += 50_000; // past three quarters of its 60 s
  assert.equal(tokens.tokenFor(id, spec), first, 'still answered with the valid one...');
  await new Promise((r) => setTimeout(r, 20));
  const refreshed = tokens.tokenFor(id, spec);
  assert.equal(typeof refreshed, 'string');
  assert.notEqual(refreshed, first, '...while a new one was signed in the background');
  assert.equal(decodeProtectedHeader(String(refreshed)).kid, keys.signing.kid);
  clock += 120_000; // both expired
  assert.ok(tokens.tokenFor(id, spec) instanceof Promise, 'an expired token is never handed out');
});

test('policy: a rule\'s identityToken, else the policy default, never for a rule that says false or for mail', () => {
  const policy = new Policy(
    policySchema.parse({
      identityToken: { audience: 'https://app.example.com' },
      rules: [
        { name: 'other', match: { path: '/other/**' }, identityToken: { audience: 'https://other.example.com', ttlSeconds: 30, header: 'X-Other-Token' } },
        { name: 'none', match: { path: '/plain/**' }, identityToken: false },
        { name: 'imap', match: { protocol: 'imap' } },
        { name: 'rest', match: { path: '/**' } },
      ],
    }),
  );
  const at = (path: string) => policy.evaluate({ protocol: 'http', method: 'GET', target: { path, query: new URLSearchParams() } });
  const other = at('/other/x');
  assert.deepEqual(other.effect === 'require' && other.identityToken, { audience: 'https://other.example.com', ttlSeconds: 30, header: 'X-Other-Token' });
  const rest = at('/x');
  assert.deepEqual(rest.effect === 'require' && rest.identityToken, { audience: 'https://app.example.com', ttlSeconds: 60, header: 'X-Auth-Token' });
  const none = at('/plain/x');
  assert.equal(none.effect === 'require' && none.identityToken, undefined);
  const imap = policy.evaluate({ protocol: 'imap' });
  assert.equal(imap.effect === 'require' && imap.identityToken, undefined);
  assert.equal(policy.usesIdentityTokens, true);
  assert.throws(() => policySchema.parse({ rules: [{ name: 'x', deny: true, identityToken: { audience: 'a' } }] }), /deny rule/);
});
