import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Agent, fetch as undiciFetch } from 'undici';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { createBareRepository, git as gitAsIs, gitUrl, type BareRepository } from '../fixtures/git.js';
import { nginxSyntaxCheck, nginxTest, startFcgiwrap, startNginxSites, type RunningFcgiwrap, type RunningNginx } from '../fixtures/nginx.js';
import { freePort, httpRequest as httpRequestAsIs, startEchoApp, type EchoApp, type EchoedRequest } from '../fixtures/processes.js';
import { copyDeploy, documentedText, runScript, type Substitution } from '../fixtures/recipeDocs.js';

// deploy/policies/git.yaml is used unchanged; it names no audience, so its rules use this one.
const AUDIENCE = 'https://git.example.com';
const POLICY_FILE = fileURLToPath(new URL('../../../deploy/policies/git.yaml', import.meta.url));
const CLIENT = { clientId: 'credgate-nginx-test', clientSecret: 'nginx-test-client-secret' };
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));
const password = (name: string) => users[name]!.password;
const WWW_DATA = { uid: 33, gid: 33 }; // Debian's fcgiwrap.socket runs CGIs as www-data

/**
 * docs/integrations/nginx.md's install commands (recipe-test: nginx-install), run as written with
 * bash from a copy of the repository's deploy/, under `prefix` instead of / (the only change to the
 * commands). The site file they install is deploy/nginx/git.example.com.conf with what the docs
 * tell the reader to edit for their site replaced: ports (run-time ones on loopback), the
 * certificate paths (one made for git.example.com and 127.0.0.1), the addresses of credgate, the
 * application and fcgiwrap's socket, and the prefix.
 */
async function installSite(prefix: string, site: { port: number; credgatePort: number; appPort: number; fcgiwrapSocket: string; cert: string; key: string }): Promise<void> {
  // Picked on each attempt of startNginxSites (installSite is its `install`): a taken port, this one
  // or site.port, makes nginx fail with "Address already in use", and the next attempt picks new ones.
  const httpPort = await freePort([site.port, site.credgatePort, site.appPort]);
  const prefixed: Substitution[] = [
    { kind: 'prefix', from: '/etc/nginx/', to: `${prefix}/etc/nginx/` },
    { kind: 'prefix', from: '/srv/git', to: `${prefix}/srv/git` },
  ];
  const copy = copyDeploy(join(prefix, 'src'), {
    'deploy/nginx/git.example.com.conf': [
      { kind: 'port', from: 'listen 80;', to: `listen 127.0.0.1:${httpPort};` },
      { kind: 'port', from: 'listen [::]:80;', to: `listen [::1]:${httpPort};` },
      { kind: 'port', from: 'listen 443 ssl;', to: `listen 127.0.0.1:${site.port} ssl;` },
      { kind: 'port', from: 'listen [::]:443 ssl;', to: `listen [::1]:${site.port} ssl;` },
      { kind: 'certificate', from: '/etc/letsencrypt/live/git.example.com/fullchain.pem', to: site.cert },
      { kind: 'certificate', from: '/etc/letsencrypt/live/git.example.com/privkey.pem', to: site.key },
      { kind: 'address', from: 'server 127.0.0.1:8080;', to: `server 127.0.0.1:${site.credgatePort};` },
      { kind: 'address', from: 'server 127.0.0.1:3000;', to: `server 127.0.0.1:${site.appPort};` },
      { kind: 'address', from: 'unix:/run/fcgiwrap.socket', to: `unix:${site.fcgiwrapSocket}` },
      ...prefixed,
    ],
  });
  const commands = documentedText('docs/integrations/nginx.md', 'nginx-install', prefixed);
  const result = await runScript(commands, { cwd: copy });
  assert.equal(result.code, 0, `docs/integrations/nginx.md's install commands failed:\n${commands}\n${result.stdout}${result.stderr}`);
}

describe('git over HTTPS through nginx auth_request, git-http-backend and credgate, installed as docs/integrations/nginx.md says (deploy/nginx, deploy/policies/git.yaml)', { timeout: 90_000 }, () => {
  let dir: string;
  let home: string;
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  let untrustingCredgate: TestCredgate;
  let fcgiwrap: RunningFcgiwrap;
  let echo: EchoApp;
  let nginx: RunningNginx & { prefix: string };
  let nginxToUntrusting: RunningNginx;
  let repo: BareRepository;
  let bobAsp: string;
  let cert: string;
  let key: string;
  let ca: string;
  let tls: Agent;
  let n = 0;
  const fresh = (label: string) => join(dir, 'work', `${label}-${++n}`);
  const repoUrl = (user?: string, pass?: string, base = nginx.url) => gitUrl(base, '/repo.git', user, pass);
  const context = () => `\n--- nginx error.log ---\n${nginx.errorLog().slice(-4000)}\n--- credgate ---\n${credgate.logs.slice(-15).join('')}`;
  /** git, fetch and raw requests trusting only the site's certificate. */
  const git = (args: string[], options: { cwd?: string; home: string }) => gitAsIs(args, { ...options, env: { GIT_SSL_CAINFO: cert } });
  const fetch = (url: string, init: { headers?: Record<string, string> } = {}) => undiciFetch(url, { ...init, dispatcher: tls });
  const httpRequest = (base: string, method: string, target: string, headers: Record<string, string> = {}) => httpRequestAsIs(base, method, target, headers, 10_000, ca);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'credgate-nginx-'));
    chmodSync(dir, 0o755); // fcgiwrap runs as www-data and must reach its socket and the repositories
    home = join(dir, 'home');
    for (const d of ['home', 'work', 'nginx', 'nginx-untrusting', 'nginx-no-credgate', 'tls']) mkdirSync(join(dir, d));
    cert = join(dir, 'tls', 'git.example.com.pem');
    key = join(dir, 'tls', 'git.example.com.key');
    await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=git.example.com', '-addext', 'subjectAltName=DNS:git.example.com,IP:127.0.0.1,IP:::1', '-keyout', key, '-out', cert], { timeout: 15_000 });
    ca = readFileSync(cert, 'utf8');
    tls = new Agent({ connect: { ca } });
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
    const common = { issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, policyFile: POLICY_FILE };
    credgate = await startCredgate({ ...common, trustedProxies: ['127.0.0.1/32'] });
    // Same policy, but this nginx is not among its trusted proxies.
    untrustingCredgate = await startCredgate({ ...common, trustedProxies: ['192.0.2.0/24'] }, { keys: credgate.keys });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
    bobAsp = dev.createAppPassword('bob', { scope: 'read:repo' }).password;
    fcgiwrap = await startFcgiwrap(dir, WWW_DATA);
    echo = await startEchoApp();
    nginx = await startNginxSites(join(dir, 'nginx'), async (port, prefix) => {
      // The test's repository (one commit, a hook recording what the backend saw) beside the
      // project.git the docs' commands create; their chown hands both to www-data.
      repo = await createBareRepository(join(prefix, 'srv/git'), 'repo.git', home);
      await installSite(prefix, { port, credgatePort: Number(new URL(credgate.url).port), appPort: echo.port, fcgiwrapSocket: fcgiwrap.socket, cert, key });
    });
    nginxToUntrusting = await startNginxSites(join(dir, 'nginx-untrusting'), (port, prefix) =>
      installSite(prefix, { port, credgatePort: Number(new URL(untrustingCredgate.url).port), appPort: echo.port, fcgiwrapSocket: fcgiwrap.socket, cert, key }),
    );
  }, { timeout: 60_000 });

  after(async () => {
    // Every process goes, whatever happened above; each step is independent of the others.
    await Promise.allSettled([nginx?.stop(), nginxToUntrusting?.stop()]);
    await Promise.allSettled([fcgiwrap?.stop(), echo?.close(), credgate?.close(), untrustingCredgate?.close(), tls?.close()]);
    await dev?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, { timeout: 20_000 });

  test("the docs' commands installed the snippets and the site, and created project.git for www-data", () => {
    for (const file of ['credgate-http.conf', 'credgate-auth.conf', 'git-http-backend.conf', 'protected-app.conf']) {
      assert.equal(readFileSync(join(nginx.prefix, 'etc/nginx/credgate', file), 'utf8'), readFileSync(fileURLToPath(new URL(`../../../deploy/nginx/${file}`, import.meta.url)), 'utf8'), `${file} unchanged`);
    }
    assert.match(readFileSync(join(nginx.prefix, 'etc/nginx/sites-enabled/git.example.com.conf'), 'utf8'), /server_name git\.example\.com;/);
    assert.ok(readFileSync(join(nginx.prefix, 'srv/git/project.git/HEAD'), 'utf8').startsWith('ref: '));
  });

  test("`nginx -t` accepts the installed site, as the docs' next step runs it", { timeout: 15_000 }, async () => {
    const result = await nginxTest(nginx.dir);
    assert.ok(result.ok, result.output);
    assert.match(result.output, /test is successful/);
  });

  test('plain HTTP only redirects to HTTPS: a password sent there reaches neither credgate nor git', { timeout: 15_000 }, async () => {
    const site = readFileSync(join(nginx.prefix, 'etc/nginx/sites-enabled/git.example.com.conf'), 'utf8');
    const httpPort = /listen 127\.0\.0\.1:(\d+);/.exec(site)![1]!;
    const decisions = credgate.logs.length;
    const answer = await httpRequest(`http://127.0.0.1:${httpPort}`, 'GET', '/repo.git/info/refs?service=git-upload-pack', { host: 'git.example.com', authorization: basicHeader('alice', password('alice')) });
    assert.equal(answer.status, 301);
    assert.equal(answer.headers.location, 'https://git.example.com/repo.git/info/refs?service=git-upload-pack');
    assert.equal(credgate.logs.length, decisions, 'credgate was not asked');
    // The deny beside it: the same request over HTTPS is decided, and that is seen in credgate's log.
    assert.equal((await fetch(`${nginx.url}/repo.git/info/refs?service=git-upload-pack`, { headers: { authorization: basicHeader('alice', password('alice')) } })).status, 200);
    assert.ok(credgate.logs.length > decisions, 'a decision leaves a log line');
  });

  test('alice clones the project.git the docs created, pushes to it, and it holds her commit', { timeout: 20_000 }, async () => {
    const target = fresh('project');
    const clone = await git(['clone', gitUrl(nginx.url, '/project.git', 'alice', password('alice')), target], { home });
    assert.equal(clone.code, 0, clone.stderr + context());
    await git(['commit', '--allow-empty', '-q', '-m', 'first commit of project.git'], { cwd: target, home });
    const push = await git(['push', 'origin', 'HEAD:main'], { cwd: target, home });
    assert.equal(push.code, 0, push.stderr + context());
    const pushed = (await git(['rev-parse', 'HEAD'], { cwd: target, home })).stdout.trim();
    assert.equal((await gitAsIs(['--git-dir', join(nginx.prefix, 'srv/git/project.git'), 'rev-parse', 'refs/heads/main'], { home })).stdout.trim(), pushed);
  });

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

  test('a query git-http-backend splits otherwise cannot disguise a push as a fetch (regression: ?service&git-receive-pack)', { timeout: 20_000 }, async () => {
    // git-http-backend itself reads `service&git-receive-pack` as service=git-receive-pack (a name
    // without `=` takes the next piece as its value), where URLSearchParams reads two empty names.
    const cgi = await promisify(execFile)('git', ['http-backend'], {
      timeout: 10_000,
      env: {
        ...process.env, GIT_PROJECT_ROOT: join(repo.path, '..'), GIT_HTTP_EXPORT_ALL: '1', PATH_INFO: '/repo.git/info/refs', QUERY_STRING: 'service&git-receive-pack',
        REQUEST_METHOD: 'GET', REMOTE_USER: 'carol', GIT_CONFIG_COUNT: '1', GIT_CONFIG_KEY_0: 'safe.directory', GIT_CONFIG_VALUE_0: '*',
      },
    });
    assert.match(cgi.stdout, /^Content-Type: application\/x-git-receive-pack-advertisement\r?$/m, 'the backend serves the push side for this query');
    const authorization = basicHeader('carol', password('carol'));
    for (const target of ['/repo.git/info/refs?service&git-receive-pack', '/repo.git/info/refs?x=1;service=git-receive-pack', '/repo.git/info/refs?x=1&&service=git-receive-pack']) {
      assert.equal((await httpRequest(nginx.url, 'GET', target, { authorization })).status, 403, `${target}${context()}`);
    }
    assert.ok(credgate.logs.some((line) => line.includes('a query parameter has no =')), 'credgate says why');
    assert.equal((await httpRequest(nginx.url, 'GET', '/repo.git/info/refs?service=git-upload-pack', { authorization })).status, 200, context());
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
    const orphan = await startNginxSites(join(dir, 'nginx-no-credgate'), (port, prefix) =>
      installSite(prefix, { port, credgatePort: closedPort, appPort: echo.port, fcgiwrapSocket: fcgiwrap.socket, cert, key }),
    );
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

  test('the `nginx -t` step does catch a broken site: git-http-backend.conf without its variables', { timeout: 20_000 }, async () => {
    const check = join(dir, 'broken-site');
    mkdirSync(check);
    const installed = readFileSync(join(nginx.prefix, 'etc/nginx/sites-enabled/git.example.com.conf'), 'utf8');
    writeFileSync(join(check, 'broken.conf'), installed.replace(/^\s*set \$git_http_backend .*$/m, ''));
    const broken = await nginxSyntaxCheck(check, join(check, 'broken.conf'));
    assert.equal(broken.ok, false);
    assert.match(broken.output, /unknown "git_http_backend" variable/);
  });
});
