import type { Introspection } from '../../upstream/introspection.js';
import type { AuthorizationServerMetadata } from '../../upstream/metadata.js';
import { outcomeOfIntrospection } from '../introspectionRules.js';
import type { ScopeClaim } from '../scopes.js';
import type { Strategy, StrategyContext } from '../strategy.js';
import type { Credentials, StrategyOutcome } from '../types.js';

export interface AppPasswordOptions {
  readonly acceptedTokenTypes: readonly string[];
  readonly usernameClaims: readonly string[];
  readonly scopeClaims: readonly ScopeClaim[];
  readonly clockToleranceSeconds: number;
}

/**
 * The password as an app-specific password (or another opaque token): RFC 7662 introspection,
 * bound to the Basic username. Introspecting costs no login attempt at the AS.
 */
export class AppPasswordStrategy implements Strategy {
  readonly name = 'app_password';
  readonly costsLoginAttempt = false;

  constructor(
    private readonly options: AppPasswordOptions,
    private readonly introspection: Introspection,
    private readonly metadata: AuthorizationServerMetadata,
  ) {}

  async authenticate(credentials: Credentials, { audience, deadline }: StrategyContext): Promise<StrategyOutcome> {
    const token = credentials.kind === 'basic' ? credentials.password : credentials.token;
    const answer = await this.introspection.introspect(token, deadline);
    return outcomeOfIntrospection(answer, {
      ...this.options,
      audience,
      issuer: this.metadata.current!.issuer,
      username: credentials.kind === 'basic' ? credentials.username : undefined,
      now: Math.floor(Date.now() / 1000),
    });
  }
}
