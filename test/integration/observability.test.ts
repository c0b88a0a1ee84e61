import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { startRedis, type TestRedis } from '../fixtures/redis.js';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import {
  dashboardExpressions,
  metricNames,
  parseExposition,
  promtool,
  ruleExpressions,
  ruleTestSeries,
  type Sample,
  selectorLabels,
  seriesKey,
} from '../fixtures/monitoring.js';

// A real credgate in front of the embedded dev AS, driven through a scripted mix of decisions on
// /v1/verify, /auth and /auth/mail (allows by password, ASP and Bearer JWT; wrong passwords; missing scope;
// a policy denial; missing and malformed credentials; cached repeats; throttling; coalesced
// concurrent requests; an admin purge; a refused and an accepted policy reload; the AS going
// away). Its /metrics (on its own port, as metrics/prometheus.yml recommends) is scraped before
// and after, and checked against metrics/: every name the rules, their tests and the dashboard
// read is there, promtool lints it, each counter moved exactly as the script says, and no secret
// used anywhere shows up in the metrics or the logs.

const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-observability', clientSecret: `client-secret-${randomBytes(12).toString('hex')}` };
const ADMIN_TOKEN = `admin-token-${randomBytes(24).toString('hex')}`;
const CACHE_KEY_SECRET = randomBytes(32).toString('hex');
const MAIL_BACKEND_PASSWORD = `mail-backend-${randomBytes(12).toString('hex')}`;
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));
const ALICE_PASSWORD = users.alice!.password;
const CAROL_PASSWORD = users.carol!.password;

const POLICY = `
audience: ${AUDIENCE}
rules:
  - name: admin-area
    match: { path: "/admin/**" }
    deny: true
  - name: git-push-refs
    match: { method: GET, path: "/**/info/refs", query: { service: git-receive-pack } }
    scopes: [write:repo]
  - name: git-fetch
    match: { method: [GET, POST], path: ["/**/info/refs", "/**/git-upload-pack"] }
    scopes: [read:repo]
  - name: imap
    match: { protocol: imap }
    scopes: [read:mail]
`;
const push = { 'x-original-method': 'GET', 'x-original-uri': '/team/r.git/info/refs?service=git-receive-pack' };
const fetchRefs = { 'x-original-method': 'GET', 'x-original-uri': '/team/r.git/info/refs?service=git-upload-pack' };

/** Counter families whose every series is compared, before against after. */
const COUNTERS = [
  'credgate_decisions_total',
  'credgate_decision_duration_seconds_count',
  'credgate_upstream_requests_total',
  'credgate_upstream_request_duration_seconds_count',
  'credgate_cache_requests_total',
  'credgate_cache_evictions_total',
  'credgate_throttled_requests_total',
  'credgate_coalesced_requests_total',
  'credgate_purges_total',
  'credgate_policy_reloads_total',
  'credgate_jwks_refreshes_total',
  'credgate_upstream_retries_total',
  'credgate_upstream_rejections_total',
  'credgate_decision_timeouts_total',
  'credgate_stale_identities_served_total',
  'credgate_load_shed_total',
  'credgate_log_lines_dropped_total',
];

/** What the script expects each counter series to have moved by. */
class Expected {
  readonly deltas = new Map<string, number>();
  add(name: string, labels: Record<string, string>, n = 1): void {
    const key = seriesKey(name, labels);
    this.deltas.set(key, (this.deltas.get(key) ?? 0) + n);
  }
  decision(iface: string, result: 'allow' | 'deny' | 'error', reason: string, credential: string, cached: boolean, n = 1): void {
    this.add('credgate_decisions_total', { interface: iface, result, reason, credential, cached: String(cached) }, n);
    this.add('credgate_decision_duration_seconds_count', { interface: iface, result }, n);
  }
  cache(result: 'hit' | 'negative_hit' | 'miss', n = 1): void {
    this.add('credgate_cache_requests_total', { result }, n);
  }
  upstream(endpoint: 'discovery' | 'token' | 'introspection' | 'jwks', outcome: string, n = 1): void {
    this.add('credgate_upstream_requests_total', { endpoint, outcome }, n);
    this.add('credgate_upstream_request_duration_seconds_count', { endpoint }, n);
  }
}

const byKey = (samples: Sample[]): Map<string, number> => new Map(samples.map((s) => [seriesKey(s.name, s.labels), s.value]));
const familyOf = (key: string) => key.slice(0, key.indexOf('{'));

async function waitFor(what: string, condition: () => Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await condition()) return;
    await sleep(25);
  }
  assert.fail(`timed out waiting for ${what}`);
}

describe('observability: a scripted run through a real credgate, checked against metrics/', { timeout: 30_000 }, () => {
  let dev: DevAuthorizationServer | undefined;
  let credgate: TestCredgate;
  let redis: TestRedis | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'credgate-observability-'));
  const policyFile = join(dir, 'policy.yaml');
  const expected = new Expected();
  /** Every secret the run sends or configures; none may show up in logs or metrics. */
  const secrets = new Map<string, string>([
    ['client secret', CLIENT.clientSecret],
    ['admin token', ADMIN_TOKEN],
    ['cache key secret', CACHE_KEY_SECRET],
    ['mail backend password', MAIL_BACKEND_PASSWORD],
    ...defaultDevUsers().map((u): [string, string] => [`${u.username}'s password`, u.password]),
  ]);
  const secret = (what: string, value: string): string => {
    secrets.set(what, value);
    return value;
  };
  /** Basic credentials on /auth: the header's base64 must not be logged either. */
  const basic = (what: string, username: string, password: string): string => {
    const header = basicHeader(username, password);
    secret(`${what} (Basic header)`, header.slice('Basic '.length));
    return header;
  };
  let before_: Sample[];
  let after_: Sample[];
  let scrapeText = '';
  let coalesced = 0;

  const scrape = async (): Promise<string> => {
    const response = await fetch(`${credgate.metricsUrl}/metrics`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    return response.text();
  };
  const counter = async (name: string, labels: Record<string, string> = {}): Promise<number> =>
    byKey(parseExposition(await scrape())).get(seriesKey(name, labels)) ?? 0;
  const auth = (headers: Record<string, string>, path = '/auth') => fetch(`${credgate.url}${path}`, { headers });
  const verify = (body: Record<string, unknown>) => credgate.verify(body);
  /** What nginx's mail proxy sends to auth_http for one login (user and password percent-escaped as nginx does). */
  const mailLogin = (protocol: string, username: string, password: string) => {
    const escaped = encodeURIComponent(password);
    if (escaped !== password) secret(`${username}'s password as nginx escapes it`, escaped);
    return fetch(`${credgate.url}/auth/mail`, {
      headers: { 'auth-method': 'plain', 'auth-user': encodeURIComponent(username), 'auth-pass': escaped, 'auth-protocol': protocol, 'auth-login-attempt': '1', 'client-ip': '192.0.2.10', 'client-host': '[UNAVAILABLE]' },
    });
  };
  const writeAtomically = (text: string) => {
    // As editors do: a new file renamed over the old one.
    const tmp = join(dir, `.policy-${randomBytes(4).toString('hex')}.tmp`);
    writeFileSync(tmp, text);
    renameSync(tmp, policyFile);
  };

  before(async () => {
    writeFileSync(policyFile, POLICY);
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT], lockoutThreshold: 1000 });
    // With Redis, as a replicated deployment runs: the shared-state metrics the alerts read exist.
    redis = await startRedis();
    credgate = await startCredgate({
      redisUrl: redis.url,
      issuer: dev.issuer,
      audience: AUDIENCE,
      ...CLIENT,
      policyFile,
      trustedProxies: ['loopback'],
      adminToken: ADMIN_TOKEN,
      cacheKeySecret: CACHE_KEY_SECRET,
      metricsPort: 0,
      mailImapBackend: '127.0.0.1:1143',
      mailSmtpBackend: '127.0.0.1:1025',
      mailBackendPassword: MAIL_BACKEND_PASSWORD,
      passwordFailureBudget: 5,
      throttleIpFailures: 0,
    });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
    before_ = parseExposition(await scrape());
    const asBefore = dev.stats();

    // Allows: a password, the same password again (cache), an ASP, a Bearer JWT on /auth.
    assert.equal((await verify({ username: 'alice', password: ALICE_PASSWORD, scopes: ['read:repo'] })).body.credential, 'password');
    // The dev AS's access tokens name no username (as Auth0's by default): the first password login of
    // an account introspects the issued token once for the AS's username.
    expected.decision('verify', 'allow', 'ok', 'password', false); expected.cache('miss'); expected.upstream('token', 'ok'); expected.upstream('introspection', 'ok');
    assert.equal((await verify({ username: 'alice', password: ALICE_PASSWORD })).body.cached, true);
    expected.decision('verify', 'allow', 'ok', 'password', true); expected.cache('hit');
    const aliceAsp = secret("alice's ASP", dev.createAppPassword('alice').password);
    assert.equal((await verify({ username: 'alice', password: aliceAsp })).body.credential, 'app_password');
    expected.decision('verify', 'allow', 'ok', 'app_password', false); expected.cache('miss'); expected.upstream('introspection', 'ok');
    const carolJwt = secret("carol's access token", await dev.issueAccessToken('carol'));
    assert.equal((await auth({ authorization: `Bearer ${carolJwt}`, ...fetchRefs })).status, 200);
    expected.decision('auth', 'allow', 'ok', 'access_token', false); expected.cache('miss');

    // Denials: a wrong password (tried as a password, then as an ASP), the same again (negative
    // cache), a missing scope, the same identity on /auth (cache), a policy denial, no and broken
    // credentials.
    const wrong = secret('a wrong password', 'not-alices-password-1');
    assert.equal((await verify({ username: 'alice', password: wrong })).body.reason, 'invalid_credentials');
    expected.decision('verify', 'deny', 'invalid_credentials', 'none', false); expected.cache('miss'); expected.upstream('token', 'client_error'); expected.upstream('introspection', 'ok');
    assert.equal((await verify({ username: 'alice', password: wrong })).body.cached, true);
    expected.decision('verify', 'deny', 'invalid_credentials', 'none', true); expected.cache('negative_hit');
    assert.equal((await verify({ username: 'carol', password: CAROL_PASSWORD, scopes: ['write:repo'] })).body.reason, 'insufficient_scope');
    expected.decision('verify', 'deny', 'insufficient_scope', 'none', false); expected.cache('miss'); expected.upstream('token', 'ok'); expected.upstream('introspection', 'ok');
    assert.equal((await auth({ authorization: basic("carol's password", 'carol', CAROL_PASSWORD), ...push })).status, 403);
    expected.decision('auth', 'deny', 'insufficient_scope', 'none', true); expected.cache('hit');
    assert.equal((await auth({ authorization: basic("alice's password", 'alice', ALICE_PASSWORD), 'x-original-method': 'GET', 'x-original-uri': '/admin/users' })).status, 403);
    expected.decision('auth', 'deny', 'denied_by_policy', 'none', false);
    assert.equal((await auth({ ...fetchRefs })).status, 401);
    expected.decision('auth', 'deny', 'missing_credentials', 'none', false);
    assert.equal((await auth({ authorization: 'Basic !!!not-base64', ...fetchRefs })).status, 401);
    expected.decision('auth', 'deny', 'malformed_credentials', 'none', false);
    assert.equal((await verify({ username: 'alice', password: '' })).status, 400);
    expected.decision('verify', 'deny', 'malformed_credentials', 'none', false);
    // A body that is not the request shape is refused before any decision: not counted.
    const broken = await fetch(`${credgate.url}/v1/verify`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"username":' });
    assert.equal(broken.status, 400);

    // Login protection (budget 5): three wrong passwords for one account reach the AS, the fourth is
    // not sent as a password; it is still introspected, since a new ASP of a throttled user must get in.
    for (let i = 1; i <= 3; i++) {
      const guess = secret(`guess ${i}`, `mallory-guess-${i}-${randomBytes(6).toString('hex')}`);
      assert.equal((await verify({ username: 'mallory', password: guess })).body.reason, 'invalid_credentials');
      expected.decision('verify', 'deny', 'invalid_credentials', 'none', false); expected.cache('miss'); expected.upstream('token', 'client_error'); expected.upstream('introspection', 'ok');
    }
    const throttled = await verify({ username: 'mallory', password: secret('guess 4', `mallory-guess-4-${randomBytes(6).toString('hex')}`) });
    assert.equal(throttled.body.reason, 'throttled');
    expected.decision('verify', 'deny', 'throttled', 'none', false); expected.cache('miss'); expected.upstream('introspection', 'ok'); expected.add('credgate_throttled_requests_total', {});

    // Six identical requests at once with a fresh ASP: one introspection; the others either
    // waited for it (coalesced, a miss each) or came after it and hit the cache.
    const coalescedBefore = await counter('credgate_coalesced_requests_total');
    const carolAsp = secret("carol's ASP", dev.createAppPassword('carol').password);
    const burst = await Promise.all(Array.from({ length: 6 }, () => verify({ username: 'carol', password: carolAsp })));
    for (const r of burst) assert.equal(r.body.credential, 'app_password');
    coalesced = (await counter('credgate_coalesced_requests_total')) - coalescedBefore;
    assert.equal(burst.filter((r) => r.body.cached === false).length, 1 + coalesced);
    expected.decision('verify', 'allow', 'ok', 'app_password', false, 1 + coalesced);
    expected.decision('verify', 'allow', 'ok', 'app_password', true, 5 - coalesced);
    expected.cache('miss', 1 + coalesced); expected.cache('hit', 5 - coalesced); expected.upstream('introspection', 'ok');
    expected.add('credgate_coalesced_requests_total', {}, coalesced);

    // nginx's mail proxy: alice's IMAP login (her identity is cached), carol lacks read:mail, the
    // policy has no SMTP rule, and SMTP without AUTH.
    const imap = await mailLogin('imap', 'alice', ALICE_PASSWORD);
    assert.equal(imap.headers.get('auth-status'), 'OK');
    expected.decision('mail', 'allow', 'ok', 'password', true); expected.cache('hit');
    assert.notEqual((await mailLogin('imap', 'carol', CAROL_PASSWORD)).headers.get('auth-status'), 'OK');
    expected.decision('mail', 'deny', 'insufficient_scope', 'none', true); expected.cache('hit');
    assert.notEqual((await mailLogin('smtp', 'alice', ALICE_PASSWORD)).headers.get('auth-status'), 'OK');
    expected.decision('mail', 'deny', 'denied_by_policy', 'none', false);
    const noAuth = await fetch(`${credgate.url}/auth/mail`, { headers: { 'auth-method': 'none', 'auth-protocol': 'smtp', 'auth-login-attempt': '1', 'client-ip': '192.0.2.10' } });
    assert.notEqual(noAuth.headers.get('auth-status'), 'OK');
    expected.decision('mail', 'deny', 'missing_credentials', 'none', false);

    // An admin purge drops alice's cached identity: her password goes to the AS again.
    const purge = await fetch(`${credgate.url}/admin/purge`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'alice' }),
    });
    assert.equal(purge.status, 200);
    expected.add('credgate_purges_total', {});
    assert.equal((await verify({ username: 'alice', password: ALICE_PASSWORD })).body.cached, false);
    expected.decision('verify', 'allow', 'ok', 'password', false); expected.cache('miss'); expected.upstream('token', 'ok');

    // The AS's own counters agree with credgate's upstream metrics.
    const asAfter = dev.stats();
    const tokenCalls = [...expected.deltas].filter(([k]) => k.startsWith('credgate_upstream_requests_total{endpoint="token"')).reduce((n, [, v]) => n + v, 0);
    const introspections = [...expected.deltas].filter(([k]) => k.startsWith('credgate_upstream_requests_total{endpoint="introspection"')).reduce((n, [, v]) => n + v, 0);
    assert.equal(asAfter.tokenRequests - asBefore.tokenRequests, tokenCalls);
    assert.equal(asAfter.introspectionRequests - asBefore.introspectionRequests, introspections);

    // A broken policy edit is refused, then a good one accepted.
    writeAtomically('rules: [ { name: broken, match: { path: "no-leading-slash" } } ]\n');
    await waitFor('the refused reload', async () => (await counter('credgate_policy_reloads_total', { result: 'failure' })) === 1);
    assert.equal(await counter('credgate_policy_last_reload_successful'), 0);
    expected.add('credgate_policy_reloads_total', { result: 'failure' });
    writeAtomically(`${POLICY}# edited\n`);
    await waitFor('the accepted reload', async () => (await counter('credgate_policy_reloads_total', { result: 'success' })) === 1);
    expected.add('credgate_policy_reloads_total', { result: 'success' });

    // The AS goes away: a fresh password cannot be checked either way, 503.
    await dev.close();
    dev = undefined;
    const unreachable = await verify({ username: 'alice', password: secret('a password tried while the AS is down', 'while-the-as-is-down-1') });
    assert.equal(unreachable.status, 503);
    assert.equal(unreachable.body.reason, 'upstream_unavailable');
    expected.decision('verify', 'error', 'upstream_unavailable', 'none', false); expected.cache('miss');
    // A refused connection never reached the AS, so each is retried (upstreamRetries, default 2): three calls each.
    for (let attempt = 0; attempt < 3; attempt++) {
      expected.upstream('token', 'unreachable');
      expected.upstream('introspection', 'unreachable');
    }
    expected.add('credgate_upstream_retries_total', { endpoint: 'token' }, 2);
    expected.add('credgate_upstream_retries_total', { endpoint: 'introspection' }, 2);

    scrapeText = await scrape();
    after_ = parseExposition(scrapeText);
  });

  after(async () => {
    await credgate?.close();
    await dev?.close();
    await redis?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('/metrics is served on the metrics port only, not on the main port', async () => {
    assert.notEqual(credgate.metricsUrl, undefined);
    assert.equal((await fetch(`${credgate.url}/metrics`)).status, 404);
  });

  test('every metric the rules, the rule tests and the dashboard read is in the scrape, with the labels they use', () => {
    const exposed = new Set(after_.map((s) => s.name));
    const labelsOf = new Map<string, Set<string>>();
    for (const s of after_) for (const l of Object.keys(s.labels)) (labelsOf.get(s.name) ?? labelsOf.set(s.name, new Set()).get(s.name)!).add(l);
    const sources: [string, string[]][] = [
      ['metrics/*.yml rules', ruleExpressions()],
      ['metrics/dashboard.json', dashboardExpressions()],
      ['metrics/tests input series', ruleTestSeries()],
    ];
    for (const [where, exprs] of sources) {
      const names = new Set(exprs.flatMap(metricNames));
      assert.ok(names.size > 0, where);
      for (const name of names) {
        // `up` is written by Prometheus for every target it scrapes, not by credgate; this scrape
        // answering 200 is what makes it 1.
        if (name === 'up') continue;
        assert.ok(exposed.has(name), `${where} reads ${name}, which a live credgate does not expose`);
      }
      for (const { metric, labels } of exprs.flatMap(selectorLabels)) {
        for (const label of labels) {
          // Target labels come from Prometheus; `le` is on every _bucket series.
          if (['job', 'instance'].includes(label)) continue;
          assert.ok(labelsOf.get(metric)?.has(label), `${where} selects ${metric} by ${label}, a label it does not have`);
        }
      }
    }
  });

  test('promtool check metrics finds nothing wrong with credgate’s own metrics', async () => {
    const { code, stdout, stderr } = await promtool(['check', 'metrics'], scrapeText);
    const problems = (stdout + stderr).split('\n').filter((l) => l.trim() !== '');
    // credgate drops prom-client's three gauges named *_total (prometheus/client_js#283), so the
    // whole exposition is clean.
    assert.deepEqual(problems, [], `promtool check metrics (exit ${code}):\n${stdout}${stderr}`);
    assert.equal(code, 0);
  });

  test('every counter moved exactly as the scripted decisions did', () => {
    const beforeMap = byKey(before_);
    const afterMap = byKey(after_);
    const keys = new Set([...beforeMap.keys(), ...afterMap.keys(), ...expected.deltas.keys()].filter((k) => COUNTERS.includes(familyOf(k))));
    const actual: Record<string, number> = {};
    const wanted: Record<string, number> = {};
    for (const key of [...keys].sort()) {
      const delta = (afterMap.get(key) ?? 0) - (beforeMap.get(key) ?? 0);
      if (delta !== 0) actual[key] = delta;
      const e = expected.deltas.get(key) ?? 0;
      if (e !== 0) wanted[key] = e;
    }
    // Decision and upstream histograms' _count series are in the comparison too: one
    // observation per decision and per call.
    assert.deepEqual(actual, wanted);
    assert.ok(Object.keys(wanted).length > 20);
  });

  test('concurrent identical requests were coalesced into one call to the AS', () => {
    // Six requests in flight before the first introspection (with its signed client assertion)
    // returns: at least one waited for it.
    assert.ok(coalesced >= 1, `coalesced ${coalesced}`);
  });

  test('gauges: build info, cache entries, policy reloaded successfully', () => {
    const gauge = (name: string) => after_.filter((s) => s.name === name);
    const build = gauge('credgate_build_info');
    assert.equal(build.length, 1);
    assert.equal(build[0]!.value, 1);
    assert.match(build[0]!.labels.version ?? '', /^\d+\.\d+\.\d+/);
    assert.equal(build[0]!.labels.node_version, process.version);
    assert.ok(gauge('credgate_cache_entries')[0]!.value > 0);
    assert.equal(gauge('credgate_policy_last_reload_successful')[0]!.value, 1);
  });

  test('no password, ASP, token or secret used in the run appears in the logs or the metrics', () => {
    const logs = credgate.logs.join('');
    assert.ok(logs.includes('"msg":"decision"'), 'the logs were captured');
    const haystacks: [string, string][] = [
      ['logs', logs],
      ['metrics before', before_.map((s) => seriesKey(s.name, s.labels)).join('\n')],
      ['metrics after', scrapeText],
    ];
    assert.ok(secrets.size >= 15);
    for (const [what, value] of secrets) {
      for (const [where, text] of haystacks) assert.ok(!text.includes(value), `${what} appears in the ${where}`);
    }
    // Nor any JWT at all (the AS's access tokens for alice and carol are not known to the test).
    for (const [where, text] of haystacks) assert.doesNotMatch(text, /eyJ[A-Za-z0-9_-]{8,}\.eyJ/, `a JWT appears in the ${where}`);
  });

  // Runs after the final scrape, so its reloads are not part of the counted script.
  test(
    'reverting a refused policy edit to the content in force sets credgate_policy_last_reload_successful back to 1',
    async () => {
      const inForce = `${POLICY}# edited\n`;
      const failures = await counter('credgate_policy_reloads_total', { result: 'failure' });
      writeAtomically('rules: "not a list"\n');
      await waitFor('the refused reload', async () => (await counter('credgate_policy_reloads_total', { result: 'failure' })) === failures + 1);
      assert.equal(await counter('credgate_policy_last_reload_successful'), 0);
      writeAtomically(inForce);
      // The watcher's debounce is 150 ms; give it ample time, then look.
      await sleep(600);
      assert.equal(await counter('credgate_policy_last_reload_successful'), 1);
    },
  );
});
