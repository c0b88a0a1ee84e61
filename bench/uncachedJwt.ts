/**
 * Figure 6 of `npm run bench`: `/auth` with a different, valid, never-seen Bearer JWT on every
 * request (so every request is a cache miss that checks an RS256 signature), against a bare
 * fastify route and against jose's `jwtVerify` alone on the same core.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportJWK, type JWK } from 'jose';
import type { JoseInput, JoseResult } from './jose.js';
import type { LoadOptions } from './load.js';
import type { MintResult, MintSpec } from './mint.js';
import { runChild, type Pinning } from './pinning.js';
import { results, row } from './report.js';
import { AUDIENCE, until200, type Bench } from './setup.js';
import { abba, CONNECTIONS, comparisonRows, passwordGrantToken } from './throughput.js';

const mintScript = fileURLToPath(new URL('./mint.js', import.meta.url));
const joseScript = fileURLToPath(new URL('./jose.js', import.meta.url));
const HALF_SECONDS = 1.5;
const WARMUP_SECONDS = 0.5;
const JOSE_SECONDS = 1;
/** Most tokens minted, whatever jose's speed (they take ~1 ms of CPU each). */
const MAX_TOKENS = 200_000;
const TARGET_RPS = 9000;

const decode = (part: string) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;

/** Signs `counts[i]` tokens into file i, copies of `template` with their own iat/exp/jti. */
async function mint(bench: Bench, template: string, files: { name: string; count: number }[]): Promise<{ paths: string[]; ms: number } | string> {
  const [header, claims] = template.split('.');
  const privateJwk = await exportJWK(bench.dev.signingKey.privateKey);
  const paths: string[] = [];
  let ms = 0;
  for (const f of files) {
    const out = join(bench.scratch, `${f.name}.tokens`);
    const spec: MintSpec = { privateJwk: privateJwk as MintSpec['privateJwk'], header: decode(header!), claims: decode(claims!), count: f.count, out };
    const specFile = join(bench.scratch, `${f.name}.mint.json`);
    writeFileSync(specFile, JSON.stringify(spec), { mode: 0o600 });
    // ~1 ms of CPU a token, on every CPU: bounded by MAX_TOKENS.
    const r = await runChild<MintResult>([mintScript, specFile], 30_000 + f.count * 2, 'all');
    if (!r.ok) return `minting ${f.count} tokens: ${r.why}`;
    ms += r.value.ms;
    paths.push(out);
  }
  return { paths, ms };
}

/** jose alone, in its own process on credgate's CPU: verifications per second. */
async function joseAlone(bench: Bench, tokensFile: string): Promise<JoseResult | string> {
  const input: JoseInput = { publicJwk: bench.dev.signingKey.publicJwk as JWK, issuer: bench.dev.issuer, audience: AUDIENCE, tokensFile, seconds: JOSE_SECONDS, inFlight: CONNECTIONS };
  const r = await runChild<JoseResult>([joseScript, JSON.stringify(input)], 30_000, 'server');
  return r.ok ? r.value : `jose alone: ${r.why}`;
}

export async function uncachedBearer(bench: Bench, pinning: Pinning): Promise<void> {
  const template = await passwordGrantToken(bench);
  // A first batch for jose alone, whose speed sets how many tokens the load runs need (and one to
  // check that credgate takes the minted tokens).
  const small = await mint(bench, template, [{ name: 'jose', count: 2000 }]);
  if (typeof small === 'string') {
    row('6', 'not measured', small, '');
    results.uncachedBearer = { error: small };
    return;
  }
  const jose = { serial: [] as number[], inFlight: [] as number[] };
  const measureJose = async () => {
    const r = await joseAlone(bench, small.paths[0]!);
    if (typeof r === 'string') throw new Error(r);
    jose.serial.push(r.serial);
    jose.inFlight.push(r.inFlight);
  };
  await measureJose();
  // Enough tokens for what two cores of jose alone could verify in each run, plus one per connection
  // built at the start and at the stop; a run that still runs out stops early and says so.
  const rate = Math.max(jose.serial[0]!, jose.inFlight[0]!);
  const perRun = (seconds: number) => Math.min(Math.floor(MAX_TOKENS / 3), Math.ceil(2 * rate * seconds) + 2 * CONNECTIONS);
  const counts = [perRun(WARMUP_SECONDS), perRun(HALF_SECONDS), perRun(HALF_SECONDS)];
  const minted = await mint(bench, template, counts.map((count, i) => ({ name: `run${i}`, count })));
  if (typeof minted === 'string') {
    row('6', 'not measured', minted, '');
    results.uncachedBearer = { error: minted };
    return;
  }
  // One of them, as the check that the AS's tokens pass (the load runs use the others).
  const [someToken] = readFileSync(small.paths[0]!, 'utf8').split('\n', 1);
  const check = await until200(`${bench.credgate.url}/auth`, { headers: { authorization: `Bearer ${someToken}` } });
  if (check.status !== 200) throw new Error(`/auth answered ${check.status} for a minted token`);

  const subject = (run: 0 | 1 | 2): LoadOptions => ({
    url: `${bench.credgate.url}/auth`,
    connections: CONNECTIONS,
    duration: HALF_SECONDS,
    tokensFile: minted.paths[run]!,
  });
  const plain: LoadOptions = { url: bench.bareUrl, connections: CONNECTIONS, duration: HALF_SECONDS };
  const c = await abba(bench, plain, subject, WARMUP_SECONDS);
  await measureJose();
  const mean = (a: number[]) => a.reduce((t, v) => t + v, 0) / a.length;
  const joseSerial = mean(jose.serial);
  const joseInFlight = mean(jose.inFlight);
  if (typeof c === 'string') {
    results.uncachedBearer = { error: c, joseSerial, joseInFlight };
    row('6', 'load run', c, '');
    return;
  }
  const exhausted = c.halves.subject.some((h) => h.tokensExhausted === true);
  const rps = c.subject.requestsPerSecond;
  const best = Math.max(joseSerial, joseInFlight);
  results.uncachedBearer = {
    connections: CONNECTIONS,
    order: `bare, uncached, uncached, bare; ${HALF_SECONDS} s each; warm-up ${WARMUP_SECONDS} s each`,
    tokensMinted: counts, mintMs: minted.ms + small.ms, exhausted,
    joseAlone: { serial: jose.serial, inFlight: jose.inFlight, inFlightCount: CONNECTIONS, seconds: JOSE_SECONDS },
    ...c,
  };
  comparisonRows('6', 'uncached Bearer JWT', c);
  row('6', `jose jwtVerify alone: 1 at a time`, joseSerial, 'verifies/s');
  row('6', `jose jwtVerify alone: ${CONNECTIONS} in flight`, joseInFlight, 'verifies/s');
  row('6', 'uncached ÷ jose alone (the faster)', rps / best, '×');
  if (pinning.pinned) row('6', 'uncached Bearer JWT on one core', rps, 'req/s', `≥ ${TARGET_RPS} req/s`, rps >= TARGET_RPS && !exhausted);
  else row('6', 'uncached Bearer JWT (NOT pinned: not one core)', rps, 'req/s', `≥ ${TARGET_RPS} on one core`);
  const used = c.halves.subject.reduce((t, h) => t + (h.tokensUsed ?? 0), 0);
  row('6', 'tokens for the halves / used', `${counts[1]! + counts[2]!} / ${used}${exhausted ? ' (RAN OUT: run cut short)' : ''}`, 'tokens');
}
