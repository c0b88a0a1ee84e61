import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { calculateJwkThumbprint, decodeProtectedHeader, importJWK, jwtVerify } from 'jose';
import * as oauth from 'oauth4webapi';
import { ConfigError } from '../../src/errors.js';
import { loadClientKeys, newKeyPair } from '../../src/upstream/clientKeys.js';

const dir = mkdtempSync(join(tmpdir(), 'credgate-keys-'));
const write = (name: string, text: string) => {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
};

for (const [type, alg] of [['rsa', 'RS256'], ['ec', 'ES256'], ['ed25519', 'EdDSA']] as const) {
  test(`a ${type} key signs client assertions (${alg}) that verify against the published JWK`, async () => {
    const pair = await newKeyPair(type);
    const keys = await loadClientKeys(write(`${type}.pem`, pair.privatePem));
    assert.equal(keys.signing.alg, alg);
    const [jwk] = keys.jwks.keys;
    assert.ok(jwk);
    assert.equal(jwk.kid, await calculateJwkThumbprint(jwk, 'sha256'), 'kid is the RFC 7638 thumbprint');
    for (const privatePart of ['d', 'p', 'q', 'dp', 'dq', 'qi']) assert.equal((jwk as Record<string, unknown>)[privatePart], undefined);

    // Sign an assertion the way introspection does, and check it as an AS would.
    const body = new URLSearchParams();
    const as = { issuer: 'https://tenant.auth0.com/' };
    await oauth.PrivateKeyJwt({ key: keys.signing.key, kid: keys.signing.kid })(as, { client_id: 'https://git.example.com' }, body, new Headers());
    const assertion = body.get('client_assertion')!;
    assert.equal(decodeProtectedHeader(assertion).kid, jwk.kid);
    const { payload } = await jwtVerify(assertion, await importJWK(jwk, alg), { issuer: 'https://git.example.com', audience: as.issuer });
    assert.equal(payload.sub, 'https://git.example.com');
    assert.ok(typeof payload.jti === 'string' && payload.jti.length >= 16);
    assert.ok(payload.exp! - payload.iat! <= 60);
  });
}

test('rotation: published keys are served beside the signing key, public parts only, without duplicates', async () => {
  const current = await newKeyPair('rsa');
  const next = await newKeyPair('ec');
  const keys = await loadClientKeys(write('current.pem', current.privatePem), [write('next.pub.pem', next.publicPem), write('current-again.pem', current.privatePem)]);
  assert.deepEqual(keys.jwks.keys.map((k) => k.kid), [current.jwk.kid, next.jwk.kid]);
  assert.ok(Object.isFrozen(keys.jwks));
});

test('unusable keys stop start-up with the key named', async () => {
  const weak = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  await assert.rejects(loadClientKeys(write('weak.pem', weak)), (e: unknown) => e instanceof ConfigError && /2048/.test(e.message) && e.key === 'introspectionKeyFile');
  await assert.rejects(loadClientKeys(write('garbage.pem', 'not a key')), (e: unknown) => e instanceof ConfigError && e.key === 'introspectionKeyFile');
  await assert.rejects(loadClientKeys(join(dir, 'missing.pem')), /cannot read/);
  const secp256k1 = generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  await assert.rejects(loadClientKeys(write('k1.pem', secp256k1)), ConfigError);
});
