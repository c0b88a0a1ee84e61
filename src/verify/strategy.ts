import type { Deadline } from '../upstream/deadline.js';
import type { Credentials, StrategyOutcome } from './types.js';

/** What every strategy is told about the decision it serves. */
export interface StrategyContext {
  readonly audience: string;
  /** The end user's IP, only when it is known to be theirs (never a proxy's address). */
  readonly endUserIp: string | undefined;
  /** The decision's deadline, handed to every call to the AS (absent outside a decision). */
  readonly deadline?: Deadline;
  /** The credential's cache key (an HMAC): names it in memories without holding it. */
  readonly credentialKey: string;
}

/** Strategy names, as configured (`strategyOrder`) and logged. */
export const STRATEGY_NAMES = ['password_grant', 'app_password', 'token'] as const;
export type StrategyName = (typeof STRATEGY_NAMES)[number];

/**
 * One way of proving a credential (see StrategyOutcome). A thrown UpstreamError means "could not
 * ask"; any other exception is a bug and is treated like "could not ask".
 */
export interface Strategy {
  readonly name: StrategyName;
  /** Whether trying it may count as a failed login at the AS (the password grant): such a strategy
   * never runs after an earlier one could not ask, because the credential may have been valid there. */
  readonly costsLoginAttempt: boolean;
  authenticate(credentials: Credentials, context: StrategyContext): Promise<StrategyOutcome>;
}

/** Compact JWS shape (RFC 7515 §7.1) whose header is a JSON object naming an `alg`. */
export function looksLikeJwt(value: string): boolean {
  if (value.length > 16_384 || !/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(value)) return false;
  try {
    const header: unknown = JSON.parse(Buffer.from(value.slice(0, value.indexOf('.')), 'base64url').toString('utf8'));
    return typeof header === 'object' && header !== null && typeof (header as { alg?: unknown }).alg === 'string';
  } catch {
    return false;
  }
}

/** ASCII letters folded to lower case; everything else as it is. */
function foldAscii(value: string): string {
  return value.replace(/[A-Z]+/g, (s) => s.toLowerCase());
}

/**
 * Whether the name a client typed names the account whose claim is `claimed` (binding an ASP or a
 * token to the Basic username). Exact, except that ASCII letters compare case-insensitively (as
 * e-mail addresses and Auth0/Keycloak usernames do). No Unicode normalisation and no non-ASCII case
 * folding: `jos\u00e9` and `jose\u0301`, or `STRASSE` and `straße`, may be two accounts at the AS, and
 * a credential of one must never be accepted under the other's name. The decision then reports the
 * claim, never the typed spelling.
 */
export function namesAccount(typed: string, claimed: string): boolean {
  return typed === claimed || foldAscii(typed) === foldAscii(claimed);
}

/**
 * Which account at the AS a typed login name reaches, as far as credgate can tell without asking:
 * names equal up to ASCII case (`namesAccount`) reach one account. Login protection keys its
 * failures by `ledgerName` (broad) but remembers each failure's class, so that a success clears only
 * failures the AS counted for the account that succeeded (not those of a look-alike account's name).
 */
export function loginClass(username: string): string {
  return foldAscii(username);
}

const IGNORABLE = /\p{Default_Ignorable_Code_Point}/gu;
const MARKS = /\p{M}/gu;
const SPACES = /\p{White_Space}+/gu;

/**
 * The key a login name is counted under by login protection: broader than any AS's own matching,
 * so that every spelling an AS could take for one account shares its budget:
 * - compatibility forms (NFKD: `ａｌｉｃｅ`, `ﬁ`);
 * - invisible characters dropped (default-ignorable code points: soft hyphen, zero-width space and
 *   joiners, word joiner, BOM), as LDAP's string preparation (RFC 4518) drops them;
 * - combining marks dropped (`àlice`, `jose\u0301`), as accent-insensitive collations match;
 * - white space trimmed and runs of it made one space (`alice `), as SQL's PAD SPACE collations and
 *   LDAP compare;
 * - case folded both ways (`ALICE`, `STRASSE`/`straße`, `ALİCE`).
 * Failures keep the typed spelling's `loginClass`, so a success still clears only its own account's.
 */
export function ledgerName(username: string): string {
  const bare = username.normalize('NFKD').replace(IGNORABLE, '').replace(MARKS, '').replace(SPACES, ' ').trim();
  return bare.toUpperCase().toLowerCase().normalize('NFKC');
}

/** The first of `claims` present as a string in `source` ("first present wins"). */
export function usernameFrom(source: Record<string, unknown>, claims: readonly string[]): string | undefined {
  for (const claim of claims) {
    const value = source[claim];
    if (value !== undefined) return typeof value === 'string' && value.length > 0 ? value : undefined;
  }
  return undefined;
}

/** Every configured username claim present as a non-empty string: the names the account logs in by. */
export function loginNamesFrom(source: Record<string, unknown>, claims: readonly string[]): string[] {
  return claims.map((c) => source[c]).filter((v): v is string => typeof v === 'string' && v.length > 0);
}
