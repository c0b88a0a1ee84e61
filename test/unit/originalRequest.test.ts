import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import Fastify from 'fastify';
import { TrustedProxies } from '../../src/decide/trust.js';
import { readOriginalRequest } from '../../src/http/originalRequest.js';
import { createLogger } from '../../src/log.js';

/** A route that answers what TrustedProxies made of the request; inject sets the peer address. */
function appTrusting(list: string[]) {
  const trust = new TrustedProxies(list, createLogger({ level: 'silent' }));
  const app = Fastify();
  app.all('/auth', async (request) => readOriginalRequest(trust, request));
  // As the /auth/* route does: the raw request line after the prefix, never the router's decoded parameter.
  app.all('/auth/*', async (request) => readOriginalRequest(trust, request, request.raw.url!.slice('/auth'.length)));
  return app;
}

async function original(list: string[], remoteAddress: string, headers: Record<string, string>, url = '/auth', method: 'GET' | 'POST' = 'GET') {
  const response = await appTrusting(list).inject({ method, url, remoteAddress, headers });
  const seen = response.json() as { trusted: boolean; peer: string; reportedClientIp?: string; ambiguous?: string; original: { method?: string; host?: string; target?: string } };
  return { trusted: seen.trusted, peer: seen.peer, reportedClientIp: seen.reportedClientIp, ambiguous: seen.ambiguous, method: seen.original.method, host: seen.original.host, uri: seen.original.target };
}

const nginx = { 'x-original-method': 'POST', 'x-original-uri': '/r.git/git-receive-pack', 'x-forwarded-host': 'git.example.com', 'x-forwarded-for': '203.0.113.5' };

describe('original request and client IP', () => {
  test('a trusted proxy: method, URI, host and client IP come from its headers', async () => {
    assert.deepEqual(await original(['10.0.0.0/8'], '10.1.2.3', nginx), {
      trusted: true, peer: '10.1.2.3', method: 'POST', host: 'git.example.com', uri: '/r.git/git-receive-pack', reportedClientIp: '203.0.113.5', ambiguous: undefined,
    });
  });

  test('an untrusted peer: none of its forwarded headers are believed', async () => {
    assert.deepEqual(await original(['10.0.0.0/8'], '192.0.2.7', nginx), { trusted: false, peer: '192.0.2.7', method: undefined, host: undefined, uri: undefined, reportedClientIp: undefined, ambiguous: undefined });
  });

  test('no trusted proxies configured: nothing forwarded is believed', async () => {
    assert.deepEqual(await original([], '127.0.0.1', nginx), { trusted: false, peer: '127.0.0.1', method: undefined, host: undefined, uri: undefined, reportedClientIp: undefined, ambiguous: undefined });
  });

  test('X-Forwarded-For is walked from the right past trusted hops: a client-planted left entry is not believed', async () => {
    const got = await original(['10.0.0.0/8'], '10.0.0.1', { 'x-forwarded-for': '6.6.6.6, 203.0.113.5, 10.0.0.9' });
    assert.equal(got.reportedClientIp, '203.0.113.5');
  });

  test('a garbage X-Forwarded-For entry gives no end-user IP rather than a bogus one', async () => {
    const got = await original(['10.0.0.0/8'], '10.0.0.1', { 'x-forwarded-for': 'not-an-ip' });
    assert.equal(got.reportedClientIp, undefined);
    assert.equal(got.peer, '10.0.0.1');
  });

  test('X-Real-IP when there is no X-Forwarded-For; ignored unless it is an IP', async () => {
    assert.equal((await original(['loopback'], '127.0.0.1', { 'x-real-ip': '2001:db8::7' })).reportedClientIp, '2001:db8::7');
    assert.equal((await original(['loopback'], '127.0.0.1', { 'x-real-ip': 'evil' })).reportedClientIp, undefined);
  });

  test('IPv4-mapped IPv6 peers match IPv4 ranges', async () => {
    assert.equal((await original(['10.0.0.0/8'], '::ffff:10.0.0.1', nginx)).trusted, true);
  });

  test('Traefik/Caddy X-Forwarded-Method/-Uri are read when no X-Original-* is sent', async () => {
    const got = await original(['10.0.0.0/8'], '10.0.0.1', { 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/a?b=c' });
    assert.deepEqual([got.method, got.uri, got.ambiguous], ['GET', '/a?b=c', undefined]);
  });

  test("both header families agreeing is fine; disagreeing (a client's copy passed through) is ambiguous", async () => {
    const same = await original(['10.0.0.0/8'], '10.0.0.1', { 'x-original-uri': '/r.git/HEAD', 'x-forwarded-uri': '/r.git/HEAD' });
    assert.equal(same.ambiguous, undefined);
    const uri = await original(['10.0.0.0/8'], '10.0.0.1', { 'x-original-uri': '/r.git/info/refs?service=git-upload-pack', 'x-forwarded-uri': '/r.git/info/refs?service=git-receive-pack' });
    assert.match(String(uri.ambiguous), /x-original-uri and x-forwarded-uri/);
    const method = await original(['10.0.0.0/8'], '10.0.0.1', { 'x-original-method': 'GET', 'x-forwarded-method': 'POST' });
    assert.match(String(method.ambiguous), /x-original-method and x-forwarded-method/);
  });

  test('Envoy: /auth/<path> is the original target, raw (never decoded), with the request method and query', async () => {
    const got = await original(['10.0.0.0/8'], '10.0.0.1', { host: 'git.example.com' }, '/auth/r.git/info/refs?service=git-upload-pack', 'POST');
    assert.deepEqual([got.method, got.uri, got.host], ['POST', '/r.git/info/refs?service=git-upload-pack', 'git.example.com']);
    const encoded = await original(['10.0.0.0/8'], '10.0.0.1', {}, '/auth/private/%252e%252e/public/x');
    assert.equal(encoded.uri, '/private/%252e%252e/public/x', 'as sent: the pipeline refuses it, a second decoding would have made ..');
  });

  test('a trusted proxy that sends no original-request headers leaves them unknown', async () => {
    const got = await original(['10.0.0.0/8'], '10.0.0.1', {});
    assert.deepEqual([got.trusted, got.method, got.uri], [true, undefined, undefined]);
  });
});
