import type { ScopeStrategy } from './scopes.js';

/** What a client presented. Produced by an HTTP adapter; the verifier never sees raw headers. */
export type Credentials =
  | { readonly kind: 'basic'; readonly username: string; readonly password: string }
  | { readonly kind: 'bearer'; readonly token: string };

/** The introspection `token_type` Auth0 gives app-specific passwords. */
export const APP_PASSWORD_TOKEN_TYPE = 'application_specific_password_token';

/** How the credential was proven: the value of `X-Auth-Credential` and of `credential` in JSON. */
export type CredentialType = 'password' | 'app_password' | 'access_token';

/** Who the authorization server says the caller is. Never built from what the client typed alone. */
export interface Identity {
  /** The AS's `sub`. */
  readonly subject: string;
  /** The username: the Basic username the AS accepted, or the token's username claim. */
  readonly username: string | undefined;
  readonly credential: CredentialType;
  readonly scopes: readonly string[];
  readonly audience: string;
  /** Epoch seconds; undefined for an ASP that never expires. */
  readonly expiresAt: number | undefined;
}

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

export interface Decision {
  readonly allow: boolean;
  /** The HTTP status this decision means on `/auth`. */
  readonly status: 200 | 400 | 401 | 403 | 429 | 503;
  readonly reason: Reason;
  readonly identity?: Identity;
  readonly missingScopes?: readonly string[];
  readonly retryAfterSeconds?: number;
  readonly cached: boolean;
}

/** What the request needs and where it came from. */
export interface RequestContext {
  /** Scopes the request needs (policy, `?scope=`, or the `scopes` field). */
  readonly requiredScopes: readonly string[];
  /** Audience the credential must be for; default the configured one. */
  readonly audience?: string;
  /** How granted scopes satisfy `requiredScopes`; default `exact`. */
  readonly scopeStrategy?: ScopeStrategy;
  /** The policy rule that set the requirements, for the decision log. */
  readonly rule?: string;
  /** The direct peer or reported client address, for logs. */
  readonly clientIp?: string;
  /** The end user's own IP, only when credgate knows it is theirs (the `clientIp` of `/v1/verify`,
   * or forwarded headers from a trusted proxy): used for per-IP throttling and `auth0-forwarded-for`.
   * Never a proxy's address, or one proxy would throttle every user behind it. */
  readonly endUserIp?: string;
}
