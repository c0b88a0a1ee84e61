import { UpstreamError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { AccessTokenVerifier } from '../../upstream/accessToken.js';
import type { Introspection } from '../../upstream/introspection.js';
import type { PasswordGrant } from '../../upstream/passwordGrant.js';
import { scopesOf, splitScope } from '../scopes.js';
import { looksLikeJwt, type Strategy, type StrategyContext } from '../strategy.js';
import type { Credentials, Identity } from '../types.js';

/**
 * The user's real password: the OAuth 2.0 password grant. The access token the AS issues is
 * verified like any other (locally if a JWT, by introspection if opaque) so that the subject,
 * audience and scopes always come from a checked token, never from the grant response alone.
 */
export class PasswordGrantStrategy implements Strategy {
  readonly name = 'password_grant';

  constructor(
    private readonly grant: PasswordGrant,
    private readonly accessTokens: AccessTokenVerifier,
    private readonly introspection: Introspection,
    private readonly log: Logger,
  ) {}

  async authenticate(credentials: Credentials, { audience, endUserIp, deadline }: StrategyContext): Promise<Identity | null> {
    if (credentials.kind !== 'basic') return null;
    const outcome = await this.grant.attempt(credentials.username, credentials.password, audience, endUserIp, deadline);
    if (!outcome.ok) {
      // too_many_attempts: the AS has blocked this user from credgate's address. Not a user error
      // credgate may reveal; the next strategy still runs and a denial stays uniform.
      if (outcome.error === 'too_many_attempts' || outcome.error === 'access_denied' || outcome.error === 'unauthorized') {
        this.log.warn({ asError: outcome.error, asErrorDescription: outcome.description }, 'password grant refused by the authorization server');
      }
      return null;
    }
    let claims: Record<string, unknown> | null;
    if (looksLikeJwt(outcome.accessToken)) {
      claims = await this.accessTokens.verify(outcome.accessToken, audience);
    } else {
      const answer = await this.introspection.introspect(outcome.accessToken, deadline);
      const aud = answer.aud;
      claims = answer.active === true && (aud === audience || (Array.isArray(aud) && aud.includes(audience))) ? answer : null;
    }
    if (!claims || typeof claims.sub !== 'string') {
      // The AS said yes but its token does not check out: a configuration fault, never an allow.
      throw new UpstreamError('the access token from the password grant did not verify (issuer, audience or keys misconfigured?)', 'token', 'bad_response');
    }
    const scopes = scopesOf(claims);
    return {
      subject: claims.sub,
      username: credentials.username,
      credential: 'password',
      scopes: scopes.length > 0 ? scopes : splitScope(outcome.scope),
      audience,
      expiresAt: typeof claims.exp === 'number' ? claims.exp : outcome.expiresIn !== undefined ? Math.floor(Date.now() / 1000) + outcome.expiresIn : undefined,
    };
  }
}
