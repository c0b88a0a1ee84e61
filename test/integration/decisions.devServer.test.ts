import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { SignJWT } from 'jose';
import { configSchema } from '../../src/config/schema.js';
import { startDevMode, devBanner } from '../../src/dev/devMode.js';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { createLogger } from '../../src/log.js';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { decisionMatrix, type TestUser } from '../fixtures/decisionMatrix.js';

const AUDIENCE = 'https://git.example.com';
const OTHER_AUDIENCE = 'https://mail.example.com';
const CLIENT = { clientId: 'credgate-test', clientSecret: 'dev-client-secret-value' };
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));
const asTestUser = (name: string): TestUser => ({ username: name, password: users[name]!.password, sub: users[name]!.sub! });
const unicodeUser = { username: 'jürgen', email: 'juergen@example.com', password: 'pä:ss%wörd:✓ 名', sub: 'auth0|juergen01', permissions: ['read:repo'] };

async function devSetUp(lockoutThreshold = 10): Promise<{ dev: DevAuthorizationServer; credgate: TestCredgate }> {
  const dev = await startDevServer({ audience: AUDIENCE, extraAudiences: [OTHER_AUDIENCE], users: [...defaultDevUsers(), unicodeUser], clients: [CLIENT], lockoutThreshold });
  const credgate = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT });
  dev.setResourceServerJwksUrl(credgate.jwksUrl);
  return { dev, credgate };
}

decisionMatrix('the embedded dev authorization server (Auth0 wire format)', async () => {
  // The matrix tries many ASPs and wrong passwords for alice; each ASP first tried as a password
  // counts as a failed login at Auth0 (10 block the user). Lockout is tested on its own below.
  const { dev, credgate } = await devSetUp(1000);
  const ids = new Map<string, string>();
  return {
    credgate,
    audience: AUDIENCE,
    otherAudience: OTHER_AUDIENCE,
    alice: asTestUser('alice'),
    carol: asTestUser('carol'),
    unicode: unicodeUser,
    appPasswordCredential: 'app_password',
    async mintAppPassword(username, o = {}) {
      const { id, password } = dev.createAppPassword(username, o);
      ids.set(password, id);
      return password;
    },
    async revoke(password) {
      dev.revokeAppPassword(ids.get(password)!);
    },
    async mintRefreshToken(username) {
      return dev.createAppPassword(username, { tokenType: 'refresh_token' }).password;
    },
    async accessToken(user) {
      const response = await fetch(`${dev.issuer}oauth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ grant_type: 'password', username: user.username, password: user.password, audience: AUDIENCE, client_id: CLIENT.clientId, client_secret: CLIENT.clientSecret }),
      });
      return ((await response.json()) as { access_token: string }).access_token;
    },
    async close() {
      await credgate.close();
      await dev.close();
    },
  };
});

describe('Auth0 behaviour through the dev server', () => {
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  before(async () => ({ dev, credgate } = await devSetUp()));
  after(async () => {
    await credgate.close();
    await dev.close();
  });

  test('an MFA user: the password alone is denied, an app-specific password is allowed', async () => {
    const bob = asTestUser('bob');
    const denied = await credgate.verify({ username: 'bob', password: bob.password });
    assert.deepEqual(denied.body, { allow: false, status: 401, reason: 'invalid_credentials', cached: false });
    const asp = dev.createAppPassword('bob', { scope: 'read:repo' }).password;
    const allowed = await credgate.verify({ username: 'bob', password: asp, scopes: ['read:repo'] });
    assert.equal(allowed.body.allow, true);
    assert.equal(allowed.body.credential, 'app_password');
    assert.equal(allowed.body.subject, bob.sub);
  });

  test('tokens signed by the AS key but for the wrong issuer, audience or time are denied; the right one is allowed', async () => {
    const { privateKey, kid } = dev.signingKey;
    const sign = (o: { iss?: string; aud?: string; exp?: number }) =>
      new SignJWT({ scope: 'read:repo' })
        .setProtectedHeader({ alg: 'RS256', kid })
        .setSubject(users.alice!.sub!)
        .setIssuer(o.iss ?? dev.issuer)
        .setAudience(o.aud ?? AUDIENCE)
        .setIssuedAt()
        .setExpirationTime(o.exp ?? Math.floor(Date.now() / 1000) + 600)
        .sign(privateKey);
    assert.equal((await credgate.auth(`Bearer ${await sign({})}`)).status, 200);
    assert.equal((await credgate.auth(`Bearer ${await sign({ iss: 'https://evil.example/' })}`)).status, 401);
    assert.equal((await credgate.auth(`Bearer ${await sign({ aud: OTHER_AUDIENCE })}`)).status, 401);
    assert.equal((await credgate.auth(`Bearer ${await sign({ exp: Math.floor(Date.now() / 1000) - 120 })}`)).status, 401);
    const hs256 = await new SignJWT({}).setProtectedHeader({ alg: 'HS256', kid }).setSubject('x').setIssuer(dev.issuer).setAudience(AUDIENCE).setExpirationTime('5m').sign(new TextEncoder().encode('k'.repeat(32)));
    assert.equal((await credgate.auth(`Bearer ${hs256}`)).status, 401);
  });

  test('an opaque Bearer token is introspected: allowed when active, denied when revoked or a refresh token', async () => {
    const { id, password: token } = dev.createAppPassword('alice', { scope: 'read:repo' });
    const allowed = await credgate.auth(`Bearer ${token}`, '/auth?scope=read:repo');
    assert.equal(allowed.status, 200);
    assert.equal(allowed.headers.get('x-auth-user'), 'alice');
    assert.equal(allowed.headers.get('x-auth-subject'), users.alice!.sub);
    assert.equal((await credgate.auth(`Bearer ${token}`, '/auth?scope=write:repo')).status, 403);
    dev.revokeAppPassword(id);
    // The identity stays cached (revocation latency = cacheTtlSeconds) until purged.
    assert.equal((await credgate.auth(`Bearer ${token}`)).status, 200);
    assert.ok((await credgate.service.purge({ username: 'alice' })).purged >= 1);
    assert.equal((await credgate.auth(`Bearer ${token}`)).status, 401);
    const refresh = dev.createAppPassword('alice', { tokenType: 'refresh_token' }).password;
    assert.equal((await credgate.auth(`Bearer ${refresh}`)).status, 401);
  });

  test('after the AS blocks a user (too_many_attempts) the answer stays uniform, the reason is logged, and an ASP still works', async () => {
    for (let i = 0; i < 10; i++) await credgate.verify({ username: 'carol', password: `guess-${i}` });
    const blocked = await credgate.verify({ username: 'carol', password: users.carol!.password });
    assert.deepEqual(blocked.body, { allow: false, status: 401, reason: 'invalid_credentials', cached: false });
    assert.ok(credgate.logs.some((l) => l.includes('"asError":"too_many_attempts"')));
    const asp = dev.createAppPassword('carol').password;
    assert.equal((await credgate.verify({ username: 'carol', password: asp })).body.allow, true);
    dev.unblock('carol');
    await credgate.service.purge({ username: 'carol' }); // the refused right password is negatively cached for a few seconds
    assert.equal((await credgate.verify({ username: 'carol', password: users.carol!.password })).body.allow, true);
  });

  test('/readyz, /healthz, the public JWKS and /metrics', async () => {
    assert.equal((await fetch(`${credgate.url}/healthz`)).status, 200);
    const ready = await fetch(`${credgate.url}/readyz`);
    assert.equal(ready.status, 200, await ready.clone().text());
    const jwks = (await (await fetch(credgate.jwksUrl)).json()) as { keys: Array<Record<string, unknown>> };
    assert.equal(jwks.keys.length, 1);
    assert.equal(jwks.keys[0]!.kid, credgate.keys.signing.kid);
    assert.equal(jwks.keys[0]!.d, undefined, 'no private key material');
    const metrics = await (await fetch(`${credgate.url}/metrics`)).text();
    assert.match(metrics, /credgate_decisions_total\{interface="verify",result="allow",reason="ok",credential="app_password",cached="false"\} [1-9]/);
    assert.match(metrics, /credgate_decisions_total\{interface="verify",result="deny",reason="invalid_credentials",credential="none",cached="false"\} [1-9]/);
    assert.doesNotMatch(metrics, /credgate_policy_last_reload_successful/, 'without a policy file there is no reload state to report');
    assert.match(metrics, /credgate_upstream_requests_total\{endpoint="token",outcome="client_error"\} [1-9]/);
    assert.match(metrics, /credgate_upstream_requests_total\{endpoint="introspection",outcome="ok"\} [1-9]/);
    assert.match(metrics, /credgate_decision_duration_seconds_bucket\{le="0.0001",interface="verify",result="allow"\}/);
    assert.match(metrics, /credgate_build_info\{version="\d+\.\d+\.\d+",node_version="v\d+/);
    assert.match(metrics, /process_cpu_user_seconds_total/);
    for (const user of Object.values(users)) assert.ok(!metrics.includes(user.password) && !metrics.includes(user.username + '"'));
  });

  test('a wrong client secret is a 503 and /readyz says why; it is not a user denial', async () => {
    const broken = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, clientId: CLIENT.clientId, clientSecret: 'wrong-secret' });
    try {
      const { status, body } = await broken.verify({ username: 'alice', password: users.alice!.password });
      // The ASP path still ran (and said no), but the password path could not be asked: fail closed.
      assert.equal(status, 503);
      assert.equal(body.reason, 'upstream_unavailable');
      const ready = (await (await fetch(`${broken.url}/readyz`)).json()) as { checks: { client: { ok: boolean } } };
      assert.equal(ready.checks.client.ok, false);
    } finally {
      await broken.close();
    }
  });
});

describe('dev mode (npm start without an issuer)', () => {
  test('starts the dev AS and credgate, and every printed curl line works', async () => {
    const config = configSchema.parse({ port: 0, logLevel: 'silent' });
    const dev = await startDevMode(config, createLogger({ level: 'silent' }));
    try {
      const banner = devBanner(dev);
      assert.match(banner, /NOT FOR PRODUCTION/);
      const commands = banner.split('\n').join('\n').replace(/\\\n\s*/g, '').split('\n').map((l) => l.trim()).filter((l) => l.startsWith('curl '));
      assert.equal(commands.length, 4);
      const run = promisify(execFile);
      const outputs = await Promise.all(commands.map((c) => run('bash', ['-c', c], { timeout: 10_000 }).then((r) => r.stdout)));
      assert.match(outputs[0]!, /^HTTP\/1\.1 200/);
      assert.match(outputs[0]!, /x-auth-credential: password/);
      assert.match(outputs[1]!, /^HTTP\/1\.1 200/);
      assert.match(outputs[1]!, /x-auth-credential: app_password/);
      assert.equal(JSON.parse(outputs[2]!).allow, true);
      const created = JSON.parse(outputs[3]!) as { password: string };
      const viaNewAsp = await fetch(`${dev.server.url}/auth`, { headers: { authorization: basicHeader('alice', created.password) } });
      assert.equal(viaNewAsp.status, 200);
      const bobPassword = await fetch(`${dev.server.url}/auth`, { headers: { authorization: basicHeader('bob', users.bob!.password) } });
      assert.equal(bobPassword.status, 401, 'the MFA user cannot use his password');
    } finally {
      await dev.close();
    }
  });
});
