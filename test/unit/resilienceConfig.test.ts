import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getHeapStatistics } from 'node:v8';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { REQUIRED_ENV } from '../fixtures/configEnv.js';

const required = REQUIRED_ENV;

test('resilience defaults: well under proxies\' auth timeouts, retries on, breaker on, stale-if-error off', () => {
  const c = loadConfig({ env: required });
  assert.equal(c.decisionTimeoutMs, 5000);
  assert.equal(c.upstreamTimeoutMs, 3000);
  assert.equal(c.upstreamConnectTimeoutMs, 1500);
  assert.equal(c.upstreamRetries, 2);
  assert.equal(c.breakerFailureThreshold, 5);
  assert.equal(c.breakerHalfOpenAfterMs, 5000);
  assert.equal(c.maxConcurrentUpstream, 64);
  assert.equal(c.maxQueuedUpstream, 256);
  assert.equal(c.staleIfErrorSeconds, 0, 'off unless asked for: it lets revoked credentials through an outage');
  assert.equal(c.maxEventLoopDelayMs, 1000);
  assert.equal(c.maxHeapUsedBytes, Math.floor(getHeapStatistics().heap_size_limit * 0.9));
  assert.equal(c.clientTimeoutMs, 10_000);
  assert.equal(c.keepAliveTimeoutMs, 65_000);
  assert.equal(c.shutdownDelayMs, 0);
  assert.equal(c.shutdownTimeoutMs, 10_000);
});

test('resilience settings come from the environment and are checked, naming the key', () => {
  const c = loadConfig({ env: { ...required, CREDGATE_DECISION_TIMEOUT_MS: '2500', CREDGATE_STALE_IF_ERROR_SECONDS: '600', CREDGATE_BREAKER_FAILURE_THRESHOLD: '0', CREDGATE_MAX_HEAP_USED_BYTES: '0' } });
  assert.equal(c.decisionTimeoutMs, 2500);
  assert.equal(c.staleIfErrorSeconds, 600);
  assert.equal(c.breakerFailureThreshold, 0);
  assert.equal(c.maxHeapUsedBytes, 0);
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ CREDGATE_DECISION_TIMEOUT_MS: '20000', CREDGATE_SHUTDOWN_TIMEOUT_MS: '10000' }, /shutdownTimeoutMs \(CREDGATE_SHUTDOWN_TIMEOUT_MS\): must exceed decisionTimeoutMs/],
    [{ CREDGATE_DECISION_TIMEOUT_MS: '10' }, /decisionTimeoutMs \(CREDGATE_DECISION_TIMEOUT_MS\)/],
    [{ CREDGATE_MAX_CONCURRENT_UPSTREAM: '0' }, /maxConcurrentUpstream \(CREDGATE_MAX_CONCURRENT_UPSTREAM\)/],
    [{ CREDGATE_UPSTREAM_RETRIES: 'lots' }, /upstreamRetries \(CREDGATE_UPSTREAM_RETRIES\)/],
    [{ CREDGATE_UPSTREAM_RETRIES: '9' }, /upstreamRetries/],
    [{ CREDGATE_STALE_IF_ERROR_SECONDS: '-1' }, /staleIfErrorSeconds \(CREDGATE_STALE_IF_ERROR_SECONDS\)/],
    [{ CREDGATE_BREAKER_HALF_OPEN_AFTER_MS: '5' }, /breakerHalfOpenAfterMs/],
    [{ CREDGATE_CLIENT_TIMEOUT_MS: 'slow' }, /clientTimeoutMs \(CREDGATE_CLIENT_TIMEOUT_MS\)/],
  ];
  for (const [env, message] of cases) {
    assert.throws(() => loadConfig({ env: { ...required, ...env } }), (err: unknown) => err instanceof ConfigError && message.test(err.message), JSON.stringify(env));
  }
});
