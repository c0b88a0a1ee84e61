import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setFlagsFromString, writeHeapSnapshot } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { checkPair, isProblem, parseAuthorization } from '../../src/http/credentials.js';

const basic = (raw: string | Buffer) => 'Basic ' + Buffer.from(raw).toString('base64');

test('Basic credentials split at the first colon, so the password may hold colons', () => {
  assert.deepEqual(parseAuthorization(basic('alice@example.com:pa:ss:word')), { kind: 'basic', username: 'alice@example.com', password: 'pa:ss:word' });
});

test('UTF-8 usernames and passwords decode (RFC 7617 charset="UTF-8")', () => {
  assert.deepEqual(parseAuthorization(basic('jürgen:pässwörd✓')), { kind: 'basic', username: 'jürgen', password: 'pässwörd✓' });
});

test('the scheme is case-insensitive and Bearer tokens are accepted', () => {
  assert.deepEqual(parseAuthorization('bearer abc.def-ghi_~+/=='), { kind: 'bearer', token: 'abc.def-ghi_~+/==' });
  assert.equal(isProblem(parseAuthorization('BASIC ' + Buffer.from('a:b').toString('base64'))), false);
});

const refused: Array<[string, string | string[] | undefined, string]> = [
  ['no header', undefined, 'missing_credentials'],
  ['empty header', '', 'missing_credentials'],
  ['two headers', ['Basic YTpi', 'Basic YTpi'], 'malformed_credentials'],
  ['broken base64', 'Basic a$b%c', 'malformed_credentials'],
  ['non-canonical base64 length', 'Basic YTpiY', 'malformed_credentials'],
  ['missing colon', basic('alicepassword'), 'malformed_credentials'],
  ['empty username', basic(':password'), 'malformed_credentials'],
  ['empty password', basic('alice:'), 'malformed_credentials'],
  ['non-UTF-8 bytes', 'Basic ' + Buffer.from([0x61, 0x3a, 0xff, 0xfe]).toString('base64'), 'malformed_credentials'],
  ['control character in password', basic('alice:pass\nword'), 'malformed_credentials'],
  ['control character in username', basic('al\x00ice:password'), 'malformed_credentials'],
  ['C1 control character', basic('alice:pass\u0085word'), 'malformed_credentials'],
  ['unknown scheme', 'Digest username="a"', 'malformed_credentials'],
  ['scheme without credentials', 'Basic', 'malformed_credentials'],
  ['bearer with spaces', 'Bearer a b', 'malformed_credentials'],
  ['bearer with forbidden characters', 'Bearer a"b', 'malformed_credentials'],
  ['oversized basic', basic('alice:' + 'x'.repeat(20_000)), 'malformed_credentials'],
  ['oversized bearer', 'Bearer ' + 'x'.repeat(20_000), 'malformed_credentials'],
];

for (const [name, header, reason] of refused) {
  test(`refused with ${reason}: ${name}`, () => {
    const result = parseAuthorization(header);
    assert.ok(isProblem(result), 'should be refused');
    assert.equal(result.reason, reason);
    assert.ok(result.message.length > 0);
    assert.ok(!result.message.includes('password'.repeat(2)));
  });
}

test('problems never echo the secret', () => {
  const result = parseAuthorization(basic('alice:s3cret\x01value'));
  assert.ok(isProblem(result));
  assert.ok(!result.message.includes('s3cret'));
});

test('checkPair refuses lone surrogates, colons in usernames and oversize values, accepts ordinary pairs', () => {
  assert.equal(checkPair('alice', 'secret'), null);
  assert.equal(checkPair('alice', '\ud800x')?.reason, 'malformed_credentials');
  assert.equal(checkPair('a:b', 'secret')?.reason, 'malformed_credentials');
  assert.equal(checkPair('alice', 'x'.repeat(5000))?.reason, 'malformed_credentials');
  assert.equal(checkPair('alice', '😀 emoji is fine'), null);
});

test('a username kept after the request does not keep the password alive in memory', () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const needle = `Needle-${randomUUID()}`;
  const header = () => 'Basic ' + Buffer.from(`someone.with.a.long.name@example.com:${needle}`).toString('base64');
  const parsed = parseAuthorization(header());
  assert.ok(!isProblem(parsed) && parsed.kind === 'basic');
  const kept = { username: parsed.username }; // what the cache and the throttle hold on to
  // Drop the only other reference (the credentials object) and collect.
  (parsed as { password?: string }).password = undefined;
  gc();
  // Written synchronously to a file: before Node 22.18 the stream of v8.getHeapSnapshot() did not
  // keep the event loop alive, and awaiting it alone ended the test with the promise pending.
  const dir = mkdtempSync(join(tmpdir(), 'credgate-heap-'));
  let snapshot: string;
  try {
    snapshot = readFileSync(writeHeapSnapshot(join(dir, 'heap.heapsnapshot')), 'utf8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.ok(snapshot.includes(kept.username));
  // The test itself holds `needle`; the decoded "username:password" string is what must be gone.
  assert.ok(!snapshot.includes(`example.com:${needle}`), 'the decoded "username:password" is still reachable from the heap');
});
