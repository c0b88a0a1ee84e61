/**
 * Child process of `npm run bench` (figure 4): fills a CredentialCache with N realistic entries
 * and prints {rss, heapUsed} deltas and the time of one purge as JSON. Run alone so nothing else shares its heap:
 *   node --expose-gc dist/bench/memory.js 100000
 */
import { randomBytes } from 'node:crypto';
import { getHeapSpaceStatistics } from 'node:v8';
import { configSchema } from '../src/config/schema.js';
import { CredentialCache } from '../src/verify/cache.js';
import type { Identity } from '../src/verify/types.js';

export interface MemoryResult {
  entries: number;
  rssBytes: number;
  heapUsedBytes: number;
  externalBytes: number;
  fillMs: number;
  /** One user's purge: a walk over the whole cache (there is no purge index). */
  purgeMs: number;
  purged: number;
  /** Growth of V8's young generation (new space) over the fill: committed memory V8 sizes by allocation rate, whatever is live. */
  youngGenerationBytes: number;
  /** RSS growth from N/2 to N entries (each measured after full collections): what the second half of the entries cost. */
  secondHalfRssBytes: number;
}

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error('memory.js needs node --expose-gc');
  process.exit(2);
}
const n = Number(process.argv[2]);
if (!Number.isSafeInteger(n) || n <= 0) {
  console.error('usage: memory.js ENTRIES');
  process.exit(2);
}

function settle(): NodeJS.MemoryUsage {
  for (let i = 0; i < 4; i++) gc!();
  return process.memoryUsage();
}

const AUDIENCE = 'https://git.example.com';
const before = settle();
// Constructed after the baseline: lru-cache preallocates its index arrays for maxEntries, and
// those are part of what a full cache costs.
// Options as src/service.ts builds them, from the configuration's defaults.
const defaults = configSchema.parse({});
const cache = new CredentialCache({
  ttlSeconds: defaults.cacheTtlSeconds,
  negativeTtlSeconds: defaults.negativeCacheTtlSeconds,
  maxEntries: n,
  appPasswordMemorySeconds: defaults.appPasswordMemorySeconds,
});
const exp = Math.floor(Date.now() / 1000) + 3600;
/** Bytes V8 has committed for its young generation (new space): sized by V8 from the allocation rate, not by what is live. */
const youngGeneration = () => getHeapSpaceStatistics().filter((s) => s.space_name === 'new_space' || s.space_name === 'new_large_object_space').reduce((t, s) => t + s.space_size, 0);
const youngBefore = youngGeneration();
let half: NodeJS.MemoryUsage | undefined;
const started = performance.now();
for (let i = 0; i < n; i++) {
  if (i === n >> 1) half = settle();
  // Strings made as production makes them, so that V8 lays them out the same way: the username and
  // password decoded from the Basic header's bytes (src/http/credentials.ts), the claims parsed
  // from the token's JSON payload (jose). One user per entry ('user123456@example.com'): the purge
  // index then holds one key per user, its worst case.
  const name = `user${String(i).padStart(6, '0')}@example.com`;
  const basic = Buffer.from(`${name}:pw-${randomBytes(9).toString('base64url')}`, 'utf8');
  const colon = basic.indexOf(0x3a);
  const username = basic.toString('utf8', 0, colon);
  const password = basic.toString('utf8', colon + 1);
  const key = cache.keyFor({ kind: 'basic', username, password }, AUDIENCE);
  const claims = JSON.parse(
    `{"iss":"https://example.auth0.com/","sub":"auth0|${randomBytes(12).toString('hex')}","aud":"${AUDIENCE}","scope":"read:repo write:repo read:mail","exp":${exp + (i % 600)}}`,
  ) as { sub: string; scope: string; exp: number };
  const identity: Identity = {
    subject: claims.sub,
    // The password-grant strategy keeps the username the AS accepted: the one typed.
    username,
    credential: 'password',
    // Split per token in production: three fresh strings in a fresh array.
    scopes: claims.scope.split(' '),
    audience: AUDIENCE,
    expiresAt: claims.exp,
  };
  cache.set(key, { kind: 'identity', identity }, username);
}
const fillMs = performance.now() - started;
const after = settle();
if (cache.size !== n) {
  console.error(`cache holds ${cache.size} entries, expected ${n}`);
  process.exit(3);
}
const purgeStarted = performance.now();
const purged = cache.purgeUser(`user${String(n >> 1).padStart(6, '0')}@example.com`);
const purgeMs = performance.now() - purgeStarted;
const result: MemoryResult = {
  entries: n,
  rssBytes: after.rss - before.rss,
  heapUsedBytes: after.heapUsed - before.heapUsed,
  externalBytes: after.external + after.arrayBuffers - (before.external + before.arrayBuffers),
  fillMs,
  purgeMs,
  purged,
  youngGenerationBytes: youngGeneration() - youngBefore,
  secondHalfRssBytes: after.rss - half!.rss,
};
process.stdout.write(JSON.stringify(result) + '\n');
