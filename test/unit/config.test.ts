import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { envName, loadConfig } from '../../src/config/load.js';
import { LIST_KEYS } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';
import { requireServiceConfig } from '../../src/service.js';
import { REQUIRED_ENV } from '../fixtures/configEnv.js';

const required = REQUIRED_ENV;

function yamlFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'credgate-config-'));
  const file = join(dir, 'credgate.yaml');
  writeFileSync(file, text);
  return file;
}

test('environment variable names follow the SPEC', () => {
  assert.equal(envName('issuer'), 'CREDGATE_ISSUER');
  assert.equal(envName('introspectionKeyFile'), 'CREDGATE_INTROSPECTION_KEY_FILE');
  assert.equal(envName('metricsPort'), 'CREDGATE_METRICS_PORT');
  assert.equal(envName('port'), 'PORT');
});

test('defaults match the SPEC and the result is frozen', () => {
  const config = loadConfig({ env: required });
  assert.equal(config.tokenAuthMethod, 'client_secret_post');
  assert.deepEqual(config.acceptedTokenTypes, ['application_specific_password_token', 'Bearer', 'access_token']);
  assert.deepEqual(config.usernameClaims, ['username', 'email']);
  assert.ok(Object.isFrozen(config));
  assert.ok(Object.isFrozen(config.usernameClaims));
});

test('the environment wins over the YAML file; lists are comma-separated', () => {
  const file = yamlFile('audience: https://from-file.example\nusernameClaims: [email]\nport: 9000\n');
  const config = loadConfig({ file, env: { ...required, CREDGATE_USERNAME_CLAIMS: 'preferred_username, email' } });
  assert.equal(config.audience, 'https://git.example.com');
  assert.deepEqual(config.usernameClaims, ['preferred_username', 'email']);
  assert.equal(config.port, 9000);
});

test('every list-valued key is comma-separated in the environment', () => {
  assert.deepEqual([...LIST_KEYS].sort(), [
    'acceptedTokenTypes', 'identityPublishedKeyFiles', 'jwtAlgorithms', 'mailImapScopes', 'mailPop3Scopes', 'mailSmtpScopes',
    'publishedKeyFiles', 'redisClusterNodes', 'redisSentinels', 'scopeClaims', 'strategyOrder', 'tokenUsernames', 'trustedProxies', 'usernameClaims',
  ]);
  const config = loadConfig({ env: { ...required, CREDGATE_STRATEGY_ORDER: 'app_password,password_grant', CREDGATE_AUTH_THROTTLED_STATUS: '429' } });
  assert.deepEqual(config.strategyOrder, ['app_password', 'password_grant']);
  assert.equal(config.authThrottledStatus, 429);
  assert.throws(() => loadConfig({ env: { ...required, CREDGATE_APP_PASSWORD_PATTERN: '([' } }), /appPasswordPattern/);
  assert.throws(() => loadConfig({ env: { ...required, CREDGATE_STRATEGY_ORDER: 'app_password,app_password' } }), /strategyOrder/);
});

test('no issuer is dev mode and needs nothing else', () => {
  const config = loadConfig({ env: {} });
  assert.equal(config.issuer, undefined);
});

const invalid: Array<[string, Record<string, string>, string]> = [
  ['a non-URL issuer', { ...required, CREDGATE_ISSUER: 'not a url' }, 'issuer (CREDGATE_ISSUER)'],
  ['an unknown token auth method', { ...required, CREDGATE_TOKEN_AUTH_METHOD: 'private_key_jwt' }, 'tokenAuthMethod (CREDGATE_TOKEN_AUTH_METHOD)'],
  ['a port out of range', { ...required, PORT: '70000' }, 'port (PORT)'],
  ['a missing audience', { ...required, CREDGATE_AUDIENCE: '' }, 'audience (CREDGATE_AUDIENCE)'],
  ['alg none', { ...required, CREDGATE_JWT_ALGORITHMS: 'none' }, 'jwtAlgorithms'],
  ['HS256', { ...required, CREDGATE_JWT_ALGORITHMS: 'RS256,HS256' }, 'jwtAlgorithms'],
  ['a non-boolean flag', { ...required, CREDGATE_ALLOW_INSECURE_HTTP: 'maybe' }, 'allowInsecureHttp'],
];

for (const [name, env, key] of invalid) {
  test(`start-up stops on ${name}, naming the key`, () => {
    assert.throws(() => loadConfig({ env }), (err: unknown) => err instanceof ConfigError && err.message.includes(key) && err.code === 'ERR_CONFIG');
  });
}

test('a service without introspection credentials is refused at start-up, naming the keys', () => {
  const config = loadConfig({ env: { ...required, CREDGATE_INTROSPECTION_CLIENT_SECRET: '' } });
  assert.throws(() => requireServiceConfig(config), (err: unknown) => err instanceof ConfigError && err.message.includes('CREDGATE_INTROSPECTION_KEY_FILE'));
  assert.doesNotThrow(() => requireServiceConfig(config, { inMemoryKeys: true }));
  assert.throws(() => requireServiceConfig(loadConfig({ env: { ...required, CREDGATE_AUDIENCE: '' } })), /audience \(CREDGATE_AUDIENCE\)/);
});

test('an unknown key in the YAML file is named', () => {
  const file = yamlFile('issuer: https://a.example/\naudeince: typo\n');
  assert.throws(() => loadConfig({ file, env: {} }), /unknown configuration key: audeince/);
});

test('a YAML file that is not a mapping, or not YAML, is refused clearly', () => {
  assert.throws(() => loadConfig({ file: yamlFile('- a\n- b\n'), env: {} }), /must hold a mapping/);
  assert.throws(() => loadConfig({ file: yamlFile('a: [\n'), env: {} }), /not valid YAML/);
  assert.throws(() => loadConfig({ file: '/nonexistent/credgate.yaml', env: {} }), /cannot read config file/);
});

test('secrets never appear in configuration errors', () => {
  try {
    loadConfig({ env: { ...required, CREDGATE_CLIENT_SECRET: 'topsecretvalue', PORT: 'x' } });
    assert.fail('should throw');
  } catch (err) {
    assert.ok(!(err as Error).message.includes('topsecretvalue'));
  }
});

test('trusted proxies are IP addresses, CIDR ranges or the proxy-addr range names; anything else names the key', () => {
  const config = loadConfig({ env: { ...required, CREDGATE_TRUSTED_PROXIES: '10.0.0.0/8, ::1, loopback, 192.168.1.7' } });
  assert.deepEqual(config.trustedProxies, ['10.0.0.0/8', '::1', 'loopback', '192.168.1.7']);
  for (const bad of ['10.0.0.0/33', 'nginx.internal', '10.0.0.0/8/1', '::1/129']) {
    assert.throws(() => loadConfig({ env: { ...required, CREDGATE_TRUSTED_PROXIES: bad } }), /trustedProxies\.0 \(CREDGATE_TRUSTED_PROXIES\): must be an IP address/, bad);
  }
});

test('mail backends must be IP:port, since nginx does not resolve Auth-Server names', () => {
  const config = loadConfig({ env: { ...required, CREDGATE_MAIL_IMAP_BACKEND: '127.0.0.1:143', CREDGATE_MAIL_SMTP_BACKEND: '[::1]:587' } });
  assert.equal(config.mailImapBackend, '127.0.0.1:143');
  assert.equal(config.mailSmtpBackend, '[::1]:587');
  for (const bad of ['mail.example.com:143', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:70000', '300.1.1.1:143']) {
    assert.throws(() => loadConfig({ env: { ...required, CREDGATE_MAIL_IMAP_BACKEND: bad } }), /mailImapBackend/, bad);
  }
});

test('a mail backend secret nginx could not carry in a header stops start-up, naming the key', () => {
  assert.throws(() => loadConfig({ env: { ...required, CREDGATE_MAIL_BACKEND_PASSWORD: 'has a space in it!!' } }), /mailBackendPassword \(CREDGATE_MAIL_BACKEND_PASSWORD\): must be printable ASCII/);
  assert.equal(loadConfig({ env: { ...required, CREDGATE_MAIL_BACKEND_PASSWORD: 'Visible-ASCII_only.1234' } }).mailBackendPassword, 'Visible-ASCII_only.1234');
});

test('login protection memory: 0 means never forget; anything between 1 and 59 seconds names the key', () => {
  assert.equal(loadConfig({ env: { ...required, CREDGATE_PASSWORD_FAILURE_MEMORY_SECONDS: '0' } }).passwordFailureMemorySeconds, 0);
  assert.equal(loadConfig({ env: required }).passwordFailureMemorySeconds, 30 * 86_400);
  for (const bad of ['30', '-1', '40000000']) {
    assert.throws(() => loadConfig({ env: { ...required, CREDGATE_PASSWORD_FAILURE_MEMORY_SECONDS: bad } }), (err: unknown) => err instanceof ConfigError && /passwordFailureMemorySeconds/.test(err.message) && /never forget/.test(err.message));
  }
});
