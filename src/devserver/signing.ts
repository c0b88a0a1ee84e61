import { calculateJwkThumbprint, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import type { CryptoKey, JWTPayload } from 'jose';
import type { Grant } from './scopes.js';
import type { StoredUser } from './users.js';

export interface SigningKey {
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  /** With `kid`, `alg` and `use`, as served in the JWKS. */
  readonly publicJwk: Record<string, unknown>;
  readonly kid: string;
}

export async function createSigningKey(): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(jwk);
  const publicJwk = Object.freeze({ ...jwk, kid, alg: 'RS256', use: 'sig' });
  return Object.freeze({ privateKey, publicKey, publicJwk, kid });
}

export interface AccessTokenRequest {
  readonly issuer: string;
  readonly user: StoredUser;
  readonly audience: string;
  readonly clientId: string;
  readonly grant: Grant;
  readonly expiresInSeconds: number;
  readonly extraClaims?: Record<string, unknown>;
}

/** An access token shaped like Auth0's for an API with RBAC and permissions in the token. */
export async function signAccessToken(key: SigningKey, r: AccessTokenRequest): Promise<string> {
  const iat = Math.floor(Date.now() / 1000);
  // Auth0 adds its /userinfo endpoint to `aud` when openid is granted.
  const aud = r.grant.scopes.includes('openid') ? [r.audience, `${r.issuer}userinfo`] : r.audience;
  const claims: JWTPayload = {
    iss: r.issuer,
    sub: r.user.sub,
    aud,
    iat,
    exp: iat + r.expiresInSeconds,
    azp: r.clientId,
    scope: r.grant.scope,
    gty: 'password',
    permissions: [...r.grant.permissions],
    ...r.extraClaims,
  };
  return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: key.kid }).sign(key.privateKey);
}

/** The claims of an unexpired access token this server signed, or undefined. */
export async function verifyOwnAccessToken(
  key: SigningKey,
  issuer: string,
  token: string,
): Promise<JWTPayload | undefined> {
  try {
    const { payload } = await jwtVerify(token, key.publicKey, { issuer, algorithms: ['RS256'] });
    return payload;
  } catch {
    return undefined;
  }
}
