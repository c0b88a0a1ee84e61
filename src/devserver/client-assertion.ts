import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { OAuthError } from './params.js';

export const JWT_BEARER_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** Longest accepted assertion lifetime (`exp - iat`): Auth0 and most servers allow a few minutes. */
const MAX_ASSERTION_LIFETIME_SECONDS = 300;
const CLOCK_TOLERANCE_SECONDS = 30;
const ALGORITHMS = ['RS256', 'PS256', 'ES256', 'EdDSA', 'Ed25519'];

export interface AssertionCheck {
  readonly assertion: string;
  /** The `client_id` parameter, if sent: it must then match the assertion's `iss`. */
  readonly clientId: string | undefined;
  /** Accepted `aud` values: the issuer and the endpoint URLs (RFC 7523 §3, item 3). */
  readonly audiences: readonly string[];
  /** The registered API identifiers: the only accepted `iss`/`sub`. */
  readonly apis: ReadonlySet<string>;
}

function invalidClient(description: string): OAuthError {
  return new OAuthError(401, 'invalid_client', description);
}

/**
 * Client authentication by `private_key_jwt` (RFC 7523 §2.2, §3): the resource server signs a
 * short-lived JWT with its own key, published at `resourceServerJwksUrl`.
 */
export class ClientAssertionVerifier {
  #jwks: ReturnType<typeof createRemoteJWKSet> | undefined;
  /** `iss|jti` → `exp` (seconds): a jti may be used once (RFC 7523 §3, item 7). */
  readonly #seen = new Map<string, number>();

  constructor(jwksUrl: string | undefined) {
    this.setJwksUrl(jwksUrl);
  }

  setJwksUrl(url: string | undefined): void {
    // A short cooldown so a key rotated by credgate during a test is picked up quickly.
    this.#jwks =
      url === undefined ? undefined : createRemoteJWKSet(new URL(url), { cooldownDuration: 1000, timeoutDuration: 5000 });
  }

  /** The authenticated client id (the API identifier), or throws 401 `invalid_client`. */
  async verify(c: AssertionCheck): Promise<string> {
    const jwks = this.#jwks;
    if (jwks === undefined) throw invalidClient('No key is registered for the resource server');
    let claimedIssuer: unknown;
    try {
      claimedIssuer = decodeJwt(c.assertion).iss;
    } catch {
      throw invalidClient('The client assertion is not a JWT');
    }
    if (typeof claimedIssuer !== 'string' || !c.apis.has(claimedIssuer)) {
      throw invalidClient('The client assertion issuer is not a registered API');
    }
    let payload;
    try {
      ({ payload } = await jwtVerify(c.assertion, jwks, {
        issuer: claimedIssuer,
        subject: claimedIssuer,
        audience: [...c.audiences],
        algorithms: ALGORITHMS,
        requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti'],
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
      }));
    } catch {
      throw invalidClient('Invalid client assertion');
    }
    if (c.clientId !== undefined && c.clientId !== claimedIssuer) {
      throw invalidClient('client_id does not match the client assertion');
    }
    const { exp, iat, jti } = payload;
    if (typeof exp !== 'number' || typeof iat !== 'number' || typeof jti !== 'string' || jti === '') {
      throw invalidClient('Invalid client assertion');
    }
    const now = Math.floor(Date.now() / 1000);
    if (exp - iat > MAX_ASSERTION_LIFETIME_SECONDS || iat > now + CLOCK_TOLERANCE_SECONDS) {
      throw invalidClient('The client assertion lifetime is too long');
    }
    this.#forgetExpired(now);
    const key = `${claimedIssuer}|${jti}`;
    if (this.#seen.has(key)) throw invalidClient('The client assertion has already been used');
    this.#seen.set(key, exp + CLOCK_TOLERANCE_SECONDS);
    return claimedIssuer;
  }

  #forgetExpired(now: number): void {
    for (const [key, until] of this.#seen) {
      if (until < now) this.#seen.delete(key);
    }
  }
}
