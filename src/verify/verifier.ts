import { UpstreamError } from '../errors.js';
import type { Health } from '../health.js';
import type { Logger } from '../log.js';
import type { Interface, Metrics } from '../metrics/registry.js';
import type { CredentialCache, Outcome } from './cache.js';
import { missingScopes } from './scopes.js';
import { looksLikeJwt, type Strategy } from './strategy.js';
import type { Credentials, Decision, Identity, RequestContext } from './types.js';

export interface Strategies {
  readonly passwordGrant: Strategy;
  readonly appPassword: Strategy;
  readonly jwt: Strategy;
}

const DENIED: Decision = Object.freeze({ allow: false, status: 401, reason: 'invalid_credentials', cached: false });
const DENIED_CACHED: Decision = Object.freeze({ ...DENIED, cached: true });
const UNAVAILABLE: Decision = Object.freeze({ allow: false, status: 503, reason: 'upstream_unavailable', cached: false });

/**
 * Credentials + context → Decision. Strategies run in order: the first Identity wins; `null`
 * moves on; an upstream failure is remembered and, if no later strategy allows, the answer is
 * 503 `upstream_unavailable` — credgate fails closed. Every kind of wrong credential ends in the
 * same `invalid_credentials`, so a denial never tells which step failed or whether a user exists.
 */
export class Verifier {
  readonly #inFlight = new Map<string, Promise<Outcome | 'upstream_unavailable'>>();

  constructor(
    private readonly strategies: Strategies,
    private readonly cache: CredentialCache,
    private readonly defaultAudience: string,
    private readonly metrics: Metrics,
    private readonly health: Health,
    private readonly log: Logger,
  ) {}

  /** Strategy order for these credentials. JWT-shaped secrets never go to the password grant:
   * a token tried as a password would count as a failed login at the AS. */
  order(credentials: Credentials): Strategy[] {
    const { passwordGrant, appPassword, jwt } = this.strategies;
    const secret = credentials.kind === 'basic' ? credentials.password : credentials.token;
    if (looksLikeJwt(secret)) return [jwt];
    return credentials.kind === 'bearer' ? [appPassword] : [passwordGrant, appPassword];
  }

  async verify(credentials: Credentials, context: RequestContext, iface: Interface, requestId?: string): Promise<Decision> {
    const started = performance.now();
    const audience = context.audience ?? this.defaultAudience;
    const key = this.cache.keyFor(credentials, audience);
    let outcome: Outcome | undefined = this.cache.get(key);
    const cached = outcome !== undefined;
    this.metrics.cacheRequests.inc({ result: outcome === undefined ? 'miss' : outcome.kind === 'identity' ? 'hit' : 'negative_hit' });
    let upstreamFailed = false;
    if (!outcome) {
      // Singleflight: concurrent requests with the same credentials share one upstream round trip.
      let flight = this.#inFlight.get(key);
      if (flight) {
        this.metrics.coalescedRequests.inc();
      } else {
        flight = this.#authenticate(credentials, audience).finally(() => this.#inFlight.delete(key));
        this.#inFlight.set(key, flight);
      }
      const result = await flight;
      if (result === 'upstream_unavailable') upstreamFailed = true;
      else {
        outcome = result;
        // Only the flight's owner stores; others see the same result.
        if (this.cache.get(key) === undefined) this.cache.set(key, result, credentials.kind === 'basic' ? credentials.username : undefined);
      }
    }
    const identity = outcome?.kind === 'identity' ? outcome.identity : undefined;
    const decision = identity ? this.#authorize(identity, context, cached) : upstreamFailed ? UNAVAILABLE : cached ? DENIED_CACHED : DENIED;
    const seconds = (performance.now() - started) / 1000;
    this.metrics.observeDecision(iface, decision.allow, decision.reason, identity?.credential, seconds);
    this.log.info(
      {
        requestId,
        interface: iface,
        result: decision.allow ? 'allow' : 'deny',
        reason: decision.reason,
        credential: identity?.credential,
        subject: identity?.subject,
        username: credentials.kind === 'basic' ? credentials.username : identity?.username,
        clientIp: context.clientIp,
        missingScopes: decision.missingScopes,
        durationMs: Math.round(seconds * 1e4) / 10,
        cached: decision.cached,
      },
      'decision',
    );
    return decision;
  }

  /** Drops every cached outcome of one user (admin purge). */
  purgeUser(username: string): number {
    return this.cache.purgeUser(username);
  }

  async #authenticate(credentials: Credentials, audience: string): Promise<Outcome | 'upstream_unavailable'> {
    let upstreamFailure: UpstreamError | undefined;
    for (const strategy of this.order(credentials)) {
      try {
        const identity = await strategy.authenticate(credentials, audience);
        if (identity) return { kind: 'identity', identity };
      } catch (err) {
        upstreamFailure = this.#upstreamFailure(err, strategy);
      }
    }
    return upstreamFailure ? 'upstream_unavailable' : { kind: 'denied' };
  }

  /** Scopes are checked per request, against the identity (cached or fresh), never cached as an allow. */
  #authorize(identity: Identity, context: RequestContext, cached: boolean): Decision {
    const missing = missingScopes(context.requiredScopes, identity.scopes);
    if (missing.length > 0) return { allow: false, status: 403, reason: 'insufficient_scope', missingScopes: missing, identity, cached };
    return { allow: true, status: 200, reason: 'ok', identity, cached };
  }

  #upstreamFailure(err: unknown, strategy: Strategy): UpstreamError {
    const failure = err instanceof UpstreamError ? err : new UpstreamError(`strategy ${strategy.name} failed unexpectedly`, 'token', 'bad_response', { cause: err });
    if (failure.failure === 'misconfigured') {
      this.health.reportMisconfigured(failure);
      this.log.error({ endpoint: failure.endpoint, failure: failure.failure, strategy: strategy.name }, `authorization server rejected credgate's configuration: ${failure.message}`);
    } else {
      this.log.warn({ endpoint: failure.endpoint, failure: failure.failure, strategy: strategy.name, err: err instanceof UpstreamError ? undefined : err }, failure.message);
    }
    return failure;
  }
}
