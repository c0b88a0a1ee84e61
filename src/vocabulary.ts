/**
 * The words every layer shares — configuration, metrics, policy, the verifier — defined once at the
 * bottom of the tree, so that none of them has to import another layer for a constant.
 */

/** RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). */
export const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

/** Claims a token's granted scopes may be read from (`scopeClaims`). */
export const SCOPE_CLAIMS = ['scope', 'scp', 'permissions'] as const;
export type ScopeClaim = (typeof SCOPE_CLAIMS)[number];
/** The default: what the token was narrowed to. Auth0's `permissions` lists every permission the user
 * holds whatever scope was requested, so a token issued for `read:repo` would pass a `write:repo` rule. */
export const DEFAULT_SCOPE_CLAIMS: readonly ScopeClaim[] = ['scope', 'scp'];

/**
 * How a granted scope satisfies a required one (the names Ory Oathkeeper uses):
 * - `exact`: only the same string;
 * - `hierarchic`: a granted scope also covers everything below it, segments split on `:`
 *   (`repo` grants `repo:read` and `repo:read:issues`, not `repository`);
 * - `wildcard`: a granted `*` segment stands for any one segment, and a trailing `*` for one or
 *   more (`repo:*` grants `repo:read`; `*:repo` grants `read:repo` and `write:repo`).
 * The strategy applies to what the token grants; required scopes are always taken literally.
 */
export const SCOPE_STRATEGIES = ['exact', 'hierarchic', 'wildcard'] as const;
export type ScopeStrategy = (typeof SCOPE_STRATEGIES)[number];

/** The introspection `token_type` Auth0 gives app-specific passwords. */
export const APP_PASSWORD_TOKEN_TYPE = 'application_specific_password_token';

/** How the credential was proven: the value of `X-Auth-Credential` and of `credential` in JSON. */
export const CREDENTIAL_TYPES = ['password', 'app_password', 'access_token'] as const;
export type CredentialType = (typeof CREDENTIAL_TYPES)[number];

/** Stable snake_case reasons: used unchanged in JSON answers, log lines and metric labels. */
export const REASONS = [
  'ok',
  'missing_credentials',
  'malformed_credentials',
  'invalid_credentials',
  'insufficient_scope',
  'denied_by_policy',
  'throttled',
  'upstream_unavailable',
] as const;
export type Reason = (typeof REASONS)[number];
