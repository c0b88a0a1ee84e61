import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';

// deploy/policies/git.yaml names no audience: its rules use the configured one, whatever it is.
const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-test', clientSecret: 'dev-client-secret-value' };
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));
const alice = basicHeader('alice', users.alice!.password);
const carol = basicHeader('carol', users.carol!.password);

const push = { 'x-original-method': 'GET', 'x-original-uri': '/team/r.git/info/refs?service=git-receive-pack' };
const fetchRefs = { 'x-original-method': 'GET', 'x-original-uri': '/team/r.git/info/refs?service=git-upload-pack' };

async function waitFor(what: string, condition: () => Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await condition()) return;
    await sleep(50);
  }
  assert.fail(`timed out waiting for ${what}`);
}

describe('policy, trusted proxies and tokens as passwords, with the dev authorization server', () => {
  let dev: DevAuthorizationServer;
  let trusting: TestCredgate;
  let distrusting: TestCredgate;
  let distrustingNoPolicy: TestCredgate;
  const dir = mkdtempSync(join(tmpdir(), 'credgate-policy-it-'));
  const policyFile = join(dir, 'policy.yaml');

  before(async () => {
    copyFileSync('deploy/policies/git.yaml', policyFile);
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT], lockoutThreshold: 1000 });
    trusting = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, policyFile, trustedProxies: ['127.0.0.1/32'], throttleIpFailures: 3 });
    // Trusts a range the test process is not in: its forwarded headers must be ignored.
    // One client key for all three, registered at the dev AS once.
    const keys = { keys: trusting.keys };
    distrusting = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, policyFile, trustedProxies: ['10.0.0.0/8'], throttleIpFailures: 3 }, keys);
    distrustingNoPolicy = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, trustedProxies: ['10.0.0.0/8'], throttleIpFailures: 3 }, keys);
    dev.setResourceServerJwksUrl(trusting.jwksUrl);
  });
  after(async () => {
    await Promise.all([trusting?.close(), distrusting?.close(), distrustingNoPolicy?.close()]);
    await dev?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const auth = (credgate: TestCredgate, headers: Record<string, string>, path = '/auth') => fetch(`${credgate.url}${path}`, { headers });

  test('from a trusted proxy, the original request picks the rule: push needs write:repo, fetch read:repo', async () => {
    assert.equal((await auth(trusting, { authorization: carol, ...push })).status, 403);
    assert.equal((await auth(trusting, { authorization: carol, ...fetchRefs })).status, 200);
    const allowed = await auth(trusting, { authorization: alice, ...push });
    assert.equal(allowed.status, 200);
    assert.equal(allowed.headers.get('x-auth-user'), 'alice');
    assert.match(trusting.logs.join(''), /"rule":"git-push-refs"/);
  });

  test('Traefik/Caddy-style X-Forwarded-Method/-Uri are read too', async () => {
    const forwarded = { 'x-forwarded-method': 'POST', 'x-forwarded-uri': '/r.git/git-receive-pack', 'x-forwarded-host': 'git.example.com', 'x-forwarded-proto': 'https' };
    assert.equal((await auth(trusting, { authorization: carol, ...forwarded })).status, 403);
    assert.equal((await auth(trusting, { authorization: alice, ...forwarded })).status, 200);
  });

  test('Envoy ext_authz: /auth/<original path> with the original method', async () => {
    const denied = await fetch(`${trusting.url}/auth/r.git/git-receive-pack`, { method: 'POST', headers: { authorization: carol } });
    assert.equal(denied.status, 403);
    const allowed = await fetch(`${trusting.url}/auth/r.git/git-receive-pack`, { method: 'POST', headers: { authorization: alice } });
    assert.equal(allowed.status, 200);
    assert.equal((await fetch(`${trusting.url}/auth/r.git/info/refs?service=git-upload-pack`, { headers: { authorization: carol } })).status, 200);
  });

  test('a request no rule matches is denied before the credentials are looked at', async () => {
    const before = dev.stats().tokenRequests;
    const response = await auth(trusting, { authorization: alice, 'x-original-method': 'DELETE', 'x-original-uri': '/r.git' });
    assert.equal(response.status, 403);
    assert.deepEqual(await response.json(), { reason: 'denied_by_policy' });
    const noCredentials = await auth(trusting, { 'x-original-method': 'DELETE', 'x-original-uri': '/r.git' });
    assert.equal(noCredentials.status, 403, 'no Basic challenge for a request nothing may make');
    assert.equal(dev.stats().tokenRequests, before, 'the AS was not asked');
  });

  test('?scope= still pins scopes on top of the rule', async () => {
    assert.equal((await auth(trusting, { authorization: carol, ...fetchRefs }, '/auth?scope=write:repo')).status, 403);
    assert.equal((await auth(trusting, { authorization: alice, ...fetchRefs }, '/auth?scope=write:repo')).status, 200);
  });

  test('a forwarded header the proxy appended instead of replacing is ambiguous: denied', async () => {
    // Two header lines (node:http keeps them apart; fetch would join them).
    const status = await new Promise<number>((resolve, reject) => {
      const url = new URL(`${trusting.url}/auth`);
      const req = httpRequest({ host: url.hostname, port: url.port, path: '/auth', headers: [
        'host', url.host, 'authorization', alice, 'x-original-method', 'GET', 'x-original-uri', '/r.git/info/refs?service=git-upload-pack', 'x-original-uri', '/admin',
      ] }, (res) => { res.resume(); resolve(res.statusCode ?? 0); });
      req.on('error', reject).end();
    });
    assert.equal(status, 403);
    // Joined into one value with ", " they are not a request-target either.
    assert.equal((await auth(trusting, { authorization: alice, 'x-original-method': 'GET', 'x-original-uri': '/r.git/HEAD, /admin' })).status, 403);
    assert.equal((await auth(trusting, { authorization: alice, 'x-original-method': 'GET', 'x-original-uri': '/r.git/HEAD' })).status, 200);
    // A proxy that sets X-Forwarded-Uri but passes the client's X-Original-URI through: the two disagree.
    const smuggled = { 'x-original-method': 'GET', 'x-original-uri': '/r.git/info/refs?service=git-upload-pack', 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/r.git/info/refs?service=git-receive-pack' };
    assert.equal((await auth(trusting, { authorization: carol, ...smuggled })).status, 403);
    assert.equal((await auth(trusting, { authorization: alice, ...smuggled })).status, 403, 'denied for everyone: the request is ambiguous');
  });

  test('from an untrusted peer, forwarded headers are ignored: the original request is unknown and no rule matches', async () => {
    assert.equal((await auth(distrusting, { authorization: alice, ...fetchRefs })).status, 403);
    assert.equal((await auth(distrusting, { authorization: alice, ...push })).status, 403);
    assert.match(distrusting.logs.join(''), /forwarded headers from a peer that is not a trusted proxy were ignored/);
  });

  test('X-Forwarded-For from a trusted proxy names the client for per-IP throttling', async () => {
    // Distinct wrong credentials (the same one twice is answered from the negative cache).
    let n = 0;
    const from = (ip: string) => ({ authorization: basicHeader(`nobody-${n++}`, 'wrong password'), ...fetchRefs, 'x-forwarded-for': `192.0.2.1, ${ip}` });
    for (let i = 0; i < 3; i++) assert.equal((await auth(trusting, from('203.0.113.9'))).status, 401);
    const throttled = await auth(trusting, from('203.0.113.9'));
    assert.equal(throttled.status, 401);
    assert.match(trusting.logs.join(''), /"reason":"throttled"[^\n]*"clientIp":"203\.0\.113\.9"/);
    // Another client behind the same proxy is not throttled: it gets a real (wrong-password) answer.
    const before = dev.stats().tokenRequests;
    assert.equal((await auth(trusting, from('203.0.113.10'))).status, 401);
    assert.ok(dev.stats().tokenRequests > before, 'the AS was asked for the other client');
  });

  test('X-Forwarded-For from an untrusted peer is ignored: spoofing fresh addresses does not escape the per-IP limit', async () => {
    const untrusted = distrustingNoPolicy;
    for (let i = 0; i < 3; i++) assert.equal((await auth(untrusted, { authorization: basicHeader(`someone-${i}`, 'wrong password'), 'x-forwarded-for': `198.51.100.${i}` })).status, 401);
    const before = dev.stats().tokenRequests;
    assert.equal((await auth(untrusted, { authorization: basicHeader('someone-else', 'wrong'), 'x-forwarded-for': '198.51.100.77' })).status, 401);
    assert.equal(dev.stats().tokenRequests, before, 'the peer itself (127.0.0.1) is throttled, whatever it claims');
    assert.match(untrusted.logs.join(''), /"reason":"throttled"[^\n]*"clientIp":"127\.0\.0\.1"/);
  });

  test('a token as the password of x-access-token or oauth2 is verified on its own, without a username', async () => {
    const jwt = await dev.issueAccessToken('alice', { scope: 'read:repo write:repo' });
    const byJwt = await auth(trusting, { authorization: basicHeader('x-access-token', jwt), ...push });
    assert.equal(byJwt.status, 200);
    assert.equal(byJwt.headers.get('x-auth-credential'), 'access_token');
    assert.equal(byJwt.headers.get('x-auth-subject'), users.alice!.sub);
    const { password: asp } = dev.createAppPassword('carol', { scope: 'read:repo' });
    const byAsp = await auth(trusting, { authorization: basicHeader('OAuth2', asp), ...fetchRefs });
    assert.equal(byAsp.status, 200);
    assert.equal(byAsp.headers.get('x-auth-user'), 'carol');
    assert.equal((await auth(trusting, { authorization: basicHeader('oauth2', asp), ...push })).status, 403, "carol's token still lacks write:repo");
  });

  test('a token username with a password, or a bad token, is refused and never tried as a password grant', async () => {
    const before = dev.stats().tokenRequests;
    assert.equal((await auth(trusting, { authorization: basicHeader('x-access-token', users.alice!.password), ...fetchRefs })).status, 401);
    assert.equal((await auth(trusting, { authorization: basicHeader('x-oauth-basic', 'not-a-token'), ...fetchRefs })).status, 401);
    assert.equal(dev.stats().tokenRequests, before);
  });

  test('a JWT as the password of a real username must belong to that username', async () => {
    const jwt = await dev.issueAccessToken('alice', { extraClaims: { username: 'alice' } });
    assert.equal((await auth(trusting, { authorization: basicHeader('alice', jwt), ...fetchRefs })).status, 200);
    assert.equal((await auth(trusting, { authorization: basicHeader('carol', jwt), ...fetchRefs })).status, 401);
  });

  test('hot reload swaps the rules without dropping a request; a broken file keeps the old policy', async () => {
    const metric = async (result: string) => {
      const text = await (await fetch(`${trusting.url}/metrics`)).text();
      return Number(new RegExp(`^credgate_policy_reloads_total\\{result="${result}"\\} (\\d+)`, 'm').exec(text)?.[1]);
    };
    const successes = await metric('success');
    // Load in the background through the reload: every answer is 200 (old rules) or 403 (new).
    let stop = false;
    const statuses: number[] = [];
    const load = (async () => {
      while (!stop) {
        const batch = await Promise.all(Array.from({ length: 8 }, () => auth(trusting, { authorization: carol, ...fetchRefs }).then((r) => r.status, () => 0)));
        statuses.push(...batch);
      }
    })();
    await sleep(100);
    // Write a new file and rename it over the old one, as editors and ConfigMaps do.
    const text = readFileSync(policyFile, 'utf8').replace('scopes: [read:repo]', 'scopes: [read:repo, write:repo]');
    writeFileSync(`${policyFile}.new`, text);
    renameSync(`${policyFile}.new`, policyFile);
    await waitFor('the new policy', async () => (await auth(trusting, { authorization: carol, ...fetchRefs })).status === 403);
    await sleep(100);
    stop = true;
    await load;
    assert.ok(statuses.length > 16, `load ran (${statuses.length} requests)`);
    assert.deepEqual([...new Set(statuses)].filter((s) => s !== 200 && s !== 403), [], 'only 200 and 403 answers during the reload');
    assert.equal(await metric('success'), successes + 1);

    const failures = await metric('failure');
    writeFileSync(policyFile, 'rules:\n  - name: broken\n    match: { path: "no-slash" }\n');
    await waitFor('the refused reload', async () => (await metric('failure')) === failures + 1);
    assert.equal((await auth(trusting, { authorization: carol, ...fetchRefs })).status, 403, 'the previous (new) policy is still in force');
    assert.equal((await auth(trusting, { authorization: alice, ...fetchRefs })).status, 200);
    assert.match(trusting.logs.join(''), /policy reload refused; the previous policy stays in force[^\n]*|"err":"policy file [^"]*is invalid: rules\[0\]\.match\.path: must start with \//);
    assert.match(await (await fetch(`${trusting.url}/metrics`)).text(), /^credgate_policy_last_reload_successful 0$/m);
  });

  test('no password or token reached the logs', () => {
    const text = trusting.logs.join('') + distrusting.logs.join('');
    for (const secret of [users.alice!.password, users.carol!.password]) assert.ok(!text.includes(secret));
  });
});
