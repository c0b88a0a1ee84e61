import { APP_PASSWORD_TOKEN_TYPE, type StrategyOutcome } from './types.js';
import { scopesOf, type ScopeClaim } from './scopes.js';
import { loginNamesFrom, namesAccount, usernameFrom } from './strategy.js';

export interface IntrospectionRules {
  readonly audience: string;
  readonly issuer: string;
  readonly acceptedTokenTypes: readonly string[];
  readonly usernameClaims: readonly string[];
  readonly scopeClaims: readonly ScopeClaim[];
  readonly clockToleranceSeconds: number;
  /** The Basic username the token must belong to; undefined for a Bearer token (no binding). */
  readonly username: string | undefined;
  readonly now: number;
}

const NOT_MINE: StrategyOutcome = Object.freeze({ kind: 'not_mine' });
const REFUSED: StrategyOutcome = Object.freeze({ kind: 'refused' });

/**
 * Applies the decision rules to an RFC 7662 answer. Starts from "no" (as oidc-provider's
 * introspection does) and only a fully checked answer yields an identity: `active` is the boolean
 * true, the token type is an accepted one (never a refresh token), `aud` includes the audience, not
 * expired or not yet valid, `iss` (when given) is the issuer, `sub` present, and, for a Basic
 * username, the username claim names that account (`namesAccount`).
 *
 * An inactive token is `not_mine` (it may still be a password); an ACTIVE token that fails any rule
 * is `refused`: it is a real token or ASP, just not valid for this user or audience, so it must not
 * be tried as a password (which would count as a failed login at the AS).
 */
export function outcomeOfIntrospection(answer: Record<string, unknown>, rules: IntrospectionRules): StrategyOutcome {
  if (answer.active !== true) return NOT_MINE;
  const type = answer.token_type;
  if (typeof type !== 'string' || type === 'refresh_token' || !rules.acceptedTokenTypes.includes(type)) return REFUSED;
  const sub = answer.sub;
  if (typeof sub !== 'string' || sub.length === 0) return REFUSED;
  const aud = answer.aud;
  const audiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
  if (!audiences.includes(rules.audience)) return REFUSED;
  if (answer.iss !== undefined && answer.iss !== rules.issuer) return REFUSED;
  const { exp, nbf } = answer;
  if (exp !== undefined && (typeof exp !== 'number' || exp <= rules.now)) return REFUSED;
  if (nbf !== undefined && (typeof nbf !== 'number' || nbf > rules.now + rules.clockToleranceSeconds)) return REFUSED;
  const claimed = usernameFrom(answer, rules.usernameClaims);
  if (rules.username !== undefined && (claimed === undefined || !namesAccount(rules.username, claimed))) return REFUSED;
  return {
    kind: 'identity',
    identity: {
      subject: sub,
      username: claimed,
      credential: type === APP_PASSWORD_TOKEN_TYPE ? 'app_password' : 'access_token',
      scopes: scopesOf(answer, rules.scopeClaims),
      audience: rules.audience,
      expiresAt: typeof exp === 'number' ? exp : undefined,
    },
    loginNames: loginNamesFrom(answer, rules.usernameClaims),
  };
}
