import type { JWTVerifyOptions } from 'jose';

/**
 * The options credgate gave jose's `jwtVerify` for an access token before its own check (RS256,
 * `iss`, `aud`, 30 s clock tolerance, `exp` and `sub` required): what figure 6's jose alone and its
 * bare route with jose (`/bare/jose`) both verify with.
 */
export const joseOptions = (issuer: string, audience: string): JWTVerifyOptions => ({ issuer, audience, algorithms: ['RS256'], clockTolerance: 30, requiredClaims: ['exp', 'sub'] });
