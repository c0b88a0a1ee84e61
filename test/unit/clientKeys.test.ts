import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { calculateJwkThumbprint, decodeJwt, decodeProtectedHeader, importJWK, jwtVerify } from 'jose';
import * as oauth from 'oauth4webapi';
import { ConfigError } from '../../src/errors.js';
import { loadClientKeys, newKeyPair } from '../../src/upstream/clientKeys.js';
import { privateKeyJwt } from '../../src/upstream/clientAssertion.js';

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

    // Sign an assertion the way introspection does, and check it as an AS would; it carries the
    // header and claims oauth4webapi's PrivateKeyJwt sends (EC and Ed25519 keys sign with node:crypto).
    const as = { issuer: 'https://tenant.auth0.com/' };
    const client = { client_id: 'https://git.example.com' };
    const sent = async (auth: oauth.ClientAuth) => {
      const body = new URLSearchParams();
      await auth(as, client, body, new Headers());
      return body;
    };
    const body = await sent(privateKeyJwt(keys.signing));
    const reference = await sent(oauth.PrivateKeyJwt({ key: keys.signing.key, kid: keys.signing.kid }));
    assert.deepEqual([...body.keys()].sort(), [...reference.keys()].sort());
    assert.equal(body.get('client_assertion_type'), reference.get('client_assertion_type'));
    assert.equal(body.get('client_id'), client.client_id);
    const assertion = body.get('client_assertion')!;
    // The alg the published JWK names (oauth4webapi says "Ed25519" for an Ed25519 key, which an AS
    // matching it against the JWK's "EdDSA" would not take).
    assert.deepEqual(decodeProtectedHeader(assertion), { alg: jwk.alg, kid: jwk.kid });
    assert.deepEqual(Object.keys(decodeProtectedHeader(reference.get('client_assertion')!)).sort(), ['alg', 'kid']);
    const { payload } = await jwtVerify(assertion, await importJWK(jwk, alg), { issuer: client.client_id, audience: as.issuer });
    const { payload: theirs } = await jwtVerify(reference.get('client_assertion')!, await importJWK(jwk, alg), { issuer: client.client_id, audience: as.issuer });
    assert.deepEqual(Object.keys(payload).sort(), Object.keys(theirs).sort());
    assert.equal(payload.sub, client.client_id);
    assert.ok(typeof payload.jti === 'string' && payload.jti.length >= 40, 'a 32-byte jti');
    assert.notEqual(payload.jti, decodeJwt((await sent(privateKeyJwt(keys.signing))).get('client_assertion')!).jti, 'a new jti each time');
    assert.equal(payload.exp! - payload.iat!, 60);
    assert.equal(payload.nbf, payload.iat);
    assert.ok(Math.abs(payload.iat! - Date.now() / 1000) < 5);
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
