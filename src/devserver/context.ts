import type { ClientAssertionVerifier } from './client-assertion.js';
import type { LoginLockout } from './lockout.js';
import type { OpaqueTokenStore } from './opaque-tokens.js';
import type { SigningKey } from './signing.js';
import type { DevClient } from './types.js';
import type { UserDirectory } from './users.js';

export const DEFAULT_GRANT_TYPES: readonly string[] = Object.freeze([
  'password',
  'http://auth0.com/oauth/grant-type/password-realm',
]);

/** Everything the routes share. `issuer` is known only once the server listens. */
export interface DevContext {
  issuer: string;
  readonly audience: string;
  /** `audience` and `extraAudiences`: the registered APIs. */
  readonly apis: ReadonlySet<string>;
  readonly clients: ReadonlyMap<string, Readonly<DevClient>>;
  readonly resourceServerClientSecret: string | undefined;
  readonly accessTokenTtlSeconds: number;
  readonly users: UserDirectory;
  readonly tokens: OpaqueTokenStore;
  readonly lockout: LoginLockout;
  readonly signingKey: SigningKey;
  readonly assertions: ClientAssertionVerifier;
  /** `servingSeconds`: see DevStats. */
  readonly counters: { tokenRequests: number; introspectionRequests: number; servingSeconds: number };
}

export function tokenEndpoint(ctx: DevContext): string {
  return `${ctx.issuer}oauth/token`;
}

export function introspectionEndpoint(ctx: DevContext): string {
  return `${ctx.issuer}oauth/introspect`;
}
