
/** What a client presented. Produced by an HTTP adapter; the verifier never sees raw headers. */
export type Credentials =
  | { readonly kind: 'basic'; readonly username: string; readonly password: string }
  | { readonly kind: 'bearer'; readonly token: string };

import type { CredentialType, Reason } from '../vocabulary.js';

export { APP_PASSWORD_TOKEN_TYPE, CREDENTIAL_TYPES, REASONS, type CredentialType, type Reason } from '../vocabulary.js';

/** Who the authorization server says the caller is. Never built from what the client typed alone. */
export interface Identity {
  /** The AS's `sub`. */
  readonly subject: string;
  /**
   * The canonical username: the AS's own claim (`usernameClaims`, first present), never a spelling
   * the client chose. For a password login whose token carries no such claim, the login name the AS
   * authenticated, exactly as sent (the AS, not credgate, matched it to this subject). Undefined for
   * a token with no username claim.
   */
  readonly username: string | undefined;
  readonly credential: CredentialType;
  readonly scopes: readonly string[];
  readonly audience: string;
  /** Epoch seconds; undefined for an ASP that never expires. */
  readonly expiresAt: number | undefined;
}

export interface Decision {
  readonly allow: boolean;
  /** For the log: the policy rule that set the requirements. */
  readonly rule?: string;
  /** For the log only: why a request was refused before its credentials were checked (never secret). */
  readonly detail?: string;
  /** The HTTP status this decision means on `/auth`. */
  readonly status: 200 | 400 | 401 | 403 | 429 | 503;
  readonly reason: Reason;
  readonly identity?: Identity;
  readonly missingScopes?: readonly string[];
  readonly retryAfterSeconds?: number;
  readonly cached: boolean;
  /** A signed identity token for the service behind the request, and the header it travels in. */
  readonly identityToken?: { readonly header: string; readonly value: string };
}

/**
 * What one strategy made of a credential (Oathkeeper's authenticator chain):
 * - `identity`: proven; the chain stops with an allow (scopes still to check);
 * - `not_mine`: not valid this way; the next strategy may try;
 * - `refused`: recognisably this strategy's kind of credential (an active token for another user or
 *   audience) and not valid here: the chain stops with a denial, so it never reaches the password grant;
 * - `throttled`: not tried, the account's login budget is spent; later strategies may still allow;
 * - `rejected_by_as`: the AS itself said this password is wrong: it counts as a failure, and no stale
 *   identity may ever answer for it.
 * A thrown UpstreamError is "could not ask".
 */
export type StrategyOutcome =
  | { readonly kind: 'identity'; readonly identity: Identity; readonly loginNames: readonly string[] }
  | { readonly kind: 'not_mine' | 'refused' | 'rejected_by_as' }
  | { readonly kind: 'throttled'; readonly retryAfterSeconds: number };
