import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer, type DevUser } from '../../src/devserver/index.js';
import { startCredgate, type TestCredgate } from '../fixtures/credgate.js';

const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-test', clientSecret: 'dev-client-secret-value' };
const USERS = 20;
const ATTEMPTS_PER_USER = 4; // below the dev AS's lockout (10), so every attempt takes the same path there
const extraUsers: DevUser[] = Array.from({ length: USERS }, (_, i) => ({ username: `user${i}`, email: `user${i}@example.com`, password: `the-right-password-${i}`, permissions: ['read:repo'] }));

const quantile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
};

/**
 * A wrong password for a user that exists and one for a user that does not must take the same
 * time class. credgate's path is the same for both by construction (password grant refused →
 * introspection → inactive → `invalid_credentials`, nothing keyed on existence); this measures
 * it end to end against the dev AS (which compares a digest for unknown users too).
 *
 * Classes: "asks the AS" (both paths here, a few ms on loopback) vs "answered from memory"
 * (cache, throttle: well under a millisecond). The samples are interleaved (existing, unknown,
 * existing, …) so drift on a busy machine hits both alike; the medians and the first quartiles
 * must be within a factor of 1.6, which still fails for a path doing twice the work (one more AS
 * round trip) and certainly for one five times slower.
 */
describe('timing: a wrong password for an existing and for an unknown user are indistinguishable', () => {
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  before(async () => {
    dev = await startDevServer({ audience: AUDIENCE, users: [...defaultDevUsers(), ...extraUsers], clients: [CLIENT], lockoutThreshold: 1000 });
    credgate = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, logLevel: 'warn' });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
  });
  after(async () => {
    await credgate.close();
    await dev.close();
  });

  async function timed(username: string, password: string): Promise<{ ms: number; text: string; status: number }> {
    const body = JSON.stringify({ username, password });
    const started = performance.now();
    const response = await fetch(`${credgate.url}/v1/verify`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const text = await response.text();
    return { ms: performance.now() - started, text, status: response.status };
  }

  test('same answer, byte for byte, and the same time class (medians and quartiles within 1.6×)', async (t) => {
    for (let i = 0; i < 10; i++) await timed(`warm-up-${i}`, `warm-up-password-${i}`); // JIT, pools, JWKS
    const existing: number[] = [];
    const unknown: number[] = [];
    const bodies = new Set<string>();
    for (let round = 0; round < ATTEMPTS_PER_USER; round++) {
      for (let u = 0; u < USERS; u++) {
        // Distinct wrong passwords: the negative cache never answers here.
        const known = await timed(`user${u}`, `wrong-password-${round}-${u}`);
        const ghost = await timed(`ghost${u}`, `wrong-password-${round}-${u}`);
        for (const r of [known, ghost]) {
          assert.equal(r.status, 200);
          bodies.add(r.text);
        }
        existing.push(known.ms);
        unknown.push(ghost.ms);
      }
    }
    assert.deepEqual([...bodies], ['{"allow":false,"status":401,"reason":"invalid_credentials","cached":false}']);
    const stats = (xs: number[]) => ({ p25: quantile(xs, 0.25), median: quantile(xs, 0.5) });
    const [a, b] = [stats(existing), stats(unknown)];
    const ratio = (x: number, y: number) => Math.max(x, y) / Math.min(x, y);
    const report = `existing ${JSON.stringify(a)} ms, unknown ${JSON.stringify(b)} ms (n=${existing.length} each)`;
    t.diagnostic(report);
    assert.ok(ratio(a.median, b.median) < 1.6, `medians differ: ${report}`);
    assert.ok(ratio(a.p25, b.p25) < 1.6, `first quartiles differ: ${report}`);
  });

  test("credgate's own memory treats both alike: the negative cache and the throttle answer existing and unknown users the same way", async () => {
    const again = async (username: string) => {
      await timed(username, 'the-same-wrong-password');
      return timed(username, 'the-same-wrong-password');
    };
    const [known, ghost] = [await again('user0'), await again('ghost0')];
    assert.equal(known.text, ghost.text);
    assert.match(known.text, /"cached":true/);

    const throttled = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, logLevel: 'warn', passwordFailureBudget: 5, negativeCacheTtlSeconds: 0 }, { keys: credgate.keys });
    try {
      const answers = async (username: string) => {
        const out: string[] = [];
        for (let i = 0; i < 5; i++) {
          const response = await fetch(`${throttled.url}/v1/verify`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: `guess-${i}` }) });
          out.push(((await response.json()) as { reason: string }).reason);
        }
        return out;
      };
      const [k, g] = [await answers('user1'), await answers('ghost1')];
      assert.deepEqual(k, g, 'throttled after the same number of failures');
      assert.deepEqual(k.slice(3), ['throttled', 'throttled']);
    } finally {
      await throttled.close();
    }
  });
});
