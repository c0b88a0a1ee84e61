import { UpstreamError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { AccessTokenVerifier } from '../../upstream/accessToken.js';
import type { Introspection } from '../../upstream/introspection.js';
import type { PasswordGrant } from '../../upstream/passwordGrant.js';
import type { LoginLedger } from '../loginLedger.js';
import { scopesOf, splitScope, type ScopeClaim } from '../scopes.js';
import { loginNamesFrom, looksLikeJwt, usernameFrom, type Strategy, type StrategyContext } from '../strategy.js';
import type { Credentials, StrategyOutcome } from '../types.js';

export interface PasswordGrantOptions {
  readonly usernameClaims: readonly string[];
  readonly scopeClaims: readonly ScopeClaim[];
}

/** What credgate has learnt of an account's username from the AS (AccountDirectory). */
export interface CanonicalNames {
  canonicalName(subject: string): string | undefined;
}

/** Passwords that succeeded before, by credential key: the real user's way in while a budget is spent. */
export interface KnownPasswords {
  isKnownPassword(key: string): boolean;
  rememberPassword(key: string): void;
  forgetPassword(key: string): void;
}

const REJECTED: StrategyOutcome = Object.freeze({ kind: 'rejected_by_as' });

/**
 * The user's real password: the OAuth 2.0 password grant (RFC 6749 §4.3), behind login protection.
 * Every grant is reserved in the ledger before it is sent and settled when its answer is known, so
 * the AS never sees the account's budget of consecutive failures. The access token the AS issues is
 * verified like any other (locally if a JWT, by introspection if opaque), so subject, audience and
 * scopes always come from a checked token, never from the grant response alone.
 */
export class PasswordGrantStrategy implements Strategy {
  readonly name = 'password_grant';
  readonly costsLoginAttempt = true;

  constructor(
    private readonly options: PasswordGrantOptions,
    private readonly grant: PasswordGrant,
    private readonly accessTokens: AccessTokenVerifier,
    private readonly introspection: Introspection,
    private readonly ledger: LoginLedger,
    private readonly known: KnownPasswords,
    private readonly names: CanonicalNames,
    private readonly log: Logger,
  ) {}

  async authenticate(credentials: Credentials, { audience, endUserIp, deadline, credentialKey }: StrategyContext): Promise<StrategyOutcome> {
    if (credentials.kind !== 'basic') return { kind: 'not_mine' };
    const { username, password } = credentials;
    const knownGood = this.known.isKnownPassword(credentialKey);
    const admission = await this.ledger.admit(username, knownGood);
    if (!admission.admitted) return { kind: 'throttled', retryAfterSeconds: admission.retryAfterSeconds };

    let outcome;
    try {
      outcome = await this.grant.attempt(username, password, audience, endUserIp, deadline);
    } catch (err) {
      // Sent and unanswered: it may have counted at the AS, so it counts here.
      await this.ledger.settle(admission, err instanceof UpstreamError && !err.sent ? 'unsent' : 'failure');
      throw err;
    }
    if (!outcome.ok) {
      if (outcome.error === 'mfa_required') {
        // The password was right (the AS cleared its counter); the user just needs a second factor,
        // which a legacy client cannot give: an ASP may still let them in.
        await this.ledger.settle(admission, 'success');
        this.known.rememberPassword(credentialKey);
        return { kind: 'not_mine' };
      }
      await this.ledger.settle(admission, 'failure');
      this.known.forgetPassword(credentialKey);
      if (outcome.error === 'too_many_attempts' || outcome.error === 'access_denied' || outcome.error === 'unauthorized') {
        this.log.warn({ asError: outcome.error, asErrorDescription: outcome.description }, 'password grant refused by the authorization server');
      }
      return REJECTED;
    }
    let claims: Record<string, unknown> | null;
    try {
      if (looksLikeJwt(outcome.accessToken)) {
        claims = await this.accessTokens.verify(outcome.accessToken, audience);
      } else {
        const answer = await this.introspection.introspect(outcome.accessToken, deadline);
        const aud = answer.aud;
        claims = answer.active === true && (aud === audience || (Array.isArray(aud) && aud.includes(audience))) ? answer : null;
      }
    } catch (err) {
      // The AS accepted the password: its counter is clear, whatever happens to the token next.
      await this.ledger.settle(admission, 'success');
      throw err;
    }
    if (!claims || typeof claims.sub !== 'string') {
      await this.ledger.settle(admission, 'success');
      // The AS said yes but its token does not check out: a configuration fault, never an allow.
      throw new UpstreamError('the access token from the password grant did not verify (issuer, audience or keys misconfigured?)', 'token', 'bad_response');
    }
    await this.ledger.settle(admission, 'success', claims.sub);
    this.known.rememberPassword(credentialKey);
    const scopes = scopesOf(claims, this.options.scopeClaims);
    const subject = claims.sub;
    const named = await this.#asUsername(claims, subject, outcome.accessToken, deadline);
    return {
      kind: 'identity',
      identity: {
        subject,
        // Never the name typed (an alias or another spelling would pick another mailbox): the AS's
        // own claim, from the token or (when the token has none) from introspecting it.
        username: named.username,
        credential: 'password',
        scopes: scopes.length > 0 ? scopes : splitScope(outcome.scope),
        audience,
        expiresAt: typeof claims.exp === 'number' ? claims.exp : outcome.expiresIn !== undefined ? Math.floor(Date.now() / 1000) + outcome.expiresIn : undefined,
      },
      loginNames: [username, ...named.loginNames],
    };
  }

  /**
   * The AS's username for the account: the token's claim; else one learnt before for this subject;
   * else the claim introspection gives for the issued token (Auth0 access tokens carry none unless
   * an Action adds it). Best effort: without one, the identity has no username (HTTP still has the
   * subject; mail refuses it).
   */
  async #asUsername(claims: Record<string, unknown>, subject: string, accessToken: string, deadline: StrategyContext['deadline']): Promise<{ username: string | undefined; loginNames: string[] }> {
    const { usernameClaims } = this.options;
    const fromToken = usernameFrom(claims, usernameClaims);
    if (fromToken !== undefined) return { username: fromToken, loginNames: loginNamesFrom(claims, usernameClaims) };
    const known = this.names.canonicalName(subject);
    if (known !== undefined || !looksLikeJwt(accessToken)) return { username: known, loginNames: [] };
    try {
      const answer = await this.introspection.introspect(accessToken, deadline);
      if (answer.active !== true || answer.sub !== subject) return { username: undefined, loginNames: [] };
      return { username: usernameFrom(answer, usernameClaims), loginNames: loginNamesFrom(answer, usernameClaims) };
    } catch (err) {
      this.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'could not introspect the password grant\'s token for the account\'s username: the identity has none');
      return { username: undefined, loginNames: [] };
    }
  }
}
