import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Service } from '../../service.js';
import { SCOPE_TOKEN } from '../../verify/scopes.js';
import type { Decision, RequestContext } from '../../verify/types.js';
import { authorizationHeaders, isProblem, parseAuthorization } from '../credentials.js';
import { isTrustedPeer } from '../originalRequest.js';
import { identityHeaders } from '../render.js';
import { badRequest, recordEarlyDenial } from '../errors.js';

/** Scopes pinned by the location: `?scope=a&scope=b` or `?scope=a b` / `?scope=a,b`. */
export function pinnedScopes(query: unknown): string[] | string {
  const raw = (query as Record<string, unknown> | undefined)?.scope;
  if (raw === undefined) return [];
  const values = (Array.isArray(raw) ? raw : [raw]).flatMap((v) => String(v).split(/[ ,]+/)).filter(Boolean);
  const bad = values.find((s) => !SCOPE_TOKEN.test(s));
  return bad !== undefined ? 'scope query parameter holds a value that is not an RFC 6749 scope-token' : [...new Set(values)];
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
/** The body of every allow, serialised once (fastify sends a string with a content type as it is). */
const ALLOW_BODY = JSON.stringify({ reason: 'ok' });
const JSON_TYPE = 'application/json; charset=utf-8';

/**
 * `/auth` (any method): nginx `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`; and
 * `/auth/<original path>` for Envoy ext_authz (`path_prefix: /auth`). 200 allow with identity
 * headers; 401 with a Basic challenge for missing, malformed or invalid credentials (nginx passes
 * only 401/403 through, so malformed is 401 here too); 403 insufficient scope or denied by the
 * policy; `throttled` as 401 (default) or 429 with Retry-After; 503 when no decision can be made.
 *
 * What the request needs: the policy rule matching the original request (method, host, URI from
 * a trusted proxy's headers), plus any scopes pinned with `?scope=`.
 */
export function authRoute(app: FastifyInstance, service: Service): void {
  // Basic first: nginx's auth_request passes only the first WWW-Authenticate to the client, and
  // git, curl and mail-era clients answer a Basic challenge.
  const challenge = [`Basic realm="${service.config.realm}", charset="UTF-8"`, `Bearer realm="${service.config.realm}"`];

  const deny = (reply: FastifyReply, status: number, body: Record<string, unknown>) => {
    if (status === 401) reply.header('www-authenticate', challenge);
    if (status === 503) reply.header('retry-after', '5');
    return reply.code(status).header('cache-control', 'no-store').send(body);
  };

  const handle = async (request: FastifyRequest, reply: FastifyReply, envoyPath: string | undefined) => {
    // With Envoy the query string is the original request's, so nothing can be pinned by it.
    const pinned = envoyPath === undefined ? pinnedScopes(request.query) : [];
    if (typeof pinned === 'string') return badRequest(reply, 'malformed_request', pinned);
    const original = service.trust.originalRequest(request, envoyPath);

    let context: RequestContext = { requiredScopes: pinned, clientIp: original.clientIp, endUserIp: original.endUserIp };
    if (service.policy) {
      // The policy is asked before the credentials: a request no rule allows is refused without
      // asking the AS, and the answer says nothing about the credentials.
      const verdict = original.ambiguous
        ? ({ effect: 'deny', rule: undefined, why: `ambiguous original request: the trusted proxy sent ${original.ambiguous} twice or with different values (it must set or strip the client's copies)` } as const)
        : service.policy.evaluate({ protocol: 'http', method: original.method, host: original.host, uri: original.uri });
      if (verdict.effect === 'deny') {
        recordEarlyDenial(service, request, 'auth', 'denied_by_policy', verdict.why, { rule: verdict.rule, clientIp: original.clientIp });
        return deny(reply, 403, { reason: 'denied_by_policy' });
      }
      context = {
        ...context,
        requiredScopes: [...new Set([...verdict.scopes, ...pinned])],
        audience: verdict.audience,
        scopeStrategy: verdict.scopeStrategy,
        rule: verdict.rule,
      };
    }

    const credentials = parseAuthorization(authorizationHeaders(request.raw.rawHeaders));
    if (isProblem(credentials)) {
      recordEarlyDenial(service, request, 'auth', credentials.reason, credentials.message, { rule: context.rule, clientIp: original.clientIp });
      return deny(reply, 401, { reason: credentials.reason, message: credentials.message });
    }
    const decision: Decision = await service.verifier.verify(credentials, context, 'auth', request.id);
    if (decision.reason === 'throttled') {
      reply.header('retry-after', String(decision.retryAfterSeconds ?? 1));
      return deny(reply, service.config.authThrottledStatus, { reason: decision.reason, retryAfterSeconds: decision.retryAfterSeconds });
    }
    if (!decision.allow || !decision.identity) {
      return deny(reply, decision.status, { reason: decision.reason, missingScopes: decision.missingScopes });
    }
    return reply.code(200).headers(identityHeaders(decision.identity)).header('cache-control', 'no-store').type(JSON_TYPE).send(ALLOW_BODY);
  };

  app.route({ method: [...METHODS], url: '/auth', handler: (request, reply) => handle(request, reply, undefined) });
  app.route({
    method: [...METHODS],
    url: '/auth/*',
    // Only a trusted proxy (Envoy) can mean anything by a path under /auth; for anyone else it is no route.
    handler: (request, reply) =>
      isTrustedPeer(service.trust, request) ? handle(request, reply, (request.params as { '*': string })['*']) : reply.callNotFound(),
  });
}
