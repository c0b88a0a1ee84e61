import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import { CredentialCache } from '../../src/verify/cache.js';
import type { Identity } from '../../src/verify/types.js';

const now = Math.floor(Date.now() / 1000);
const identity = (o: Partial<Identity> = {}): Identity => ({ subject: 'auth0|a', username: 'alice', credential: 'password', scopes: ['read:repo'], audience: 'https://git', expiresAt: now + 3600, ...o });
const cache = (o: Partial<ConstructorParameters<typeof CredentialCache>[0]> = {}) => new CredentialCache({ ttlSeconds: 300, negativeTtlSeconds: 5, maxEntries: 100, appPasswordMemorySeconds: 3600, ...o });

test('cache keys are HMACs: no password, token or username in them, and they differ by every input', () => {
  const c = cache();
  const key = c.keyFor({ kind: 'basic', username: 'alice', password: 'hunter2hunter2' }, 'https://git');
  assert.match(key, /^[A-Za-z0-9_-]{22}$/, '128 bits of HMAC-SHA256, base64url');
  assert.ok(!key.includes('hunter2') && !key.includes('alice'));
  const others = [
    c.keyFor({ kind: 'basic', username: 'alice', password: 'hunter2hunter3' }, 'https://git'),
    c.keyFor({ kind: 'basic', username: 'bob', password: 'hunter2hunter2' }, 'https://git'),
    c.keyFor({ kind: 'basic', username: 'alice', password: 'hunter2hunter2' }, 'https://mail'),
    c.keyFor({ kind: 'bearer', token: 'hunter2hunter2' }, 'https://git'),
    // no ambiguity from where the separator falls
    c.keyFor({ kind: 'basic', username: 'alic', password: 'ehunter2hunter2' }, 'https://git'),
  ];
  assert.equal(new Set([key, ...others]).size, 6);
  // The username exactly as typed: an entry made under one spelling never answers for another
  // (jos\u00e9 and jose\u0301 may be two accounts at the AS).
  assert.notEqual(c.keyFor({ kind: 'basic', username: 'ALICE', password: 'hunter2hunter2' }, 'https://git'), key);
  assert.notEqual(c.keyFor({ kind: 'basic', username: 'jos\u00e9', password: 'p' }, 'x'), c.keyFor({ kind: 'basic', username: 'jose\u0301', password: 'p' }, 'x'));
  assert.notEqual(cache().keyFor({ kind: 'basic', username: 'alice', password: 'hunter2hunter2' }, 'https://git'), key, 'a random HMAC key per process');
  const shared = 'a'.repeat(64);
  assert.equal(cache({ keySecret: shared }).keyFor({ kind: 'bearer', token: 't' }, 'x'), cache({ keySecret: shared }).keyFor({ kind: 'bearer', token: 't' }, 'x'));
});

test('a cache key is HMAC-SHA256 of the joined input, first 16 bytes in base64url: keys shared through Redis stay the same across versions', () => {
  const reference = (secretHex: string, input: string) => createHmac('sha256', Buffer.from(secretHex, 'hex')).update(input).digest().toString('base64url', 0, 16);
  // 32 bytes, a whole block, and more than a block (RFC 2104: hashed first).
  for (const secret of ['ab'.repeat(32), 'cd'.repeat(64), '0f'.repeat(100)]) {
    const c = cache({ keySecret: secret });
    const inputs: Array<[Parameters<CredentialCache['keyFor']>[0], string]> = [
      [{ kind: 'basic', username: 'alice', password: 'correct horse battery staple' }, 'https://git.example.com'],
      [{ kind: 'basic', username: 'jos\u00e9', password: 'p\u00e4ss\u{1f600}' }, 'https://mail'],
      [{ kind: 'bearer', token: 'eyJ'.padEnd(800, 'x') }, 'https://git'],
      // Longer than any input before it: the buffer the key is computed in grows.
      [{ kind: 'bearer', token: 'A'.repeat(16_384) }, 'https://git'],
      [{ kind: 'basic', username: 'b', password: 'short' }, 'a'],
    ];
    for (const [credentials, audience] of inputs) {
      const input = credentials.kind === 'basic' ? `basic\0${credentials.username}\0${credentials.password}\0${audience}` : `bearer\0\0${credentials.token}\0${audience}`;
      assert.equal(c.keyFor(credentials, audience), reference(secret, input), `${secret.length / 2}-byte key, ${input.slice(0, 20)}`);
    }
    // Shared-state names (whole HMACs, computed the same way), also after the buffer grew above.
    const whole = (input: string) => createHmac('sha256', Buffer.from(secret, 'hex')).update(input).digest('base64url');
    for (const [label, value] of [['subject', 'auth0|5f1c'], ['login', 'jos\u00e9'], ['ip', '2001:db8::/64'], ['subject', 'x'.repeat(5000)]] as const) {
      assert.equal(c.digest(label, value), whole(`${label}\0${value}`), `${secret.length / 2}-byte key, digest ${label}`);
    }
  }
});

test('a positive entry never outlives the token: TTL = min(configured, exp − now)', () => {
  const c = cache({ ttlSeconds: 300 });
  assert.equal(c.positiveTtlSeconds(identity({ expiresAt: now + 3600 }), now), 300);
  assert.equal(c.positiveTtlSeconds(identity({ expiresAt: now + 42 }), now), 42);
  assert.equal(c.positiveTtlSeconds(identity({ expiresAt: now - 1 }), now), 0);
  assert.equal(c.positiveTtlSeconds(identity({ expiresAt: undefined }), now), 300, 'an ASP without exp: the configured TTL');
  c.set('expired', { kind: 'identity', identity: identity({ expiresAt: now - 1 }) }, 'alice');
  assert.equal(c.get('expired'), undefined, 'an already-expired identity is not stored');
});

test('TTL 0 disables each side of the cache', () => {
  const c = cache({ ttlSeconds: 0, negativeTtlSeconds: 0 });
  c.set('k1', { kind: 'identity', identity: identity() }, 'alice');
  c.set('k2', { kind: 'denied' }, 'alice');
  assert.equal(c.size, 0);
});

test('positive entries are filed by account (subject), negative ones by the name typed; each purge reaches only its own', () => {
  const c = cache();
  c.set('a1', { kind: 'identity', identity: identity() }, 'alice');
  c.set('a3', { kind: 'identity', identity: identity() }, 'alice@example.com');
  c.set('a2', { kind: 'denied' }, 'Alice');
  c.set('b1', { kind: 'identity', identity: identity({ subject: 'auth0|b', username: 'bob' }) }, 'bob');
  assert.equal(c.purgeUser('ALICE'), 1, 'a login name: its negative entries (every spelling that folds alike)');
  assert.equal(c.get('a2'), undefined);
  assert.equal(c.purgeSubject('auth0|a'), 2, 'the account: its identities under every name');
  assert.equal(c.get('a1'), undefined);
  assert.equal(c.get('a3'), undefined);
  assert.ok(c.get('b1'));
  assert.equal(c.purgeSubject('auth0|a'), 0);
});

test('the cache is bounded by entry count; evicted entries leave the purge index too', () => {
  const c = cache({ maxEntries: 3 });
  for (let i = 0; i < 10; i++) c.set(`k${i}`, { kind: 'denied' }, `user${i}`);
  assert.equal(c.size, 3);
  assert.equal(c.purgeUser('user0'), 0);
  assert.equal(c.purgeUser('user9'), 1);
});

test('credentials that proved to be ASPs are remembered by their HMAC key', () => {
  const c = cache();
  const key = c.keyFor({ kind: 'basic', username: 'alice', password: 'an-app-password' }, 'https://git');
  assert.equal(c.isKnownAppPassword(key), false);
  c.rememberAppPassword(key);
  assert.equal(c.isKnownAppPassword(key), true);
  assert.equal(c.purgeUser('alice'), 0, 'the marker is not a decision: purging does not touch it');
  const off = cache({ appPasswordMemorySeconds: 0 });
  off.rememberAppPassword(key);
  assert.equal(off.isKnownAppPassword(key), false);
});

test('a cached identity reads back field for field; entries with the same scopes and audience share them', () => {
  const c = cache();
  const a = identity({ scopes: 'read:repo write:repo'.split(' '), audience: ['https://', 'git'].join('') });
  const b = identity({ subject: 'auth0|b', username: 'bob', scopes: 'read:repo write:repo'.split(' '), expiresAt: undefined, credential: 'app_password' });
  c.set('a', { kind: 'identity', identity: a }, 'alice');
  c.set('b', { kind: 'identity', identity: b }, 'bob');
  const [ga, gb] = [c.get('a'), c.get('b')];
  assert.ok(typeof ga === 'object' && typeof gb === 'object');
  for (const [got, want] of [[ga, a], [gb, b]] as const) {
    assert.deepEqual(
      { subject: got.subject, username: got.username, credential: got.credential, scopes: [...got.scopes], audience: got.audience, expiresAt: got.expiresAt },
      want,
    );
  }
  assert.equal(ga.scopes, gb.scopes, 'one shared scope list');
  assert.ok(Object.isFrozen(ga.scopes), 'and nobody can change it under the other entries');
  assert.deepEqual(Object.keys(ga).sort(), ['audience', 'credential', 'expiresAt', 'scopes', 'subject', 'username'], 'nothing else shows on the identity');
  c.set('d', { kind: 'denied' }, 'alice');
  assert.equal(c.get('d'), 'denied');
  assert.equal(c.get('nothing'), undefined);
});

test('a negative entry for a bearer token (no username) is left alone by every purge', () => {
  const c = cache();
  c.set('t', { kind: 'denied' }, undefined);
  for (const u of ['alice', 'bob', '']) c.purgeUser(u);
  assert.equal(c.get('t'), 'denied');
});

test('entries stop being served when their time is up, negative ones after negativeTtlSeconds', async () => {
  const c = cache({ negativeTtlSeconds: 1 });
  c.set('wrong', { kind: 'denied' }, 'alice');
  c.set('right', { kind: 'identity', identity: identity({ expiresAt: now + 3600 }) }, 'alice');
  assert.equal(c.get('wrong'), 'denied');
  await new Promise((resolve) => setTimeout(resolve, 1150));
  assert.equal(c.get('wrong'), undefined, 'gone after its second');
  assert.equal(typeof c.get('right'), 'object', 'the identity lives on (300 s)');
  assert.equal(c.purgeSubject('auth0|a'), 1, 'and the expired one left the purge index when it was found stale');
  assert.equal(c.purgeUser('alice'), 0);
});

test('one user with many entries: every one is purged, and overwriting an entry keeps one index entry', () => {
  const c = cache({ maxEntries: 1000 });
  for (let i = 0; i < 500; i++) c.set(`k${i}`, { kind: 'denied' }, 'mallory');
  c.set('k0', { kind: 'denied' }, 'mallory');
  c.set('other', { kind: 'denied' }, 'bob');
  assert.equal(c.purgeUser('mallory'), 500);
  assert.equal(c.size, 1);
  assert.equal(c.get('other'), 'denied');
});

test('keys are the first 128 bits of HMAC-SHA256 over the documented input, as node:crypto computes it (replicas and Redis agree across versions)', () => {
  const secret = 'ab'.repeat(32);
  const c = cache({ keySecret: secret });
  const expected = (input: string, bytes: number) => createHmac('sha256', Buffer.from(secret, 'hex')).update(input).digest().subarray(0, bytes).toString('base64url');
  assert.equal(c.keyFor({ kind: 'basic', username: 'Jürgen', password: 'pä:ss' }, 'https://git'), expected('basic\0Jürgen\0pä:ss\0https://git', 16));
  assert.equal(c.subjectKey('auth0|a'), expected('subject\0auth0|a', 32));
  assert.equal(c.keyFor({ kind: 'bearer', token: 'tok' }, 'https://git'), expected('bearer\0\0tok\0https://git', 16));
  assert.equal(c.userKey('ALICE'), expected('user\0alice', 32));
  assert.equal(c.digest('ip', '192.0.2.1'), expected('ip\x00192.0.2.1', 32));
});
