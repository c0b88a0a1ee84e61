import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { rawRequest } from '../fixtures/rawHttp.js';

const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-test', clientSecret: 'dev-client-secret-value' };
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));

describe('header smuggling between Basic and Bearer: one credential, taken exactly as sent, or none', () => {
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  let carolToken: string;
  const aliceBasic = basicHeader('alice', users.alice!.password);

  before(async () => {
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
    credgate = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
    carolToken = await dev.issueAccessToken('carol');
  });
  after(async () => {
    await credgate.close();
    await dev.close();
  });

  const get = (headers: string[]) => rawRequest(credgate.url, ['GET /auth HTTP/1.1', `Host: ${new URL(credgate.url).host}`, ...headers, 'Connection: close', '', ''].join('\r\n'));

  test('the control cases: alice by Basic and carol by Bearer are each allowed alone', async () => {
    assert.equal((await get([`Authorization: ${aliceBasic}`])).status, 200);
    assert.equal((await get([`Authorization: Bearer ${carolToken}`])).status, 200);
  });

  test('two Authorization headers (Basic and Bearer, in either order, or twice the same) are refused', async () => {
    for (const headers of [
      [`Authorization: ${aliceBasic}`, `Authorization: Bearer ${carolToken}`],
      [`Authorization: Bearer ${carolToken}`, `Authorization: ${aliceBasic}`],
      [`Authorization: ${aliceBasic}`, `authorization: ${aliceBasic}`],
      [`AUTHORIZATION: ${aliceBasic}`, `Authorization: Bearer ${carolToken}`],
    ]) {
      const { status, text } = await get(headers);
      assert.equal(status, 401, headers.join(' | ').slice(0, 80));
      assert.match(text, /malformed_credentials/);
      assert.doesNotMatch(text, /x-auth-subject/i);
    }
  });

  test('Basic and Bearer folded into one header, or one scheme carrying the other\'s payload, never authenticate', async () => {
    const cases = [
      `Authorization: ${aliceBasic}, Bearer ${carolToken}`,
      `Authorization: Bearer ${carolToken}, ${aliceBasic}`,
      `Authorization: ${aliceBasic} Bearer ${carolToken}`,
      `Authorization: Bearer ${aliceBasic.slice('Basic '.length)}`, // alice's Basic payload presented as a token
      `Authorization: Basic ${Buffer.from(carolToken).toString('base64')}`, // a token with no colon as Basic
      `Authorization: Basic\t${aliceBasic.slice('Basic '.length)}`,
      `Authorization: Basic  ${aliceBasic.slice('Basic '.length)}x`,
      `Authorization: Bearer ${carolToken}.extra`,
      `Proxy-Authorization: ${aliceBasic}`,
      `X-Authorization: Bearer ${carolToken}`,
    ];
    for (const header of cases) {
      const { status, text } = await get([header]);
      assert.equal(status, 401, header.slice(0, 60));
      assert.doesNotMatch(text, /x-auth-subject/i);
    }
  });

  test('obs-fold continuation lines and a bare CR are refused by the HTTP parser, not read as credentials', async () => {
    for (const head of [
      `GET /auth HTTP/1.1\r\nHost: x\r\nAuthorization: Basic\r\n ${aliceBasic.slice('Basic '.length)}\r\nConnection: close\r\n\r\n`,
      `GET /auth HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${carolToken}\rAuthorization: ${aliceBasic}\r\nConnection: close\r\n\r\n`,
    ]) {
      const { status } = await rawRequest(credgate.url, head);
      assert.ok(status === 400 || status === 401, `status ${status}`);
    }
  });

  test('identity headers a client sends are never echoed: the subject is always the AS\'s', async () => {
    const forged = ['X-Auth-Subject: auth0|admin', 'X-Auth-User: admin', 'X-Auth-Scopes: admin:all', 'X-Auth-Credential: password'];
    const denied = await get([...forged, 'Authorization: Basic ' + Buffer.from('alice:wrong-password').toString('base64')]);
    assert.equal(denied.status, 401);
    assert.doesNotMatch(denied.text, /admin/);
    const allowed = await get([...forged, `Authorization: ${aliceBasic}`]);
    assert.equal(allowed.status, 200);
    assert.match(allowed.text, new RegExp(`x-auth-subject: ${users.alice!.sub!.replace('|', '\\|')}`, 'i'));
    assert.doesNotMatch(allowed.text, /admin/);
  });
});
