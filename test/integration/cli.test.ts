import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { loadClientKeys } from '../../src/upstream/clientKeys.js';
import { cli, CLI } from '../fixtures/cli.js';
import { startCredgate, type TestCredgate } from '../fixtures/credgate.js';

const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-cli', clientSecret: 'cli-client-secret-value' };
const alice = defaultDevUsers().find((u) => u.username === 'alice')!;


describe('credgate command line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'credgate-cli-'));
  const keyFile = join(dir, 'credgate-key.pem');
  let dev: DevAuthorizationServer;
  let publisher: TestCredgate;
  let env: Record<string, string>;

  before(async () => {
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
    env = { CREDGATE_ISSUER: dev.issuer, CREDGATE_AUDIENCE: AUDIENCE, CREDGATE_CLIENT_ID: CLIENT.clientId, CREDGATE_CLIENT_SECRET: CLIENT.clientSecret, CREDGATE_INTROSPECTION_KEY_FILE: keyFile };
  });
  after(async () => {
    await publisher?.close();
    await dev.close();
  });

  test('--help lists the commands', async () => {
    const { code, stdout } = await cli(['--help'], {});
    assert.equal(code, 0);
    for (const command of ['serve', 'keygen', 'introspect', 'verify']) assert.match(stdout, new RegExp(`credgate \\[?${command}`));
  });

  test('keygen writes a private key readable only by its owner and prints the public key as PEM and JWK', async () => {
    const { code, stdout, stderr } = await cli(['keygen', '--out', keyFile], {});
    assert.equal(code, 0, stderr);
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    assert.match(stdout, /-----BEGIN PUBLIC KEY-----/);
    assert.doesNotMatch(stdout, /PRIVATE KEY/);
    const jwk = JSON.parse(stdout.slice(stdout.indexOf('{'))) as { kid: string; alg: string; d?: string };
    assert.equal(jwk.alg, 'RS256');
    assert.equal(jwk.d, undefined);
    const again = await cli(['keygen', '--out', keyFile], {});
    assert.equal(again.code, 2, 'refuses to overwrite a key');
    const identity = await cli(['keygen', '--use', 'identity', '--out', join(dir, 'identity.pem')], {});
    assert.equal(identity.code, 0, identity.stderr);
    assert.match(identity.stderr, /CREDGATE_IDENTITY_KEY_FILE/);
    assert.equal((JSON.parse(identity.stdout.slice(identity.stdout.indexOf('{'))) as { alg: string }).alg, 'EdDSA', 'identity tokens: Ed25519 by default');
    assert.equal((await cli(['keygen', '--use', 'nonsense'], {})).code, 2);
    // Publish the key the way a running credgate does, so the AS can check the CLI's assertions.
    publisher = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT }, { keys: await loadClientKeys(keyFile) });
    dev.setResourceServerJwksUrl(publisher.jwksUrl);
    assert.equal(publisher.keys.signing.kid, jwk.kid);
  });

  test('verify reads the password from standard input and prints the decision; exit 0 allow, 1 deny', async () => {
    const allow = await cli(['verify', 'alice', '--scope', 'read:repo'], env, `${alice.password}\n`);
    assert.equal(allow.code, 0, allow.stderr);
    assert.equal(JSON.parse(allow.stdout).subject, alice.sub);
    const asp = dev.createAppPassword('alice', { scope: 'read:repo' }).password;
    const viaAsp = await cli(['verify', 'alice'], env, `${asp}\n`);
    assert.equal(viaAsp.code, 0, viaAsp.stderr);
    assert.equal(JSON.parse(viaAsp.stdout).credential, 'app_password', 'introspection authenticated with the key file (private_key_jwt)');
    const deny = await cli(['verify', 'alice'], env, 'wrong-password\n');
    assert.equal(deny.code, 1);
    assert.equal(JSON.parse(deny.stdout).reason, 'invalid_credentials');
    assert.ok(!(allow.stdout + allow.stderr + deny.stdout + deny.stderr).includes(alice.password));
  });

  test('introspect prints the answer for a token read from standard input', async () => {
    const asp = dev.createAppPassword('alice', { scope: 'read:repo' }).password;
    const { code, stdout, stderr } = await cli(['introspect', '-'], env, `${asp}\n`);
    assert.equal(code, 0, stderr);
    const out = JSON.parse(stdout) as { answer: { active: boolean; token_type: string }; client_id: string };
    assert.equal(out.answer.active, true);
    assert.equal(out.answer.token_type, 'application_specific_password_token');
    assert.equal(out.client_id, AUDIENCE);
    assert.ok(!stdout.includes(asp));
    const inactive = await cli(['introspect', '-'], env, 'not-a-token\n');
    assert.equal(inactive.code, 1);
  });

  test('invalid configuration stops start-up with the key named and exit code 2', async () => {
    const bad = await cli(['serve'], { ...env, PORT: 'eighty' });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /port \(PORT\)/);
    const noKey = await cli(['serve'], { ...env, CREDGATE_INTROSPECTION_KEY_FILE: join(dir, 'missing.pem') });
    assert.equal(noKey.code, 2);
    assert.match(noKey.stderr, /cannot read .*missing\.pem/);
    const insecure = await cli(['serve'], { ...env, CREDGATE_ISSUER: 'http://auth.example.com/' });
    assert.equal(insecure.code, 2);
    assert.match(insecure.stderr, /issuer must use https/);
  });

  test('serve answers on the configured port and stops cleanly on SIGTERM', async () => {
    const child = spawn(process.execPath, [CLI, 'serve'], { env: { PATH: process.env.PATH!, ...env, HOST: '127.0.0.1', PORT: '0', CREDGATE_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c));
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no listening line: ${out}`)), 10_000);
      child.stdout.on('data', () => {
        const m = /"url":"(http:\/\/[^"]+)"/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
    });
    const ready = await fetch(`${url}/readyz`);
    assert.equal(ready.status, 200);
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  });
});

