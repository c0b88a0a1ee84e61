// How a service behind credgate checks the identity token credgate signed for it (policy rule
// `identityToken`), instead of trusting plain X-Auth-* headers. Needs only `jose`.
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose';

export interface CredgateIdentity extends JWTPayload {
  /** The AS's subject. */
  sub: string;
  /** Scopes granted, space-separated. */
  scope: string;
  /** password, app_password or access_token. */
  credential: string;
  /** The AS's username for the account, when it has one. */
  username?: string;
}

/**
 * `jwksUrl`: credgate's `/.well-known/jwks.json`; `issuer`: credgate's `identityIssuer`;
 * `audience`: this service's name, as the policy rule's `identityToken.audience` says.
 * The returned function rejects (throws) a token for another audience, an expired one, one signed by
 * a key credgate no longer publishes, and anything else that is not credgate's.
 */
export function identityTokenVerifier(jwksUrl: string, issuer: string, audience: string): (token: string) => Promise<CredgateIdentity> {
  const jwks = createRemoteJWKSet(new URL(jwksUrl));
  return async (token) => {
    const { payload } = await jwtVerify(token, jwks, { issuer, audience, algorithms: ['EdDSA', 'ES256'], requiredClaims: ['sub', 'exp', 'iat', 'jti'] });
    return payload as CredgateIdentity;
  };
}
