import type { Config } from '../../config/schema.js';
import type { AccessTokenVerifier } from '../../upstream/accessToken.js';
import { scopesOf } from '../scopes.js';
import { sameUsername, usernameFrom, type Strategy, type StrategyContext } from '../strategy.js';
import type { Credentials, Identity } from '../types.js';

/**
 * A JWT access token, as `Authorization: Bearer` or as the Basic password, verified locally.
 * Sent as a Basic password it must belong to that username (the configured username claims).
 */
export class JwtAccessTokenStrategy implements Strategy {
  readonly name = 'token';

  constructor(
    private readonly config: Config,
    private readonly accessTokens: AccessTokenVerifier,
  ) {}

  async authenticate(credentials: Credentials, { audience }: StrategyContext): Promise<Identity | null> {
    const token = credentials.kind === 'basic' ? credentials.password : credentials.token;
    const claims = await this.accessTokens.verify(token, audience);
    if (!claims) return null;
    const claimedUsername = usernameFrom(claims, this.config.usernameClaims);
    if (credentials.kind === 'basic' && (claimedUsername === undefined || !sameUsername(claimedUsername, credentials.username))) return null;
    return {
      subject: claims.sub!,
      username: credentials.kind === 'basic' ? credentials.username : claimedUsername,
      credential: 'access_token',
      scopes: scopesOf(claims),
      audience,
      expiresAt: claims.exp,
    };
  }
}
