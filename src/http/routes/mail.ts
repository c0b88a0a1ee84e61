import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Service } from '../../service.js';
import type { Decision, RequestContext } from '../../verify/types.js';
import { checkPair } from '../credentials.js';
import { recordEarlyDenial } from '../errors.js';
import { headersByName, parseBackend, parseMailRequest, renderMailAnswer, type MailAnswerOptions, type MailBackend, type MailOutcome, type MailProtocol } from '../mailProtocol.js';
import { isTrustedPeer } from '../originalRequest.js';

const BACKEND_KEYS = { imap: 'mailImapBackend', pop3: 'mailPop3Backend', smtp: 'mailSmtpBackend' } as const;
const SCOPE_KEYS = { imap: 'mailImapScopes', pop3: 'mailPop3Scopes', smtp: 'mailSmtpScopes' } as const;

type Requirement =
  | { readonly effect: 'require'; readonly context: Pick<RequestContext, 'requiredScopes' | 'audience' | 'scopeStrategy' | 'rule'> }
  | { readonly effect: 'deny'; readonly rule: string | undefined; readonly why: string };

/** What a mail protocol needs: the policy's rules with `protocol:` when there is a policy, else `mail*Scopes`. */
function requirement(service: Service, protocol: MailProtocol): Requirement {
  if (!service.policy) return { effect: 'require', context: { requiredScopes: service.config[SCOPE_KEYS[protocol]] } };
  const verdict = service.policy.evaluate({ protocol });
  if (verdict.effect === 'deny') return verdict;
  return { effect: 'require', context: { requiredScopes: verdict.scopes, audience: verdict.audience, scopeStrategy: verdict.scopeStrategy, rule: verdict.rule } };
}

/** Route constraint: requests that carry `Auth-Protocol`, as nginx's always do (see mailRoute). */
const NGINX_MAIL = { name: 'nginxMailAuth', value: 'auth_http' } as const;

/**
 * HTTP status of an answer. nginx ignores the status line (it reads only the `Auth-*` headers), so
 * only an allow is 200: anything else that might ask this URL and heed the status (a misrouted
 * forward-auth proxy) sees a refusal.
 */
function statusOf(outcome: MailOutcome): 200 | 401 | 503 {
  return outcome.kind === 'ok' ? 200 : outcome.kind === 'unavailable' ? 503 : 401;
}

/**
 * `GET /auth/mail`: nginx's mail proxy `auth_http` (IMAP, POP3, SMTP); the protocol is in
 * mailProtocol.ts. A login is verified like a Basic pair, needing the protocol's scopes (policy or
 * configuration); any denial reads "Invalid login or password" with a growing `Auth-Wait`.
 * nginx's `Client-IP` is the end user's address (per-IP throttling) only when the peer is a trusted
 * proxy, and the backend secret (`mailBackendPassword`) is handed only to a trusted proxy.
 */
export function mailRoute(app: FastifyInstance, service: Service): void {
  const config = service.config;
  // The schema holds it to printable ASCII without spaces: it travels in a header.
  const secret = config.mailBackendPassword;
  const backends: Partial<Record<MailProtocol, MailBackend>> = {};
  for (const [protocol, key] of Object.entries(BACKEND_KEYS) as [MailProtocol, (typeof BACKEND_KEYS)[MailProtocol]][]) {
    const value = config[key];
    if (value !== undefined) backends[protocol] = parseBackend(value);
  }
  const options: MailAnswerOptions = { maxAttempts: config.mailMaxAttempts, waitSeconds: config.mailWaitSeconds, smtpErrorCode: config.mailSmtpErrorCode };

  const answer = (reply: FastifyReply, protocol: MailProtocol | undefined, attempt: number, outcome: MailOutcome) =>
    reply.code(statusOf(outcome)).headers(renderMailAnswer(protocol, attempt, outcome, options)).header('cache-control', 'no-store').send();

  // Only requests that carry `Auth-Protocol` reach this route. Any other `GET /auth/mail` falls
  // through to `/auth/*` (Envoy ext_authz asking about an original path `/mail`), so neither
  // interface can answer for the other.
  app.addConstraintStrategy({
    name: NGINX_MAIL.name,
    mustMatchWhenDerived: false,
    storage() {
      const handlers = new Map();
      return { get: (value) => handlers.get(value) ?? null, set: (value, handler) => void handlers.set(value, handler) };
    },
    deriveConstraint: (request) => (request.headers['auth-protocol'] !== undefined ? NGINX_MAIL.value : undefined),
  });
  app.get('/auth/mail', { constraints: { [NGINX_MAIL.name]: NGINX_MAIL.value } }, async (request, reply) => {
    const login = parseMailRequest(headersByName(request.raw.rawHeaders), checkPair);
    if ('outcome' in login) {
      recordEarlyDenial(service, request, 'mail', login.reason, login.message);
      return answer(reply, login.protocol, login.attempt, login.outcome);
    }
    const { protocol, attempt } = login;
    const backend = backends[protocol];
    const trusted = isTrustedPeer(service.trust, request);
    // Deployment faults: the client is told to come back later, the operator is told what to fix.
    if (backend === undefined) {
      service.log.error({ requestId: request.id, interface: 'mail', protocol }, `no ${protocol} backend configured (${BACKEND_KEYS[protocol]}): ${protocol} logins are refused`);
      return answer(reply, protocol, attempt, { kind: 'unavailable', retry: false });
    }
    if (secret !== undefined && !trusted) {
      service.log.error({ requestId: request.id, interface: 'mail', clientIp: request.ip }, 'mailBackendPassword is set, so /auth/mail answers only trusted proxies: add nginx to trustedProxies');
      return answer(reply, protocol, attempt, { kind: 'unavailable', retry: false });
    }
    const needs = requirement(service, protocol);
    const endUserIp = trusted ? login.clientIp : undefined;
    const clientIp = endUserIp ?? request.ip;
    if (needs.effect === 'deny') {
      // Asked before the credentials, as on /auth: the AS is not asked about a login no rule allows.
      recordEarlyDenial(service, request, 'mail', 'denied_by_policy', needs.why, { rule: needs.rule, clientIp });
      return answer(reply, protocol, attempt, { kind: 'invalid' });
    }
    const decision: Decision = await service.verifier.verify(
      { kind: 'basic', username: login.username, password: login.password },
      { ...needs.context, clientIp, endUserIp },
      'mail',
      request.id,
    );
    return answer(reply, protocol, attempt, outcomeOf(decision, backend, secret));
  });
}

/** A verifier decision as nginx should hear it: only an allow names the backend; every denial reads the same. */
export function outcomeOf(decision: Decision, backend: MailBackend, backendPassword: string | undefined): MailOutcome {
  if (decision.allow) return { kind: 'ok', server: backend, backendPassword };
  if (decision.reason === 'throttled') return { kind: 'throttled', retryAfterSeconds: decision.retryAfterSeconds ?? 1 };
  if (decision.reason === 'upstream_unavailable') return { kind: 'unavailable', retry: true };
  return { kind: 'invalid' };
}
