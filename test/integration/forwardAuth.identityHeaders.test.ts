import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { CADDY_DEPLOY_DIR, documentedCaddyCommand, startCaddy, startCaddyCommand, type RunningCaddy } from '../fixtures/caddy.js';
import { copyDeploy } from '../fixtures/recipeDocs.js';
import { startFastCgiResponder, type FastCgiResponder } from '../fixtures/fastcgi.js';
import {
  cgiParameter,
  cgiVariable,
  cgiView,
  credgateIdentity,
  IDENTITY_HEADERS,
  rawHttp,
  SPOOF_MARK,
  spoofedIdentityLines,
  spoofedOriginalLines,
  startRawEchoApp,
  type RawEchoApp,
} from '../fixtures/headerAliases.js';
import { NGINX_DEPLOY_DIR, startNginx, type RunningNginx } from '../fixtures/nginx.js';

// Every proxy recipe in front of the two kinds of application that read headers differently: an
// HTTP application (which may read them as sent, or CGI-style as HTTP_* variables: WSGI, Rack,
// PHP's built-in server) and a FastCGI one (PHP-FPM, fcgiwrap), which only ever gets HTTP_*
// parameters. For a CGI-style reader X-Auth-User, x_auth_user, X.Auth.User and X~Auth~User are one
// variable, so the recipes must drop every spelling of credgate's headers a client sends.
// The recipes are used as committed: nginx includes the deploy/nginx snippets, Caddy runs the
// deploy/caddy files with only the addresses set through the environment variables they document.

const AUDIENCE = 'https://git.example.com'; // deploy/policies/git.yaml names none: its rules use this one
const POLICY_FILE = fileURLToPath(new URL('../../../deploy/policies/git.yaml', import.meta.url));
const CLIENT = { clientId: 'credgate-aliases-test', clientSecret: 'aliases-test-client-secret' };
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));
const password = (name: string) => users[name]!.password;

const FETCH = '/repo.git/info/refs?service=git-upload-pack';
const PUSH = '/repo.git/info/refs?service=git-receive-pack';
const SPOOFED_IP = '192.0.2.66';

/** What the application behind one recipe received for one request. */
interface Seen {
  /** Header lines (HTTP) or parameters (FastCGI), as spelled. */
  pairs: ReadonlyArray<readonly [string, string]>;
  /** The variable a CGI-style reader makes of a pair's name (HTTP_X_AUTH_USER). */
  variable(name: string): string;
  /** The request URI the application was asked for. */
  uri: string | undefined;
}

interface Setup {
  name: string;
  url(): string;
  /** The recipe serves this application under `prefix` (nginx's /app/ location). */
  prefix: string;
  /** Requests the application received so far (a counter, to find this call's). */
  count(): number;
  seen(index: number): Seen;
  context(): string;
}

function httpSeen(echo: RawEchoApp, index: number): Seen {
  const request = echo.received[index]!;
  return { pairs: request.headers, variable: cgiVariable, uri: request.url };
}

function fastCgiSeen(responder: FastCgiResponder, index: number): Seen {
  const request = responder.received[index]!;
  const param = (name: string) => request.params.find(([n]) => n === name)?.[1];
  // Caddy sends REQUEST_URI; git-http-backend.conf sends PATH_INFO and QUERY_STRING only.
  const uri = param('REQUEST_URI') ?? (param('PATH_INFO') !== undefined ? `${param('PATH_INFO')}${param('QUERY_STRING') ? `?${param('QUERY_STRING')}` : ''}` : undefined);
  return { pairs: request.params.filter(([name]) => name.startsWith('HTTP_')), variable: cgiParameter, uri };
}

describe('every spelling of credgate\'s headers a client sends is dropped by the recipes (nginx and Caddy, HTTP and FastCGI applications)', { timeout: 120_000 }, () => {
  let dir: string;
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  let echo: RawEchoApp;
  let fastcgi: FastCgiResponder;
  let nginx: RunningNginx;
  let nginxUnderscoresOn: RunningNginx;
  let caddyHttp: RunningCaddy;
  let caddyFastCgi: RunningCaddy;
  const credgateLog = () => `\n--- credgate ---\n${credgate.logs.slice(-8).join('')}`;

  /** What a site's nginx.conf holds around the deploy/nginx snippets (included unchanged). */
  const nginxSite = (extraHttp = '') => ({
    http: [
      extraHttp,
      `include ${join(NGINX_DEPLOY_DIR, 'credgate-http.conf')};`,
      `upstream credgate { server ${new URL(credgate.url).host}; keepalive 4; }`,
      // git-http-backend.conf's FastCGI upstream is the recording responder instead of fcgiwrap.
      `upstream fcgiwrap { server 127.0.0.1:${fastcgi.port}; }`,
      `upstream app { server 127.0.0.1:${echo.port}; }`,
    ].join('\n'),
    server: [
      `set $git_project_root ${join(dir, 'repos')};`,
      'set $git_http_backend /usr/lib/git-core/git-http-backend;',
      `include ${join(NGINX_DEPLOY_DIR, 'credgate-auth.conf')};`,
      `include ${join(NGINX_DEPLOY_DIR, 'git-http-backend.conf')};`,
      'location ^~ /app/ {',
      `  include ${join(NGINX_DEPLOY_DIR, 'protected-app.conf')};`,
      '  proxy_pass http://app;',
      '}',
    ].join('\n'),
  });

  const setups: Setup[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'credgate-aliases-'));
    for (const d of ['repos', 'nginx', 'nginx-underscores-on', 'caddy-http', 'caddy-fastcgi', 'php']) mkdirSync(join(dir, d));
    // php_fastcgi sends every request that is not a file to index.php; the responder ignores it.
    writeFileSync(join(dir, 'php', 'index.php'), '<?php // answered by the test\'s FastCGI responder\n');
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
    credgate = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, policyFile: POLICY_FILE, trustedProxies: ['127.0.0.1/32'] });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
    echo = await startRawEchoApp();
    fastcgi = await startFastCgiResponder();
    nginx = await startNginx(join(dir, 'nginx'), nginxSite());
    // A site that allows underscores for its own reasons in the http block: credgate-auth.conf's
    // server-level setting still applies to this server.
    nginxUnderscoresOn = await startNginx(join(dir, 'nginx-underscores-on'), nginxSite('underscores_in_headers on; ignore_invalid_headers off;'));
    // Both Caddy recipes started by the commands docs/integrations/caddy.md prints, from a copy of
    // deploy/: only hostnames (plain HTTP on a run-time loopback port), addresses and the app root change.
    const copy = copyDeploy(join(dir, 'copy'));
    const credgateAddress = { kind: 'address', from: '127.0.0.1:8080', to: new URL(credgate.url).host } as const;
    caddyHttp = await startCaddyCommand(join(dir, 'caddy-http'), copy, (port) =>
      documentedCaddyCommand('deploy/caddy/Caddyfile', [
        { kind: 'hostname', from: 'git.example.com', to: `http://127.0.0.1:${port}` },
        credgateAddress,
        { kind: 'address', from: '127.0.0.1:3000', to: `127.0.0.1:${echo.port}` },
      ]), { BIND_ADDRESS: '127.0.0.1' });
    caddyFastCgi = await startCaddyCommand(join(dir, 'caddy-fastcgi'), copy, (port) =>
      documentedCaddyCommand('deploy/caddy/Caddyfile.fastcgi', [
        { kind: 'hostname', from: 'app.example.com', to: `http://127.0.0.1:${port}` },
        { kind: 'prefix', from: '/srv/app/public', to: join(dir, 'php') },
        { kind: 'address', from: 'unix//run/php/php-fpm.sock', to: `127.0.0.1:${fastcgi.port}` },
      ]), { BIND_ADDRESS: '127.0.0.1', CREDGATE_UPSTREAM: new URL(credgate.url).host });

    const nginxContext = (n: RunningNginx) => () => `\n--- nginx error.log ---\n${n.errorLog().slice(-3000)}${credgateLog()}`;
    const caddyContext = (c: RunningCaddy) => () => `\n--- caddy ---\n${c.output().slice(-3000)}${credgateLog()}`;
    const http = { count: () => echo.received.length, seen: (i: number) => httpSeen(echo, i) };
    const fcgi = { count: () => fastcgi.received.length, seen: (i: number) => fastCgiSeen(fastcgi, i) };
    setups.push(
      { name: 'nginx protected-app.conf → HTTP application', url: () => nginx.url, prefix: '/app', ...http, context: nginxContext(nginx) },
      { name: 'nginx git-http-backend.conf → FastCGI', url: () => nginx.url, prefix: '', ...fcgi, context: nginxContext(nginx) },
      { name: 'nginx, underscores allowed in the http block → HTTP application', url: () => nginxUnderscoresOn.url, prefix: '/app', ...http, context: nginxContext(nginxUnderscoresOn) },
      { name: 'nginx, underscores allowed in the http block → FastCGI', url: () => nginxUnderscoresOn.url, prefix: '', ...fcgi, context: nginxContext(nginxUnderscoresOn) },
      { name: 'Caddy Caddyfile (reverse_proxy) → HTTP application', url: () => caddyHttp.url, prefix: '', ...http, context: caddyContext(caddyHttp) },
      { name: 'Caddy Caddyfile.fastcgi (php_fastcgi) → FastCGI', url: () => caddyFastCgi.url, prefix: '', ...fcgi, context: caddyContext(caddyFastCgi) },
    );
  }, { timeout: 40_000 });

  after(async () => {
    await Promise.allSettled([nginx?.stop(), nginxUnderscoresOn?.stop(), caddyHttp?.stop(), caddyFastCgi?.stop()]);
    await Promise.allSettled([echo?.close(), fastcgi?.close(), credgate?.close()]);
    await dev?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, { timeout: 20_000 });

  /** Sends one request through a recipe; returns the status and what the application saw, if reached. */
  async function through(setup: Setup, method: string, path: string, lines: string[]): Promise<{ status: number; seen: Seen | undefined }> {
    const before = setup.count();
    const { status } = await rawHttp(setup.url(), method, setup.prefix + path, lines);
    const reached = setup.count() - before;
    assert.ok(reached <= 1, `${setup.name}: one request reached the application ${reached} times`);
    return { status, seen: reached === 1 ? setup.seen(before) : undefined };
  }

  /**
   * The application saw credgate's identity exactly: each identity header as at most one variable,
   * non-empty only when credgate sent it, with credgate's value; no spoofed value anywhere; no password.
   */
  function assertExactIdentity(setup: Setup, seen: Seen, expected: Record<string, string>, path: string) {
    const view = cgiView(seen.pairs, seen.variable);
    const dump = JSON.stringify(seen.pairs);
    for (const header of IDENTITY_HEADERS) {
      const values = view.get(cgiVariable(header)) ?? [];
      assert.ok(values.length <= 1, `${setup.name}: ${cgiVariable(header)} arrived ${values.length} times: ${JSON.stringify(values)}`);
      const value = values.filter((v) => v !== '')[0];
      const want = expected[header.toLowerCase()];
      if (header === 'X-Auth-Token' && want !== undefined) {
        // A signed token is issued per answer: present, and not the client's.
        assert.ok(value !== undefined && !value.includes(SPOOF_MARK), `${setup.name}: X-Auth-Token ${JSON.stringify(value)}`);
      } else {
        assert.equal(value, want, `${setup.name}: ${cgiVariable(header)} (credgate sent ${JSON.stringify(want)})\n${dump}`);
      }
    }
    assert.ok(!dump.includes(SPOOF_MARK), `${setup.name}: a spoofed header reached the application:\n${dump}`);
    assert.ok(!dump.includes(SPOOFED_IP), `${setup.name}: a spoofed X-Real-IP / X-Original-* reached the application:\n${dump}`);
    assert.deepEqual((view.get('HTTP_AUTHORIZATION') ?? []).filter((v) => v !== ''), [], `${setup.name}: the password reached the application`);
    assert.equal(seen.uri, setup.prefix + path, `${setup.name}: the request URI`);
  }

  const spoofs = () => [...spoofedIdentityLines(), ...spoofedOriginalLines(`/${SPOOF_MARK}.git/info/refs?service=git-upload-pack`, 'GET', `${SPOOF_MARK}.invalid`, SPOOFED_IP)];

  test('the spoofed spellings are real aliases: a CGI-style reader maps every one of them to credgate\'s variable', () => {
    // The premise of the tests below, checked on what they send (not on a proxy).
    const lines = spoofedIdentityLines();
    for (const header of IDENTITY_HEADERS) {
      const aliases = lines.map((l) => l.slice(0, l.indexOf(':'))).filter((name) => cgiVariable(name) === cgiVariable(header));
      assert.ok(aliases.length >= 8, `${header}: ${aliases.join(', ')}`);
      assert.ok(aliases.some((a) => a.includes('_')) && aliases.some((a) => a.includes('.')) && aliases.some((a) => a.includes('~')));
    }
    assert.notEqual(cgiVariable('X-Authorization'), cgiVariable('X-Auth-User'));
  });

  for (const [label, credential] of [
    ['carol\'s password (credgate sends X-Auth-User)', () => basicHeader('carol', password('carol'))],
    ['carol\'s access token (no username: credgate sends no X-Auth-User)', async () => `Bearer ${await dev.issueAccessToken('carol')}`],
  ] as const) {
    test(`${label} with every identity and original-request header spoofed in every spelling: allowed, and the application sees exactly credgate's identity; a wrong password with the same headers is refused`, { timeout: 30_000 }, async () => {
      const authorization = await credential();
      const expected = await credgateIdentity(credgate.url, 'GET', FETCH, authorization);
      assert.ok(expected, 'credgate itself allows the fetch');
      assert.equal(expected['x-auth-token'], undefined, 'credgate issues no X-Auth-Token yet: the application must get none');
      for (const setup of setups) {
        const allowed = await through(setup, 'GET', FETCH, [`Authorization: ${authorization}`, ...spoofs()]);
        assert.equal(allowed.status, 200, `${setup.name}${setup.context()}`);
        assert.ok(allowed.seen, `${setup.name}: the application was reached`);
        assertExactIdentity(setup, allowed.seen, expected, FETCH);

        const refused = await through(setup, 'GET', FETCH, [`Authorization: ${basicHeader('carol', 'not her password')}`, ...spoofs()]);
        assert.equal(refused.status, 401, setup.name);
        assert.equal(refused.seen, undefined, `${setup.name}: a refused request reached the application`);
      }
    });
  }

  test('a push disguised as a fetch with X-Original-* / X-Forwarded-* in every spelling is still denied; the same headers on a real fetch are allowed', { timeout: 30_000 }, async () => {
    const authorization = `Authorization: ${basicHeader('carol', password('carol'))}`;
    const disguise = spoofedOriginalLines(FETCH, 'GET', 'localhost');
    for (const setup of setups) {
      for (const [method, path] of [['GET', PUSH], ['POST', '/repo.git/git-receive-pack']] as const) {
        const push = await through(setup, method, path, [authorization, ...disguise]);
        assert.equal(push.status, 403, `${setup.name}: ${method} ${path}${setup.context()}`);
        assert.equal(push.seen, undefined, `${setup.name}: a denied push reached the application`);
      }
      const fetchRefs = await through(setup, 'GET', FETCH, [authorization, ...disguise]);
      assert.equal(fetchRefs.status, 200, `${setup.name}${setup.context()}`);
      assert.equal(fetchRefs.seen?.uri, setup.prefix + FETCH);
    }
  });
});

// The tests above pass only if the recipes drop the aliases. These show that they would fail
// otherwise: the same requests through the same recipes with their alias-dropping step taken out.
describe('controls: without the recipes\' alias-dropping step, a client\'s alias of X-Auth-User does reach the application', { timeout: 60_000 }, () => {
  let dir: string;
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  let echo: RawEchoApp;
  let fastcgi: FastCgiResponder;
  let caddy: RunningCaddy;
  let nginx: RunningNginx;
  const carol = `Authorization: ${basicHeader('carol', password('carol'))}`;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'credgate-aliases-control-'));
    for (const d of ['caddy', 'caddy-recipe', 'nginx', 'nginx-recipe', 'php']) mkdirSync(join(dir, d));
    writeFileSync(join(dir, 'php', 'index.php'), '');
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
    credgate = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, policyFile: POLICY_FILE, trustedProxies: ['127.0.0.1/32'] });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
    echo = await startRawEchoApp();
    fastcgi = await startFastCgiResponder();

    // Caddy: the committed files, less step 1 (the `request_header -*<c>*` lines).
    for (const file of readdirSync(CADDY_DEPLOY_DIR)) copyFileSync(join(CADDY_DEPLOY_DIR, file), join(dir, 'caddy-recipe', file));
    const snippet = join(dir, 'caddy-recipe', 'credgate-forward-auth.caddy');
    const full = readFileSync(snippet, 'utf8');
    const weakened = full.replace(/^request_header -\*.\*\n/gm, '');
    assert.equal(full.split('\n').length - weakened.split('\n').length, 14, 'step 1 is 14 lines');
    writeFileSync(snippet, weakened);
    caddy = await startCaddy(join(dir, 'caddy'), join(dir, 'caddy-recipe', 'Caddyfile.fastcgi'), (port) => ({
      SITE_ADDRESS: `http://:${port}`,
      BIND_ADDRESS: '127.0.0.1',
      CREDGATE_UPSTREAM: new URL(credgate.url).host,
      APP_UPSTREAM: `127.0.0.1:${fastcgi.port}`,
      APP_ROOT: join(dir, 'php'),
    }));

    // nginx: the committed snippets, with underscores and other header-name characters accepted.
    for (const file of ['credgate-http.conf', 'credgate-auth.conf', 'git-http-backend.conf', 'protected-app.conf']) copyFileSync(join(NGINX_DEPLOY_DIR, file), join(dir, 'nginx-recipe', file));
    const auth = join(dir, 'nginx-recipe', 'credgate-auth.conf');
    const original = readFileSync(auth, 'utf8');
    const permissive = original.replace(/^underscores_in_headers off;$/m, 'underscores_in_headers on;').replace(/^ignore_invalid_headers on;$/m, 'ignore_invalid_headers off;');
    assert.equal((permissive.match(/^(underscores_in_headers on|ignore_invalid_headers off);$/gm) ?? []).length, 2);
    writeFileSync(auth, permissive);
    nginx = await startNginx(join(dir, 'nginx'), {
      http: [
        `include ${join(dir, 'nginx-recipe', 'credgate-http.conf')};`,
        `upstream credgate { server ${new URL(credgate.url).host}; }`,
        `upstream fcgiwrap { server 127.0.0.1:${fastcgi.port}; }`,
        `upstream app { server 127.0.0.1:${echo.port}; }`,
      ].join('\n'),
      server: [
        `set $git_project_root ${dir};`,
        'set $git_http_backend /usr/lib/git-core/git-http-backend;',
        `include ${auth};`,
        `include ${join(dir, 'nginx-recipe', 'git-http-backend.conf')};`,
        'location ^~ /app/ {',
        `  include ${join(dir, 'nginx-recipe', 'protected-app.conf')};`,
        '  proxy_pass http://app;',
        '}',
      ].join('\n'),
    });
  }, { timeout: 30_000 });

  after(async () => {
    await Promise.allSettled([caddy?.stop(), nginx?.stop()]);
    await Promise.allSettled([echo?.close(), fastcgi?.close(), credgate?.close()]);
    await dev?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, { timeout: 20_000 });

  /** The values a CGI-style application reads as HTTP_X_AUTH_USER after one allowed request. */
  async function userThroughFastCgi(base: string, spoof: string): Promise<string[]> {
    const before = fastcgi.received.length;
    const { status } = await rawHttp(base, 'GET', FETCH, [carol, spoof]);
    assert.equal(status, 200);
    assert.equal(fastcgi.received.length, before + 1);
    return cgiView(fastcgi.received[before]!.params, cgiParameter).get('HTTP_X_AUTH_USER') ?? [];
  }

  test('Caddy php_fastcgi without step 1: X_Auth_User becomes HTTP_X_AUTH_USER, and the client\'s value is what the application reads', { timeout: 20_000 }, async () => {
    // Caddy builds one parameter per name from a map, so which of the two wins varies from request
    // to request; over a few requests the client's does.
    const seen = new Set<string>();
    for (let i = 0; i < 16 && !seen.has('mallory'); i++) for (const v of await userThroughFastCgi(caddy.url, 'X_Auth_User: mallory')) seen.add(v);
    assert.ok(seen.has('mallory'), `HTTP_X_AUTH_USER never carried the client's value: ${JSON.stringify([...seen])}`);
  });

  test('nginx accepting underscores: proxy_set_header does not replace X_Auth_User, so the HTTP application gets it beside credgate\'s', { timeout: 15_000 }, async () => {
    const before = echo.received.length;
    const { status } = await rawHttp(nginx.url, 'GET', `/app${FETCH}`, [carol, 'X_Auth_User: mallory']);
    assert.equal(status, 200);
    const view = cgiView(echo.received[before]!.headers, cgiVariable);
    assert.deepEqual([...(view.get('HTTP_X_AUTH_USER') ?? [])].sort(), ['carol', 'mallory']);
  });

  test('nginx accepting any header name: fastcgi_param replaces X_Auth_User (nginx compares `-` as `_`), but not X.Auth.User, which PHP reads as HTTP_X_AUTH_USER', { timeout: 15_000 }, async () => {
    assert.deepEqual(await userThroughFastCgi(nginx.url, 'X_Auth_User: mallory'), ['carol']);
    const before = fastcgi.received.length;
    assert.deepEqual(await userThroughFastCgi(nginx.url, 'X.Auth.User: mallory'), ['carol', 'mallory']);
    assert.ok(fastcgi.received[before]!.params.some(([name, value]) => name === 'HTTP_X.AUTH.USER' && value === 'mallory'));
  });
});
