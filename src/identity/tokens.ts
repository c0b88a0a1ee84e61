import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import type { SigningKey } from '../upstream/clientKeys.js';
import type { Identity } from '../verify/types.js';

/** What a policy rule asks for (`identityToken`): a JWS for one downstream audience, in one header. */
export interface IdentityTokenSpec {
  /** `aud` of the token: the downstream service it is for. */
  readonly audience: string;
  /** Longest life of a token, seconds; never past the identity's own expiry. */
  readonly ttlSeconds: number;
  /** Header it travels in on `/auth` (default `X-Auth-Token`). */
  readonly header: string;
}

interface Signed {
  readonly jwt: string;
  /** Epoch ms. */
  readonly expiresAt: number;
  /** Epoch ms after which a new token is signed in the background (the old one still answers). */
  readonly refreshAt: number;
  refreshing?: Promise<void>;
}

/** Fraction of a token's life after which it is re-signed off the request path. */
const REFRESH_AT = 0.75;
/** A token with less than this left is not handed out: the request waits for a fresh one. */
const MIN_LEFT_MS = 2000;

/**
 * Signed identity assertions for the services behind credgate (Oathkeeper's id_token mutator,
 * Pomerium's X-Pomerium-Jwt-Assertion): a compact JWS, signed with the identity key (its `kid` in
 * credgate's JWKS), claims `iss`, `sub`, `aud`, `iat`, `exp` = min(now + ttl, the identity's expiry),
 * `jti`, `scope`, `credential`, `username`. Nothing secret.
 *
 * Signing stays off the hot path: a token is cached with the identity object it was made for (the
 * decision cache keeps one object per credential), per audience and lifetime, and re-signed in the
 * background once three quarters of its life have passed; a cached decision only looks it up.
 */
export class IdentityTokens {
  readonly #cache = new WeakMap<Identity, Map<string, Signed>>();

  constructor(
    private readonly key: SigningKey,
    private readonly issuer: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** The token for this identity and spec: at once when one is cached and fresh enough. */
  tokenFor(identity: Identity, spec: IdentityTokenSpec): string | Promise<string> {
    let byAudience = this.#cache.get(identity);
    if (byAudience === undefined) this.#cache.set(identity, (byAudience = new Map()));
    const slot = `${spec.ttlSeconds}\u0000${spec.audience}`;
    const current = byAudience.get(slot);
    const now = this.now();
    if (current !== undefined && current.expiresAt - now > MIN_LEFT_MS) {
      if (now >= current.refreshAt && current.refreshing === undefined) {
        current.refreshing = this.#sign(identity, spec).then(
          (next) => void byAudience.set(slot, next),
          () => void (current.refreshing = undefined), // tried again on the next request
        );
      }
      return current.jwt;
    }
    return this.#sign(identity, spec).then((signed) => {
      byAudience.set(slot, signed);
      return signed.jwt;
    });
  }

  async #sign(identity: Identity, spec: IdentityTokenSpec): Promise<Signed> {
    const now = this.now();
    const iat = Math.floor(now / 1000);
    const exp = Math.min(iat + spec.ttlSeconds, identity.expiresAt ?? Infinity);
    const claims: Record<string, unknown> = { scope: identity.scopes.join(' '), credential: identity.credential };
    if (identity.username !== undefined) claims.username = identity.username;
    const jwt = await new SignJWT(claims)
      .setProtectedHeader({ alg: this.key.alg, kid: this.key.kid, typ: 'JWT' })
      .setIssuer(this.issuer)
      .setSubject(identity.subject)
      .setAudience(spec.audience)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setJti(randomBytes(16).toString('base64url'))
      .sign(this.key.key);
    const expiresAt = exp * 1000;
    return { jwt, expiresAt, refreshAt: now + (expiresAt - now) * REFRESH_AT };
  }
}
