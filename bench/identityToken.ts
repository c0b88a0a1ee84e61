/**
 * Figure 11: what a signed identity token costs a cached decision. Two credgates with the same
 * policy (`default: allow`), one of which asks for an identity token on every allow; cached `/auth`
 * on both, interleaved on the same pinned core. The token is cached with the identity and re-signed
 * off the request path, so the difference should be a map look-up and one response header.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fmt, row, targetRow } from './report.js';
import { startCredgate, until200, type Bench } from './setup.js';
import { basicAuthorization, cachedProblems, CONNECTIONS, interleave, pairedDifference, record, sideRows } from './throughput.js';

export const IDENTITY_TOKEN_TARGET_MICROS = 10;

export async function identityTokenCost(bench: Bench): Promise<void> {
  const authorization = basicAuthorization();
  const plainPolicy = join(bench.scratch, 'policy-plain.yaml');
  const tokenPolicy = join(bench.scratch, 'policy-token.yaml');
  writeFileSync(plainPolicy, 'default: allow\n');
  writeFileSync(tokenPolicy, 'identityToken: { audience: https://app.example.com, ttlSeconds: 300 }\ndefault: allow\n');
  const plain = await startCredgate(bench.dev, bench.keys, { policyFile: plainPolicy });
  const signed = await startCredgate(bench.dev, bench.keys, { policyFile: tokenPolicy, identityIssuer: 'https://credgate.bench' });
  try {
    for (const server of [plain, signed]) {
      const first = await until200(`${server.url}/auth`, { headers: { authorization } });
      if (first.status !== 200) throw new Error(`/auth answered ${first.status} for alice`);
    }
    const check = await fetch(`${signed.url}/auth`, { headers: { authorization } });
    if (!check.headers.get('x-auth-token')) throw new Error('the identity-token side answered no X-Auth-Token');
    const sides = await interleave(
      '11',
      [
        { name: 'cached /auth with an identity token', server: signed, options: () => ({ url: `${signed.url}/auth`, connections: CONNECTIONS, seconds: 2, headers: { authorization } }) },
        { name: 'cached /auth without', server: plain, options: () => ({ url: `${plain.url}/auth`, connections: CONNECTIONS, seconds: 2, headers: { authorization } }) },
      ],
      { halfSeconds: 2, rounds: 6 },
    );
    record('identityTokenCached', sides);
    for (const s of sides.values()) sideRows('11', s);
    const on = sides.get('cached /auth with an identity token')!;
    const off = sides.get('cached /auth without')!;
    row('11', 'CPU per request of each run, with a token', on.runs.map((r) => fmt(r.cpuPerRequest)).join(', '), 'µs');
    row('11', 'CPU per request of each run, without', off.runs.map((r) => fmt(r.cpuPerRequest)).join(', '), 'µs');
    const problem = cachedProblems(on, 'hits') ?? cachedProblems(off, 'hits');
    if (problem) row('11', 'measurement problem', problem, '');
    const diff = pairedDifference(on, off, IDENTITY_TOKEN_TARGET_MICROS);
    targetRow('11', 'identity token per cached decision (with − without, paired runs)', diff.text, 'µs CPU', `≤ ${IDENTITY_TOKEN_TARGET_MICROS} µs`, problem ? 'invalid' : diff.verdict);
  } finally {
    await Promise.all([plain.close(), signed.close()]);
  }
}
