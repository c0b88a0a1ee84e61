import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { credgate as credgatePlugin, generateClientKeys, type ClientKeys, type ConfigInput, type CredgatePluginOptions } from 'credgate/fastify';
import { buildExampleApp } from '../../examples/fastify-basic/app.js';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { createLogger } from '../../src/log.js';
import { basicHeader, startCredgate } from '../fixtures/credgate.js';
import { startOidcProvider } from '../fixtures/oidcProvider.js';
import { rawRequest } from '../fixtures/rawHttp.js';

const AUDIENCE = 'https://git.example.com';
const REALM = 'example-git';
/** credgate sizes its cache and login ledger for a million accounts by default; tests need far fewer (and start faster). */
const SMALL = { cacheMaxEntries: 1000, ledgerMaxAccounts: 1000 } as const;

interface User {
  readonly username: string;
  readonly password: string;
  readonly sub: string;
}

/** One authorization server as these tests need it; the example app's JWKS URL is handed to it once the app listens. */
interface AuthorizationServer {
  readonly issuer: string;
  /** Configuration keys that make credgate talk to this AS (besides the issuer). */
  readonly config: ConfigInput;
  /** read:repo write:repo */
  readonly alice: User;
  /** read:repo */
  readonly carol: User;
  /** How this AS's app-specific passwords come back (`credential`). */
  readonly appPasswordCredential: 'app_password' | 'access_token';
  setJwksUrl(url: string): void;
  mintAppPassword(username: string, scope?: string): Promise<string>;
  revokeAppPassword(appPassword: string): Promise<void>;
  accessToken(user: User): Promise<string>;
  close(): Promise<void>;
}

const devUsers = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));
const devUser = (name: string): User => ({ username: name, password: devUsers[name]!.password, sub: devUsers[name]!.sub! });

async function devAuthorizationServer(): Promise<AuthorizationServer & { dev: DevAuthorizationServer }> {
  const client = { clientId: 'example-app', clientSecret: 'example-app-client-secret' };
  const dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [client], lockoutThreshold: 1000 });
  const ids = new Map<string, string>();
  return {
    dev,
    issuer: dev.issuer,
    config: { audience: AUDIENCE, ...client },
    alice: devUser('alice'),
    carol: devUser('carol'),
    appPasswordCredential: 'app_password',
    setJwksUrl: (url) => dev.setResourceServerJwksUrl(url),
    async mintAppPassword(username, scope) {
      const { id, password } = dev.createAppPassword(username, { scope });
      ids.set(password, id);
      return password;
    },
    async revokeAppPassword(password) {
      dev.revokeAppPassword(ids.get(password)!);
    },
    async accessToken(user) {
      const response = await fetch(`${dev.issuer}oauth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ grant_type: 'password', username: user.username, password: user.password, audience: AUDIENCE, ...{ client_id: client.clientId, client_secret: client.clientSecret } }),
      });
      return ((await response.json()) as { access_token: string }).access_token;
    },
    close: () => dev.close(),
  };
}

async function oidcProviderServer(): Promise<AuthorizationServer> {
  const passwordClient = { clientId: 'example-password-client', clientSecret: 'example-password-client-secret' };
  const introspectionClientId = 'example-introspection-client';
  const alice = { username: 'alice', email: 'alice@example.com', password: 'alice-oidc-password', sub: 'user|alice', scopes: ['read:repo', 'write:repo'] };
  const carol = { username: 'carol', password: 'carol-oidc-password', sub: 'user|carol', scopes: ['read:repo'] };
  let jwksUrl = '';
  const op = await startOidcProvider({ audience: AUDIENCE, passwordClient, introspectionClientId, introspectionClientJwksUrl: () => jwksUrl, users: [alice, carol] });
  return {
    issuer: op.issuer,
    config: { audience: AUDIENCE, ...passwordClient, tokenAuthMethod: 'client_secret_basic', introspectionClientId },
    alice,
    carol,
    appPasswordCredential: 'access_token',
    setJwksUrl: (url) => {
      jwksUrl = url;
      op.setIntrospectionClientJwksUrl(url);
    },
    mintAppPassword: (username, scope) => op.mintAppPassword(username, scope === undefined ? {} : { scope }),
    revokeAppPassword: (token) => op.revoke(token),
    accessToken: (user) => op.accessToken(user),
    close: () => op.close(),
  };
}

/** The example app, listening on 127.0.0.1, with credgate's log lines collected. */
interface RunningExample {
  readonly app: FastifyInstance;
  readonly url: string;
  readonly logs: string[];
  get(path: string, authorization?: string, headers?: Record<string, string>): Promise<Response>;
  put(path: string, authorization?: string): Promise<Response>;
  metrics(): Promise<string>;
}

function logSink(): { logs: string[]; logger: ReturnType<typeof createLogger> } {
  const logs: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logs.push(chunk.toString('utf8'));
      done();
    },
  });
  return { logs, logger: createLogger({ level: 'debug', destination }) };
}

async function listen(app: FastifyInstance, logs: string[]): Promise<RunningExample> {
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('not listening on TCP');
  const url = `http://127.0.0.1:${address.port}`;
  const request = (method: string, path: string, authorization?: string, headers: Record<string, string> = {}) =>
    fetch(`${url}${path}`, { method, headers: { ...headers, ...(authorization === undefined ? {} : { authorization }) } });
  return {
    app,
    url,
    logs,
    get: (path, authorization, headers) => request('GET', path, authorization, headers),
    put: (path, authorization) => request('PUT', path, authorization),
    metrics: async () => (await fetch(`${url}/metrics`)).text(),
  };
}

/** The example app with a credgate service of its own, built from `config`. */
async function startExample(as: AuthorizationServer, keys: ClientKeys, config: ConfigInput = {}, plugin: Partial<CredgatePluginOptions> = {}): Promise<RunningExample> {
  const { logs, logger } = logSink();
  const app = await buildExampleApp({
    config: {
      issuer: as.issuer,
      ...as.config,
      realm: REALM,
      upstreamTimeoutMs: 1000,
      decisionTimeoutMs: 2000,
      logLevel: 'debug',
      // Suites trying many wrong passwords test rules; the throttling tests switch protection on.
      passwordFailureBudget: 0,
      throttleIpFailures: 0,
      ...SMALL,
      ...config,
    },
    keys,
    logger,
    ...plugin,
  } as CredgatePluginOptions);
  const running = await listen(app, logs);
  as.setJwksUrl(`${running.url}/.well-known/jwks.json`);
  return running;
}

async function json(response: Response): Promise<Record<string, unknown>> {
  return (await response.json()) as Record<string, unknown>;
}

/** `credgate_decisions_total` of the plugin interface with these labels, from the exposition text. */
function decisions(text: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith('credgate_decisions_total{')) continue;
    const wanted = Object.entries({ interface: 'plugin', ...labels }).every(([k, v]) => line.includes(`${k}="${v}"`));
    if (wanted) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const CHALLENGE = `Basic realm="${REALM}", charset="UTF-8"`;

/** A 401 with the Basic challenge first, never cached, and the reason given. */
async function assertChallenge(response: Response, reason: string): Promise<void> {
  assert.equal(response.status, 401);
  assert.ok(response.headers.get('www-authenticate')?.startsWith(CHALLENGE), String(response.headers.get('www-authenticate')));
  assert.equal(response.headers.get('cache-control'), 'no-store');
  assert.equal((await json(response)).reason, reason);
}

function pluginSuite(name: string, setUp: () => Promise<AuthorizationServer>): void {
  describe(`credgate/fastify in the example app, against ${name}`, () => {
    let as: AuthorizationServer;
    let keys: ClientKeys;
    let example: RunningExample;
    const secrets: string[] = [];
    let asClosed = false;

    before(async () => {
      as = await setUp();
      keys = await generateClientKeys();
      example = await startExample(as, keys);
      secrets.push(as.alice.password, as.carol.password, 'not-alices-password');
    });
    after(async () => {
      await example?.app.close();
      if (!asClosed) await as?.close();
    });

    test('a password is allowed for read:repo, the AS identity on the request; a wrong one is 401 with the Basic challenge', async () => {
      const allowed = await example.get('/repos/widgets', basicHeader(as.alice.username, as.alice.password));
      assert.equal(allowed.status, 200);
      const body = await json(allowed);
      assert.equal(body.repo, 'widgets');
      const identity = body.readBy as Record<string, unknown>;
      assert.equal(identity.subject, as.alice.sub);
      assert.equal(identity.username, as.alice.username);
      assert.equal(identity.credential, 'password');
      assert.equal(identity.audience, AUDIENCE);
      assert.ok((identity.scopes as string[]).includes('read:repo'));
      await assertChallenge(await example.get('/repos/widgets', basicHeader(as.alice.username, 'not-alices-password')), 'invalid_credentials');
      await assertChallenge(await example.get('/repos/widgets', basicHeader('nobody-here', 'not-alices-password')), 'invalid_credentials');
    });

    test('write:repo: allowed for alice, 403 insufficient_scope naming write:repo for carol (read only)', async () => {
      const allowed = await example.put('/repos/widgets', basicHeader(as.alice.username, as.alice.password));
      assert.equal(allowed.status, 201);
      assert.equal(((await json(allowed)).writtenBy as Record<string, unknown>).subject, as.alice.sub);
      assert.equal((await example.get('/repos/widgets', basicHeader(as.carol.username, as.carol.password))).status, 200);
      const denied = await example.put('/repos/widgets', basicHeader(as.carol.username, as.carol.password));
      assert.equal(denied.status, 403);
      assert.equal(denied.headers.get('www-authenticate'), null);
      assert.deepEqual(await json(denied), { reason: 'insufficient_scope', missingScopes: ['write:repo'] });
    });

    test('an app-specific password is allowed; one lacking write:repo is 403, a revoked one 401', async () => {
      const asp = await as.mintAppPassword(as.alice.username, 'read:repo');
      secrets.push(asp);
      const allowed = await example.get('/repos/widgets', basicHeader(as.alice.username, asp));
      assert.equal(allowed.status, 200);
      const identity = (await json(allowed)).readBy as Record<string, unknown>;
      assert.equal(identity.credential, as.appPasswordCredential);
      assert.equal(identity.subject, as.alice.sub);
      assert.deepEqual(identity.scopes, ['read:repo']);
      assert.deepEqual(await json(await example.put('/repos/widgets', basicHeader(as.alice.username, asp))), { reason: 'insufficient_scope', missingScopes: ['write:repo'] });
      const revoked = await as.mintAppPassword(as.alice.username);
      secrets.push(revoked);
      await as.revokeAppPassword(revoked);
      await assertChallenge(await example.get('/repos/widgets', basicHeader(as.alice.username, revoked)), 'invalid_credentials');
      // Someone else's ASP under alice's name is not alice.
      const carols = await as.mintAppPassword(as.carol.username);
      secrets.push(carols);
      await assertChallenge(await example.get('/repos/widgets', basicHeader(as.alice.username, carols)), 'invalid_credentials');
    });

    test('Bearer on the same header: an access token is allowed; a forged or malformed one is 401', async () => {
      const token = await as.accessToken(as.alice);
      secrets.push(token);
      const allowed = await example.put('/repos/widgets', `Bearer ${token}`);
      assert.equal(allowed.status, 201);
      assert.equal(((await json(allowed)).writtenBy as Record<string, unknown>).credential, 'access_token');
      const [head, payload] = token.split('.');
      await assertChallenge(await example.put('/repos/widgets', `Bearer ${head}.${payload}.${'A'.repeat(86)}`), 'invalid_credentials');
      await assertChallenge(await example.put('/repos/widgets', 'Bearer not a token'), 'malformed_credentials');
    });

    test('no credentials: 401 with the challenge (Basic first, then Bearer); the public route needs none', async () => {
      const missing = await example.get('/repos/widgets');
      assert.equal(missing.headers.get('www-authenticate'), `${CHALLENGE}, Bearer realm="${REALM}"`);
      await assertChallenge(missing, 'missing_credentials');
      assert.equal((await example.get('/')).status, 200);
    });

    test('credgate parses strictly what @fastify/basic-auth alone would accept; the canonical header is allowed', async () => {
      const canonical = basicHeader(as.alice.username, as.alice.password);
      assert.equal((await example.get('/repos/widgets', canonical)).status, 200);
      const encoded = (bytes: Buffer) => `Basic ${bytes.toString('base64')}`;
      const lenient: Array<[string, string]> = [
        ['base64 without its padding', canonical.replace(/=+$/, '')],
        ['an empty username', encoded(Buffer.from(`:${as.alice.password}`))],
        ['bytes that are not UTF-8', encoded(Buffer.concat([Buffer.from(`${as.alice.username}:`), Buffer.from([0xff, 0xfe])]))],
        ['a C1 control character', encoded(Buffer.from(`${as.alice.username}:${as.alice.password}\u0085`))],
      ];
      if (!canonical.endsWith('=')) lenient.shift();
      for (const [what, header] of lenient) {
        const response = await example.get('/repos/widgets', header);
        assert.equal(response.status, 401, what);
        assert.equal((await json(response)).reason, 'malformed_credentials', what);
      }
      // Node keeps only the first of two Authorization headers (which @fastify/basic-auth reads); credgate sees both.
      const { host } = new URL(example.url);
      const twice = await rawRequest(example.url, `GET /repos/widgets HTTP/1.1\r\nHost: ${host}\r\nAuthorization: ${canonical}\r\nAuthorization: Basic ${Buffer.from('carol:x').toString('base64')}\r\nConnection: close\r\n\r\n`);
      assert.equal(twice.status, 401);
      assert.match(twice.text, /malformed_credentials/);
      const once = await rawRequest(example.url, `GET /repos/widgets HTTP/1.1\r\nHost: ${host}\r\nAuthorization: ${canonical}\r\nConnection: close\r\n\r\n`);
      assert.equal(once.status, 200);
    });

    test('HEAD on a protected GET route is decided once, like GET', async () => {
      const before = decisions(await example.metrics(), {});
      assert.equal((await fetch(`${example.url}/repos/widgets`, { method: 'HEAD' })).status, 401);
      assert.equal((await fetch(`${example.url}/repos/widgets`, { method: 'HEAD', headers: { authorization: basicHeader(as.alice.username, as.alice.password) } })).status, 200);
      assert.equal(decisions(await example.metrics(), {}) - before, 2);
    });

    test('every decision is counted and logged with interface="plugin"; no password or token reached the log', async () => {
      const text = await example.metrics();
      assert.ok(decisions(text, { result: 'allow', credential: 'password' }) >= 3);
      assert.ok(decisions(text, { result: 'allow', credential: as.appPasswordCredential }) >= 1);
      assert.ok(decisions(text, { result: 'deny', reason: 'invalid_credentials' }) >= 3);
      assert.ok(decisions(text, { result: 'deny', reason: 'insufficient_scope' }) >= 2);
      assert.ok(decisions(text, { result: 'deny', reason: 'missing_credentials' }) >= 1);
      assert.ok(decisions(text, { result: 'deny', reason: 'malformed_credentials' }) >= 4);
      for (const other of ['auth', 'verify', 'mail', 'cli']) assert.ok(!text.includes(`credgate_decisions_total{interface="${other}"`), other);
      const lines = example.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'decision');
      assert.ok(lines.length >= 15);
      assert.ok(lines.every((l) => l.interface === 'plugin' && l.clientIp === '127.0.0.1'));
      const all = example.logs.join('');
      for (const secret of secrets) assert.ok(!all.includes(secret), 'a secret reached the log');
    });

    test('throttled: 429 with Retry-After once an account has spent its login budget; another account still gets in', async () => {
      const guarded = await startExample(as, keys, { passwordFailureBudget: 3 });
      try {
        await assertChallenge(await guarded.get('/repos/widgets', basicHeader(as.carol.username, 'guess-one')), 'invalid_credentials');
        const throttled = await guarded.get('/repos/widgets', basicHeader(as.carol.username, 'guess-two'));
        assert.equal(throttled.status, 429);
        assert.ok(Number(throttled.headers.get('retry-after')) > 0);
        const body = await json(throttled);
        assert.equal(body.reason, 'throttled');
        assert.ok(Number(body.retryAfterSeconds) > 0);
        assert.equal((await guarded.get('/repos/widgets', basicHeader(as.alice.username, as.alice.password))).status, 200);
        assert.equal(decisions(await guarded.metrics(), { reason: 'throttled' }), 1);
      } finally {
        await guarded.app.close();
        as.setJwksUrl(`${example.url}/.well-known/jwks.json`);
      }
    });

    test('AS unreachable: 503 upstream_unavailable with Retry-After; a credential verified before is still answered from the cache', async () => {
      assert.equal((await example.get('/repos/widgets', basicHeader(as.alice.username, as.alice.password))).status, 200);
      await as.close();
      asClosed = true;
      const unavailable = await example.get('/repos/widgets', basicHeader(as.carol.username, 'a-password-never-seen'));
      assert.equal(unavailable.status, 503);
      assert.equal(unavailable.headers.get('retry-after'), '5');
      assert.deepEqual(await json(unavailable), { reason: 'upstream_unavailable' });
      assert.equal((await example.get('/repos/widgets', basicHeader(as.alice.username, as.alice.password))).status, 200);
      assert.ok(decisions(await example.metrics(), { reason: 'upstream_unavailable' }) >= 1);
    });
  });
}

pluginSuite('the embedded dev authorization server', async () => {
  const as = await devAuthorizationServer();
  return as;
});

pluginSuite('oidc-provider', oidcProviderServer);

describe('credgate/fastify: shared service, MFA, policy, trusted proxies, route options', () => {
  let as: Awaited<ReturnType<typeof devAuthorizationServer>>;
  let keys: ClientKeys;
  const dirs: string[] = [];
  before(async () => {
    as = await devAuthorizationServer();
    keys = await generateClientKeys();
  });
  after(async () => {
    await as.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  test('an MFA account: its password alone is refused, its app-specific password allowed', async () => {
    const example = await startExample(as, keys);
    try {
      const bob = devUser('bob');
      await assertChallenge(await example.get('/repos/widgets', basicHeader('bob', bob.password)), 'invalid_credentials');
      const asp = await as.mintAppPassword('bob', 'read:repo');
      const allowed = await example.get('/repos/widgets', basicHeader('bob', asp));
      assert.equal(allowed.status, 200);
      assert.equal(((await json(allowed)).readBy as Record<string, unknown>).subject, bob.sub);
    } finally {
      await example.app.close();
    }
  });

  test("a running credgate's service: same metrics and cache as its /auth; the plugin leaves it open when the app closes", async () => {
    const credgate = await startCredgate({ issuer: as.issuer, ...as.config, ...SMALL }, { keys });
    as.setJwksUrl(credgate.jwksUrl);
    try {
      const app = await buildExampleApp({ service: credgate.service, realm: REALM });
      const example = await listen(app, []);
      assert.equal((await example.get('/repos/widgets', basicHeader('alice', as.alice.password))).status, 200);
      assert.equal((await example.put('/repos/widgets', basicHeader('carol', as.carol.password))).status, 403);
      const tokenRequests = as.dev.stats().tokenRequests;
      // The identity the plugin verified answers /auth from the shared cache.
      assert.equal((await credgate.auth(basicHeader('alice', as.alice.password))).status, 200);
      assert.equal(as.dev.stats().tokenRequests, tokenRequests);
      const text = await (await fetch(`${credgate.url}/metrics`)).text();
      assert.equal(decisions(text, { result: 'allow' }), 1);
      assert.equal(decisions(text, { reason: 'insufficient_scope' }), 1);
      assert.equal(decisions(text, { interface: 'auth', result: 'allow', cached: 'true' }), 1);
      await app.close();
      assert.equal((await credgate.auth(basicHeader('carol', as.carol.password))).status, 200, 'the service is still open');
    } finally {
      await credgate.close();
    }
  });

  test('a service the plugin built is closed when fastify closes', async () => {
    const example = await startExample(as, keys);
    const service = example.app.credgate.service;
    let closed = 0;
    const close = service.close.bind(service);
    (service as { close: () => Promise<void> }).close = async () => {
      closed++;
      await close();
    };
    await example.app.close();
    assert.equal(closed, 1);
  });

  test("the policy judges the route's own request (method, Host, raw URL): denied where a rule says so, allowed where one allows", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'credgate-plugin-'));
    dirs.push(dir);
    const policyFile = join(dir, 'policy.yaml');
    writeFileSync(
      policyFile,
      [
        'rules:',
        '  - name: main-is-frozen',
        '    match: { host: git.example.com, method: PUT, path: /repos/main }',
        '    deny: true',
        '  - name: repos',
        '    match: { host: git.example.com, path: /repos/** }',
        '  - name: landing',
        '    match: { path: / }',
        'default: deny',
        '',
      ].join('\n'),
    );
    const example = await startExample(as, keys, { policyFile });
    try {
      const alice = basicHeader('alice', as.alice.password);
      const asGit = (method: string, path: string) => rawRequest(example.url, `${method} ${path} HTTP/1.1\r\nHost: git.example.com\r\nAuthorization: ${alice}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      assert.equal((await asGit('PUT', '/repos/other')).status, 201);
      const frozen = await asGit('PUT', '/repos/main');
      assert.equal(frozen.status, 403);
      assert.match(frozen.text, /"reason":"denied_by_policy"/);
      // The raw target, decoded once by the policy: an encoded path is still /repos/main.
      assert.equal((await asGit('PUT', '/repos/%6dain')).status, 403);
      // Another Host matches no rule: the default denies.
      assert.equal((await example.get('/repos/widgets', alice)).status, 403);
      // The route's scopes still apply on top of the rule's.
      const carol = await rawRequest(example.url, `PUT /repos/other HTTP/1.1\r\nHost: git.example.com\r\nAuthorization: ${basicHeader('carol', as.carol.password)}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      assert.equal(carol.status, 403);
      assert.match(carol.text, /"missingScopes":\["write:repo"\]/);
      // Two Host headers: ambiguous, denied before the credentials are looked at.
      const twoHosts = await rawRequest(example.url, `GET /repos/widgets HTTP/1.1\r\nHost: git.example.com\r\nHost: other.example.com\r\nAuthorization: ${alice}\r\nConnection: close\r\n\r\n`);
      assert.equal(twoHosts.status, 403);
    } finally {
      await example.app.close();
    }
  });

  test('a trusted proxy in front of the app: failures count against the X-Forwarded-For address it reports, not the proxy', async () => {
    const behind = await startExample(as, keys, { trustedProxies: ['loopback'], throttleIpFailures: 2, throttleBaseDelaySeconds: 30 });
    const plain = await startExample(as, keys, { throttleIpFailures: 2, throttleBaseDelaySeconds: 30 });
    try {
      const from = (ip: string) => ({ 'x-forwarded-for': ip });
      for (let i = 0; i < 2; i++) await behind.get('/repos/widgets', basicHeader(`nobody${i}`, 'spray'), from('198.51.100.1'));
      assert.equal((await behind.get('/repos/widgets', basicHeader('alice', as.alice.password), from('198.51.100.1'))).status, 429);
      assert.equal((await behind.get('/repos/widgets', basicHeader('alice', as.alice.password), from('198.51.100.2'))).status, 200);
      // Without trustedProxies the header is the client's own claim and is ignored: the peer is throttled.
      for (let i = 0; i < 2; i++) await plain.get('/repos/widgets', basicHeader(`nobody${i}`, 'spray'), from('198.51.100.3'));
      assert.equal((await plain.get('/repos/widgets', basicHeader('alice', as.alice.password), from('198.51.100.4'))).status, 429);
      const lines = behind.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'decision');
      assert.deepEqual([...new Set(lines.map((l) => l.clientIp))].sort(), ['198.51.100.1', '198.51.100.2']);
    } finally {
      await behind.app.close();
      await plain.app.close();
    }
  });

  test('everyRoute protects routes without config.credgate; `false` exempts one; bearer: false refuses Bearer', async () => {
    const { logs, logger } = logSink();
    const app = Fastify();
    await app.register(credgatePlugin, { config: { issuer: as.issuer, ...as.config, ...SMALL, realm: REALM, passwordFailureBudget: 0 }, keys, logger, everyRoute: true, bearer: false });
    app.get('/private', async (request) => ({ subject: request.credgate?.subject }));
    app.get('/health', { config: { credgate: false } }, async (request) => ({ ok: true, credgate: request.credgate ?? null }));
    const example = await listen(app, logs);
    try {
      const missing = await example.get('/private');
      assert.equal(missing.headers.get('www-authenticate'), CHALLENGE, 'no Bearer challenge');
      await assertChallenge(missing, 'missing_credentials');
      assert.deepEqual(await json(await example.get('/private', basicHeader('alice', as.alice.password))), { subject: as.alice.sub });
      assert.deepEqual(await json(await example.get('/health')), { ok: true, credgate: null });
      const token = await as.accessToken(as.alice);
      const bearer = await example.get('/private', `Bearer ${token}`);
      await assertChallenge(bearer, 'malformed_credentials');
    } finally {
      await app.close();
    }
  });

  test('a route with a malformed config.credgate fails start-up; a well-formed one starts', async () => {
    const { logger } = logSink();
    const options = { config: { issuer: as.issuer, ...as.config, ...SMALL }, keys, logger };
    const bad = Fastify();
    await bad.register(credgatePlugin, options);
    assert.throws(() => bad.get('/x', { config: { credgate: { scopes: ['read repo'] } } }, async () => 'x'), /scope-tokens/);
    assert.throws(() => bad.get('/y', { config: { credgate: { scope: ['read:repo'] } as never } }, async () => 'y'), /unknown option\(s\) scope/);
    await bad.close();
    const good = Fastify();
    await good.register(credgatePlugin, options);
    good.get('/x', { config: { credgate: { scopes: ['read:repo'], policy: false } } }, async () => 'x');
    await good.ready();
    await good.close();
  });

  test('an AS that was never reachable: 503 with Retry-After, never an allow', async () => {
    const unreachable = { ...as, issuer: `http://127.0.0.1:${await closedPort()}/`, setJwksUrl: () => undefined };
    const example = await startExample(unreachable, keys);
    try {
      const response = await example.get('/repos/widgets', basicHeader('alice', as.alice.password));
      assert.equal(response.status, 503);
      assert.equal(response.headers.get('retry-after'), '5');
      assert.deepEqual(await json(response), { reason: 'upstream_unavailable' });
      await assertChallenge(await example.get('/repos/widgets'), 'missing_credentials');
    } finally {
      await example.app.close();
    }
  });
});
