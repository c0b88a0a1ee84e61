/**
 * Child process of `npm run bench` (figure 6): signs `count` access tokens with the dev AS's key,
 * each a copy of one token the AS issued (same header, same claims in the same order) with its own
 * `iat`/`exp` and a unique `jti`, and writes them one per line. RSA signing costs ~1 ms a token, so
 * it runs on libuv's thread pool (every CPU the child is given) before any measured window.
 *   node dist/bench/mint.js SPEC.json
 */
import { createPrivateKey, randomBytes, sign, type JsonWebKey } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';

export interface MintSpec {
  /** The AS's RS256 private key. */
  privateJwk: JsonWebKey;
  /** Protected header and payload of a token the AS issued (decoded). */
  header: Record<string, unknown>;
  claims: Record<string, unknown>;
  count: number;
  /** File to write, one token per line. */
  out: string;
}

export interface MintResult {
  count: number;
  ms: number;
}

const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as MintSpec;
const key = createPrivateKey({ key: spec.privateJwk, format: 'jwk' });
const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
const header = b64(spec.header);
const lifetime = Number(spec.claims['exp']) - Number(spec.claims['iat']);
const run = randomBytes(6).toString('base64url');
const tokens = new Array<string>(spec.count);
const started = performance.now();

function signOne(i: number): Promise<void> {
  const iat = Math.floor(Date.now() / 1000);
  // Claims keep the issued token's order; only the times change, and jti makes each token unique
  // (RS256 signatures are deterministic: same claims, same token).
  const input = `${header}.${b64({ ...spec.claims, iat, exp: iat + lifetime, jti: `${run}.${i}` })}`;
  return new Promise((resolve, reject) =>
    sign('sha256', Buffer.from(input), key, (err, signature) => {
      if (err) return reject(err);
      tokens[i] = `${input}.${signature.toString('base64url')}`;
      resolve();
    }),
  );
}

let next = 0;
async function lane(): Promise<void> {
  while (next < spec.count) await signOne(next++);
}
// More lanes than pool threads, so none waits on this thread to hand it the next token.
await Promise.all(Array.from({ length: 16 }, lane));
writeFileSync(spec.out, tokens.join('\n') + '\n', { mode: 0o600 });
const result: MintResult = { count: spec.count, ms: performance.now() - started };
process.stdout.write(JSON.stringify(result) + '\n');
