import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import Fastify from 'fastify';
import { configSchema, type ConfigInput } from '../../src/config/schema.js';
import { checkPair } from '../../src/http/credentials.js';
import { authWait, decodeAuthValue, loginAttempt, MAX_AUTH_WAIT_SECONDS, parseBackend, parseMailRequest, renderMailAnswer, type MailLogin, type MailOutcome } from '../../src/http/mailProtocol.js';
import { TrustedProxies } from '../../src/decide/trust.js';
import { mailRoute } from '../../src/http/routes/mail.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics/registry.js';
import { Policy } from '../../src/policy/policy.js';
import { policySchema } from '../../src/policy/schema.js';
import type { Service } from '../../src/service.js';
import type { Credentials, Decision } from '../../src/verify/types.js';
import type { VerifyContext } from '../../src/verify/verifier.js';
import { DecisionPipeline } from '../../src/decide/pipeline.js';
import type { Verifier } from '../../src/verify/verifier.js';

const OPTIONS = { maxAttempts: 3, waitSeconds: 3, smtpErrorCode: '535 5.7.8' };

describe('decoding Auth-User and Auth-Pass', () => {
  test('percent-escapes nginx adds (space, %, control bytes) and raw UTF-8 bytes decode to the typed text', () => {
    assert.equal(decodeAuthValue('correct%20horse%20battery%20staple'), 'correct horse battery staple');
    assert.equal(decodeAuthValue('100%25:sure'), '100%:sure');
    // nginx passes bytes ≥ 0x80 through unescaped; Node reads header bytes as Latin-1.
    assert.equal(decodeAuthValue(Buffer.from('pä:ss%25wörd:✓ 名'.replace(/ /g, '%20'), 'utf8').toString('latin1')), 'pä:ss%wörd:✓ 名');
    assert.equal(decodeAuthValue('p%C3%A4ss'), 'päss');
    assert.equal(decodeAuthValue('%41%62'), 'Ab');
  });

  test('broken escapes and bytes that are not UTF-8 are refused, not replaced', () => {
    for (const bad of ['%', '%2', '%zz', 'a%g1', '%ff', '%C3', '%C3%28', Buffer.from([0xc3, 0x28]).toString('latin1'), '%ED%A0%80']) {
      assert.equal(decodeAuthValue(bad), undefined, bad);
    }
  });
});

test('Auth-Login-Attempt: a positive integer, anything else offers no retry', () => {
  assert.equal(loginAttempt('1'), 1);
  assert.equal(loginAttempt(' 4 '), 4);
  for (const bad of [undefined, null, '', '0', '-1', 'x', '1.5', '9999999']) assert.equal(loginAttempt(bad), Number.POSITIVE_INFINITY, String(bad));
});

test('Auth-Wait doubles per attempt, is at least the throttle retry-after, and stops at mailMaxAttempts', () => {
  assert.equal(authWait(1, OPTIONS), 3);
  assert.equal(authWait(2, OPTIONS), 6);
  assert.equal(authWait(3, OPTIONS), undefined);
  assert.equal(authWait(Number.POSITIVE_INFINITY, OPTIONS), undefined);
  assert.equal(authWait(1, OPTIONS, 40), 40);
  assert.equal(authWait(1, { maxAttempts: 3, waitSeconds: 0 }), 1, 'never 0: nginx reads 0 as "close"');
  assert.equal(authWait(1, OPTIONS, MAX_AUTH_WAIT_SECONDS + 1), undefined, 'a wait longer than the cap closes instead');
  assert.equal(authWait(1, OPTIONS, MAX_AUTH_WAIT_SECONDS), MAX_AUTH_WAIT_SECONDS);
});

test('backends: IPv4 and bracketed IPv6 become Auth-Server without brackets and Auth-Port', () => {
  assert.deepEqual(parseBackend('127.0.0.1:143'), { host: '127.0.0.1', port: 143 });
  assert.deepEqual(parseBackend('[::1]:110'), { host: '::1', port: 110 });
});

describe('parsing nginx request headers', () => {
  const headers = (h: Record<string, string | string[]>) => Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), Array.isArray(v) ? v : [v]]));
  const base = { 'Auth-Method': 'plain', 'Auth-User': 'alice', 'Auth-Pass': 'secret%20pass', 'Auth-Protocol': 'pop3', 'Auth-Login-Attempt': '2', 'Client-IP': '192.0.2.7', 'Client-Host': '[UNAVAILABLE]' };

  test('a plain or login request becomes a login with decoded credentials, attempt and client IP', () => {
    const login = parseMailRequest(headers(base), checkPair) as MailLogin;
    assert.deepEqual(login, { protocol: 'pop3', username: 'alice', password: 'secret pass', attempt: 2, clientIp: '192.0.2.7' });
    assert.equal((parseMailRequest(headers({ ...base, 'Auth-Method': 'login' }), checkPair) as MailLogin).username, 'alice');
    assert.equal((parseMailRequest(headers({ ...base, 'Client-IP': 'not-an-ip' }), checkPair) as MailLogin).clientIp, undefined);
  });

  const refused: [string, Record<string, string | string[]>, MailOutcome['kind'], string][] = [
    ['APOP', { 'Auth-Method': 'apop', 'Auth-Salt': '<1.2@host>' }, 'method', 'malformed_credentials'],
    ['CRAM-MD5', { 'Auth-Method': 'cram-md5' }, 'method', 'malformed_credentials'],
    ['EXTERNAL', { 'Auth-Method': 'external' }, 'method', 'malformed_credentials'],
    ['SMTP without AUTH', { 'Auth-Method': 'none', 'Auth-Protocol': 'smtp' }, 'auth_required', 'missing_credentials'],
    ['an unknown protocol', { 'Auth-Protocol': 'nntp' }, 'unavailable', 'malformed_credentials'],
    ['no Auth-Pass', { 'Auth-Pass': [] }, 'invalid', 'missing_credentials'],
    ['an empty password', { 'Auth-Pass': '' }, 'invalid', 'malformed_credentials'],
    ['an empty username', { 'Auth-User': '' }, 'invalid', 'malformed_credentials'],
    ['a broken escape', { 'Auth-Pass': 'ab%zz' }, 'invalid', 'malformed_credentials'],
    ['a password that is not UTF-8', { 'Auth-Pass': 'ab%ff' }, 'invalid', 'malformed_credentials'],
    ['a control character', { 'Auth-Pass': 'ab%0D%0Acd' }, 'invalid', 'malformed_credentials'],
    ['a colon in the username', { 'Auth-User': 'al:ice' }, 'invalid', 'malformed_credentials'],
    ['Auth-User twice', { 'Auth-User': ['alice', 'bob'] }, 'invalid', 'malformed_credentials'],
    ['a password over 4 KiB', { 'Auth-Pass': 'x'.repeat(4097) }, 'invalid', 'malformed_credentials'],
  ];
  for (const [what, change, kind, reason] of refused) {
    test(`${what} is refused before any verification (${kind})`, () => {
      const result = parseMailRequest(headers({ ...base, ...change }), checkPair);
      assert.ok('outcome' in result, 'refused');
      assert.equal(result.outcome.kind, kind);
      assert.equal(result.reason, reason);
      assert.ok(!result.message.includes('secret'), 'the message never holds the password');
    });
  }
});

describe('answers per protocol', () => {
  const ok: MailOutcome = { kind: 'ok', server: { host: '10.0.0.5', port: 110 }, backendPassword: undefined, user: 'alice' };

  test('an allow names the backend by IP and port; the backend secret replaces the password when set', () => {
    assert.deepEqual(renderMailAnswer('pop3', 1, ok, OPTIONS), { 'Auth-Status': 'OK', 'Auth-Server': '10.0.0.5', 'Auth-Port': '110', 'Auth-User': 'alice' });
    assert.deepEqual(renderMailAnswer('smtp', 1, { ...ok, backendPassword: 'backend-secret-value' }, OPTIONS), { 'Auth-Status': 'OK', 'Auth-Server': '10.0.0.5', 'Auth-Port': '110', 'Auth-User': 'alice', 'Auth-Pass': 'backend-secret-value' });
  });

  test('POP3: a denial carries the RFC 3206 [AUTH] code and Auth-Wait, no Auth-Error-Code', () => {
    assert.deepEqual(renderMailAnswer('pop3', 1, { kind: 'invalid' }, OPTIONS), { 'Auth-Status': '[AUTH] Invalid login or password', 'Auth-Wait': '3' });
    assert.deepEqual(renderMailAnswer('pop3', 2, { kind: 'unavailable', retry: true }, OPTIONS), { 'Auth-Status': '[SYS/TEMP] Temporary server problem, try again later', 'Auth-Wait': '6' });
    assert.deepEqual(renderMailAnswer('pop3', 3, { kind: 'invalid' }, OPTIONS), { 'Auth-Status': '[AUTH] Invalid login or password' }, 'last attempt: nginx closes');
  });

  test('IMAP: a denial carries the RFC 5530 [AUTHENTICATIONFAILED] code', () => {
    assert.deepEqual(renderMailAnswer('imap', 1, { kind: 'invalid' }, OPTIONS), { 'Auth-Status': '[AUTHENTICATIONFAILED] Invalid login or password', 'Auth-Wait': '3' });
    assert.deepEqual(renderMailAnswer('imap', 1, { kind: 'unavailable', retry: false }, OPTIONS), { 'Auth-Status': '[UNAVAILABLE] Temporary server problem, try again later' });
  });

  test('SMTP: plain text with Auth-Error-Code: 535 5.7.8 for wrong credentials, 454 4.7.0 temporary, 530 5.7.0 without AUTH, 504 5.5.4 mechanism', () => {
    assert.deepEqual(renderMailAnswer('smtp', 1, { kind: 'invalid' }, OPTIONS), { 'Auth-Status': 'Invalid login or password', 'Auth-Wait': '3', 'Auth-Error-Code': '535 5.7.8' });
    assert.deepEqual(renderMailAnswer('smtp', 1, { kind: 'invalid' }, { ...OPTIONS, smtpErrorCode: '535 5.7.0' })['Auth-Error-Code'], '535 5.7.0');
    assert.deepEqual(renderMailAnswer('smtp', 1, { kind: 'unavailable', retry: true }, OPTIONS), { 'Auth-Status': 'Temporary server problem, try again later', 'Auth-Wait': '3', 'Auth-Error-Code': '454 4.7.0' });
    assert.deepEqual(renderMailAnswer('smtp', 1, { kind: 'auth_required' }, OPTIONS), { 'Auth-Status': 'Authentication required', 'Auth-Wait': '3', 'Auth-Error-Code': '530 5.7.0' });
    assert.deepEqual(renderMailAnswer('smtp', 1, { kind: 'method' }, OPTIONS), { 'Auth-Status': 'Authentication mechanism not supported', 'Auth-Wait': '3', 'Auth-Error-Code': '504 5.5.4' });
  });

  test('throttled reads like any wrong login, with Auth-Wait at least the retry-after', () => {
    assert.deepEqual(renderMailAnswer('smtp', 1, { kind: 'throttled', retryAfterSeconds: 30 }, OPTIONS), { 'Auth-Status': 'Invalid login or password', 'Auth-Wait': '30', 'Auth-Error-Code': '535 5.7.8' });
    assert.deepEqual(renderMailAnswer('imap', 2, { kind: 'throttled', retryAfterSeconds: 1 }, OPTIONS), renderMailAnswer('imap', 2, { kind: 'invalid' }, OPTIONS));
  });
});

// The route through fastify's inject with a verifier that answers a fixed decision and records what it was asked.
// nginx reads only the Auth-* headers; the HTTP status is 200 for an allow only, so that nothing
// else that might ask this URL (a forward-auth proxy) mistakes a refusal for an allow.
describe('GET /auth/mail', () => {
  const identity = { subject: 'auth0|alice0001', username: 'alice', credential: 'password' as const, scopes: ['read:mail', 'send:mail'], audience: 'https://mail.example.com', expiresAt: undefined };
  const ALLOW: Decision = { allow: true, status: 200, reason: 'ok', identity, cached: false };
  const DENY: Decision = { allow: false, status: 401, reason: 'invalid_credentials', cached: false };

  async function setUp(decision: Decision, config: Partial<ConfigInput> = {}, policyDocument?: unknown) {
    const calls: { credentials: Credentials; context: VerifyContext }[] = [];
    const logs: string[] = [];
    const log = createLogger({ level: 'info', destination: new Writable({ write: (c: Buffer, _e, done) => (logs.push(c.toString()), done()) }) });
    const parsed = configSchema.parse({ issuer: 'https://as.example/', audience: 'https://mail.example.com', clientId: 'c', clientSecret: 's', mailPop3Backend: '10.0.0.5:110', mailSmtpBackend: '[fd00::25]:587', ...config });
    const verifier = {
      async verify(credentials: Credentials, context: VerifyContext) {
        calls.push({ credentials, context });
        return decision;
      },
    } as unknown as Verifier;
    const policy = policyDocument === undefined ? undefined : new Policy(policySchema.parse(policyDocument));
    const metrics = new Metrics('test');
    const service = {
      config: parsed,
      trust: new TrustedProxies(parsed.trustedProxies, log),
      policy,
      pipeline: new DecisionPipeline(verifier, policy, { mailScopes: { imap: parsed.mailImapScopes, pop3: parsed.mailPop3Scopes, smtp: parsed.mailSmtpScopes } }, metrics, log),
      metrics,
      log,
    } as unknown as Service;
    const app = Fastify();
    mailRoute(app, service);
    app.get('/auth/*', async () => 'the /auth/* route');
    const ask = (headers: Record<string, string>) =>
      app.inject({ method: 'GET', url: '/auth/mail', headers: { 'auth-method': 'plain', 'auth-user': 'alice', 'auth-pass': 'pa%25ss%20w%C3%B6rd', 'auth-login-attempt': '1', 'client-ip': '192.0.2.7', ...headers } });
    return { ask, calls, logs };
  }
  const authHeaders = (response: { headers: Record<string, unknown> }) => Object.fromEntries(Object.entries(response.headers).filter(([k]) => k.startsWith('auth-')));

  test('POP3 allow: Auth-Server/Auth-Port of the POP3 backend, the decoded pair verified with read:mail', async () => {
    const { ask, calls } = await setUp(ALLOW);
    const response = await ask({ 'auth-protocol': 'pop3' });
    assert.equal(response.statusCode, 200);
    assert.equal(response.body, '');
    assert.deepEqual(authHeaders(response), { 'auth-status': 'OK', 'auth-server': '10.0.0.5', 'auth-port': '110', 'auth-user': 'alice' });
    assert.deepEqual(calls[0]!.credentials, { kind: 'basic', username: 'alice', password: 'pa%ss wörd' });
    assert.deepEqual(calls[0]!.context.requiredScopes, ['read:mail']);
  });

  test('POP3 deny: the same answer for a wrong password and a missing scope, HTTP 200 with Auth-Wait', async () => {
    const wrong = await (await setUp(DENY)).ask({ 'auth-protocol': 'pop3' });
    const scope = await (await setUp({ allow: false, status: 403, reason: 'insufficient_scope', identity, missingScopes: ['read:mail'], cached: false })).ask({ 'auth-protocol': 'pop3' });
    assert.equal(wrong.statusCode, 401);
    assert.equal(scope.statusCode, 401);
    assert.equal(wrong.body, '');
    assert.deepEqual(authHeaders(wrong), { 'auth-status': '[AUTH] Invalid login or password', 'auth-wait': '3' });
    assert.deepEqual(authHeaders(scope), authHeaders(wrong));
  });

  test('SMTP allow needs send:mail and names the IPv6 backend without brackets', async () => {
    const { ask, calls } = await setUp(ALLOW);
    assert.deepEqual(authHeaders(await ask({ 'auth-protocol': 'smtp', 'auth-method': 'login' })), { 'auth-status': 'OK', 'auth-server': 'fd00::25', 'auth-port': '587', 'auth-user': 'alice' });
    assert.deepEqual(calls[0]!.context.requiredScopes, ['send:mail']);
  });

  test('SMTP deny: Auth-Error-Code 535 5.7.8; upstream trouble 454 4.7.0; throttled waits the retry-after', async () => {
    assert.deepEqual(authHeaders(await (await setUp(DENY)).ask({ 'auth-protocol': 'smtp' })), { 'auth-status': 'Invalid login or password', 'auth-wait': '3', 'auth-error-code': '535 5.7.8' });
    const unavailable = await (await setUp({ allow: false, status: 503, reason: 'upstream_unavailable', cached: false })).ask({ 'auth-protocol': 'smtp' });
    assert.equal(unavailable.statusCode, 503);
    assert.deepEqual(authHeaders(unavailable), { 'auth-status': 'Temporary server problem, try again later', 'auth-wait': '3', 'auth-error-code': '454 4.7.0' });
    const throttled = await (await setUp({ allow: false, status: 429, reason: 'throttled', retryAfterSeconds: 60, cached: false })).ask({ 'auth-protocol': 'smtp' });
    assert.deepEqual(authHeaders(throttled), { 'auth-status': 'Invalid login or password', 'auth-wait': '60', 'auth-error-code': '535 5.7.8' });
  });

  test('SMTP without AUTH and POP3 APOP are refused without asking the verifier', async () => {
    const { ask, calls } = await setUp(ALLOW);
    assert.equal((await ask({ 'auth-protocol': 'smtp', 'auth-method': 'none' })).headers['auth-error-code'], '530 5.7.0');
    assert.equal((await ask({ 'auth-protocol': 'pop3', 'auth-method': 'apop', 'auth-salt': '<1.2@host>' })).headers['auth-status'], 'Authentication mechanism not supported');
    assert.equal((await ask({ 'auth-protocol': 'pop3', 'auth-pass': '%ff' })).headers['auth-status'], '[AUTH] Invalid login or password');
    assert.equal(calls.length, 0);
  });

  test('the last attempt gets no Auth-Wait, so nginx closes the connection', async () => {
    const { ask } = await setUp(DENY, { mailMaxAttempts: 2 });
    assert.equal((await ask({ 'auth-protocol': 'pop3', 'auth-login-attempt': '1' })).headers['auth-wait'], '3');
    assert.equal((await ask({ 'auth-protocol': 'pop3', 'auth-login-attempt': '2' })).headers['auth-wait'], undefined);
  });

  test('a protocol without a configured backend is refused for good and logged as a deployment fault', async () => {
    const { ask, calls, logs } = await setUp(ALLOW);
    const response = await ask({ 'auth-protocol': 'imap' });
    assert.deepEqual(authHeaders(response), { 'auth-status': '[UNAVAILABLE] Temporary server problem, try again later' });
    assert.equal(calls.length, 0);
    assert.match(logs.join(''), /mailImapBackend/);
  });

  test('Client-IP is the end user only from a trusted proxy; otherwise the peer is logged and no IP is throttled', async () => {
    const untrusted = await setUp(ALLOW);
    await untrusted.ask({ 'auth-protocol': 'pop3' });
    assert.equal(untrusted.calls[0]!.context.endUserIp, undefined);
    assert.match(untrusted.logs.join(''), /"clientIp":"127\.0\.0\.1"/);
    const trusted = await setUp(ALLOW, { trustedProxies: ['127.0.0.1'] });
    await trusted.ask({ 'auth-protocol': 'pop3' });
    assert.equal(trusted.calls[0]!.context.endUserIp, '192.0.2.7');
    assert.match(trusted.logs.join(''), /"clientIp":"192\.0\.2\.7"/);
  });

  test('the backend secret goes only to a trusted proxy; another peer is refused without verifying', async () => {
    const secret = 'backend-secret-0123456789';
    const trusted = await setUp(ALLOW, { mailBackendPassword: secret, trustedProxies: ['127.0.0.0/8'] });
    assert.equal((await trusted.ask({ 'auth-protocol': 'pop3' })).headers['auth-pass'], secret);
    const untrusted = await setUp(ALLOW, { mailBackendPassword: secret, trustedProxies: ['10.0.0.0/8'] });
    const response = await untrusted.ask({ 'auth-protocol': 'pop3' });
    assert.equal(response.headers['auth-pass'], undefined);
    assert.equal(response.headers['auth-status'], '[SYS/TEMP] Temporary server problem, try again later');
    assert.equal(untrusted.calls.length, 0);
    assert.match(untrusted.logs.join(''), /trustedProxies/);
  });

  test('with a policy, its protocol rules decide the scopes and audience; a protocol no rule allows is refused without verifying', async () => {
    const policy = {
      rules: [
        { name: 'pop3', match: { protocol: 'pop3' }, scopes: ['mail:pop'], audience: 'https://pop.example.com' },
        { name: 'web', match: { path: '/**' }, scopes: ['read:web'] },
      ],
    };
    const { ask, calls, logs } = await setUp(ALLOW, {}, policy);
    assert.equal((await ask({ 'auth-protocol': 'pop3' })).headers['auth-status'], 'OK');
    assert.deepEqual(calls[0]!.context.requiredScopes, ['mail:pop']);
    assert.equal(calls[0]!.context.audience, 'https://pop.example.com');
    assert.match(logs.join(''), /"rule":"pop3"/);
    const smtp = await ask({ 'auth-protocol': 'smtp' });
    assert.equal(smtp.statusCode, 401);
    assert.deepEqual(authHeaders(smtp), { 'auth-status': 'Invalid login or password', 'auth-wait': '3', 'auth-error-code': '535 5.7.8' }, 'an HTTP-only rule never opens mail');
    assert.equal(calls.length, 1);
    assert.match(logs.join(''), /"reason":"denied_by_policy"/);
  });

  test('Auth-User is the identity\'s username from the AS, never what the client typed; no username: refused', async () => {
    const typedAsToken = await setUp({ ...ALLOW, identity: { ...identity, username: 'alice' } });
    const answer = await typedAsToken.ask({ 'auth-protocol': 'pop3', 'auth-user': 'x-access-token' });
    assert.equal(answer.headers['auth-user'], 'alice');
    const unicode = await setUp({ ...ALLOW, identity: { ...identity, username: 'jos\u00e9' } });
    assert.equal((await unicode.ask({ 'auth-protocol': 'pop3', 'auth-user': 'JOS%C3%89' })).headers['auth-user'], Buffer.from('jos\u00e9').toString('latin1'), 'raw UTF-8 bytes, as nginx passes Auth-User on unchanged');
    const nameless = await setUp({ ...ALLOW, identity: { ...identity, username: undefined } });
    const refused = await nameless.ask({ 'auth-protocol': 'pop3', 'auth-user': 'x-access-token' });
    assert.equal(refused.headers['auth-status'], '[AUTH] Invalid login or password');
    assert.equal(refused.headers['auth-user'], undefined);
  });

  test('only requests carrying Auth-Protocol reach the mail route; any other GET /auth/mail is the /auth/* route (Envoy asking about /mail)', async () => {
    const { ask } = await setUp(ALLOW);
    assert.equal((await ask({ 'auth-protocol': 'pop3' })).headers['auth-status'], 'OK');
    const other = await ask({});
    assert.equal(other.body, 'the /auth/* route');
    assert.equal(other.headers['auth-status'], undefined);
  });
});
