import { decisionLog, type DecisionFields, type Logger } from '../log.js';
import type { Interface, Metrics } from '../metrics/registry.js';
import type { PolicyDecider, PolicyVerdict } from '../policy/policy.js';
import type { Protocol } from '../policy/schema.js';
import { parseTarget } from '../policy/target.js';
import type { ScopeStrategy } from '../verify/scopes.js';
import type { Verifier } from '../verify/verifier.js';
import type { Credentials, Decision, Reason } from '../verify/types.js';
import type { IdentityTokens, IdentityTokenSpec } from '../identity/tokens.js';

/** A credential an adapter could not parse: the public reason and a message that never holds the secret. */
export interface CredentialsProblem {
  readonly reason: 'missing_credentials' | 'malformed_credentials';
  readonly message: string;
}

/**
 * One request for a decision, whatever interface it came by: what adapters produce from their wire
 * format (`/auth`, `/auth/<path>`, `/auth/mail`, `/v1/verify`, the CLI), and all the core needs.
 */
export interface DecisionRequest {
  readonly interface: Interface;
  readonly protocol: Protocol;
  readonly credentials: Credentials | CredentialsProblem;
  /**
   * The original request the caller asks about, exactly as received (the raw target, not decoded);
   * a field is undefined when unknown. Undefined as a whole: the caller asks about no request
   * (`/v1/verify` without target fields, the CLI) and its pinned requirements decide.
   */
  readonly original?: { readonly method?: string; readonly host?: string; readonly target?: string };
  /** Scopes the location or caller pins (`?scope=`, the `scopes` field): required on top of the policy's. */
  readonly pinnedScopes?: readonly string[];
  /** Audience the caller asks for (`/v1/verify`). */
  readonly pinnedAudience?: string;
  /** The direct peer, and whether it is a configured trusted proxy or caller. */
  readonly peer: { readonly address: string; readonly trusted: boolean };
  /** The end user's address as the peer reports it (forwarded header, `clientIp`, nginx `Client-IP`): believed only from a trusted peer. */
  readonly reportedClientIp?: string;
  /** Whether an untrusted peer is the end user itself (it is not a proxy speaking for others). */
  readonly peerIsEndUser: boolean;
  /** The adapter found the original request ambiguous (a header twice, two families disagreeing): denied. */
  readonly ambiguous?: string;
  readonly requestId?: string;
  /** Whether the caller will pass on an identity token the rule asks for (`/auth` does; `/v1/verify` when asked). Default true. */
  readonly wantsIdentityToken?: boolean;
}

export interface PipelineOptions {
  /** The configured audience (`audience`): the one a policy rule that names none requires. */
  readonly audience?: string;
  /** Scopes each mail protocol needs when there is no policy file (`mailImapScopes`, ...). */
  readonly mailScopes: Readonly<Record<Exclude<Protocol, 'http'>, readonly string[]>>;
  /** Signs the identity tokens policy rules ask for; undefined without `identityIssuer`. */
  readonly identityTokens?: IdentityTokens;
}

interface Requirement {
  readonly requiredScopes: readonly string[];
  readonly audience?: string;
  readonly scopeStrategy?: ScopeStrategy;
  readonly rule?: string;
  readonly identityToken?: IdentityTokenSpec;
}

const NOTHING_REQUIRED: Requirement = Object.freeze({ requiredScopes: Object.freeze([]), audience: undefined });

const deny = (status: 400 | 401 | 403, reason: Reason, detail: string, rule?: string): Decision => ({ allow: false, status, reason, detail, rule, cached: false });

/**
 * The one decision sequence, for every interface (Oathkeeper's match → authenticate → authorize):
 *
 * 1. who is asking: the end user's IP is the reported one only from a trusted peer; otherwise the
 *    peer's own address when it talks for itself, else unknown;
 * 2. what the request needs: the policy, matched on the original request (its target parsed once,
 *    target.ts: an ambiguous one is denied), or without a policy the pinned scopes (and for mail,
 *    the protocol's configured scopes). Asked before the credentials: the AS is never asked about a
 *    request no rule allows;
 * 3. the credentials: refused if missing or malformed, else verified (verifier.ts: cache, throttle,
 *    login protection, strategies) and their scopes checked;
 * 4. for mail, the identity must have a username: it is what the backend logs in as;
 * 5. one metric and one log line for every decision, allowed or not.
 *
 * Adapters only parse their wire format into a DecisionRequest and render the Decision back.
 */
export class DecisionPipeline {
  readonly #logDecision: (fields: DecisionFields) => void;

  constructor(
    private readonly verifier: Verifier,
    private readonly policy: PolicyDecider | undefined,
    private readonly options: PipelineOptions,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {
    this.#logDecision = decisionLog(log);
  }

  /**
   * The decision: at once (not a promise) when nothing has to be waited for — an answer from this
   * process's cache, a denial by the policy, missing credentials — so that the answer a proxy asks
   * for most takes no promise and no turn of the microtask queue (issue #17); a promise otherwise.
   * `await` takes either. Throws (or rejects) only for a bug.
   */
  decide(request: DecisionRequest): Decision | Promise<Decision> {
    const started = performance.now();
    const endUserIp = request.peer.trusted ? request.reportedClientIp : request.peerIsEndUser ? request.peer.address : undefined;
    const decision = this.#decide(request, endUserIp);
    if (decision instanceof Promise) {
      return decision.then((made) => {
        this.#observe(request, made, endUserIp ?? request.peer.address, (performance.now() - started) / 1000);
        return made;
      });
    }
    this.#observe(request, decision, endUserIp ?? request.peer.address, (performance.now() - started) / 1000);
    return decision;
  }

  /** What the policy requires of a request, without credentials (`credgate policy explain`). */
  requirement(request: Pick<DecisionRequest, 'protocol' | 'original' | 'pinnedScopes' | 'pinnedAudience' | 'ambiguous'>): Requirement | Decision {
    const pinned = request.pinnedScopes ?? [];
    if (request.ambiguous !== undefined) return deny(403, 'denied_by_policy', `ambiguous original request: ${request.ambiguous}`);
    const policyApplies = this.policy !== undefined && (request.original !== undefined || request.protocol !== 'http');
    if (!policyApplies) {
      // The common case without a policy (`/auth` with no `?scope=`): nothing to build per request.
      if (request.protocol === 'http' && pinned.length === 0 && request.pinnedAudience === undefined) return NOTHING_REQUIRED;
      const base = request.protocol === 'http' ? [] : this.options.mailScopes[request.protocol];
      return { requiredScopes: [...new Set([...base, ...pinned])], audience: request.pinnedAudience };
    }
    const raw = request.original?.target;
    const parsed = raw === undefined ? undefined : parseTarget(raw);
    if (parsed !== undefined && !parsed.ok) return deny(403, 'denied_by_policy', `ambiguous request target: ${parsed.why}`);
    const verdict: PolicyVerdict = this.policy!.evaluate({ protocol: request.protocol, method: request.original?.method, host: request.original?.host, target: parsed?.target });
    if (verdict.effect === 'deny') return deny(403, 'denied_by_policy', verdict.why, verdict.rule);
    // A rule that names no audience requires the configured one: a caller may not swap in another
    // audience the policy names elsewhere (another API's tokens, whose scopes may read alike).
    const ruleAudience = verdict.audience ?? this.options.audience;
    if (request.pinnedAudience !== undefined && ruleAudience !== undefined && request.pinnedAudience !== ruleAudience) {
      return deny(403, 'denied_by_policy', `the audience asked for is not the one rule ${verdict.rule} requires`, verdict.rule);
    }
    return {
      requiredScopes: [...new Set([...verdict.scopes, ...pinned])],
      audience: verdict.audience ?? request.pinnedAudience,
      scopeStrategy: verdict.scopeStrategy,
      rule: verdict.rule,
      identityToken: verdict.identityToken,
    };
  }

  #decide(request: DecisionRequest, endUserIp: string | undefined): Decision | Promise<Decision> {
    const needs = this.requirement(request);
    if ('allow' in needs) return needs;
    const { credentials } = request;
    if ('reason' in credentials) return deny(401, credentials.reason, credentials.message, needs.rule);
    const verified = this.verifier.verify(credentials, { requiredScopes: needs.requiredScopes, audience: needs.audience, scopeStrategy: needs.scopeStrategy, endUserIp });
    return verified instanceof Promise ? verified.then((decision) => this.#complete(request, needs, decision)) : this.#complete(request, needs, verified);
  }

  /** The verifier's decision, held to what the interface and the rule add: a username for mail, the identity token. */
  #complete(request: DecisionRequest, needs: Requirement, decision: Decision): Decision | Promise<Decision> {
    if (decision.allow && request.protocol !== 'http' && decision.identity?.username === undefined) {
      // The mail backend logs in as the identity's username (`Auth-User`): without one, the client's
      // typed name (`x-access-token`) would pick the mailbox.
      return { ...deny(401, 'invalid_credentials', 'the identity has no username claim, which a mail login needs', needs.rule), identity: undefined };
    }
    if (decision.allow && decision.identity && needs.identityToken !== undefined && request.wantsIdentityToken !== false) {
      const tokens = this.options.identityTokens;
      if (tokens === undefined) {
        // A policy reloaded with identity tokens but no identityIssuer: never an allow without the token.
        this.log.error({ rule: needs.rule }, 'the policy asks for an identity token but identityIssuer is not set');
        return { allow: false, status: 503, reason: 'upstream_unavailable', detail: 'identity tokens are not configured (identityIssuer)', rule: needs.rule, cached: false };
      }
      const { header } = needs.identityToken;
      const withToken = (value: string): Decision => ({ ...decision, rule: needs.rule, identityToken: { header, value } });
      const token = tokens.tokenFor(decision.identity, needs.identityToken);
      return typeof token === 'string' ? withToken(token) : token.then(withToken);
    }
    return needs.rule === undefined ? decision : { ...decision, rule: needs.rule };
  }

  #observe(request: DecisionRequest, decision: Decision, clientIp: string, seconds: number): void {
    const identity = decision.identity;
    this.metrics.observeDecision(request.interface, decision.allow, decision.reason, decision.allow ? identity?.credential : undefined, seconds, decision.cached);
    const login = 'kind' in request.credentials && request.credentials.kind === 'basic' ? request.credentials.username : undefined;
    this.#logDecision({
      requestId: request.requestId,
      interface: request.interface,
      protocol: request.protocol === 'http' ? undefined : request.protocol,
      result: decision.allow ? 'allow' : 'deny',
      reason: decision.reason,
      detail: decision.detail,
      credential: identity?.credential,
      subject: identity?.subject,
      // The AS's name for the account; `login` is what the client typed (for audits of denials).
      username: identity?.username,
      login,
      clientIp,
      rule: decision.rule,
      missingScopes: decision.missingScopes,
      retryAfterSeconds: decision.retryAfterSeconds,
      durationMs: Math.round(seconds * 1e4) / 10,
      cached: decision.cached,
    });
  }

  /**
   * A request an adapter refuses before there is anything to decide (unparseable mail headers):
   * counted and logged like any decision.
   */
  refuse(request: Pick<DecisionRequest, 'interface' | 'protocol' | 'requestId' | 'peer'>, reason: Reason, detail: string): Decision {
    const decision = deny(401, reason, detail);
    this.#observe({ ...request, credentials: { reason: 'missing_credentials', message: detail }, peerIsEndUser: false }, decision, request.peer.address, 0);
    return decision;
  }
}
