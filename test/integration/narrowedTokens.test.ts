import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';

const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-narrowed', clientSecret: 'narrowed-client-secret-value' };
const alice = defaultDevUsers().find((u) => u.username === 'alice')!;

/**
 * Auth0 RBAC puts every permission a user holds in `permissions`, whatever scope the token was
 * narrowed to. credgate grants what the token was narrowed to (`scope`, `scp`): a read-only token
 * must not pass a write rule. `permissions` counts only when the operator names it in scopeClaims.
 */
describe('a token narrowed to read:repo does not pass a rule that needs write:repo', () => {
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  let optedIn: TestCredgate;
  before(async () => {
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
    const config = { issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, passwordGrantScope: 'read:repo' };
    credgate = await startCredgate(config);
    optedIn = await startCredgate({ ...config, scopeClaims: ['scope', 'permissions'] }, { keys: credgate.keys });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
  });
  after(async () => {
    await Promise.all([credgate.close(), optedIn.close()]);
    await dev.close();
  });

  test('a Bearer JWT with scope read:repo and permissions listing write:repo', async () => {
    const token = await dev.issueAccessToken('alice', { scope: 'read:repo' });
    assert.equal((await credgate.auth(`Bearer ${token}`, '/auth?scope=read:repo')).status, 200);
    const write = await credgate.auth(`Bearer ${token}`, '/auth?scope=write:repo');
    assert.equal(write.status, 403);
    assert.deepEqual(((await write.json()) as { missingScopes: string[] }).missingScopes, ['write:repo']);
    assert.equal((await optedIn.auth(`Bearer ${token}`, '/auth?scope=write:repo')).status, 200, 'only when permissions is named');
  });

  test('a password grant narrowed by passwordGrantScope: the identity has read:repo only', async () => {
    const { body } = await credgate.verify({ username: 'alice', password: alice.password, scopes: ['write:repo'] });
    assert.equal(body.reason, 'insufficient_scope');
    assert.equal((await credgate.auth(basicHeader('alice', alice.password), '/auth?scope=read:repo')).status, 200);
  });
});
