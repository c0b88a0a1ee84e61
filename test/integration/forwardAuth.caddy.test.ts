import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { documentedCaddyCommand, startCaddyCommand, type RunningCaddy } from '../fixtures/caddy.js';
import { httpRequest, startEchoApp, type EchoApp, type EchoedRequest } from '../fixtures/processes.js';
import { copyDeploy } from '../fixtures/recipeDocs.js';

const AUDIENCE = 'https://git.example.com'; // deploy/policies/git.yaml names none: its rules use this one
const POLICY_FILE = fileURLToPath(new URL('../../../deploy/policies/git.yaml', import.meta.url));
const CLIENT = { clientId: 'credgate-caddy-test', clientSecret: 'caddy-test-client-secret' };
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));
const password = (name: string) => users[name]!.password;

// The application behind Caddy is an echo server; the policy is git.yaml, so the paths are git's.
const FETCH_REFS = '/repo.git/info/refs?service=git-upload-pack';
const PUSH_REFS = '/repo.git/info/refs?service=git-receive-pack';
const SPOOFED = { 'x-auth-user': 'mallory', 'x-auth-subject': 'auth0|mallory', 'x-auth-scopes': 'write:repo admin', 'x-auth-credential': 'password', 'x-auth-token': 'forged.identity.token' };

describe('Caddy forward_auth in front of an application, started by the command in docs/integrations/caddy.md (deploy/caddy/Caddyfile, deploy/policies/git.yaml)', { timeout: 40_000 }, () => {
  let dir: string;
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  let echo: EchoApp;
  let caddy: RunningCaddy;
  const context = () => `\n--- caddy ---\n${caddy.output().slice(-3000)}\n--- credgate ---\n${credgate.logs.slice(-10).join('')}`;
  /** The request the application got for this call, if it got one. */
  const call = async (path: string, headers: Record<string, string>) => {
    const before = echo.received.length;
    const response = await fetch(caddy.url + path, { headers });
    const body = await response.text();
    return { response, body, reached: echo.received.slice(before) as EchoedRequest[] };
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'credgate-caddy-'));
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
    credgate = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, policyFile: POLICY_FILE, trustedProxies: ['127.0.0.1/32'] });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
    echo = await startEchoApp();
    // docs/integrations/caddy.md's first command, run from a copy of deploy/ as written. Only the
    // hostname (no certificate can be issued for it here: plain HTTP on 127.0.0.1 at a run-time
    // port) and the two upstream addresses are replaced; BIND_ADDRESS comes from the environment.
    const cwd = copyDeploy(join(dir, 'copy'));
    caddy = await startCaddyCommand(join(dir, 'caddy'), cwd, (port) =>
      documentedCaddyCommand('deploy/caddy/Caddyfile', [
        { kind: 'hostname', from: 'git.example.com', to: `http://127.0.0.1:${port}` },
        { kind: 'address', from: '127.0.0.1:8080', to: new URL(credgate.url).host },
        { kind: 'address', from: '127.0.0.1:3000', to: `127.0.0.1:${echo.port}` },
      ]), { BIND_ADDRESS: '127.0.0.1' });
  }, { timeout: 20_000 });

  after(async () => {
    await Promise.allSettled([caddy?.stop(), echo?.close(), credgate?.close()]);
    await dev?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, { timeout: 15_000 });

  test('right credentials: allowed, and the application receives credgate\'s identity in place of the client\'s X-Auth-* headers, without the password', { timeout: 10_000 }, async () => {
    const { response, reached } = await call(FETCH_REFS, { authorization: basicHeader('alice', password('alice')), ...SPOOFED });
    assert.equal(response.status, 200, context());
    assert.equal(reached.length, 1);
    const seen = reached[0]!;
    assert.equal(seen.url, FETCH_REFS);
    assert.equal(seen.headers['x-auth-user'], 'alice');
    assert.equal(seen.headers['x-auth-subject'], users.alice!.sub);
    assert.equal(seen.headers['x-auth-scopes'], 'read:repo write:repo read:mail send:mail');
    assert.equal(seen.headers['x-auth-credential'], 'password');
    assert.equal(seen.headers['x-auth-token'], undefined, 'credgate sends no X-Auth-Token yet: the client\'s is removed');
    assert.equal(seen.headers.authorization, undefined);
  });

  test('wrong credentials: 401 with credgate\'s Basic challenge passed to the client, and the application is not reached', { timeout: 10_000 }, async () => {
    const { response, reached } = await call(FETCH_REFS, { authorization: basicHeader('alice', 'not her password'), ...SPOOFED });
    assert.equal(response.status, 401);
    assert.match(response.headers.get('www-authenticate') ?? '', /Basic realm="credgate", charset="UTF-8"/);
    assert.deepEqual(reached, []);
    const anonymous = await call(FETCH_REFS, SPOOFED);
    assert.equal(anonymous.response.status, 401);
    assert.deepEqual(anonymous.reached, []);
  });

  test('a token without a username: a client\'s X-Auth-User is removed, not passed through beside the subject', { timeout: 10_000 }, async () => {
    // An Auth0-style access token carries no username claim, so credgate answers without X-Auth-User
    // and forward_auth has nothing to copy over the client's header.
    const token = await dev.issueAccessToken('carol');
    const { response, reached } = await call(FETCH_REFS, { authorization: `Bearer ${token}`, ...SPOOFED });
    assert.equal(response.status, 200, context());
    const seen = reached[0]!;
    assert.equal(seen.headers['x-auth-user'], undefined);
    assert.equal(seen.headers['x-auth-subject'], users.carol!.sub);
    assert.equal(seen.headers['x-auth-scopes'], 'read:repo');
    assert.equal(seen.headers['x-auth-credential'], 'access_token');
    assert.equal(seen.headers['x-auth-token'], undefined);
  });

  test('the policy judges the original request Caddy forwards: carol (read:repo) may fetch but not push', { timeout: 10_000 }, async () => {
    const authorization = basicHeader('carol', password('carol'));
    assert.equal((await call(FETCH_REFS, { authorization })).response.status, 200, context());
    const push = await call(PUSH_REFS, { authorization });
    assert.equal(push.response.status, 403);
    assert.deepEqual(push.reached, []);
    const alicePush = await call(PUSH_REFS, { authorization: basicHeader('alice', password('alice')) });
    assert.equal(alicePush.response.status, 200);
  });

  test('a client\'s own X-Original-URI / X-Forwarded-Uri cannot make a push look like a fetch', { timeout: 10_000 }, async () => {
    const disguise = {
      authorization: basicHeader('carol', password('carol')),
      'x-original-uri': FETCH_REFS,
      'x-original-method': 'GET',
      'x-forwarded-uri': FETCH_REFS,
      'x-forwarded-method': 'GET',
    };
    const push = await call(PUSH_REFS, disguise);
    assert.equal(push.response.status, 403, context());
    assert.deepEqual(push.reached, []);
    const fetchRefs = await call(FETCH_REFS, disguise);
    assert.equal(fetchRefs.response.status, 200);
    assert.equal(fetchRefs.reached[0]!.headers['x-original-uri'], undefined, 'stripped before forward_auth');
  });
});

// No Traefik or Envoy is packaged here, so deploy/traefik and deploy/envoy are not run for real.
// What they rely on from credgate is pinned instead: the exact requests those proxies send, as
// configured there, from a trusted peer.
describe('credgate answers the requests the Traefik and Envoy recipes send (deploy/traefik, deploy/envoy)', { timeout: 30_000 }, () => {
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  const carol = basicHeader('carol', password('carol'));
  const alice = basicHeader('alice', password('alice'));

  before(async () => {
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
    credgate = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, policyFile: POLICY_FILE, trustedProxies: ['127.0.0.1/32'] });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
  }, { timeout: 15_000 });

  after(async () => {
    await credgate?.close();
    await dev?.close();
  }, { timeout: 10_000 });

  /** Traefik ForwardAuth with authRequestHeaders [Authorization]: GET <address> with its X-Forwarded-*. */
  const traefik = (method: string, uri: string, authorization: string) =>
    httpRequest(credgate.url, 'GET', '/auth', {
      authorization,
      'x-forwarded-method': method,
      'x-forwarded-uri': uri,
      'x-forwarded-host': 'git.example.com',
      'x-forwarded-proto': 'https',
      'x-forwarded-for': '203.0.113.7',
    });
  /** Envoy ext_authz http_service, path_prefix /auth: the original method, Host and path, Content-Length 0. */
  const envoy = (method: string, uri: string, authorization: string) =>
    httpRequest(credgate.url, method, `/auth${uri}`, { host: 'git.example.com', authorization, 'content-length': '0', 'x-forwarded-for': '203.0.113.7' });

  for (const [name, ask] of [['Traefik ForwardAuth', traefik], ['Envoy ext_authz', envoy]] as const) {
    test(`${name}: carol (read:repo) may fetch but not push; alice may push; a wrong password gets the Basic challenge`, { timeout: 10_000 }, async () => {
      const fetchRefs = await ask('GET', FETCH_REFS, carol);
      assert.equal(fetchRefs.status, 200, fetchRefs.body);
      assert.equal(fetchRefs.headers['x-auth-user'], 'carol');
      assert.equal((await ask('POST', '/repo.git/git-upload-pack', carol)).status, 200);
      assert.equal((await ask('GET', PUSH_REFS, carol)).status, 403);
      assert.equal((await ask('POST', '/repo.git/git-receive-pack', carol)).status, 403);
      assert.equal((await ask('POST', '/repo.git/git-receive-pack', alice)).status, 200);
      const wrong = await ask('GET', FETCH_REFS, basicHeader('carol', 'not her password'));
      assert.equal(wrong.status, 401);
      assert.match(String(wrong.headers['www-authenticate']), /^Basic realm="credgate"/);
    });
  }
});
