import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decodeJwt } from 'jose';
import { identityTokenVerifier } from '../../examples/identity-token/verify.js';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { newKeyPair } from '../../src/upstream/clientKeys.js';
import { documentedCaddyCommand, startCaddyCommand, type RunningCaddy } from '../fixtures/caddy.js';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { NGINX_DEPLOY_DIR, startNginx, type RunningNginx } from '../fixtures/nginx.js';
import { copyDeploy } from '../fixtures/recipeDocs.js';

const AUDIENCE = 'https://git.example.com';
const ISSUER = 'https://credgate.example.com';
const APP = 'https://app.example.com';
const CLIENT = { clientId: 'credgate-identity-token', clientSecret: 'identity-token-client-secret' };
const alice = defaultDevUsers().find((u) => u.username === 'alice')!;
const POLICY = `audience: ${AUDIENCE}
identityToken: { audience: ${APP} }
rules:
  - { name: other, match: { path: ["/other/**", "/app/other/**"] }, identityToken: { audience: https://other.example.com } }
  - { name: short, match: { path: ["/short/**", "/app/short/**"] }, identityToken: { audience: ${APP}, ttlSeconds: 5 } }
  - { name: plain, match: { path: ["/plain/**", "/app/plain/**"] }, identityToken: false }
  - { name: everything, match: { path: "/**" } }
`;

/** The service behind the proxy: it checks X-Auth-Token with the snippet from examples/identity-token, and says what it concluded. */
interface Verdict {
  token?: string;
  ok: boolean;
  sub?: string;
  username?: string;
  error?: string;
}

async function startDownstream(jwksUrl: () => string): Promise<{ server: Server; port: number; seen: Verdict[] }> {
  const seen: Verdict[] = [];
  const server = createServer((req, res) => {
    const token = req.headers['x-auth-token'];
    const answer = (verdict: Verdict) => {
      seen.push(verdict);
      res.writeHead(verdict.ok ? 200 : 401, { 'content-type': 'application/json' }).end(JSON.stringify(verdict));
    };
    if (typeof token !== 'string' || token === '') return answer({ ok: false, error: 'no token' });
    // A fresh verifier per request, as a freshly started service would have (no JWKS cached).
    identityTokenVerifier(jwksUrl(), ISSUER, APP)(token).then(
      (claims) => answer({ token, ok: true, sub: claims.sub, username: claims.username }),
      (err: Error) => answer({ token, ok: false, error: err.name }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, seen };
}

/**
 * A signed identity per downstream audience, passed on by the real nginx and Caddy recipes, checked
 * by the service with the documented snippet against credgate's JWKS.
 */
describe('identity tokens through real nginx and Caddy', { timeout: 90_000 }, () => {
  let dir: string;
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  let app: Awaited<ReturnType<typeof startDownstream>>;
  let nginx: RunningNginx;
  let caddy: RunningCaddy;
  const keyFiles: string[] = [];
  let jwks = () => `${credgate.url}/.well-known/jwks.json`;

  const newKey = async (name: string) => {
    const file = join(dir, name);
    writeFileSync(file, (await newKeyPair('ed25519')).privatePem, { mode: 0o600 });
    keyFiles.push(file);
    return file;
  };
  const start = (identityKeyFile: string, identityPublishedKeyFiles: string[] = []) =>
    startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, policyFile: join(dir, 'policy.yaml'), trustedProxies: ['loopback'], identityIssuer: ISSUER, identityKeyFile, identityPublishedKeyFiles, port: credgate ? Number(new URL(credgate.url).port) : 0 });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'credgate-idtoken-'));
    for (const d of ['nginx', 'caddy']) mkdirSync(join(dir, d));
    writeFileSync(join(dir, 'policy.yaml'), POLICY);
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
    credgate = await start(await newKey('k1.pem'));
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
    app = await startDownstream(() => jwks());
    const credgateHost = () => new URL(credgate.url).host;
    nginx = await startNginx(join(dir, 'nginx'), {
      http: [`include ${join(NGINX_DEPLOY_DIR, 'credgate-http.conf')};`, `upstream credgate { server ${credgateHost()}; }`, `upstream app { server 127.0.0.1:${app.port}; }`].join('\n'),
      server: [`include ${join(NGINX_DEPLOY_DIR, 'credgate-auth.conf')};`, 'location ^~ /app/ {', `  include ${join(NGINX_DEPLOY_DIR, 'protected-app.conf')};`, '  proxy_pass http://app;', '}'].join('\n'),
    });
    // Caddy as docs/integrations/caddy.md starts it (hostname and addresses replaced: docs/testing.md).
    caddy = await startCaddyCommand(join(dir, 'caddy'), copyDeploy(join(dir, 'copy')), (port) =>
      documentedCaddyCommand('deploy/caddy/Caddyfile', [
        { kind: 'hostname', from: 'git.example.com', to: `http://127.0.0.1:${port}` },
        { kind: 'address', from: '127.0.0.1:8080', to: credgateHost() },
        { kind: 'address', from: '127.0.0.1:3000', to: `127.0.0.1:${app.port}` },
      ]), { BIND_ADDRESS: '127.0.0.1' });
  }, { timeout: 40_000 });

  after(async () => {
    await Promise.allSettled([nginx?.stop(), caddy?.stop()]);
    await credgate?.close();
    await new Promise((r) => app?.server.close(r));
    await dev?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, { timeout: 20_000 });

  const proxies = () => [
    { name: 'nginx', url: (path: string) => `${nginx.url}/app${path}` },
    { name: 'Caddy', url: (path: string) => `${caddy.url}${path}` },
  ];
  const get = async (url: string, headers: Record<string, string> = {}) => {
    const response = await fetch(url, { headers: { authorization: basicHeader('alice', alice.password), ...headers } });
    return { status: response.status, verdict: response.status === 401 && response.headers.get('www-authenticate') ? undefined : ((await response.json()) as Verdict) };
  };

  test('the service accepts the token credgate signed for it: subject and username from the AS', async () => {
    for (const proxy of proxies()) {
      const { status, verdict } = await get(proxy.url('/repo'));
      assert.equal(status, 200, proxy.name);
      assert.equal(verdict?.ok, true, `${proxy.name}: ${verdict?.error}`);
      assert.equal(verdict?.sub, alice.sub);
      assert.equal(verdict?.username, 'alice');
    }
  });

  test('a token for another audience is refused by the service', async () => {
    for (const proxy of proxies()) {
      const { verdict } = await get(proxy.url('/other/x'));
      assert.equal(verdict?.ok, false, proxy.name);
      assert.equal(decodeJwt(verdict!.token!).aud, 'https://other.example.com');
      assert.equal(verdict?.error, 'JWTClaimValidationFailed');
    }
  });

  test('a forged X-Auth-Token from the client never reaches the service (in any spelling)', async () => {
    for (const proxy of proxies()) {
      const forged = { 'x-auth-token': 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0.', 'x_auth_token': 'forged' } as Record<string, string>;
      const plain = await get(proxy.url('/plain/x'), forged);
      assert.deepEqual([plain.status, plain.verdict?.error], [401, 'no token'], `${proxy.name}: a rule without a token passes none on, not the client's`);
      const signed = await get(proxy.url('/repo'), forged);
      assert.equal(signed.verdict?.ok, true, `${proxy.name}: the service got credgate's token, not the forged one`);
    }
  });

  test('an expired token is refused', async () => {
    const { verdict } = await get(proxies()[0]!.url('/short/x'));
    assert.equal(verdict?.ok, true);
    await new Promise((r) => setTimeout(r, 6000));
    const late = await identityTokenVerifier(jwks(), ISSUER, APP)(verdict!.token!).then(() => 'accepted', (err: Error) => err.name);
    assert.equal(late, 'JWTExpired');
  });

  test('key rotation: the previous key keeps verifying while published; once dropped, its tokens are refused; no request fails meanwhile', async () => {
    const { verdict: old } = await get(proxies()[0]!.url('/repo'));
    assert.equal(old?.ok, true);
    const k2 = await newKey('k2.pem');
    // Step 1: the new key signs, the previous one stays published. Requests keep flowing through the restart's both sides.
    await credgate.close();
    credgate = await start(k2, [keyFiles[0]!]);
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
    const during = await Promise.all(Array.from({ length: 40 }, (_, i) => get(proxies()[i % 2]!.url(`/repo/${i}`))));
    assert.ok(during.every((r) => r.status === 200 && r.verdict?.ok === true), JSON.stringify(during.find((r) => r.verdict?.ok !== true)));
    assert.equal(await identityTokenVerifier(jwks(), ISSUER, APP)(old!.token!).then(() => 'accepted', (e: Error) => e.name), 'accepted', 'an old token still verifies');
    // Step 2: every old token has expired; the previous key is dropped: a token it signed is refused.
    await credgate.close();
    credgate = await start(k2);
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
    assert.equal(await identityTokenVerifier(jwks(), ISSUER, APP)(old!.token!).then(() => 'accepted', (e: Error) => e.name), 'JWKSNoMatchingKey');
    assert.equal((await get(proxies()[1]!.url('/repo'))).verdict?.ok, true);
  });

  test('/v1/verify returns the token when asked, and only then', async () => {
    const asked = await credgate.verify({ username: 'alice', password: alice.password, method: 'GET', uri: '/repo', identityToken: true });
    assert.equal(typeof asked.body.identityToken, 'string');
    assert.equal((await identityTokenVerifier(jwks(), ISSUER, APP)(String(asked.body.identityToken))).sub, alice.sub);
    const plain = await credgate.verify({ username: 'alice', password: alice.password, method: 'GET', uri: '/repo' });
    assert.equal(plain.body.identityToken, undefined);
  });

  test('/v1/verify hands identity tokens only to trusted callers: an end user cannot mint one (regression)', async () => {
    // A policy that decides without the request's path too (an untrusted peer's /auth has none).
    writeFileSync(join(dir, 'default-allow.yaml'), `audience: ${AUDIENCE}\nidentityToken: { audience: ${APP} }\ndefault: allow\n`);
    const untrusting = await startCredgate(
      { issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, policyFile: join(dir, 'default-allow.yaml'), trustedProxies: ['192.0.2.0/24'], identityIssuer: ISSUER, identityKeyFile: keyFiles[0]! },
      { keys: credgate.keys },
    );
    try {
      const asked = await untrusting.verify({ username: 'alice', password: alice.password, method: 'GET', uri: '/repo', identityToken: true });
      assert.equal(asked.status, 400);
      assert.equal(asked.body.reason, 'malformed_request');
      assert.match(String(asked.body.message), /trusted callers/);
      assert.equal(asked.body.identityToken, undefined);
      const plain = await untrusting.verify({ username: 'alice', password: alice.password, method: 'GET', uri: '/repo' });
      assert.equal(plain.body.allow, true, 'the decision itself is still answered');
      // The same on /auth: an end user who asks credgate directly is answered, without a token.
      const direct = await fetch(`${untrusting.url}/auth`, { headers: { authorization: basicHeader('alice', alice.password) } });
      assert.equal(direct.status, 200);
      assert.equal(direct.headers.get('x-auth-subject'), alice.sub);
      assert.equal(direct.headers.get('x-auth-token'), null);
      const proxied = await fetch(`${credgate.url}/auth`, { headers: { authorization: basicHeader('alice', alice.password), 'x-original-uri': '/repo', 'x-original-method': 'GET' } });
      assert.equal(typeof proxied.headers.get('x-auth-token'), 'string', 'a trusted proxy still gets it');
    } finally {
      await untrusting.close();
    }
  });

  test('no identity token reached the logs', () => {
    const text = credgate.logs.join('');
    for (const v of app.seen) if (v.token) assert.ok(!text.includes(v.token));
  });
});
