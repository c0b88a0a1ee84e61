import { constants, KeyObject, sign, verify, type webcrypto } from 'node:crypto';
import type { JWTHeaderParameters, JWTPayload } from 'jose';

/**
 * JWS signatures made and checked with node:crypto's one-shot functions on the calling thread.
 * jose (and oauth4webapi) go through WebCrypto, which runs every signature as a job on libuv's thread
 * pool and answers with a promise: two cross-thread wake-ups per token, which cost more than the
 * signature itself (an RS256 check is ~25 µs of CPU here; through WebCrypto ~100 µs one at a time).
 * Keys are still chosen and imported by jose (the JWKS, `kid` and `kty`/`crv` matching); only the
 * signature and the claims checks below run here, and the unit tests hold them to jose's verdicts.
 */

interface Algorithm {
  /** Digest for node:crypto, or null where the algorithm has its own (Ed25519). */
  readonly hash: string | null;
  readonly keyTypes: readonly string[];
  /** OpenSSL's name of the EC curve the key must be on. */
  readonly curve?: string;
  readonly padding?: number;
  readonly saltLength?: number;
  readonly dsaEncoding?: 'ieee-p1363';
}

const rsa = (bits: number): Algorithm => ({ hash: `sha${bits}`, keyTypes: ['rsa'], padding: constants.RSA_PKCS1_PADDING });
const pss = (bits: number): Algorithm => ({ hash: `sha${bits}`, keyTypes: ['rsa', 'rsa-pss'], padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: bits / 8 });
const ec = (bits: number, curve: string): Algorithm => ({ hash: `sha${bits}`, keyTypes: ['ec'], curve, dsaEncoding: 'ieee-p1363' });

/** The asymmetric JWS algorithms (RFC 7518 §3, RFC 8037): the only ones a token or an assertion may use. */
const ALGORITHMS: ReadonlyMap<string, Algorithm> = new Map(Object.entries({
  RS256: rsa(256), RS384: rsa(384), RS512: rsa(512),
  PS256: pss(256), PS384: pss(384), PS512: pss(512),
  ES256: ec(256, 'prime256v1'), ES384: ec(384, 'secp384r1'), ES512: ec(512, 'secp521r1'),
  EdDSA: { hash: null, keyTypes: ['ed25519'] },
}));

/** RSA keys shorter than this are refused (RFC 7518 §3.3; jose's bound too). */
const MIN_RSA_BITS = 2048;

const SEGMENT = /^[A-Za-z0-9_-]+$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** An RSA key under 2048 bits in the AS's key set: the key set is at fault, not the token. */
export class UnusableKeyError extends Error {}

/** A base64url segment decoded, or undefined unless it is one (characters and length; no padding). */
function segment(value: string): Buffer | undefined {
  if (!SEGMENT.test(value) || value.length % 4 === 1) return undefined;
  return Buffer.from(value, 'base64url');
}

/** A segment holding a JSON object in strict UTF-8, or undefined. */
function jsonObject(value: string): Record<string, unknown> | undefined {
  const bytes = segment(value);
  if (bytes === undefined) return undefined;
  try {
    const parsed: unknown = JSON.parse(utf8.decode(bytes));
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** What is checked of a key, read once per key (KeyObject's getters build a new object each call). */
interface KeyFacts {
  readonly object: KeyObject;
  readonly public: boolean;
  readonly keyType: string;
  readonly curve: string | undefined;
  readonly bits: number;
}

const facts = new WeakMap<object, KeyFacts>();

/** node:crypto's form of a key jose imported, and its facts (converted once per key). */
function factsOf(key: webcrypto.CryptoKey | KeyObject): KeyFacts {
  let known = facts.get(key);
  if (known === undefined) {
    const object = key instanceof KeyObject ? key : KeyObject.from(key);
    const details = object.asymmetricKeyDetails;
    known = { object, public: object.type === 'public', keyType: object.asymmetricKeyType ?? '', curve: details?.namedCurve, bits: details?.modulusLength ?? 0 };
    facts.set(key, known);
  }
  return known;
}

/** Whether a public key can check `alg` at all (jose picked it for `alg`; checked again here). */
function fits(key: KeyFacts, algorithm: Algorithm): boolean {
  if (!key.public || !algorithm.keyTypes.includes(key.keyType)) return false;
  return algorithm.curve === undefined || key.curve === algorithm.curve;
}

export interface JwtChecks {
  readonly issuer: string;
  readonly audience: string;
  readonly algorithms: ReadonlySet<string>;
  readonly clockToleranceSeconds: number;
}

/** Finds the key for a token's protected header (jose's JWKS function); throws jose's errors. */
export type KeyResolver = (header: JWTHeaderParameters) => Promise<webcrypto.CryptoKey | KeyObject>;

/**
 * Verifies a compact JWS access token: the claims if it holds, else null. Refused: anything but
 * three base64url segments; a header that is not a JSON object, names `crit` or `b64` (no extension
 * is understood; an unencoded payload is not a JWT), or an `alg` outside `algorithms`; a signature
 * that does not verify with the key the resolver picks; claims that are not a JSON object; `iss`
 * not exactly `issuer`; `aud` (string or array) without `audience`; `exp` missing, not a number or
 * past (less the tolerance); `nbf` not a number or in the future (beyond the tolerance); `iat` not
 * a number. The resolver's errors (no such key, the JWKS unreachable) are thrown as they are;
 * `UnusableKeyError` when the key it gives is an RSA key under 2048 bits.
 */
export async function verifyJwt(token: string, resolve: KeyResolver, checks: JwtChecks): Promise<JWTPayload | null> {
  const first = token.indexOf('.');
  const second = token.indexOf('.', first + 1);
  if (first < 0 || second < 0 || token.indexOf('.', second + 1) >= 0) return null;
  const header = jsonObject(token.slice(0, first));
  if (header === undefined || 'crit' in header || 'b64' in header) return null;
  const alg = header['alg'];
  if (typeof alg !== 'string' || !checks.algorithms.has(alg)) return null;
  const algorithm = ALGORITHMS.get(alg);
  const signature = segment(token.slice(second + 1));
  if (algorithm === undefined || signature === undefined) return null;

  const key = factsOf(await resolve(header as JWTHeaderParameters));
  if (!fits(key, algorithm)) return null;
  if (key.keyType.startsWith('rsa') && key.bits < MIN_RSA_BITS) {
    throw new UnusableKeyError(`the JWKS key for ${alg} has fewer than ${MIN_RSA_BITS} bits`);
  }
  let valid: boolean;
  try {
    valid = verify(algorithm.hash, Buffer.from(token.slice(0, second), 'latin1'), {
      key: key.object,
      padding: algorithm.padding,
      saltLength: algorithm.saltLength,
      dsaEncoding: algorithm.dsaEncoding,
    }, signature);
  } catch {
    valid = false; // e.g. an ECDSA signature of the wrong length
  }
  if (!valid) return null;

  const claims = jsonObject(token.slice(first + 1, second));
  return claims !== undefined && claimsHold(claims, checks) ? (claims as JWTPayload) : null;
}

function claimsHold(claims: Record<string, unknown>, { issuer, audience, clockToleranceSeconds }: JwtChecks): boolean {
  const { iss, aud, exp, nbf, iat } = claims;
  if (iss !== issuer) return false;
  if (!(aud === audience || (Array.isArray(aud) && aud.includes(audience)))) return false;
  const now = Math.floor(Date.now() / 1000);
  if (typeof exp !== 'number' || exp <= now - clockToleranceSeconds) return false;
  if (nbf !== undefined && (typeof nbf !== 'number' || nbf > now + clockToleranceSeconds)) return false;
  if (iat !== undefined && typeof iat !== 'number') return false;
  return Object.hasOwn(claims, 'sub');
}

/** node:crypto's signing options for `alg` with a private key, or undefined if they do not go together. */
function signing(alg: string, key: KeyObject) {
  const algorithm = ALGORITHMS.get(alg);
  if (algorithm === undefined || key.type !== 'private' || !algorithm.keyTypes.includes(key.asymmetricKeyType ?? '')) return undefined;
  return { hash: algorithm.hash, options: { key, padding: algorithm.padding, saltLength: algorithm.saltLength, dsaEncoding: algorithm.dsaEncoding } };
}

/** A signer that runs on the calling thread, for keys quick to sign with (EC, Ed25519); undefined for RSA. */
export function quickSigner(alg: string, key: KeyObject): ((input: string) => string) | undefined {
  const s = signing(alg, key);
  if (s === undefined || key.asymmetricKeyType?.startsWith('rsa')) return undefined;
  return (input) => sign(s.hash, Buffer.from(input, 'utf8'), s.options).toString('base64url');
}

/** A signer for any private key that signs on libuv's thread pool (an RSA-2048 signature: ~0.25 ms here, more on slower or busier machines). */
export function backgroundSigner(alg: string, key: KeyObject): (input: string) => Promise<string> {
  const s = signing(alg, key);
  if (s === undefined) throw new TypeError(`cannot sign ${alg} with this key`);
  return (input) =>
    new Promise((resolve, reject) => {
      sign(s.hash, Buffer.from(input, 'utf8'), s.options, (err, signature) => (err ? reject(err) : resolve(signature.toString('base64url'))));
    });
}
