import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { createBareRepository, git, gitUrl, type BareRepository } from '../fixtures/git.js';
import { NGINX_DEPLOY_DIR, nginxSyntaxCheck, startFcgiwrap, startNginx, type RunningFcgiwrap, type RunningNginx } from '../fixtures/nginx.js';
import { freePort, httpRequest, startEchoApp, type EchoApp, type EchoedRequest } from '../fixtures/processes.js';

// deploy/policies/git.yaml is used unchanged; it names no audience, so its rules use this one.
const AUDIENCE = 'https://git.example.com';
const POLICY_FILE = fileURLToPath(new URL('../../../deploy/policies/git.yaml', import.meta.url));
const CLIENT = { clientId: 'credgate-nginx-test', clientSecret: 'nginx-test-client-secret' };
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));
const password = (name: string) => users[name]!.password;

/** What a site's own nginx.conf would hold around the deploy/nginx snippets, which are included unchanged. */
function site(credgatePort: number, fcgiwrapSocket: string, repoRoot: string, appPort: number) {
  return {
    http: [
      `include ${join(NGINX_DEPLOY_DIR, 'credgate-http.conf')};`,
      `upstream credgate { server 127.0.0.1:${credgatePort}; keepalive 4; }`,
      `upstream fcgiwrap { server unix:${fcgiwrapSocket}; }`,
      `upstream app { server 127.0.0.1:${appPort}; }`,
    ].join('\n'),
    server: [
      `set $git_project_root ${repoRoot};`,
      'set $git_http_backend /usr/lib/git-core/git-http-backend;',
      `include ${join(NGINX_DEPLOY_DIR, 'credgate-auth.conf')};`,
      `include ${join(NGINX_DEPLOY_DIR, 'git-http-backend.conf')};`,
      // ^~ keeps the git location's regex off /app/ (the policy's fetch rule covers /app/r.git/info/refs).
      'location ^~ /app/ {',
      `  include ${join(NGINX_DEPLOY_DIR, 'protected-app.conf')};`,
      '  proxy_pass http://app;',
      '}',
    ].join('\n'),
  };
}

describe('git over HTTP through nginx auth_request, git-http-backend and credgate (deploy/nginx, deploy/policies/git.yaml)', { timeout: 60_000 }, () => {
  let dir: string;
  let home: string;
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  let untrustingCredgate: TestCredgate;
  let fcgiwrap: RunningFcgiwrap;
  let echo: EchoApp;
  let nginx: RunningNginx;
  let nginxToUntrusting: RunningNginx;
  let repo: BareRepository;
  let bobAsp: string;
  let n = 0;
  const fresh = (label: string) => join(dir, 'work', `${label}-${++n}`);
  const repoUrl = (user?: string, pass?: string, base = nginx.url) => gitUrl(base, '/repo.git', user, pass);
  const context = () => `\n--- nginx error.log ---\n${nginx.errorLog().slice(-4000)}\n--- credgate ---\n${credgate.logs.slice(-15).join('')}`;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'credgate-nginx-'));
    home = join(dir, 'home');
    for (const d of ['home', 'repos', 'work', 'nginx', 'nginx-untrusting', 'nginx-no-credgate']) mkdirSync(join(dir, d));
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
    const common = { issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, policyFile: POLICY_FILE };
    credgate = await startCredgate({ ...common, trustedProxies: ['127.0.0.1/32'] });
    // Same policy, but this nginx is not among its trusted proxies.
    untrustingCredgate = await startCredgate({ ...common, trustedProxies: ['192.0.2.0/24'] }, { keys: credgate.keys });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
    bobAsp = dev.createAppPassword('bob', { scope: 'read:repo' }).password;
    repo = await createBareRepository(join(dir, 'repos'), 'repo.git', home);
    fcgiwrap = await startFcgiwrap(dir);
    echo = await startEchoApp();
    const credgatePort = Number(new URL(credgate.url).port);
    nginx = await startNginx(join(dir, 'nginx'), site(credgatePort, fcgiwrap.socket, join(dir, 'repos'), echo.port));
    nginxToUntrusting = await startNginx(join(dir, 'nginx-untrusting'), site(Number(new URL(untrustingCredgate.url).port), fcgiwrap.socket, join(dir, 'repos'), echo.port));
  }, { timeout: 30_000 });

  after(async () => {
    // Every process goes, whatever happened above; each step is independent of the others.
    await Promise.allSettled([nginx?.stop(), nginxToUntrusting?.stop()]);
    await Promise.allSettled([fcgiwrap?.stop(), echo?.close(), credgate?.close(), untrustingCredgate?.close()]);
    await dev?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, { timeout: 20_000 });

  test('alice clones with her password', { timeout: 20_000 }, async () => {
    const target = fresh('alice-clone');
    const result = await git(['clone', repoUrl('alice', password('alice')), target], { home });
    assert.equal(result.code, 0, result.stderr + context());
    assert.equal((await git(['rev-parse', 'HEAD'], { cwd: target, home })).stdout.trim(), await repo.head());
  });

  test('a wrong password is refused: 401 with a Basic challenge, and git reports an authentication failure', { timeout: 20_000 }, async () => {
    const result = await git(['clone', repoUrl('alice', 'not her password'), fresh('wrong')], { home });
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /Authentication failed/);
    const answer = await fetch(`${nginx.url}/repo.git/info/refs?service=git-upload-pack`, { headers: { authorization: basicHeader('alice', 'not her password') } });
    assert.equal(answer.status, 401);
    assert.match(answer.headers.get('www-authenticate') ?? '', /^Basic realm="credgate"/);
  });

  test('bob (MFA) clones with an app-specific password; his password alone is refused', { timeout: 20_000 }, async () => {
    const withAsp = await git(['clone', repoUrl('bob', bobAsp), fresh('bob-asp')], { home });
    assert.equal(withAsp.code, 0, withAsp.stderr + context());
    const withPassword = await git(['clone', repoUrl('bob', password('bob')), fresh('bob-password')], { home });
    assert.notEqual(withPassword.code, 0);
    assert.match(withPassword.stderr, /Authentication failed/);
  });

  test('carol (read:repo) clones, but her push is refused with 403 and the branch does not move', { timeout: 20_000 }, async () => {
    const target = fresh('carol');
    const clone = await git(['clone', repoUrl('carol', password('carol')), target], { home });
    assert.equal(clone.code, 0, clone.stderr + context());
    const before = await repo.head();
    await git(['commit', '--allow-empty', '-q', '-m', 'carol was here'], { cwd: target, home });
    const push = await git(['push', 'origin', 'main'], { cwd: target, home });
    assert.notEqual(push.code, 0);
    assert.match(push.stderr, /403/);
    assert.equal(await repo.head(), before);
    assert.ok(!repo.pushLog().some((l) => l.startsWith('carol|')), 'the backend never ran receive-pack for carol');
  });

  test('alice (write:repo) pushes: the branch moves and the backend sees REMOTE_USER=alice, not a spoofed X-Auth-User, and no password', { timeout: 20_000 }, async () => {
    const target = fresh('alice-push');
    assert.equal((await git(['clone', '-q', repoUrl('alice', password('alice')), target], { home })).code, 0);
    await git(['commit', '--allow-empty', '-q', '-m', 'alice was here'], { cwd: target, home });
    const pushed = (await git(['rev-parse', 'HEAD'], { cwd: target, home })).stdout.trim();
    const push = await git(['-c', 'http.extraHeader=X-Auth-User: mallory', 'push', 'origin', 'main'], { cwd: target, home });
    assert.equal(push.code, 0, push.stderr + context());
    assert.equal(await repo.head(), pushed);
    // The pre-receive hook's record: REMOTE_USER | HTTP_X_AUTH_USER | HTTP_AUTHORIZATION.
    assert.equal(repo.pushLog().at(-1), 'alice|alice|');
    assert.ok(!repo.pushLog().some((l) => l.includes('mallory')));
  });

  test('an access token as the password (x-access-token) pushes; the backend sees its subject as REMOTE_USER', { timeout: 20_000 }, async () => {
    const target = fresh('token-push');
    const token = await dev.issueAccessToken('alice');
    assert.equal((await git(['clone', '-q', repoUrl('x-access-token', token), target], { home })).code, 0);
    await git(['commit', '--allow-empty', '-q', '-m', 'pushed with a token'], { cwd: target, home });
    const pushed = (await git(['rev-parse', 'HEAD'], { cwd: target, home })).stdout.trim();
    const push = await git(['push', 'origin', 'main'], { cwd: target, home });
    assert.equal(push.code, 0, push.stderr + context());
    assert.equal(await repo.head(), pushed);
    // Auth0's access tokens name no user: REMOTE_USER falls back to the subject, X-Auth-User stays empty.
    assert.equal(repo.pushLog().at(-1), `${users.alice!.sub}||`);
  });

  test('a read-only token as the password cannot push', { timeout: 20_000 }, async () => {
    const target = fresh('read-token');
    const token = await dev.issueAccessToken('alice', { scope: 'read:repo' });
    assert.equal((await git(['clone', '-q', repoUrl('x-access-token', token), target], { home })).code, 0);
    const before = await repo.head();
    await git(['commit', '--allow-empty', '-q', '-m', 'not allowed'], { cwd: target, home });
    const push = await git(['push', 'origin', 'main'], { cwd: target, home });
    assert.notEqual(push.code, 0);
    assert.match(push.stderr, /403/);
    assert.equal(await repo.head(), before);
  });

  test('a client\'s own X-Forwarded-Uri / X-Original-URI cannot make a push look like a fetch', { timeout: 20_000 }, async () => {
    const disguise = {
      authorization: basicHeader('carol', password('carol')),
      'x-forwarded-uri': '/repo.git/info/refs?service=git-upload-pack',
      'x-forwarded-method': 'GET',
      'x-original-uri': '/repo.git/info/refs?service=git-upload-pack',
      'x-original-method': 'GET',
    };
    const push = await fetch(`${nginx.url}/repo.git/info/refs?service=git-receive-pack`, { headers: disguise });
    assert.equal(push.status, 403);
    const fetchRefs = await fetch(`${nginx.url}/repo.git/info/refs?service=git-upload-pack`, { headers: disguise });
    assert.equal(fetchRefs.status, 200, context());
    assert.equal(fetchRefs.headers.get('content-type'), 'application/x-git-upload-pack-advertisement');
  });

  test('a dot segment cannot disguise a push as a fetch: any target with one is refused as ambiguous', { timeout: 20_000 }, async () => {
    const authorization = basicHeader('carol', password('carol'));
    const push = await httpRequest(nginx.url, 'GET', '/repo.git/objects/../info/refs?service=git-receive-pack', { authorization });
    assert.equal(push.status, 403);
    const pushPack = await httpRequest(nginx.url, 'POST', '/repo.git/objects/../git-receive-pack', { authorization, 'content-type': 'application/x-git-receive-pack-request' });
    assert.equal(pushPack.status, 403);
    const dotted = await httpRequest(nginx.url, 'GET', '/repo.git/objects/../info/refs?service=git-upload-pack', { authorization });
    assert.equal(dotted.status, 403, 'even a fetch: credgate approves only what the backend reads one way');
    const fetchRefs = await httpRequest(nginx.url, 'GET', '/repo.git/info/refs?service=git-upload-pack', { authorization });
    assert.equal(fetchRefs.status, 200, context());
  });

  test('the proxied app receives the identity credgate verified, never the client\'s X-Auth-* headers, and not the password', { timeout: 20_000 }, async () => {
    const spoofed = { 'x-auth-user': 'mallory', 'x-auth-subject': 'auth0|mallory', 'x-auth-scopes': 'write:repo admin', 'x-auth-credential': 'password', 'x-auth-token': 'forged.identity.token', 'x-original-uri': '/elsewhere' };
    const allowed = await fetch(`${nginx.url}/app/r.git/info/refs?service=git-upload-pack`, { headers: { authorization: basicHeader('carol', password('carol')), ...spoofed } });
    assert.equal(allowed.status, 200, context());
    const seen = (await allowed.json()) as EchoedRequest;
    assert.equal(seen.url, '/app/r.git/info/refs?service=git-upload-pack');
    assert.equal(seen.headers['x-auth-user'], 'carol');
    assert.equal(seen.headers['x-auth-subject'], users.carol!.sub);
    assert.equal(seen.headers['x-auth-scopes'], 'read:repo');
    assert.equal(seen.headers['x-auth-credential'], 'password');
    assert.equal(seen.headers['x-auth-token'], undefined, 'credgate sends no X-Auth-Token yet: the client\'s is not passed on');
    assert.equal(seen.headers['x-original-uri'], undefined);
    assert.equal(seen.headers.authorization, undefined);

    const anonymous = await fetch(`${nginx.url}/app/r.git/info/refs?service=git-upload-pack`, { headers: spoofed });
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get('www-authenticate') ?? '', /^Basic /);
  });

  test('forwarded headers from a peer that is not a trusted proxy are ignored: the policy does not see the original request', { timeout: 20_000 }, async () => {
    const authorization = basicHeader('alice', password('alice'));
    const refs = '/repo.git/info/refs?service=git-upload-pack';
    assert.equal((await fetch(nginx.url + refs, { headers: { authorization } })).status, 200, 'trusted: the fetch is judged as a fetch');
    const untrusted = await fetch(nginxToUntrusting.url + refs, { headers: { authorization } });
    // Without the original method and URI, no rule of git.yaml matches, and it has no default.
    assert.equal(untrusted.status, 403);
    const clone = await git(['clone', repoUrl('alice', password('alice'), nginxToUntrusting.url), fresh('untrusted')], { home });
    assert.notEqual(clone.code, 0);
    assert.match(clone.stderr, /403/);
    const logs = untrustingCredgate.logs.join('');
    assert.match(logs, /forwarded headers from a peer that is not a trusted proxy were ignored/);
    assert.match(logs, /"reason":"denied_by_policy"/);
  });

  test('credgate unreachable: nginx fails closed with 500, and neither git nor the application is served', { timeout: 20_000 }, async () => {
    const closedPort = await freePort(); // nothing listens there
    const appRequests = echo.received.length;
    const orphan = await startNginx(join(dir, 'nginx-no-credgate'), site(closedPort, fcgiwrap.socket, join(dir, 'repos'), echo.port));
    try {
      const authorization = basicHeader('alice', password('alice'));
      assert.equal((await fetch(`${orphan.url}/repo.git/info/refs?service=git-upload-pack`, { headers: { authorization } })).status, 500);
      assert.equal((await fetch(`${orphan.url}/app/r.git/info/refs?service=git-upload-pack`, { headers: { authorization } })).status, 500);
      const clone = await git(['clone', repoUrl('alice', password('alice'), orphan.url), fresh('no-credgate')], { home });
      assert.notEqual(clone.code, 0);
      assert.match(clone.stderr, /500/);
      assert.equal(echo.received.length, appRequests);
    } finally {
      await orphan.stop();
    }
  });

  test('the complete example site (git.example.com.conf) passes nginx -t with the snippets it includes', { timeout: 20_000 }, async (t) => {
    // Only what is machine-specific changes: where the snippets were copied to, and a certificate.
    const check = join(dir, 'example-site');
    mkdirSync(check);
    try {
      await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=git.example.com', '-keyout', join(check, 'key.pem'), '-out', join(check, 'cert.pem')], { timeout: 15_000 });
    } catch (error) {
      // openssl comes with dovecot-core, which test/setup.sh installs; elsewhere it may be missing.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return t.skip('openssl is not installed: no certificate for the example site');
      throw error;
    }
    const site = readFileSync(join(NGINX_DEPLOY_DIR, 'git.example.com.conf'), 'utf8')
      .replaceAll('/etc/nginx/credgate/', NGINX_DEPLOY_DIR)
      .replace('/etc/letsencrypt/live/git.example.com/fullchain.pem', join(check, 'cert.pem'))
      .replace('/etc/letsencrypt/live/git.example.com/privkey.pem', join(check, 'key.pem'));
    writeFileSync(join(check, 'git.example.com.conf'), site);
    const result = await nginxSyntaxCheck(check, join(check, 'git.example.com.conf'));
    assert.ok(result.ok, result.output);
    // The deny beside it: the check does catch a broken site (git-http-backend.conf without its variables).
    writeFileSync(join(check, 'broken.conf'), site.replace(/^\s*set \$git_http_backend .*$/m, ''));
    const broken = await nginxSyntaxCheck(check, join(check, 'broken.conf'));
    assert.equal(broken.ok, false);
    assert.match(broken.output, /unknown "git_http_backend" variable/);
  });
});
