import type { Config } from '../../config/schema.js';
import type { Logger } from '../../log.js';
import type { AccessTokenVerifier } from '../../upstream/accessToken.js';
import type { Introspection } from '../../upstream/introspection.js';
import type { AuthorizationServerMetadata } from '../../upstream/metadata.js';
import type { PasswordGrant } from '../../upstream/passwordGrant.js';
import type { LoginLedger } from '../loginLedger.js';
import type { Strategy, StrategyName } from '../strategy.js';
import { AppPasswordStrategy } from './appPassword.js';
import { JwtAccessTokenStrategy } from './jwtAccessToken.js';
import { PasswordGrantStrategy, type CanonicalNames, type KnownPasswords } from './passwordGrant.js';

/** What strategies may be built from: the upstream clients and the shared memories, never more. */
export interface StrategyDeps {
  readonly config: Config;
  readonly grant: PasswordGrant;
  readonly introspection: Introspection;
  readonly accessTokens: AccessTokenVerifier;
  readonly metadata: AuthorizationServerMetadata;
  readonly ledger: LoginLedger;
  readonly knownPasswords: KnownPasswords;
  readonly names: CanonicalNames;
  readonly log: Logger;
}

/**
 * Every strategy, by the name configuration and logs use. Each picks its own narrow options out of
 * the configuration here; no strategy holds the whole of it. A new strategy is one file and one line.
 */
export const STRATEGIES: { readonly [N in StrategyName]: (deps: StrategyDeps) => Strategy } = {
  password_grant: ({ config, grant, accessTokens, introspection, ledger, knownPasswords, names, log }) =>
    new PasswordGrantStrategy({ usernameClaims: config.usernameClaims, scopeClaims: config.scopeClaims }, grant, accessTokens, introspection, ledger, knownPasswords, names, log),
  app_password: ({ config, introspection, metadata }) =>
    new AppPasswordStrategy(
      { acceptedTokenTypes: config.acceptedTokenTypes, usernameClaims: config.usernameClaims, scopeClaims: config.scopeClaims, clockToleranceSeconds: config.clockToleranceSeconds },
      introspection,
      metadata,
    ),
  token: ({ config, accessTokens }) => new JwtAccessTokenStrategy({ usernameClaims: config.usernameClaims, scopeClaims: config.scopeClaims }, accessTokens),
};

export function buildStrategies(deps: StrategyDeps): Readonly<Record<StrategyName, Strategy>> {
  return Object.fromEntries(Object.entries(STRATEGIES).map(([name, make]) => [name, make(deps)])) as Record<StrategyName, Strategy>;
}
