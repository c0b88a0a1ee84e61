/**
 * Child process of `npm run bench` (figure 6): jose's `jwtVerify` alone, in a fresh process on
 * credgate's CPU (the bench process idles meanwhile), with the key and options credgate used for an
 * access token: RS256, `iss`, `aud`, 30 s clock tolerance, `exp` and `sub` required. A warm-up,
 * then `seconds` one at a time and `seconds` with `inFlight` verifications under way; for each, the
 * rate and this process's CPU time per verification (every thread: WebCrypto's RSA runs on libuv's
 * pool). Then the same for the check credgate makes instead (src/upstream/jws.ts: node:crypto on
 * the calling thread, the key from a jose key set as credgate gets it).
 *   node dist/bench/jose.js '{"publicJwk":{…},"issuer":"…","audience":"…","tokensFile":"…","seconds":1,"inFlight":50}'
 */
import { readFileSync } from 'node:fs';
import { createLocalJWKSet, importJWK, jwtVerify, type JWK } from 'jose';
import { verifyJwt } from '../src/upstream/jws.js';
import { joseOptions } from './joseOptions.js';

export interface JoseInput {
  publicJwk: JWK;
  issuer: string;
  audience: string;
  /** One token per line; cycled through (jose keeps nothing between calls). */
  tokensFile: string;
  seconds: number;
  inFlight: number;
}

export interface JoseRate {
  /** Verifications per second. */
  rate: number;
  /** CPU time per verification, µs. */
  cpuMicros: number;
}

export interface JoseResult {
  serial: JoseRate;
  inFlight: JoseRate;
  /** credgate's own check (jws.ts) on the same tokens. */
  check: { serial: JoseRate; inFlight: JoseRate };
  /** This process's CPU time from start to finish, µs (for the bench's quiet-core check). */
  totalCpuMicros: number;
}

const input = JSON.parse(process.argv[2] ?? '{}') as JoseInput;
const tokens = readFileSync(input.tokensFile, 'utf8').trim().split('\n');
const key = await importJWK(input.publicJwk, 'RS256');
const options = joseOptions(input.issuer, input.audience);
const keySet = createLocalJWKSet({ keys: [input.publicJwk] });
const checks = { issuer: input.issuer, audience: input.audience, algorithms: new Set(['RS256']), clockToleranceSeconds: 30 };
let next = 0;

const joseVerify = async (token: string) => {
  await jwtVerify(token, key, options);
};
const credgateCheck = async (token: string) => {
  if ((await verifyJwt(token, keySet, checks)) === null) throw new Error('a minted token did not pass credgate\'s check');
};

async function rate(inFlight: number, seconds: number, verify = joseVerify): Promise<JoseRate> {
  const cpu = process.cpuUsage();
  const started = performance.now();
  let done = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() - started < seconds * 1000) {
        await verify(tokens[next++ % tokens.length]!);
        done++;
      }
    }),
  );
  const wall = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  return { rate: done / wall, cpuMicros: (used.user + used.system) / done };
}

await rate(input.inFlight, 0.3); // JIT warm-up
const serial = await rate(1, input.seconds);
const inFlight = await rate(input.inFlight, input.seconds);
await rate(input.inFlight, 0.3, credgateCheck);
const check = { serial: await rate(1, input.seconds, credgateCheck), inFlight: await rate(input.inFlight, input.seconds, credgateCheck) };
const total = process.cpuUsage();
const result: JoseResult = { serial, inFlight, check, totalCpuMicros: total.user + total.system };
process.stdout.write(JSON.stringify(result) + '\n');
