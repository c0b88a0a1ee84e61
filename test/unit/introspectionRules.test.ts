import assert from 'node:assert/strict';
import { test } from 'node:test';
import { outcomeOfIntrospection, type IntrospectionRules } from '../../src/verify/introspectionRules.js';
import type { Identity } from '../../src/verify/types.js';

const identityFromIntrospection = (answer: Record<string, unknown>, r: IntrospectionRules): Identity | null => {
  const outcome = outcomeOfIntrospection(answer, r);
  return outcome.kind === 'identity' ? outcome.identity : null;
};

const now = 1_800_000_000;
const rules: IntrospectionRules = {
  audience: 'https://git.example.com',
  issuer: 'https://tenant.auth0.com/',
  acceptedTokenTypes: ['application_specific_password_token', 'Bearer', 'access_token'],
  usernameClaims: ['username', 'email'],
  scopeClaims: ['scope', 'scp'],
  clockToleranceSeconds: 30,
  username: 'alice',
  now,
};
const asp = {
  active: true,
  token_type: 'application_specific_password_token',
  scope: 'read:repo write:repo',
  sub: 'auth0|alice',
  aud: 'https://git.example.com',
  iss: 'https://tenant.auth0.com/',
  iat: now - 100,
  username: 'alice',
};

test('an Auth0-shaped ASP answer allows, as app_password, with its scopes and the AS subject', () => {
  const id = identityFromIntrospection(asp, rules);
  assert.deepEqual(id, { subject: 'auth0|alice', username: 'alice', credential: 'app_password', scopes: ['read:repo', 'write:repo'], audience: rules.audience, expiresAt: undefined });
});

test('aud as an array including the audience, an unexpired exp and a case-different username allow', () => {
  const id = identityFromIntrospection({ ...asp, aud: ['other', rules.audience], exp: now + 60, username: 'ALICE' }, rules);
  assert.equal(id?.expiresAt, now + 60);
});

test('the identity reports the AS claim, never the spelling typed: ALICE with alice\'s ASP is alice', () => {
  assert.equal(identityFromIntrospection(asp, { ...rules, username: 'ALICE' })?.username, 'alice');
});

test('Unicode spellings are never folded: an ASP of jose\u0301 is refused under jos\u00e9 (two accounts at the AS), and so is full-width or non-ASCII case', () => {
  const attacker = { ...asp, sub: 'auth0|attacker', username: 'jose\u0301' };
  assert.equal(outcomeOfIntrospection(attacker, { ...rules, username: 'jos\u00e9' }).kind, 'refused');
  assert.equal(identityFromIntrospection(attacker, { ...rules, username: 'jose\u0301' })?.username, 'jose\u0301');
  assert.equal(outcomeOfIntrospection({ ...asp, username: 'alice' }, { ...rules, username: '\uff41lice' }).kind, 'refused');
  assert.equal(outcomeOfIntrospection({ ...asp, username: 'stra\u00dfe' }, { ...rules, username: 'STRASSE' }).kind, 'refused');
  assert.equal(outcomeOfIntrospection({ ...asp, username: '\u00e9lise' }, { ...rules, username: '\u00c9lise' }).kind, 'refused');
});

test('an inactive token may still be a password (not_mine); an active one for another user or audience is refused', () => {
  assert.equal(outcomeOfIntrospection({ active: false }, rules).kind, 'not_mine');
  assert.equal(outcomeOfIntrospection({ ...asp, username: 'bob' }, rules).kind, 'refused');
  assert.equal(outcomeOfIntrospection({ ...asp, aud: 'https://mail.example.com' }, rules).kind, 'refused');
});

test('scopes come from scope (and scp) only unless permissions is configured: a narrowed token is not widened', () => {
  const narrowed = { ...asp, scope: 'read:repo', permissions: ['read:repo', 'write:repo'] };
  assert.deepEqual(identityFromIntrospection(narrowed, rules)?.scopes, ['read:repo']);
  assert.deepEqual(identityFromIntrospection(narrowed, { ...rules, scopeClaims: ['scope', 'permissions'] })?.scopes, ['read:repo', 'write:repo']);
});

test('an access token type is accepted as access_token', () => {
  assert.equal(identityFromIntrospection({ ...asp, token_type: 'Bearer' }, rules)?.credential, 'access_token');
});

test('a Bearer token (no username binding) takes its username from the first claim present', () => {
  const id = identityFromIntrospection({ ...asp, username: undefined, email: 'alice@example.com' }, { ...rules, username: undefined });
  assert.equal(id?.username, 'alice@example.com');
});

const denied: Array<[string, Record<string, unknown>, Partial<IntrospectionRules>?]> = [
  ['active false', { ...asp, active: false }],
  ['active as the string "true"', { ...asp, active: 'true' }],
  ['active as 1', { ...asp, active: 1 }],
  ['active missing', { ...asp, active: undefined }],
  ['a missing token type', { ...asp, token_type: undefined }],
  ['a refresh token', { ...asp, token_type: 'refresh_token' }],
  ['a refresh token even if configured as accepted', { ...asp, token_type: 'refresh_token' }, { acceptedTokenTypes: ['refresh_token'] }],
  ['an unaccepted token type', { ...asp, token_type: 'id_token' }],
  ['another audience', { ...asp, aud: 'https://mail.example.com' }],
  ['no audience', { ...asp, aud: undefined }],
  ['aud as an object', { ...asp, aud: { 0: rules.audience } }],
  ['expired', { ...asp, exp: now - 1 }],
  ['exp as a string', { ...asp, exp: String(now + 100) }],
  ['not yet valid', { ...asp, nbf: now + 3600 }],
  ['another issuer', { ...asp, iss: 'https://evil.example/' }],
  ['no subject', { ...asp, sub: undefined }],
  ['an empty subject', { ...asp, sub: '' }],
  ['another user', { ...asp, username: 'bob' }],
  ['no username claim at all', { ...asp, username: undefined }],
  ['first claim present wins: username bob, email alice', { ...asp, username: 'bob', email: 'alice' }],
  ['username claim of the wrong type', { ...asp, username: ['alice'] }],
];

for (const [name, answer, overrides] of denied) {
  test(`never an allow: ${name}`, () => {
    assert.equal(identityFromIntrospection(answer, { ...rules, ...overrides }), null);
  });
}
