import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Service } from '../../service.js';
import type { Decision } from '../../verify/types.js';
import { checkPair } from '../credentials.js';
import { authUserHeader, headersByName, parseBackend, parseMailRequest, renderMailAnswer, type MailAnswerOptions, type MailBackend, type MailOutcome, type MailProtocol } from '../mailProtocol.js';
import { isTrustedPeer, plainIp } from '../originalRequest.js';
import { NEVER_OVERLOADED, refuseOverloaded, type LoadGauge } from '../loadShedding.js';

const BACKEND_KEYS = { imap: 'mailImapBackend', pop3: 'mailPop3Backend', smtp: 'mailSmtpBackend' } as const;

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
export function mailRoute(app: FastifyInstance, service: Service, load: LoadGauge = NEVER_OVERLOADED): void {
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
    if (load.cause !== undefined) return refuseOverloaded(service, load.cause, request, reply, 'mail');
    const peer = { address: plainIp(request.socket.remoteAddress ?? ''), trusted: isTrustedPeer(service.trust, request) };
    const login = parseMailRequest(headersByName(request.raw.rawHeaders), checkPair);
    if ('outcome' in login) {
      service.pipeline.refuse({ interface: 'mail', protocol: login.protocol ?? 'imap', requestId: request.id, peer }, login.reason, login.message);
      return answer(reply, login.protocol, login.attempt, login.outcome);
    }
    const { protocol, attempt } = login;
    const backend = backends[protocol];
    // Deployment faults: the client is told to come back later, the operator is told what to fix.
    if (backend === undefined) {
      service.log.error({ requestId: request.id, interface: 'mail', protocol }, `no ${protocol} backend configured (${BACKEND_KEYS[protocol]}): ${protocol} logins are refused`);
      return answer(reply, protocol, attempt, { kind: 'unavailable', retry: false });
    }
    if (secret !== undefined && !peer.trusted) {
      service.log.error({ requestId: request.id, interface: 'mail', clientIp: peer.address }, 'mailBackendPassword is set, so /auth/mail answers only trusted proxies: add nginx to trustedProxies');
      return answer(reply, protocol, attempt, { kind: 'unavailable', retry: false });
    }
    const decision = await service.pipeline.decide({
      interface: 'mail',
      protocol,
      credentials: { kind: 'basic', username: login.username, password: login.password },
      pinnedScopes: [],
      peer,
      // nginx's `Client-IP` is the end user's address only from a trusted nginx; once trusted
      // proxies are configured, any other peer is the end user, and its failures are capped as on `/auth`.
      reportedClientIp: login.clientIp,
      peerIsEndUser: service.trust.peersAreEndUsers,
      requestId: request.id,
    });
    return answer(reply, protocol, attempt, outcomeOf(decision, backend, secret));
  });
}

/**
 * A decision as nginx should hear it: only an allow names the backend, and the account the backend
 * logs in as (`Auth-User`: the AS's username for the identity, never the name the client typed);
 * every denial reads the same.
 */
export function outcomeOf(decision: Decision, backend: MailBackend, backendPassword: string | undefined): MailOutcome {
  const user = decision.identity?.username === undefined ? undefined : authUserHeader(decision.identity.username);
  if (decision.allow && user !== undefined) return { kind: 'ok', server: backend, backendPassword, user };
  if (decision.reason === 'throttled') return { kind: 'throttled', retryAfterSeconds: decision.retryAfterSeconds ?? 1 };
  if (decision.reason === 'upstream_unavailable') return { kind: 'unavailable', retry: true };
  return { kind: 'invalid' };
}
