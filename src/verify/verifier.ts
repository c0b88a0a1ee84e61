import { UpstreamError } from '../errors.js';
import { deadlineIn, type Deadline } from '../upstream/deadline.js';
import type { Health } from '../health.js';
import type { Logger } from '../log.js';
import type { AccountDirectory } from './accounts.js';
import type { CredentialCache } from './cache.js';
import type { LoginLedger } from './loginLedger.js';
import { missingScopes, type ScopeStrategy } from './scopes.js';
import type { SharedMemory } from './shared.js';
import { looksLikeJwt, type Strategy, type StrategyName } from './strategy.js';
import type { StaleIdentities } from './staleIdentities.js';
import type { FailureThrottle } from './throttle.js';
import type { Credentials, Decision, Identity } from './types.js';

export interface VerifierOptions {
  readonly defaultAudience: string;
  /** Basic-password order for a credential not recognised as an ASP. */
  readonly strategyOrder: readonly Exclude<StrategyName, 'token'>[];
  /** Passwords matching this are introspected first; undefined: no shape rule. */
  readonly appPasswordPattern: RegExp | undefined;
  /** Lower-cased Basic usernames that mean "the password is a token" (`x-access-token`, `oauth2`, …). */
  readonly tokenUsernames: ReadonlySet<string>;
  /** Longest a decision that has to ask the AS may take, ms; then `upstream_unavailable`. */
  readonly decisionTimeoutMs: number;
  /** Stale-if-error store; undefined when `staleIfErrorSeconds` is 0. */
  readonly staleIdentities?: StaleIdentities;
}

/** What a verification needs besides the credentials (the pipeline's verdict on the request). */
export interface VerifyContext {
  readonly requiredScopes: readonly string[];
  /** Audience the credential must be for; default the configured one. */
  readonly audience?: string;
  readonly scopeStrategy?: ScopeStrategy;
  /** The end user's own IP, only when credgate knows it is theirs: per-IP throttling and `auth0-forwarded-for`. */
  readonly endUserIp?: string;
}

/** What the verifier reports as it works (the service counts them as metrics). */
export interface VerifierEvents {
  cacheLookup(result: 'hit' | 'negative_hit' | 'miss'): void;
  /** A request waited for an identical one already asking the AS. */
  coalesced(): void;
  /** A decision answered `throttled`. */
  throttled(): void;
  /** The decision deadline passed before the AS answered. */
  decisionTimeout(): void;
  /** A stale identity answered while the AS could not be asked. */
  staleServed(): void;
}

/** Registered strategies by name. */
export type Strategies = Readonly<Record<StrategyName, Strategy>>;

const DENIED: Decision = Object.freeze({ allow: false, status: 401, reason: 'invalid_credentials', cached: false });
const DENIED_CACHED: Decision = Object.freeze({ ...DENIED, cached: true });
const UNAVAILABLE: Decision = Object.freeze({ allow: false, status: 503, reason: 'upstream_unavailable', cached: false });

/** How a strategy run ended. `rejectedByAs`: the AS itself said the password is wrong at some step. */
type FlightResult =
  | { readonly kind: 'identity'; readonly identity: Identity; readonly loginNames: readonly string[]; readonly strategy: StrategyName }
  | { readonly kind: 'denied' | 'unavailable'; readonly rejectedByAs: boolean }
  | { readonly kind: 'throttled'; readonly retryAfterSeconds: number };
/** The decision's deadline passed before the flight ended. */
type Waited = FlightResult | 'deadline';

const UNAVAILABLE_RESULT: FlightResult = Object.freeze({ kind: 'unavailable', rejectedByAs: false });

/**
 * Credentials + what the request needs → Decision.
 *
 * 1. A cached identity for exactly these credentials (the username as typed) answers at once,
 *    scopes still checked per request; a cached known-wrong credential is denied at once.
 * 2. Per end-user IP, too many recent failures answer `throttled` without asking the AS, except for
 *    a credential known to be good (a remembered ASP or a password that succeeded before).
 * 3. Strategies run in order (concurrent identical requests share one run): an identity wins;
 *    `not_mine` moves on; `refused` (a real token or ASP, not valid here) stops with a denial;
 *    `throttled` (the account's login budget is spent, see loginLedger.ts) moves on, and is the answer
 *    if nothing later allows. After an upstream failure, no strategy that costs a login attempt runs:
 *    the credential may have been a valid ASP. An upstream failure with no allow is 503: fail closed.
 * 4. The whole of step 3 has `decisionTimeoutMs`.
 * 5. Stale-if-error (off by default): when step 3 could not ask the AS, an identity verified recently
 *    enough may still answer; never when the AS said the credential is wrong.
 */
export class Verifier {
  readonly #inFlight = new Map<string, Promise<FlightResult>>();

  constructor(
    private readonly strategies: Strategies,
    private readonly cache: CredentialCache,
    private readonly ipThrottle: FailureThrottle,
    private readonly ledger: LoginLedger,
    private readonly accounts: AccountDirectory,
    private readonly options: VerifierOptions,
    private readonly events: VerifierEvents,
    private readonly health: Health,
    private readonly log: Logger,
    /** State shared with other replicas (Redis); undefined: this process decides alone. */
    private readonly shared?: SharedMemory,
  ) {}

  /**
   * Strategy order for these credentials. A JWT-shaped secret is only ever verified as a token; a
   * remembered ASP is only introspected; an ASP-shaped password is introspected before it is tried
   * as a password, so using an ASP never counts as a failed login at the AS, unless it has already
   * succeeded as a password (a long generated password): then the grant goes first and the
   * introspection it would always lose is not sent.
   */
  order(credentials: Credentials, key: string): Strategy[] {
    const { password_grant, app_password, token } = this.strategies;
    const secret = credentials.kind === 'basic' ? credentials.password : credentials.token;
    if (looksLikeJwt(secret)) return [token];
    if (credentials.kind === 'bearer' || this.cache.isKnownAppPassword(key)) return [app_password];
    if (this.options.appPasswordPattern?.test(secret) && !this.cache.isKnownPassword(key)) return [app_password, password_grant];
    return this.options.strategyOrder.map((name) => this.strategies[name]);
  }

  /**
   * A Basic pair whose username is one of `tokenUsernames` is a token sent the way GitHub and
   * GitLab take one (`x-access-token:<token>`): the identity comes from the token alone, exactly
   * as for `Authorization: Bearer`, with no username to bind it to.
   */
  asPresented(credentials: Credentials): Credentials {
    if (credentials.kind === 'basic' && this.options.tokenUsernames.has(credentials.username.toLowerCase())) return { kind: 'bearer', token: credentials.password };
    return credentials;
  }

  /**
   * The decision for these credentials: at once (not a promise) when this process's cache answers,
   * so that a cached decision waits on nothing; a promise when shared state or the AS must be asked.
   */
  verify(presented: Credentials, context: VerifyContext): Decision | Promise<Decision> {
    const credentials = this.asPresented(presented);
    const audience = context.audience ?? this.options.defaultAudience;
    const key = this.cache.keyFor(credentials, audience);
    const cached = this.cache.get(key);
    if (cached === undefined) return this.#verifyUncached(credentials, audience, key, context);
    this.events.cacheLookup(cached === 'denied' ? 'negative_hit' : 'hit');
    return cached === 'denied' ? DENIED_CACHED : this.#authorize(cached, context, true);
  }

  async #verifyUncached(credentials: Credentials, audience: string, key: string, context: VerifyContext): Promise<Decision> {
    const username = credentials.kind === 'basic' ? credentials.username : undefined;
    const recalled = this.shared ? await this.#recall(key, username) : undefined;
    this.events.cacheLookup(recalled === 'denied' ? 'negative_hit' : 'miss');
    if (recalled === 'denied') return DENIED_CACHED;

    const endUserIp = context.endUserIp;
    const knownGood = this.cache.isKnownAppPassword(key) || this.cache.isKnownPassword(key);
    if (!knownGood) {
      const verdict = await this.ipThrottle.check(endUserIp);
      if (verdict.throttled) return this.#throttled(verdict.retryAfterSeconds);
    }
    // With shared state the lookups above (recall, the IP throttle) wait on the network, and an
    // identical flight can end meanwhile: its answer is cached by then. Take it, as a request that
    // joined the flight would.
    const landed = this.cache.get(key);
    if (landed !== undefined) {
      this.events.coalesced();
      return landed === 'denied' ? DENIED : this.#authorize(landed, context, false);
    }

    // The deadline is made only here, on a miss: cached answers never pay for a timer.
    const deadline = deadlineIn(this.options.decisionTimeoutMs);
    // Singleflight: concurrent requests with the same credentials share one upstream round trip.
    let flight = this.#inFlight.get(key);
    if (flight) {
      this.events.coalesced();
      return this.#fromResult(await this.#within(flight, deadline), context, key);
    }
    flight = this.#authenticate(credentials, key, audience, endUserIp, deadline)
      // Recorded inside the flight, so that an answer arriving after a waiter's deadline still counts.
      .then(async (result) => {
        try {
          await this.#record(key, result, username, endUserIp);
        } catch (err) {
          this.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'could not record the outcome in shared state');
        }
        return result;
      })
      .finally(() => this.#inFlight.delete(key));
    this.#inFlight.set(key, flight);
    return this.#fromResult(await this.#within(flight, deadline), context, key);
  }

  /**
   * Every subject a login name (or subject) stands for, and every login name of those accounts:
   * what an account-wide purge must reach.
   */
  accountOf(nameOrSubject: { username?: string; subject?: string }): { subjects: Set<string>; names: Set<string> } {
    const subjects = new Set<string>();
    if (nameOrSubject.subject !== undefined) subjects.add(nameOrSubject.subject);
    if (nameOrSubject.username !== undefined) for (const s of this.accounts.subjectsOf(nameOrSubject.username)) subjects.add(s);
    const names = new Set<string>(nameOrSubject.username !== undefined ? [nameOrSubject.username] : []);
    for (const s of subjects) for (const n of this.accounts.namesOf(s)) names.add(n);
    return { subjects, names };
  }

  /**
   * Admin purge of one account: every cached decision under any of its names and credentials
   * (stale-if-error copies included), and its login-protection ledger. Returns how many cached entries went.
   */
  async purgeAccount(account: { subjects: ReadonlySet<string>; names: ReadonlySet<string> }): Promise<number> {
    let purged = 0;
    for (const subject of account.subjects) purged += this.cache.purgeSubject(subject);
    for (const name of account.names) {
      purged += this.cache.purgeUser(name);
      await this.ledger.reset(name);
    }
    this.options.staleIdentities?.purgeSubjects(account.subjects);
    return purged;
  }

  async #record(key: string, result: FlightResult, username: string | undefined, endUserIp: string | undefined): Promise<void> {
    if (result.kind === 'throttled') return; // nothing was learnt
    if (result.kind === 'unavailable') {
      // "Wrong password, then introspection could not be asked": the password's failure stands.
      if (result.rejectedByAs) {
        this.options.staleIdentities?.forget(key);
        await Promise.all([this.ipThrottle.recordFailure(endUserIp), this.shared?.forgetPassword(key)]);
      }
      return; // never cached: the next request asks again
    }
    if (result.kind === 'identity') {
      const { identity } = result;
      this.cache.set(key, { kind: 'identity', identity }, username);
      const names = username === undefined ? result.loginNames : [username, ...result.loginNames];
      this.accounts.link(identity.subject, names);
      if (identity.username !== undefined) this.accounts.rememberCanonicalName(identity.subject, identity.username);
      await this.ledger.link(identity.subject, names);
      this.options.staleIdentities?.remember(key, identity, this.cache.positiveTtlSeconds(identity));
      if (result.strategy === 'token') {
        // A JWT is only ever checked as a token (order()): remembering it as an ASP would only fill
        // the memory (and, with Redis, write to it) once per token.
      } else if (identity.credential !== 'password') {
        this.cache.rememberAppPassword(key);
        await this.shared?.rememberAppPassword(key);
      } else {
        await this.shared?.rememberPassword(key);
      }
      return;
    }
    this.cache.set(key, { kind: 'denied' }, username);
    this.options.staleIdentities?.forget(key);
    // Awaited (each bounded by the shared store's timeout) so that the next request, on any
    // replica, already counts this failure.
    await Promise.all([this.ipThrottle.recordFailure(endUserIp), this.shared?.rememberDenied(key), result.rejectedByAs ? this.shared?.forgetPassword(key) : undefined]);
  }

  /**
   * What other replicas know of credentials this one has not cached: a known-wrong credential is
   * denied as a cached one is; a known ASP is remembered locally, so `order` only introspects it.
   */
  async #recall(key: string, username: string | undefined): Promise<'denied' | undefined> {
    const recalled = await this.shared!.recall(key, username);
    if (recalled.appPassword) this.cache.rememberAppPassword(key);
    if (recalled.knownPassword) this.cache.rememberPassword(key);
    return recalled.denied ? 'denied' : undefined;
  }

  /** The flight's result, or 'deadline' if the decision's deadline passes first; disposes the deadline. */
  #within(flight: Promise<FlightResult>, deadline: Deadline): Promise<Waited> {
    if (deadline.signal.aborted) return Promise.resolve('deadline');
    return new Promise<Waited>((resolve) => {
      const settle = (result: Waited) => {
        deadline.signal.removeEventListener('abort', expire);
        deadline.dispose();
        resolve(result);
      };
      const expire = () => settle('deadline');
      deadline.signal.addEventListener('abort', expire, { once: true });
      flight.then(settle, () => settle(UNAVAILABLE_RESULT));
    });
  }

  #throttled(retryAfterSeconds: number): Decision {
    this.events.throttled();
    return { allow: false, status: 429, reason: 'throttled', retryAfterSeconds, cached: false };
  }

  #fromResult(result: Waited, context: VerifyContext, key: string): Decision {
    if (result === 'deadline') {
      this.events.decisionTimeout();
      this.log.warn({ decisionTimeoutMs: this.options.decisionTimeoutMs }, 'no answer from the authorization server within the decision deadline');
    }
    if (result === 'deadline' || result.kind === 'unavailable') {
      // Never for a credential the AS has just called wrong (the flight forgets it, but a waiter may
      // get here first).
      const stale = result !== 'deadline' && result.rejectedByAs ? undefined : this.options.staleIdentities?.get(key);
      if (!stale) return UNAVAILABLE;
      this.events.staleServed();
      this.log.warn(
        { subject: stale.identity.subject, username: stale.identity.username, credential: stale.identity.credential, staleForSeconds: stale.staleForSeconds },
        'authorization server unavailable: answering from a stale identity (staleIfErrorSeconds)',
      );
      return this.#authorize(stale.identity, context, true);
    }
    if (result.kind === 'throttled') return this.#throttled(result.retryAfterSeconds);
    return result.kind === 'identity' ? this.#authorize(result.identity, context, false) : DENIED;
  }

  async #authenticate(credentials: Credentials, key: string, audience: string, endUserIp: string | undefined, deadline: Deadline): Promise<FlightResult> {
    let upstreamFailure: UpstreamError | undefined;
    let throttled: number | undefined;
    let rejectedByAs = false;
    for (const strategy of this.order(credentials, key)) {
      // After "could not ask", nothing that could burn a login attempt: it may have been a valid ASP.
      if (upstreamFailure !== undefined && strategy.costsLoginAttempt) continue;
      let outcome;
      try {
        outcome = await strategy.authenticate(credentials, { audience, endUserIp, deadline, credentialKey: key });
      } catch (err) {
        upstreamFailure = this.#upstreamFailure(err, strategy);
        continue;
      }
      if (outcome.kind === 'identity') return { ...outcome, strategy: strategy.name };
      if (outcome.kind === 'refused') return { kind: 'denied', rejectedByAs };
      if (outcome.kind === 'throttled') throttled = outcome.retryAfterSeconds;
      if (outcome.kind === 'rejected_by_as') rejectedByAs = true;
    }
    if (upstreamFailure) return { kind: 'unavailable', rejectedByAs };
    if (throttled !== undefined) return { kind: 'throttled', retryAfterSeconds: throttled };
    return { kind: 'denied', rejectedByAs };
  }

  /** Scopes are checked per request, against the identity (cached or fresh), never cached as an allow. */
  #authorize(identity: Identity, context: VerifyContext, cached: boolean): Decision {
    const missing = missingScopes(context.requiredScopes, identity.scopes, context.scopeStrategy);
    if (missing.length > 0) return { allow: false, status: 403, reason: 'insufficient_scope', missingScopes: missing, identity, cached };
    return { allow: true, status: 200, reason: 'ok', identity, cached };
  }

  #upstreamFailure(err: unknown, strategy: Strategy): UpstreamError {
    const failure = err instanceof UpstreamError ? err : new UpstreamError(`strategy ${strategy.name} failed unexpectedly`, 'token', 'bad_response', { cause: err });
    if (failure.failure === 'misconfigured') {
      this.health.reportMisconfigured(failure);
      this.log.error({ endpoint: failure.endpoint, failure: failure.failure, asError: failure.asError, strategy: strategy.name }, `authorization server rejected credgate's configuration: ${failure.message}`);
    } else {
      this.log.warn({ endpoint: failure.endpoint, failure: failure.failure, asError: failure.asError, strategy: strategy.name, err: err instanceof UpstreamError ? undefined : err }, failure.message);
    }
    return failure;
  }
}
