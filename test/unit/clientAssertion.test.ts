import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mock, test } from 'node:test';
import { decodeJwt, importJWK, jwtVerify } from 'jose';
import { PRESIGNED_MIN_REMAINING_SECONDS, PRESIGNED_POOL_SIZE, PresignedAssertions, privateKeyJwt } from '../../src/upstream/clientAssertion.js';
import { loadClientKeys, newKeyPair } from '../../src/upstream/clientKeys.js';

const ISSUER = 'https://tenant.auth0.com/';
const CLIENT = 'https://git.example.com';

/** A pool over a fake signer that numbers what it makes; `settle` lets the background refill run. */
function numberedPool(fail = () => false) {
  let made = 0;
  const calls: string[] = [];
  const pool = new PresignedAssertions(async (issuer, clientId) => {
    calls.push(`${issuer} ${clientId}`);
    if (fail()) throw new Error('signing failed');
    return { jwt: `assertion-${++made}`, expiresAt: Math.floor(Date.now() / 1000) + 60 };
  });
  return { pool, calls, made: () => made };
}
const settle = () => new Promise((resolve) => setTimeout(resolve, 10));

test('pre-signed assertions: the first is signed at once, a refill follows, and each one is sent once', async () => {
  const { pool, made } = numberedPool();
  assert.equal(await pool.take(ISSUER, CLIENT), 'assertion-1', 'none ready: signed for the caller');
  await settle();
  assert.equal(pool.ready, PRESIGNED_POOL_SIZE);
  assert.equal(made(), 1 + PRESIGNED_POOL_SIZE);
  const sent = new Set<string>(['assertion-1']);
  for (let i = 0; i < 3 * PRESIGNED_POOL_SIZE; i++) {
    const jwt = await pool.take(ISSUER, CLIENT);
    assert.ok(!sent.has(jwt), `${jwt} sent twice`);
    sent.add(jwt);
    await settle();
  }
  assert.equal(pool.ready, PRESIGNED_POOL_SIZE, 'refilled after each take');
  assert.equal(made(), sent.size + PRESIGNED_POOL_SIZE, 'nothing signed that was neither sent nor ready');
});

test('pre-signed assertions: one with less than the minimum lifetime left is never sent; another audience empties the pool', async () => {
  mock.timers.enable({ apis: ['Date'], now: Date.now() });
  try {
    const { pool } = numberedPool();
    await pool.take(ISSUER, CLIENT);
    await new Promise<void>((resolve) => setImmediate(resolve)); // the refill (fake signer) runs on promises
    for (let i = 0; i < 5 && pool.ready < PRESIGNED_POOL_SIZE; i++) await new Promise<void>((resolve) => setImmediate(resolve));
    assert.equal(pool.ready, PRESIGNED_POOL_SIZE);
    mock.timers.tick((60 - PRESIGNED_MIN_REMAINING_SECONDS + 1) * 1000);
    const fresh = await pool.take(ISSUER, CLIENT);
    assert.equal(fresh, `assertion-${PRESIGNED_POOL_SIZE + 2}`, 'the stale ones skipped, a new one signed');
    for (let i = 0; i < 5 && pool.ready < PRESIGNED_POOL_SIZE; i++) await new Promise<void>((resolve) => setImmediate(resolve));
    const ready = pool.ready;
    assert.ok(ready > 0);
    assert.equal(await pool.take('https://other.example.com/', CLIENT), `assertion-${PRESIGNED_POOL_SIZE + 3 + ready}`, 'made for the other issuer, not taken from the pool');
  } finally {
    mock.timers.reset();
  }
});

test('pre-signed assertions: a refill that fails leaves the next caller to sign its own and see its error', async () => {
  let failing = false;
  const { pool } = numberedPool(() => failing);
  await pool.take(ISSUER, CLIENT);
  await settle();
  assert.equal(pool.ready, PRESIGNED_POOL_SIZE);
  failing = true;
  for (let i = 0; i < PRESIGNED_POOL_SIZE; i++) assert.match(await pool.take(ISSUER, CLIENT), /^assertion-/, 'the ready ones still go out');
  await settle();
  assert.equal(pool.ready, 0, 'no refill succeeded');
  await assert.rejects(pool.take(ISSUER, CLIENT), /signing failed/);
  failing = false;
  assert.match(await pool.take(ISSUER, CLIENT), /^assertion-/);
  await settle();
  assert.equal(pool.ready, PRESIGNED_POOL_SIZE, 'refilled once signing works again');
});

test('an RS256 client key: assertions from the pool verify against the published JWK, with their own jti and at least 30 s left', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'credgate-assertion-')), 'rsa.pem');
  writeFileSync(file, (await newKeyPair('rsa')).privatePem, { mode: 0o600 });
  const keys = await loadClientKeys(file);
  assert.equal(keys.signing.alg, 'RS256');
  const key = await importJWK(keys.jwks.keys[0]!, 'RS256');
  const auth = privateKeyJwt(keys.signing);
  const jtis = new Set<string>();
  for (let i = 0; i < 2 * PRESIGNED_POOL_SIZE; i++) {
    const body = new URLSearchParams();
    await auth({ issuer: ISSUER }, { client_id: CLIENT }, body, new Headers());
    assert.equal(body.get('client_assertion_type'), 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    const { payload, protectedHeader } = await jwtVerify(body.get('client_assertion')!, key, { issuer: CLIENT, subject: CLIENT, audience: ISSUER });
    assert.deepEqual(protectedHeader, { alg: 'RS256', kid: keys.signing.kid });
    assert.equal(payload.exp! - payload.iat!, 60);
    assert.ok(payload.exp! - Date.now() / 1000 >= PRESIGNED_MIN_REMAINING_SECONDS);
    jtis.add(String(decodeJwt(body.get('client_assertion')!).jti));
    await settle();
  }
  assert.equal(jtis.size, 2 * PRESIGNED_POOL_SIZE);
});
