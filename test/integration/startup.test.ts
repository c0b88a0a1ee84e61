import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { cli } from '../fixtures/cli.js';
import { startFakeAuthorizationServer, type FakeAuthorizationServer } from '../fixtures/fakeAuthorizationServer.js';

/** Start-up fails fast, with exit code 2 and the key named, on keys or settings it cannot use. */
describe('start-up fails fast on bad keys and impossible resilience settings', () => {
  const dir = mkdtempSync(join(tmpdir(), 'credgate-startup-'));
  let fake: FakeAuthorizationServer;
  let env: Record<string, string>;
  before(async () => {
    fake = await startFakeAuthorizationServer();
    env = { CREDGATE_ISSUER: fake.issuer, CREDGATE_AUDIENCE: 'https://git.example.com', CREDGATE_CLIENT_ID: 'cid', CREDGATE_CLIENT_SECRET: 'client-secret-value', HOST: '127.0.0.1', PORT: '0' };
  });
  after(async () => {
    await fake.close();
  });

  const file = (name: string, content: string) => {
    const path = join(dir, name);
    writeFileSync(path, content, { mode: 0o600 });
    return path;
  };
  const pem = (o: ReturnType<typeof generateKeyPairSync>, part: 'privateKey' | 'publicKey') =>
    (o[part] as unknown as { export(o: object): string }).export(part === 'privateKey' ? { type: 'pkcs8', format: 'pem' } : { type: 'spki', format: 'pem' });

  const badKeys: Array<[string, () => string, RegExp]> = [
    ['not a PEM at all', () => file('garbage.pem', 'this is not a key\n'), /introspectionKeyFile|key/i],
    ['a truncated PEM', () => file('truncated.pem', pem(generateKeyPairSync('ec', { namedCurve: 'P-256' }), 'privateKey').slice(0, 80)), /introspectionKeyFile|key/i],
    ['a public key where the private key belongs', () => file('public.pem', pem(generateKeyPairSync('ec', { namedCurve: 'P-256' }), 'publicKey')), /private/i],
    ['an RSA key of 1024 bits', () => file('rsa1024.pem', pem(generateKeyPairSync('rsa', { modulusLength: 1024 }), 'privateKey')), /2048/],
    ['a directory', () => dir, /cannot read|introspectionKeyFile/i],
  ];
  for (const [name, make, message] of badKeys) {
    test(`introspectionKeyFile: ${name} → exit 2 at once`, async () => {
      const started = Date.now();
      const { code, stderr } = await cli(['serve'], { ...env, CREDGATE_INTROSPECTION_KEY_FILE: make() });
      assert.equal(code, 2, stderr);
      assert.match(stderr, message);
      assert.ok(Date.now() - started < 5000);
      assert.equal(fake.calls.token + fake.calls.introspection, 0, 'no AS call before the keys are known good');
    });
  }

  test('impossible resilience settings stop start-up naming the key (the rest: test/unit/resilienceConfig.test.ts)', async () => {
    const { code, stderr } = await cli(['serve'], { ...env, CREDGATE_INTROSPECTION_CLIENT_SECRET: 'introspection-secret-value', CREDGATE_DECISION_TIMEOUT_MS: '20000', CREDGATE_SHUTDOWN_TIMEOUT_MS: '10000' });
    assert.equal(code, 2, stderr);
    assert.match(stderr, /shutdownTimeoutMs \(CREDGATE_SHUTDOWN_TIMEOUT_MS\): must exceed decisionTimeoutMs/);
  });
});
