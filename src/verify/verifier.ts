import { UpstreamError } from '../errors.js';
import { deadlineIn, type Deadline } from '../upstream/deadline.js';
import type { Health } from '../health.js';
import type { Logger } from '../log.js';
import type { Interface, Metrics } from '../metrics/registry.js';
import type { CredentialCache, Outcome } from './cache.js';
import { missingScopes } from './scopes.js';
import type { SharedMemory } from './shared.js';
import { looksLikeJwt, type Strategy, type StrategyContext } from './strategy.js';
import type { StaleIdentities } from './staleIdentities.js';
import type { FailureThrottle } from './throttle.js';
import type { Credentials, Decision, Identity, RequestContext } from './types.js';

export interface Strategies {
  readonly passwordGrant: Strategy;
  readonly appPassword: Strategy;
  readonly jwt: Strategy;
}

export interface VerifierOptions {
  readonly defaultAudience: string;
  /** Basic-password order for a credential not recognised as an ASP. */
  readonly strategyOrder: readonly ('password_grant' | 'app_password')[];
  /** Passwords matching this are introspected first; undefined: no shape rule. */
  readonly appPasswordPattern: RegExp | undefined;
  /** Lower-cased Basic usernames that mean "the password is a token" (`x-access-token`, `oauth2`, …). */
  readonly tokenUsernames: ReadonlySet<string>;
  /** Longest a decision that has to ask the AS may take, ms; then `upstream_unavailable`. */
  readonly decisionTimeoutMs: number;
  /** Stale-if-error store; undefined when `staleIfErrorSeconds` is 0. */
  readonly staleIdentities?: StaleIdentities;
}

const DENIED: Decision = Object.freeze({ allow: false, status: 401, reason: 'invalid_credentials', cached: false });
const DENIED_CACHED: Decision = Object.freeze({ ...DENIED, cached: true });
const UNAVAILABLE: Decision = Object.freeze({ allow: false, status: 503, reason: 'upstream_unavailable', cached: false });

type FlightResult = Outcome | 'upstream_unavailable';
/** The decision's deadline passed before the flight ended. */
type Waited = FlightResult | 'deadline';

/**
 * Credentials + context → Decision.
 *
 * 1. A cached identity for exactly these credentials answers at once (scopes still checked per
 *    request); a cached known-wrong credential is denied at once.
 * 2. Throttling: a username or end-user IP with too many recent failures is answered `throttled`
 *    without asking the AS — except for a credential remembered as an ASP, which is only
 *    introspected (that never counts as a failed login at the AS).
 * 3. Strategies run in order (concurrent identical requests share one run): the first Identity
 *    wins; `null` moves on; an upstream failure is remembered and, if no later strategy allows,
 *    the answer is 503 `upstream_unavailable` — credgate fails closed. Every kind of wrong
 *    credential ends in the same `invalid_credentials`.
 * 4. The whole of step 3 has `decisionTimeoutMs`: every call to the AS inside it is cut short at
 *    that deadline (see upstream/deadline.ts), and the answer does not wait past it.
 * 5. Stale-if-error (off by default): when step 3 could not ask the AS, an identity verified
 *    recently enough may still answer (scopes checked as ever); never when the AS said no.
 */
export class Verifier {
  readonly #inFlight = new Map<string, Promise<FlightResult>>();

  constructor(
    private readonly strategies: Strategies,
    private readonly cache: CredentialCache,
    private readonly throttle: FailureThrottle,
    private readonly options: VerifierOptions,
    private readonly metrics: Metrics,
    private readonly health: Health,
    private readonly log: Logger,
    /** State shared with other replicas (Redis); undefined: this process decides alone. */
    private readonly shared?: SharedMemory,
  ) {}

  /**
   * Strategy order for these credentials. A JWT-shaped secret is only ever verified as a token; an
   * ASP-shaped or remembered-ASP password is introspected before it is tried as a password, so
   * using an ASP never counts as a failed login at the AS.
   */
  order(credentials: Credentials, key: string, introspectionOnly = false): Strategy[] {
    const { passwordGrant, appPassword, jwt } = this.strategies;
    const secret = credentials.kind === 'basic' ? credentials.password : credentials.token;
    if (looksLikeJwt(secret)) return [jwt];
    if (credentials.kind === 'bearer' || introspectionOnly) return [appPassword];
    if (this.cache.isKnownAppPassword(key) || this.options.appPasswordPattern?.test(secret)) return [appPassword, passwordGrant];
    return this.options.strategyOrder.map((name) => (name === 'password_grant' ? passwordGrant : appPassword));
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

  async verify(presented: Credentials, context: RequestContext, iface: Interface, requestId?: string): Promise<Decision> {
    const started = performance.now();
    const credentials = this.asPresented(presented);
    const audience = context.audience ?? this.options.defaultAudience;
    const username = credentials.kind === 'basic' ? credentials.username : undefined;
    const key = this.cache.keyFor(credentials, audience);
    const decision = await this.#decide(credentials, context, audience, username, key);
    const identity = decision.identity;
    const seconds = (performance.now() - started) / 1000;
    this.metrics.observeDecision(iface, decision.allow, decision.reason, decision.allow ? identity?.credential : undefined, seconds, decision.cached);
    this.log.info(
      {
        requestId,
        interface: iface,
        result: decision.allow ? 'allow' : 'deny',
        reason: decision.reason,
        credential: identity?.credential,
        subject: identity?.subject,
        username: username ?? identity?.username,
        clientIp: context.clientIp,
        rule: context.rule,
        missingScopes: decision.missingScopes,
        retryAfterSeconds: decision.retryAfterSeconds,
        durationMs: Math.round(seconds * 1e4) / 10,
        cached: decision.cached,
      },
      'decision',
    );
    return decision;
  }

  /** Drops every cached outcome of one user (admin purge), stale-if-error copies included. */
  purgeUser(username: string): number {
    this.options.staleIdentities?.purgeUser(username);
    return this.cache.purgeUser(username);
  }

  async #decide(credentials: Credentials, context: RequestContext, audience: string, username: string | undefined, key: string): Promise<Decision> {
    let cached = this.cache.get(key);
    if (cached === undefined && this.shared) cached = await this.#recall(key, username);
    this.metrics.cacheLookup(cached === undefined ? 'miss' : cached === 'denied' ? 'negative_hit' : 'hit');
    if (cached === 'denied') return DENIED_CACHED;
    if (cached !== undefined) return this.#authorize(cached, context, true);

    const endUserIp = context.endUserIp;
    const verdict = await this.throttle.check(username, endUserIp);
    const introspectionOnly = verdict.throttled && this.cache.isKnownAppPassword(key);
    if (verdict.throttled && !introspectionOnly) {
      this.metrics.throttledRequests.inc();
      return { allow: false, status: 429, reason: 'throttled', retryAfterSeconds: verdict.retryAfterSeconds, cached: false };
    }

    // The deadline is made only here, on a miss: cached answers never pay for a timer.
    const deadline = deadlineIn(this.options.decisionTimeoutMs);
    // Singleflight: concurrent requests with the same credentials share one upstream round trip.
    let flight = this.#inFlight.get(key);
    if (flight) {
      this.metrics.coalescedRequests.inc();
      return this.#fromResult(await this.#within(flight, deadline), context, key);
    }
    flight = this.#authenticate(credentials, key, { audience, endUserIp, deadline }, introspectionOnly)
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

  async #record(key: string, result: FlightResult, username: string | undefined, endUserIp: string | undefined): Promise<void> {
    if (result === 'upstream_unavailable') return; // never cached: the next request asks again
    this.cache.set(key, result, username);
    if (result.kind === 'identity') {
      this.options.staleIdentities?.remember(key, result.identity, this.cache.positiveTtlSeconds(result.identity), username);
      // Only a password login clears the username's failures, as only it clears the AS's own
      // lockout counter: frequent ASP use must not hand an attacker fresh guesses.
      if (result.identity.credential === 'password') await this.throttle.recordSuccess(username);
      else {
        this.cache.rememberAppPassword(key);
        await this.shared?.rememberAppPassword(key);
      }
    } else {
      this.options.staleIdentities?.forget(key);
      // Awaited (each bounded by the shared store's timeout) so that the next request, on any
      // replica, already counts this failure.
      await Promise.all([this.throttle.recordFailure(username, endUserIp), this.shared?.rememberDenied(key)]);
    }
  }

  /**
   * What other replicas know of credentials this one has not cached: a known-wrong credential is
   * denied as a cached one is; a known ASP is remembered locally, so `order` introspects it first and
   * a throttled username still lets it in.
   */
  async #recall(key: string, username: string | undefined): Promise<'denied' | undefined> {
    const recalled = await this.shared!.recall(key, username);
    if (recalled.appPassword) this.cache.rememberAppPassword(key);
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
      flight.then(settle, () => settle('upstream_unavailable'));
    });
  }

  #fromResult(result: Waited, context: RequestContext, key: string): Decision {
    if (result === 'deadline') {
      this.metrics.decisionTimeouts.inc();
      this.log.warn({ decisionTimeoutMs: this.options.decisionTimeoutMs }, 'no answer from the authorization server within the decision deadline');
    }
    if (result === 'upstream_unavailable' || result === 'deadline') {
      const stale = this.options.staleIdentities?.get(key);
      if (!stale) return UNAVAILABLE;
      this.metrics.staleIdentitiesServed.inc();
      this.log.warn(
        { subject: stale.identity.subject, username: stale.identity.username, credential: stale.identity.credential, staleForSeconds: stale.staleForSeconds },
        'authorization server unavailable: answering from a stale identity (staleIfErrorSeconds)',
      );
      return this.#authorize(stale.identity, context, true);
    }
    return result.kind === 'identity' ? this.#authorize(result.identity, context, false) : DENIED;
  }

  async #authenticate(credentials: Credentials, key: string, context: StrategyContext, introspectionOnly: boolean): Promise<FlightResult> {
    let upstreamFailure: UpstreamError | undefined;
    for (const strategy of this.order(credentials, key, introspectionOnly)) {
      try {
        const identity = await strategy.authenticate(credentials, context);
        if (identity) return { kind: 'identity', identity };
      } catch (err) {
        upstreamFailure = this.#upstreamFailure(err, strategy);
      }
    }
    return upstreamFailure ? 'upstream_unavailable' : { kind: 'denied' };
  }

  /** Scopes are checked per request, against the identity (cached or fresh), never cached as an allow. */
  #authorize(identity: Identity, context: RequestContext, cached: boolean): Decision {
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
