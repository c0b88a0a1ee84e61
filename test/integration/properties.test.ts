import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { credgateConfigFor, type FakeAuthorizationServer, startFakeAuthorizationServer } from '../fixtures/fakeAuthorizationServer.js';
import { rawRequest } from '../fixtures/rawHttp.js';

/**
 * Property-based tests (fast-check) of every input credgate parses: whatever arrives, the answer
 * is a 4xx (or a denial), never a 500, never a crash, never an allow for credentials the AS does
 * not know, and the service still answers afterwards. The fake AS denies everything, so any allow
 * would be a bug. Seeds are printed by fast-check on failure; rerun with `{ seed, path }`.
 */
const AUDIENCE = 'https://git.example.com';
const RUNS = Number(process.env.CREDGATE_PROPERTY_RUNS ?? 300);

/** Header-safe text: what can arrive in an HTTP/1.1 header value (Node hands bytes ≥ 0x80 over as Latin-1). */
const headerText = (maxLength = 200) =>
  fc.string({ unit: fc.oneof(fc.integer({ min: 0x20, max: 0x7e }), fc.integer({ min: 0x80, max: 0xff })).map((c) => String.fromCharCode(c)), maxLength });
const anyText = fc.string({ unit: 'binary', maxLength: 80 });
const b64 = (s: string | Uint8Array) => Buffer.from(s).toString('base64');

const authorization = fc.oneof(
  headerText(),
  fc.uint8Array({ maxLength: 120 }).map((bytes) => `Basic ${b64(bytes)}`),
  fc.tuple(anyText, anyText).map(([u, p]) => `Basic ${b64(`${u}:${p}`)}`),
  fc.tuple(anyText, anyText, anyText).map(([u, p, q]) => `Basic ${b64(`${u}:${p}:${q}`)}`),
  fc.tuple(fc.constantFrom('Basic', 'basic', 'BASIC', 'Bearer', 'bearer', 'Digest', 'Negotiate', ''), fc.constantFrom(' ', '  ', '\t', ''), headerText(120)).map(([s, sep, v]) => `${s}${sep}${v}`),
  fc.string({ unit: fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/='), minLength: 1, maxLength: 200 }).map((t) => `Bearer ${t}`),
  fc.tuple(headerText(60), headerText(60), headerText(60)).map(([h, p, s]) => `Bearer ${Buffer.from(h).toString('base64url')}.${Buffer.from(p).toString('base64url')}.${s}`),
);

describe('property: no input gives a 5xx or a crash, and the service still answers afterwards', () => {
  let fake: FakeAuthorizationServer;
  let credgate: TestCredgate;
  before(async () => {
    fake = await startFakeAuthorizationServer();
    credgate = await startCredgate({
      ...credgateConfigFor(fake.issuer, AUDIENCE),
      trustedProxies: ['loopback'],
      mailImapBackend: '127.0.0.1:1143',
      mailPop3Backend: '127.0.0.1:1110',
      mailSmtpBackend: '127.0.0.1:1025',
      logLevel: 'info',
    });
  });
  after(async () => {
    await credgate.close();
    await fake.close();
  });

  async function stillAnswers(): Promise<void> {
    assert.equal((await fetch(`${credgate.url}/healthz`)).status, 200);
    const { status, body } = await credgate.verify({ username: 'alice', password: 'still-here-password' });
    assert.equal(status, 200);
    assert.equal(body.reason, 'invalid_credentials');
    const errors = credgate.logs.filter((l) => l.includes('"level":50') || l.includes('"level":60'));
    assert.deepEqual(errors, []);
  }

  test('/auth: any Authorization header, query and forwarded headers → a 4xx with a reason, never an allow', async () => {
    await fc.assert(
      fc.asyncProperty(
        authorization,
        fc.option(fc.string({ maxLength: 60 }), { nil: undefined }),
        fc.option(headerText(80), { nil: undefined }),
        fc.option(headerText(20), { nil: undefined }),
        async (header, scope, originalUri, originalMethod) => {
          const headers: Record<string, string> = { authorization: header };
          if (originalUri !== undefined) headers['x-original-uri'] = originalUri;
          if (originalMethod !== undefined) headers['x-original-method'] = originalMethod;
          const response = await credgate.app.inject({ method: 'GET', url: '/auth', query: scope === undefined ? {} : { scope }, headers });
          assert.ok(response.statusCode >= 400 && response.statusCode < 500, `status ${response.statusCode} for ${JSON.stringify(header).slice(0, 80)}`);
          assert.equal(response.headers['x-auth-subject'], undefined);
          assert.equal(typeof (response.json() as { reason?: unknown }).reason, 'string');
        },
      ),
      { numRuns: RUNS },
    );
    await stillAnswers();
  });

  test('/auth over a real socket: any bytes in the Authorization header → 400, 401 or 431, never a 5xx', async () => {
    const host = new URL(credgate.url).host;
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes.filter((b) => b !== 0x0d && b !== 0x0a)).toString('latin1')), async (value) => {
        const { status } = await rawRequest(credgate.url, `GET /auth HTTP/1.1\r\nHost: ${host}\r\nAuthorization: ${value}\r\nConnection: close\r\n\r\n`);
        assert.ok([400, 401, 431].includes(status), `status ${status}`);
      }),
      { numRuns: Math.ceil(RUNS / 4) },
    );
    await stillAnswers();
  });

  test('/auth/mail: any nginx mail headers → an Auth-Status that is not OK; 503 only for an unknown protocol', async () => {
    const encoded = fc.oneof(headerText(60), anyText.map((s) => encodeURIComponent(s)), fc.string({ maxLength: 30 }).map((s) => s.replace(/%/g, '%25') + '%'));
    await fc.assert(
      fc.asyncProperty(
        fc.record(
          {
            'auth-protocol': fc.oneof(fc.constantFrom('imap', 'pop3', 'smtp', 'IMAP', ' smtp '), headerText(10)),
            'auth-method': fc.oneof(fc.constantFrom('plain', 'login', 'none', 'apop', 'cram-md5', 'external'), headerText(10)),
            'auth-user': encoded,
            'auth-pass': encoded,
            'auth-login-attempt': fc.oneof(fc.integer({ min: -5, max: 1_000_000 }).map(String), headerText(10)),
            'client-ip': fc.oneof(fc.ipV4(), fc.ipV6(), headerText(40)),
            'auth-salt': headerText(40),
          },
          { requiredKeys: ['auth-protocol'] },
        ),
        async (headers) => {
          const response = await credgate.app.inject({ method: 'GET', url: '/auth/mail', headers: headers as Record<string, string> });
          const status = response.headers['auth-status'];
          assert.equal(typeof status, 'string', 'every answer carries Auth-Status for nginx');
          assert.notEqual(status, 'OK');
          assert.equal(response.headers['auth-server'], undefined);
          const protocolKnown = ['imap', 'pop3', 'smtp'].includes(headers['auth-protocol'].trim().toLowerCase());
          // The mail route answers a request it cannot serve at all (no such protocol: a deployment
          // fault, nginx always sends one of the three) with nginx's "temporary problem" and 503.
          if (protocolKnown) assert.equal(response.statusCode, 401, `status ${response.statusCode}`);
          else assert.equal(response.statusCode, 503);
        },
      ),
      { numRuns: RUNS },
    );
    await stillAnswers();
  });

  test('/v1/verify: any JSON (or not JSON) body and content type → 200 with a denial or a 4xx, never a 5xx', async () => {
    const value = fc.oneof(fc.jsonValue({ maxDepth: 3 }), anyText, fc.constant(null));
    const body = fc.oneof(
      fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
      fc.record({ username: value, password: value, scopes: fc.oneof(value, fc.array(anyText, { maxLength: 4 })), audience: value, clientIp: value }, { requiredKeys: [] }).map((o) => JSON.stringify(o)),
      fc.record({ username: anyText, password: anyText }).map((o) => JSON.stringify(o)),
      fc.dictionary(fc.string({ maxLength: 12 }), value, { maxKeys: 6 }).map((o) => JSON.stringify({ username: 'alice', password: 'pw-123456', ...o })),
      fc.string({ maxLength: 200 }),
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString('latin1')),
    );
    const contentType = fc.oneof(fc.constant('application/json'), fc.constantFrom('application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'application/JSON', 'multipart/form-data'), headerText(30));
    await fc.assert(
      fc.asyncProperty(body, contentType, async (payload, type) => {
        const response = await credgate.app.inject({ method: 'POST', url: '/v1/verify', payload, headers: { 'content-type': type } });
        assert.ok(response.statusCode < 500, `status ${response.statusCode} for ${payload.slice(0, 80)}`);
        const json = response.json() as { allow?: unknown; reason?: unknown };
        assert.notEqual(json.allow, true);
        assert.equal(typeof json.reason, 'string');
      }),
      { numRuns: RUNS },
    );
    await stillAnswers();
  });
});
