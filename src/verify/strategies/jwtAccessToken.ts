import type { AccessTokenVerifier } from '../../upstream/accessToken.js';
import { scopesOf, type ScopeClaim } from '../scopes.js';
import { loginNamesFrom, namesAccount, usernameFrom, type Strategy, type StrategyContext } from '../strategy.js';
import type { Credentials, StrategyOutcome } from '../types.js';

export interface JwtAccessTokenOptions {
  readonly usernameClaims: readonly string[];
  readonly scopeClaims: readonly ScopeClaim[];
}

/**
 * A JWT access token, as `Authorization: Bearer` or as the Basic password, verified locally.
 * Sent as a Basic password it must belong to that username (the configured username claims); a
 * valid token under another name is `refused`, never tried as a password.
 */
export class JwtAccessTokenStrategy implements Strategy {
  readonly name = 'token';
  readonly costsLoginAttempt = false;

  constructor(
    private readonly options: JwtAccessTokenOptions,
    private readonly accessTokens: AccessTokenVerifier,
  ) {}

  async authenticate(credentials: Credentials, { audience }: StrategyContext): Promise<StrategyOutcome> {
    const token = credentials.kind === 'basic' ? credentials.password : credentials.token;
    const claims = await this.accessTokens.verify(token, audience);
    if (!claims) return { kind: 'refused' };
    const claimed = usernameFrom(claims, this.options.usernameClaims);
    if (credentials.kind === 'basic' && (claimed === undefined || !namesAccount(credentials.username, claimed))) return { kind: 'refused' };
    return {
      kind: 'identity',
      identity: {
        subject: claims.sub!,
        username: claimed,
        credential: 'access_token',
        scopes: scopesOf(claims, this.options.scopeClaims),
        audience,
        expiresAt: claims.exp,
      },
      loginNames: loginNamesFrom(claims, this.options.usernameClaims),
    };
  }
}
