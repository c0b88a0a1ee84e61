import type { Config } from '../../config/schema.js';
import type { Introspection } from '../../upstream/introspection.js';
import type { AuthorizationServerMetadata } from '../../upstream/metadata.js';
import { identityFromIntrospection } from '../introspectionRules.js';
import type { Strategy, StrategyContext } from '../strategy.js';
import type { Credentials, Identity } from '../types.js';

/** The password as an app-specific password (or another token): RFC 7662 introspection, bound to the Basic username. */
export class AppPasswordStrategy implements Strategy {
  readonly name = 'app_password';

  constructor(
    private readonly config: Config,
    private readonly introspection: Introspection,
    private readonly metadata: AuthorizationServerMetadata,
  ) {}

  async authenticate(credentials: Credentials, { audience, deadline }: StrategyContext): Promise<Identity | null> {
    const bound = credentials.kind === 'basic';
    const token = credentials.kind === 'basic' ? credentials.password : credentials.token;
    const answer = await this.introspection.introspect(token, deadline);
    return identityFromIntrospection(answer, {
      audience,
      issuer: this.metadata.current!.issuer,
      acceptedTokenTypes: this.config.acceptedTokenTypes,
      usernameClaims: this.config.usernameClaims,
      clockToleranceSeconds: this.config.clockToleranceSeconds,
      username: bound ? credentials.username : undefined,
      now: Math.floor(Date.now() / 1000),
    });
  }
}
