import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { checkPair, isProblem, MAX_TOKEN_BYTES, parseAuthorization } from '../../src/http/credentials.js';
import { headersByName, parseMailRequest } from '../../src/http/mailProtocol.js';
import { duplicateMemberName } from '../../src/upstream/strictJson.js';

const RUNS = Number(process.env.CREDGATE_PROPERTY_RUNS ?? 1000);
const anyText = fc.string({ unit: 'binary', maxLength: 60 });
/** A username and password credgate accepts: no control characters, no lone surrogates, no colon in the username. */
const validPair = fc.tuple(
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }).filter((u) => !u.includes(':')),
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }),
).filter(([u, p]) => checkPair(u, p) === null);

test('parseAuthorization never throws, and answers credentials or a stable reason for any header', () => {
  fc.assert(
    fc.property(fc.oneof(anyText, anyText.map((s) => `Basic ${Buffer.from(s).toString('base64')}`), fc.array(anyText, { maxLength: 3 })), (header) => {
      const result = parseAuthorization(header);
      if (isProblem(result)) assert.ok(result.reason === 'missing_credentials' || result.reason === 'malformed_credentials');
      else assert.ok(result.kind === 'basic' || result.kind === 'bearer');
    }),
    { numRuns: RUNS },
  );
});

/** Bearer as the general pattern alone parses it (parseAuthorization before its fast path for Bearer); 'other' for another scheme. */
function bearerByPattern(header: string): ReturnType<typeof parseAuthorization> | 'other' {
  const match = /^([A-Za-z]+) +(\S+) *$/.exec(header);
  if (!match) return { reason: 'malformed_credentials', message: 'Authorization header is not "<scheme> <credentials>"' };
  if (match[1]!.toLowerCase() !== 'bearer') return 'other';
  const value = match[2]!;
  if (value.length > MAX_TOKEN_BYTES) return { reason: 'malformed_credentials', message: 'bearer token too long' };
  if (!/^[A-Za-z0-9\-._~+/]+=*$/.test(value)) return { reason: 'malformed_credentials', message: 'bearer token has characters outside RFC 6750 b64token' };
  return { kind: 'bearer', token: value };
}

test('Bearer: the fast path accepts exactly what the general pattern accepts, with the same token or the same reason', () => {
  const piece = (chars: string, maxLength: number) => fc.string({ unit: fc.constantFrom(...chars), maxLength });
  const header = fc.tuple(
    fc.constantFrom('Bearer', 'bearer', 'BEARER', 'BeArEr', 'Bearerx', 'Beare', 'Bear er', 'Basic', 'Bearer\t', 'Béarer', ''),
    piece(' \t', 3),
    piece('aZ09-._~+/=', 40),
    piece('aZ09-._~+/= \t\u00a0@é\n', 4),
    piece('aZ09=', 10),
    piece(' \t\u00a0', 3),
  ).map((parts) => parts.join(''));
  const long = fc.tuple(fc.constantFrom('Bearer ', 'bearer  '), fc.integer({ min: MAX_TOKEN_BYTES - 2, max: MAX_TOKEN_BYTES + 2 }), fc.constantFrom('', ' ', '  ')).map(([scheme, n, tail]) => `${scheme}${'a'.repeat(n)}${tail}`);
  fc.assert(
    fc.property(fc.oneof(header, long), (h) => {
      if (h === '') return; // no header at all: missing, not malformed
      const expected = bearerByPattern(h);
      if (expected !== 'other') assert.deepEqual(parseAuthorization(h), expected);
    }),
    { numRuns: RUNS },
  );
});

test('Basic round trip: what a client encodes is exactly what credgate reads (the first colon splits)', () => {
  fc.assert(
    fc.property(validPair, fc.constantFrom('Basic', 'basic', 'BASIC'), ([username, password], scheme) => {
      const parsed = parseAuthorization(`${scheme} ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`);
      assert.deepEqual(parsed, { kind: 'basic', username, password });
    }),
    { numRuns: RUNS },
  );
});

test('a Basic value that is not canonical base64 is refused, never decoded leniently', () => {
  fc.assert(
    fc.property(validPair, fc.constantFrom('=', '==', '*', ' x', '\u00e9'), ([username, password], junk) => {
      const parsed = parseAuthorization(`Basic ${Buffer.from(`${username}:${password}`).toString('base64')}${junk}`);
      assert.ok(isProblem(parsed));
    }),
    { numRuns: RUNS / 4 },
  );
});

/** nginx's escaping of Auth-User/Auth-Pass (ngx_escape_uri NGX_ESCAPE_MAIL_AUTH): space, %, controls; other bytes raw. */
const nginxEscape = (s: string) =>
  [...Buffer.from(s, 'utf8')].map((b) => (b <= 0x20 || b === 0x25 || b === 0x7f ? `%${b.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(b))).join('');

test('mail: parseMailRequest never throws for any headers, and round-trips what nginx sends', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.constantFrom('Auth-Protocol', 'Auth-Method', 'Auth-User', 'Auth-Pass', 'Auth-Login-Attempt', 'Client-IP', 'X-Other'), anyText), { maxLength: 10 }), (pairs) => {
      const result = parseMailRequest(headersByName(pairs.flat()), checkPair);
      assert.ok('outcome' in result ? result.outcome.kind !== ('ok' as string) : typeof result.username === 'string');
    }),
    { numRuns: RUNS },
  );
  fc.assert(
    fc.property(validPair, fc.constantFrom('imap', 'pop3', 'smtp'), fc.integer({ min: 1, max: 20 }), ([username, password], protocol, attempt) => {
      const raw = ['Auth-Method', 'plain', 'Auth-User', nginxEscape(username), 'Auth-Pass', nginxEscape(password), 'Auth-Protocol', protocol, 'Auth-Login-Attempt', String(attempt), 'Client-IP', '192.0.2.1'];
      const login = parseMailRequest(headersByName(raw), checkPair);
      assert.ok(!('outcome' in login), JSON.stringify(login));
      assert.equal(login.username, username);
      assert.equal(login.password, password);
      assert.equal(login.protocol, protocol);
      assert.equal(login.attempt, attempt);
    }),
    { numRuns: RUNS },
  );
});

test('duplicateMemberName: none in what JSON.stringify writes; found wherever a name is repeated, escaped or not', () => {
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 4 }), (value) => {
      assert.equal(duplicateMemberName(JSON.stringify(value)), undefined);
    }),
    { numRuns: RUNS },
  );
  fc.assert(
    fc.property(fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { minKeys: 1, maxKeys: 5 }), fc.nat(), fc.boolean(), (object, pick, escape) => {
      const names = Object.keys(object);
      const name = names[pick % names.length]!;
      const spelled = escape && name.length > 0 ? `"\\u${name.charCodeAt(0).toString(16).padStart(4, '0')}${JSON.stringify(name.slice(1)).slice(1)}` : JSON.stringify(name);
      const text = `${JSON.stringify(object).slice(0, -1)},${spelled}:true}`;
      JSON.parse(text); // still valid JSON
      assert.equal(duplicateMemberName(text), name);
      assert.equal(duplicateMemberName(`[1,{"a":${text}}]`), name, 'nested');
    }),
    { numRuns: RUNS },
  );
});
