/**
 * Child process of `npm run bench` (figure 6): jose's `jwtVerify` alone, in a fresh process on
 * credgate's CPU (the bench process idles meanwhile), with the key and options credgate uses for an
 * access token: RS256, `iss`, `aud`, 30 s clock tolerance, `exp` and `sub` required. A warm-up,
 * then `seconds` one at a time and `seconds` with `inFlight` verifications under way; for each, the
 * rate and this process's CPU time per verification (every thread: WebCrypto's RSA runs on libuv's
 * pool).
 *   node dist/bench/jose.js '{"publicJwk":{…},"issuer":"…","audience":"…","tokensFile":"…","seconds":1,"inFlight":50}'
 */
import { readFileSync } from 'node:fs';
import { importJWK, jwtVerify, type JWK } from 'jose';

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
  /** This process's CPU time from start to finish, µs (for the bench's quiet-core check). */
  totalCpuMicros: number;
}

const input = JSON.parse(process.argv[2] ?? '{}') as JoseInput;
const tokens = readFileSync(input.tokensFile, 'utf8').trim().split('\n');
const key = await importJWK(input.publicJwk, 'RS256');
const options = { issuer: input.issuer, audience: input.audience, algorithms: ['RS256'], clockTolerance: 30, requiredClaims: ['exp', 'sub'] };
let next = 0;

async function rate(inFlight: number, seconds: number): Promise<JoseRate> {
  const cpu = process.cpuUsage();
  const started = performance.now();
  let done = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() - started < seconds * 1000) {
        await jwtVerify(tokens[next++ % tokens.length]!, key, options);
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
const total = process.cpuUsage();
const result: JoseResult = { serial, inFlight, totalCpuMicros: total.user + total.system };
process.stdout.write(JSON.stringify(result) + '\n');
