import { createPrivateKey, createPublicKey, generateKeyPairSync, webcrypto, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { ConfigError } from '../errors.js';

/** The key credgate signs its `private_key_jwt` client assertions with (RFC 7523 §2.2). */
export interface SigningKey {
  /** WebCrypto form, for jose's SignJWT (identity tokens). */
  readonly key: webcrypto.CryptoKey;
  /** The same private key for node:crypto (client assertions: clientAssertion.ts). */
  readonly keyObject: KeyObject;
  /** RFC 7638 thumbprint of the public key; sent as the assertion's `kid`. */
  readonly kid: string;
  readonly alg: string;
}

export interface ClientKeys {
  readonly signing: SigningKey;
  /** Public keys served at /.well-known/jwks.json: the signing key first, then rotation keys. */
  readonly jwks: { keys: JWK[] };
}

/** JWS algorithm that fits a key. RSA keys sign RS256 (what Auth0 expects for private_key_jwt). */
export function algorithmFor(key: KeyObject): string {
  switch (key.asymmetricKeyType) {
    case 'rsa': {
      const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
      if (bits < 2048) throw new ConfigError(`RSA key has ${bits} bits; at least 2048 are required`, 'introspectionKeyFile');
      return 'RS256';
    }
    case 'ec':
      switch (key.asymmetricKeyDetails?.namedCurve) {
        case 'prime256v1': return 'ES256';
        case 'secp384r1': return 'ES384';
        case 'secp521r1': return 'ES512';
      }
      break;
    case 'ed25519':
      return 'EdDSA';
  }
  throw new ConfigError(`unsupported key type ${key.asymmetricKeyType ?? 'unknown'} (use RSA ≥2048, P-256/384/521 or Ed25519)`, 'introspectionKeyFile');
}

async function publicJwk(key: KeyObject, alg: string): Promise<JWK> {
  const pub = (key.type === 'public' ? key : createPublicKey(key)).export({ format: 'jwk' }) as JWK;
  const kid = await calculateJwkThumbprint(pub, 'sha256');
  return { ...pub, kid, alg, use: 'sig' };
}

function readPem(file: string, key: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, key);
  }
}

async function fromPrivateKeyObject(privateKey: KeyObject, published: KeyObject[]): Promise<ClientKeys> {
  const alg = algorithmFor(privateKey);
  const signingJwk = await publicJwk(privateKey, alg);
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
  const importParams = webCryptoImportParams(privateKey, alg);
  const key = await webcrypto.subtle.importKey('pkcs8', pkcs8, importParams, false, ['sign']);
  const keys: JWK[] = [signingJwk];
  for (const other of published) {
    const jwk = await publicJwk(other, algorithmFor(other));
    if (!keys.some((k) => k.kid === jwk.kid)) keys.push(jwk);
  }
  return Object.freeze({ signing: Object.freeze({ key, keyObject: privateKey, kid: signingJwk.kid!, alg }), jwks: Object.freeze({ keys }) });
}

function webCryptoImportParams(key: KeyObject, alg: string): webcrypto.RsaHashedImportParams | webcrypto.EcKeyImportParams | webcrypto.Algorithm {
  if (alg === 'RS256') return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  if (alg === 'EdDSA') return { name: 'Ed25519' };
  const curve = { ES256: 'P-256', ES384: 'P-384', ES512: 'P-521' }[alg];
  if (curve) return { name: 'ECDSA', namedCurve: curve };
  throw new ConfigError(`unsupported key ${key.asymmetricKeyType}`, 'introspectionKeyFile');
}

/**
 * Loads a signing key and the extra published keys; fails start-up on anything unusable. `names`
 * are the configuration keys, for the messages (introspection client key, or identity-token key).
 */
export async function loadClientKeys(keyFile: string, publishedKeyFiles: readonly string[] = [], names = { key: 'introspectionKeyFile', published: 'publishedKeyFiles' }): Promise<ClientKeys> {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(readPem(keyFile, names.key));
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`${names.key} ${keyFile} does not hold a PEM private key`, names.key);
  }
  const published = publishedKeyFiles.map((file) => {
    const pem = readPem(file, names.published);
    try {
      return pem.includes('PRIVATE KEY') ? createPublicKey(createPrivateKey(pem)) : createPublicKey(pem);
    } catch {
      throw new ConfigError(`${names.published}: ${file} does not hold a PEM key`, names.published);
    }
  });
  return fromPrivateKeyObject(privateKey, published);
}

/** A fresh key kept only in memory (dev mode, tests): P-256 for client assertions, Ed25519 for identity tokens. */
export async function generateClientKeys(type: 'ec' | 'ed25519' = 'ec'): Promise<ClientKeys> {
  const { privateKey } = type === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) : generateKeyPairSync('ed25519');
  return fromPrivateKeyObject(privateKey, []);
}

/** `credgate keygen`: a new private key as PEM and its public forms for the AS's registration. */
export async function newKeyPair(type: 'rsa' | 'ec' | 'ed25519'): Promise<{ privatePem: string; publicPem: string; jwk: JWK; alg: string }> {
  const { privateKey } =
    type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : type === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
    : generateKeyPairSync('ed25519');
  const alg = algorithmFor(privateKey);
  return {
    privatePem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicPem: createPublicKey(privateKey).export({ format: 'pem', type: 'spki' }).toString(),
    jwk: await publicJwk(privateKey, alg),
    alg,
  };
}
