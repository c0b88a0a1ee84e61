import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { startFakeAuthorizationServer, type FakeAuthorizationServer } from '../fixtures/fakeAuthorizationServer.js';

/** Sends raw bytes as the Authorization header (fetch would refuse some of them). */
function rawAuth(url: string, header: Buffer | string | undefined, extraHeaders: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | Buffer> = { ...extraHeaders };
    if (header !== undefined) headers.authorization = typeof header === 'string' ? header : (header.toString('latin1') as string);
    const req = httpRequest(`${url}/auth`, { headers: headers as Record<string, string> }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('bad input gets a clear 4xx with a reason, never a 500, and never reaches the AS', () => {
  let fake: FakeAuthorizationServer;
  let credgate: TestCredgate;
  before(async () => {
    fake = await startFakeAuthorizationServer();
    credgate = await startCredgate({ issuer: fake.issuer, audience: 'https://git.example.com', clientId: 'cid', clientSecret: 'secret-value', introspectionClientSecret: 'isecret-value' });
  });
  after(async () => {
    await credgate.close();
    await fake.close();
  });

  const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');
  const authCases: Array<[string, string | undefined, string]> = [
    ['no Authorization header', undefined, 'missing_credentials'],
    ['broken base64', 'Basic @@@notbase64@@@', 'malformed_credentials'],
    ['a missing colon', `Basic ${b64('alicepassword')}`, 'malformed_credentials'],
    ['an empty username', `Basic ${b64(':password')}`, 'malformed_credentials'],
    ['an empty password', `Basic ${b64('alice:')}`, 'malformed_credentials'],
    ['non-UTF-8 bytes', `Basic ${b64(Buffer.from([0x61, 0x3a, 0xc3, 0x28]))}`, 'malformed_credentials'],
    ['a control character', `Basic ${b64('alice:pass\x07word')}`, 'malformed_credentials'],
    ['an unknown scheme', 'Negotiate abc', 'malformed_credentials'],
    ['a Bearer token with a quote', 'Bearer abc"def', 'malformed_credentials'],
  ];
  for (const [name, header, reason] of authCases) {
    test(`/auth with ${name} → 401 ${reason} and a Basic challenge`, async () => {
      const before = { ...fake.calls };
      const response = await credgate.auth(header);
      assert.equal(response.status, 401);
      assert.match(response.headers.get('www-authenticate')!, /^Basic realm="credgate", charset="UTF-8"/);
      const body = (await response.json()) as { reason: string; message: string };
      assert.equal(body.reason, reason);
      assert.ok(body.message.length > 0);
      assert.deepEqual(fake.calls, before);
    });
  }

  test('/auth with a raw non-UTF-8 header byte is refused cleanly', async () => {
    const { status } = await rawAuth(credgate.url, Buffer.from([0x42, 0x61, 0x73, 0x69, 0x63, 0x20, 0xff]));
    assert.equal(status, 401);
  });

  test('/auth with an oversized header is refused by the server (431), not a crash', async () => {
    const { status } = await rawAuth(credgate.url, 'Basic ' + 'A'.repeat(40_000));
    assert.equal(status, 431);
    assert.equal((await fetch(`${credgate.url}/healthz`)).status, 200);
  });

  test('/auth with a scope parameter that is not a scope-token → 400', async () => {
    const response = await credgate.auth(`Basic ${b64('alice:pw')}`, '/auth?scope=%22bad%22');
    assert.equal(response.status, 400);
    assert.equal(((await response.json()) as { reason: string }).reason, 'malformed_request');
  });

  const post = (body: string, contentType = 'application/json') =>
    fetch(`${credgate.url}/v1/verify`, { method: 'POST', headers: { 'content-type': contentType }, body });
  const nested = '['.repeat(5000) + ']'.repeat(5000);
  const verifyCases: Array<[string, string, number, string, string?]> = [
    ['invalid JSON', '{"username": "alice", ', 400, 'malformed_request'],
    ['an array body', '[]', 400, 'malformed_request'],
    ['deeply nested JSON', `{"username":"a","password":"b","scopes":${nested}}`, 400, 'malformed_request'],
    ['an unknown field', '{"username":"a","password":"b","scope":"write:repo"}', 400, 'malformed_request'],
    ['a non-string password', '{"username":"a","password":12345}', 400, 'malformed_request'],
    ['a missing password', '{"username":"a"}', 400, 'malformed_request'],
    ['an empty password', '{"username":"alice","password":""}', 400, 'malformed_credentials'],
    ['an empty username', '{"username":"","password":"pw"}', 400, 'malformed_credentials'],
    ['a control character', '{"username":"alice","password":"pw\\u0000x"}', 400, 'malformed_credentials'],
    ['a lone surrogate', '{"username":"alice","password":"pw\\ud800"}', 400, 'malformed_credentials'],
    ['a colon in the username', '{"username":"al:ice","password":"pw"}', 400, 'malformed_credentials'],
    ['a scope that is not a scope-token', '{"username":"a","password":"b","scopes":["a b"]}', 400, 'malformed_request'],
    ['a clientIp that is not an IP', '{"username":"a","password":"b","clientIp":"example.com"}', 400, 'malformed_request'],
    ['an audience credgate does not serve', '{"username":"a","password":"b","audience":"https://other"}', 400, 'malformed_request'],
    ['a __proto__ key', '{"username":"a","password":"b","__proto__":{"allow":true}}', 400, 'malformed_request'],
    ['a body over 16 KiB', JSON.stringify({ username: 'a', password: 'x'.repeat(20_000) }), 413, 'malformed_request'],
    ['a form body', 'username=a&password=b', 415, 'malformed_request', 'application/x-www-form-urlencoded'],
    ['an empty JSON body', '', 400, 'malformed_request'],
  ];
  for (const [name, body, status, reason, type] of verifyCases) {
    test(`/v1/verify with ${name} → ${status} ${reason}`, async () => {
      const before = { ...fake.calls };
      const response = await post(body, type);
      assert.equal(response.status, status);
      const json = (await response.json()) as { reason: string; message: string };
      assert.equal(json.reason, reason);
      assert.ok(json.message.length > 0);
      assert.ok(!json.message.includes('x'.repeat(50)));
      assert.deepEqual(fake.calls, before);
    });
  }

  test('an unknown route is a JSON 404, not an echo of the path', async () => {
    const response = await fetch(`${credgate.url}/v2/some-secret-token-in-path`);
    assert.equal(response.status, 404);
    // Paths under /auth mean something only from a trusted proxy (Envoy's path_prefix).
    assert.equal((await fetch(`${credgate.url}/auth/some-secret-token-in-path`)).status, 404);
    assert.ok(!(await response.text()).includes('some-secret-token'));
  });

  test('nothing above produced a 500 or an error log', () => {
    assert.ok(!credgate.logs.some((l) => l.includes('"level":50')), credgate.logs.filter((l) => l.includes('"level":50')).join('\n'));
  });
});
