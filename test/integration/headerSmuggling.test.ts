import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { IDENTITY_HEADERS, spellings, spoofedIdentityLines, spoofedOriginalLines } from '../fixtures/headerAliases.js';
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

// The proxy recipes drop every alias of credgate's headers (X_Original_URI, X.Auth.User, ...) before
// credgate sees them (forwardAuth.identityHeaders.test.ts). A proxy configured otherwise passes them
// on; credgate itself must then neither read them as the original request nor echo them.
describe('aliases of the forwarded and identity headers from a trusted proxy: not read as the original request, never echoed', () => {
  const GIT_AUDIENCE = 'https://git.example.com'; // deploy/policies/git.yaml names none: its rules use this one
  const POLICY_FILE = fileURLToPath(new URL('../../../deploy/policies/git.yaml', import.meta.url));
  const FETCH = '/repo.git/info/refs?service=git-upload-pack';
  const PUSH = '/repo.git/info/refs?service=git-receive-pack';
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  const carol = `Authorization: ${basicHeader('carol', users.carol!.password)}`;

  before(async () => {
    dev = await startDevServer({ audience: GIT_AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
    credgate = await startCredgate({ issuer: dev.issuer, audience: GIT_AUDIENCE, ...CLIENT, policyFile: POLICY_FILE, trustedProxies: ['127.0.0.1/32'] });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
  });
  after(async () => {
    await credgate.close();
    await dev.close();
  });

  /** As a proxy asks (this test runs on 127.0.0.1, a trusted proxy): the original request in X-Forwarded-*, plus `extra`. */
  const ask = (method: string, uri: string, extra: string[]) =>
    rawRequest(credgate.url, [`GET /auth HTTP/1.1`, `Host: ${new URL(credgate.url).host}`, `X-Forwarded-Method: ${method}`, `X-Forwarded-Uri: ${uri}`, 'X-Forwarded-Host: git.example.com', carol, ...extra, 'Connection: close', '', ''].join('\r\n'));

  /** Every spelling but the dash one credgate reads, of every header that describes the original request. */
  const aliasesOnly = (uri: string) => spoofedOriginalLines(uri, 'GET', 'git.example.com').filter((line) => /^[^:]*[^A-Za-z0-9:-][^:]*:/.test(line));

  test('carol\'s push with X_Original_URI / X.Forwarded.Uri / X-Original_URI ... saying "fetch" is denied; her fetch with the same lines is allowed', async () => {
    const aliases = aliasesOnly(FETCH);
    assert.ok(aliases.length >= 40 && aliases.some((l) => l.startsWith('X_Original_URI:')) && aliases.some((l) => l.startsWith('X.Forwarded.Uri:')), aliases.join(' | '));
    const push = await ask('GET', PUSH, aliases);
    assert.equal(push.status, 403, push.text.slice(0, 300));
    const fetchRefs = await ask('GET', FETCH, aliases);
    assert.equal(fetchRefs.status, 200, fetchRefs.text.slice(0, 300));
    // The control: the dash spelling is read (and disagreeing with X-Forwarded-Uri, denied).
    assert.equal((await ask('GET', FETCH, [`X-Original-URI: ${PUSH}`])).status, 403);
  });

  test('identity headers in every spelling are never echoed, on an allow or a denial', async () => {
    const spoofed = spoofedIdentityLines();
    assert.ok(spoofed.length >= IDENTITY_HEADERS.length * spellings('X-Auth-User').length);
    const allowed = await ask('GET', FETCH, spoofed);
    assert.equal(allowed.status, 200);
    assert.match(allowed.text, /\r\nx-auth-user: carol\r\n/i);
    assert.doesNotMatch(allowed.text, /spoofed|mallory/);
    assert.doesNotMatch(allowed.text, /x-auth-token/i);
    const denied = await ask('GET', PUSH, spoofed);
    assert.equal(denied.status, 403);
    assert.doesNotMatch(denied.text, /spoofed|mallory|x-auth-/i);
  });
});
