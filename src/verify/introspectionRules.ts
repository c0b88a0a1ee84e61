import { APP_PASSWORD_TOKEN_TYPE, type Identity } from './types.js';
import { scopesOf } from './scopes.js';
import { sameUsername, usernameFrom } from './strategy.js';

export interface IntrospectionRules {
  readonly audience: string;
  readonly issuer: string;
  readonly acceptedTokenTypes: readonly string[];
  readonly usernameClaims: readonly string[];
  readonly clockToleranceSeconds: number;
  /** The Basic username the token must belong to; undefined for a Bearer token (no binding). */
  readonly username: string | undefined;
  readonly now: number;
}

/**
 * Applies SPEC's decision rules to an RFC 7662 answer. Starts from "no" and only a fully checked
 * answer yields an Identity: `active` is the boolean true, the token type is an accepted one
 * (never a refresh token), `aud` includes the audience, not expired or not yet valid, `iss` (when
 * given) is the issuer, `sub` present, and — for a Basic username — the username claim matches.
 */
export function identityFromIntrospection(answer: Record<string, unknown>, rules: IntrospectionRules): Identity | null {
  if (answer.active !== true) return null;
  const type = answer.token_type;
  if (typeof type !== 'string' || type === 'refresh_token' || !rules.acceptedTokenTypes.includes(type)) return null;
  const sub = answer.sub;
  if (typeof sub !== 'string' || sub.length === 0) return null;
  const aud = answer.aud;
  const audiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
  if (!audiences.includes(rules.audience)) return null;
  if (answer.iss !== undefined && answer.iss !== rules.issuer) return null;
  const { exp, nbf } = answer;
  if (exp !== undefined && (typeof exp !== 'number' || exp <= rules.now)) return null;
  if (nbf !== undefined && (typeof nbf !== 'number' || nbf > rules.now + rules.clockToleranceSeconds)) return null;
  const claimedUsername = usernameFrom(answer, rules.usernameClaims);
  if (rules.username !== undefined && (claimedUsername === undefined || !sameUsername(claimedUsername, rules.username))) return null;
  return {
    subject: sub,
    username: rules.username ?? claimedUsername,
    credential: type === APP_PASSWORD_TOKEN_TYPE ? 'app_password' : 'access_token',
    scopes: scopesOf(answer),
    audience: rules.audience,
    expiresAt: typeof exp === 'number' ? exp : undefined,
  };
}
