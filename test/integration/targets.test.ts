import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { cli } from '../fixtures/cli.js';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { rawRequest } from '../fixtures/rawHttp.js';
import { TARGETS } from '../fixtures/targets.js';

const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-targets', clientSecret: 'targets-client-secret-value' };
const alice = defaultDevUsers().find((u) => u.username === 'alice')!;
/** /admin is off limits; /private needs a scope nobody has; /public is open to any valid credential. */
const POLICY = `audience: ${AUDIENCE}
rules:
  - { name: admin, match: { path: "/admin/**" }, deny: true }
  - { name: private, match: { path: "/private/**" }, scopes: [admin:all] }
  - { name: public, match: { path: "/public/**" } }
`;

/**
 * One table of tricky request targets (test/fixtures/targets.ts) through every form an original
 * request can reach credgate in: the same verdict for each, and it is the one the shared parser
 * gives. What credgate approves is exactly what a backend serves.
 */
describe('every adapter form gives the same verdict for every tricky target', () => {
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  let policyFile: string;
  before(async () => {
    policyFile = join(mkdtempSync(join(tmpdir(), 'credgate-targets-')), 'policy.yaml');
    writeFileSync(policyFile, POLICY);
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
    credgate = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, policyFile, trustedProxies: ['loopback'] });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
  });
  after(async () => {
    await credgate.close();
    await dev.close();
  });

  const authorization = basicHeader('alice', alice.password);
  /** true: allowed (200); false: refused (any other answer, a 400 from the HTTP parser included). */
  const forms: Record<string, (target: string) => Promise<boolean | 'n/a'>> = {
    'X-Original-URI': async (target) => (await fetch(`${credgate.url}/auth`, { headers: { authorization, 'x-original-method': 'GET', 'x-original-uri': target } })).status === 200,
    'X-Forwarded-Uri': async (target) => (await fetch(`${credgate.url}/auth`, { headers: { authorization, 'x-forwarded-method': 'GET', 'x-forwarded-uri': target } })).status === 200,
    'Envoy /auth/<path>': async (target) => {
      if (!target.startsWith('/')) return 'n/a'; // not a path under /auth
      const answer = await rawRequest(credgate.url, `GET /auth${target} HTTP/1.1\r\nHost: git.example.com\r\nAuthorization: ${authorization}\r\nConnection: close\r\n\r\n`);
      return answer.status === 200;
    },
    '/v1/verify uri': async (target) => {
      const { status, body } = await credgate.verify({ username: 'alice', password: alice.password, method: 'GET', uri: target });
      return status === 200 && body.allow === true;
    },
    'credgate policy explain': async (target) => (await cli(['policy', 'explain', '--file', policyFile, '--method', 'GET', '--uri', target], {})).code === 0,
  };

  for (const { target, path, why } of TARGETS) {
    // The verdict the shared parser implies: ambiguous → refused; else the path's rule decides.
    const expected = path !== undefined && path.startsWith('/public/');
    test(`${JSON.stringify(target)} (${why}): ${expected ? 'allowed' : 'refused'} by every form`, async () => {
      for (const [form, ask] of Object.entries(forms)) {
        const got = await ask(target);
        if (got === 'n/a') continue;
        assert.equal(got, expected, form);
      }
    });
  }

  test('a refused target is logged as ambiguous, with the reason', () => {
    assert.match(credgate.logs.join(''), /"reason":"denied_by_policy","detail":"ambiguous request target: a dot segment/);
  });
});
