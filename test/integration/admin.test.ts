import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { cli } from '../fixtures/cli.js';
import { startCredgate, type TestCredgate } from '../fixtures/credgate.js';

const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-admin', clientSecret: 'admin-client-secret-value' };
const ADMIN_TOKEN = 'admin-token-0123456789-abcdefghijklmnop';
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));
const alice = users.alice!;


/** `authorization: null` sends no Authorization header. */
async function purge(baseUrl: string, body: unknown, authorization: string | null = `Bearer ${ADMIN_TOKEN}`) {
  const response = await fetch(`${baseUrl}/admin/purge`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
    body: JSON.stringify(body),
  });
  return { status: response.status, headers: response.headers, body: (await response.json()) as Record<string, unknown> };
}

describe('admin API: purging one user\'s cached decisions', () => {
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate; // admin API on the main listener (loopback peers only)
  let separate: TestCredgate; // admin API on its own loopback port
  let noAdmin: TestCredgate; // no adminToken: no admin API at all

  before(async () => {
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT], lockoutThreshold: 1000 });
    credgate = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, adminToken: ADMIN_TOKEN });
    separate = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, adminToken: ADMIN_TOKEN, adminPort: 0 });
    noAdmin = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
  });
  after(async () => {
    await Promise.all([credgate?.close(), separate?.close(), noAdmin?.close()]);
    await dev.close();
  });

  /** Verifies alice twice so her identity is cached; answers the dev AS's token-request count then. */
  async function cacheAlice(server: TestCredgate): Promise<number> {
    await server.verify({ username: 'alice', password: alice.password });
    const cached = await server.verify({ username: 'alice', password: alice.password });
    assert.equal(cached.body.cached, true);
    return dev.stats().tokenRequests;
  }

  test('the right token purges a cached identity: the next request asks the AS again', async () => {
    const requests = await cacheAlice(credgate);
    const answer = await purge(credgate.url, { username: 'alice' });
    assert.equal(answer.status, 200);
    assert.ok((answer.body.purged as number) >= 1, JSON.stringify(answer.body));
    assert.equal(answer.headers.get('cache-control'), 'no-store');
    const next = await credgate.verify({ username: 'alice', password: alice.password });
    assert.equal(next.body.allow, true);
    assert.equal(next.body.cached, false);
    assert.equal(dev.stats().tokenRequests, requests + 1);
    const metrics = await (await fetch(`${credgate.url}/metrics`)).text();
    assert.match(metrics, /^credgate_purges_total [1-9]/m);
  });

  test('a purge matches the username in any spelling that folds alike and counts nothing for a stranger', async () => {
    await cacheAlice(credgate);
    assert.ok(((await purge(credgate.url, { username: 'ALICE' })).body.purged as number) >= 1);
    assert.deepEqual((await purge(credgate.url, { username: 'nobody-cached' })).body, { purged: 0, names: 1 });
  });

  test('a purge reaches the whole account: entries cached under every alias it was seen with, by name or by subject', async () => {
    for (const name of ['alice', 'alice@example.com']) assert.equal((await credgate.verify({ username: name, password: alice.password })).body.allow, true);
    for (const name of ['alice', 'alice@example.com']) assert.equal((await credgate.verify({ username: name, password: alice.password })).body.cached, true);
    const byName = await purge(credgate.url, { username: 'alice' });
    assert.ok((byName.body.purged as number) >= 2, JSON.stringify(byName.body));
    assert.ok((byName.body.names as number) >= 2, 'both names of the account');
    assert.equal((await credgate.verify({ username: 'alice@example.com', password: alice.password })).body.cached, false, 'the alias entry went too');
    const bySubject = await purge(credgate.url, { subject: alice.sub });
    assert.ok((bySubject.body.purged as number) >= 1);
    assert.equal((await credgate.verify({ username: 'alice@example.com', password: alice.password })).body.cached, false);
    // Deny beside the allow: a body naming both, or neither, is refused.
    assert.equal((await purge(credgate.url, { username: 'alice', subject: alice.sub })).status, 400);
    assert.equal((await purge(credgate.url, {})).status, 400);
  });

  test('a wrong token is 401 with a Bearer challenge and purges nothing', async () => {
    const requests = await cacheAlice(credgate);
    for (const authorization of [`Bearer ${ADMIN_TOKEN}x`, `Bearer ${ADMIN_TOKEN.slice(0, -1)}`, 'Bearer wrong', `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}`, ADMIN_TOKEN]) {
      const answer = await purge(credgate.url, { username: 'alice' }, authorization);
      assert.equal(answer.status, 401, authorization);
      assert.deepEqual(answer.body, { error: 'unauthorized' });
      assert.equal(answer.headers.get('www-authenticate'), 'Bearer realm="credgate-admin"');
    }
    const still = await credgate.verify({ username: 'alice', password: alice.password });
    assert.equal(still.body.cached, true);
    assert.equal(dev.stats().tokenRequests, requests);
  });

  test('no token is 401, before the body is even looked at', async () => {
    const requests = await cacheAlice(credgate);
    for (const body of [{ username: 'alice' }, { username: '', extra: 1 }]) {
      const answer = await purge(credgate.url, body, null);
      assert.equal(answer.status, 401);
      assert.equal(answer.headers.get('www-authenticate'), 'Bearer realm="credgate-admin"');
    }
    assert.equal((await credgate.verify({ username: 'alice', password: alice.password })).body.cached, true);
    assert.equal(dev.stats().tokenRequests, requests);
  });

  test('malformed bodies are 400 with a reason and purge nothing', async () => {
    const requests = await cacheAlice(credgate);
    const cases: [unknown, RegExp][] = [
      [{ username: 'alice', scope: 'all' }, /unknown field\(s\) scope/],
      [{ username: '' }, /username is empty/],
      [{}, /username/],
      [{ username: 42 }, /username/],
      [{ username: 'ali\u0000ce' }, /control characters/],
      [{ username: 'a'.repeat(1025) }, /username/],
      [['alice'], /body/],
    ];
    for (const [body, message] of cases) {
      const answer = await purge(credgate.url, body);
      assert.equal(answer.status, 400, JSON.stringify(body));
      assert.equal(answer.body.reason, 'malformed_request');
      assert.match(String(answer.body.message), message);
    }
    assert.equal((await credgate.verify({ username: 'alice', password: alice.password })).body.cached, true);
    assert.equal(dev.stats().tokenRequests, requests);
  });

  test('with adminPort set, the admin API is on its own loopback port and the main port answers 404', async () => {
    assert.ok(separate.adminUrl);
    assert.match(separate.adminUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.notEqual(separate.adminUrl, separate.url);
    const requests = await cacheAlice(separate);
    const onMain = await purge(separate.url, { username: 'alice' });
    assert.equal(onMain.status, 404);
    assert.equal(onMain.body.error, 'not_found');
    assert.equal((await separate.verify({ username: 'alice', password: alice.password })).body.cached, true);
    const onAdmin = await purge(separate.adminUrl, { username: 'alice' });
    assert.equal(onAdmin.status, 200);
    assert.ok((onAdmin.body.purged as number) >= 1);
    assert.equal((await separate.verify({ username: 'alice', password: alice.password })).body.cached, false);
    assert.equal(dev.stats().tokenRequests, requests + 1);
    assert.equal((await purge(separate.adminUrl, { username: 'alice' }, 'Bearer wrong')).status, 401);
    assert.equal((await fetch(`${separate.adminUrl}/v1/verify`, { method: 'POST' })).status, 404, 'the admin port serves nothing else');
  });

  test('without adminToken there is no admin API: /admin/purge is 404, whatever the token', async () => {
    assert.equal(noAdmin.adminUrl, undefined);
    assert.equal((await purge(noAdmin.url, { username: 'alice' })).status, 404);
    assert.equal((await purge(noAdmin.url, { username: 'alice' }, null)).status, 404);
  });

  test('on the main listener, a peer that is not loopback gets 404 as if the route did not exist', async () => {
    // inject() lets the test choose the direct peer's address; the real listener is bound to loopback.
    const inject = (remoteAddress: string, authorization = `Bearer ${ADMIN_TOKEN}`) =>
      credgate.app.inject({ method: 'POST', url: '/admin/purge', remoteAddress, headers: { authorization }, payload: { username: 'alice' } });
    for (const remoteAddress of ['192.0.2.10', '10.0.0.1', '::ffff:192.0.2.10', '2001:db8::1', '128.0.0.1']) {
      const answer = await inject(remoteAddress);
      assert.equal(answer.statusCode, 404, remoteAddress);
      assert.equal(answer.json().error, 'not_found');
      assert.equal((await inject(remoteAddress, 'Bearer wrong')).statusCode, 404, `${remoteAddress} learns nothing about the token either`);
    }
    for (const remoteAddress of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) {
      assert.equal((await inject(remoteAddress)).statusCode, 200, remoteAddress);
    }
  });

  test('credgate purge USERNAME posts to the running credgate and prints the count; exit 2 on a wrong token', async () => {
    const requests = await cacheAlice(credgate);
    const ok = await cli(['purge', 'alice'], { CREDGATE_ADMIN_TOKEN: ADMIN_TOKEN, CREDGATE_ADMIN_URL: credgate.url });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^purged [1-9]\d* cached decision\(s\) for alice\n$/);
    assert.equal((await credgate.verify({ username: 'alice', password: alice.password })).body.cached, false);
    assert.equal(dev.stats().tokenRequests, requests + 1);

    // Default URL: http://127.0.0.1:${adminPort}.
    await cacheAlice(separate);
    const port = new URL(separate.adminUrl!).port;
    const byPort = await cli(['purge', 'alice'], { CREDGATE_ADMIN_TOKEN: ADMIN_TOKEN, CREDGATE_ADMIN_PORT: port });
    assert.equal(byPort.code, 0, byPort.stderr);
    assert.match(byPort.stdout, /purged [1-9]\d* cached decision\(s\) for alice/);
    const byFlag = await cli(['purge', 'bob', '--url', separate.adminUrl!], { CREDGATE_ADMIN_TOKEN: ADMIN_TOKEN });
    assert.equal(byFlag.code, 0, byFlag.stderr);
    assert.equal(byFlag.stdout, 'purged 0 cached decision(s) for bob\n');

    const wrongToken = 'wrong-admin-token-0123456789-abcdefghij';
    const wrong = await cli(['purge', 'alice'], { CREDGATE_ADMIN_TOKEN: wrongToken, CREDGATE_ADMIN_URL: credgate.url });
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /401/);
    assert.ok(!(wrong.stdout + wrong.stderr).includes(wrongToken));
    const noToken = await cli(['purge', 'alice'], { CREDGATE_ADMIN_URL: credgate.url });
    assert.equal(noToken.code, 2);
    assert.match(noToken.stderr, /CREDGATE_ADMIN_TOKEN/);
    const notThere = await cli(['purge', 'alice'], { CREDGATE_ADMIN_TOKEN: ADMIN_TOKEN, CREDGATE_ADMIN_URL: noAdmin.url });
    assert.equal(notThere.code, 2);
    assert.match(notThere.stderr, /404/);
    assert.ok(!(ok.stdout + ok.stderr + notThere.stderr).includes(ADMIN_TOKEN));
    const help = await cli(['--help'], {});
    assert.match(help.stdout, /credgate purge USERNAME/);
  });

  test('purges are logged with username and count, and no admin token reaches the logs', () => {
    const text = [credgate, separate, noAdmin].flatMap((s) => s.logs).join('');
    assert.match(text, /"username":"alice","purged":[1-9]/);
    assert.match(text, /admin request refused/);
    assert.ok(!text.includes(ADMIN_TOKEN.slice(0, 20)), 'neither the token nor a wrong guess close to it');
    assert.ok(!text.includes('wrong-admin-token'));
    assert.ok(!text.includes(alice.password));
  });
});
