/** Scopes granted whatever the user's permissions, when requested (OIDC Core §5.4, §11). */
const OIDC_SCOPES = new Set(['openid', 'profile', 'email', 'offline_access']);

export interface Grant {
  /** Space-separated, in the order requested. */
  readonly scope: string;
  readonly scopes: readonly string[];
  /** Auth0's `permissions` claim: with RBAC, every permission the user holds for the API, whatever
   * scope was requested (which is why credgate reads it only when told to, `scopeClaims`). */
  readonly permissions: readonly string[];
}

export function splitScope(scope: string | undefined): string[] {
  if (scope === undefined) return [];
  return [...new Set(scope.split(/[ \t\r\n]+/).filter((s) => s !== ''))];
}

/**
 * Auth0 RBAC with "Add Permissions in the Access Token": the granted scopes are the requested
 * ones the user holds as permissions, plus requested OIDC scopes; nothing requested means all
 * of the user's permissions.
 */
export function grantScopes(requested: string | undefined, permissions: readonly string[]): Grant {
  const asked = splitScope(requested);
  const held = new Set(permissions);
  const apiScopes = asked.filter((s) => !OIDC_SCOPES.has(s));
  const granted =
    apiScopes.length === 0 && !asked.some((s) => OIDC_SCOPES.has(s))
      ? [...permissions]
      : asked.filter((s) => OIDC_SCOPES.has(s) || held.has(s));
  return { scope: granted.join(' '), scopes: granted, permissions: [...permissions] };
}
