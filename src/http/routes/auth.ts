import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Service } from '../../service.js';
import { SCOPE_TOKEN } from '../../verify/scopes.js';
import type { Decision } from '../../verify/types.js';
import { isProblem, parseAuthorization } from '../credentials.js';
import { headerValue } from '../render.js';
import { badRequest, recordEarlyDenial } from '../errors.js';

/** Scopes pinned by the location: `?scope=a&scope=b` or `?scope=a b` / `?scope=a,b`. */
export function pinnedScopes(query: unknown): string[] | string {
  const raw = (query as Record<string, unknown> | undefined)?.scope;
  if (raw === undefined) return [];
  const values = (Array.isArray(raw) ? raw : [raw]).flatMap((v) => String(v).split(/[ ,]+/)).filter(Boolean);
  const bad = values.find((s) => !SCOPE_TOKEN.test(s));
  return bad !== undefined ? 'scope query parameter holds a value that is not an RFC 6749 scope-token' : [...new Set(values)];
}

/**
 * `/auth` (any method): nginx `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`, Envoy
 * ext_authz. 200 allow with identity headers; 401 with a Basic challenge for missing, malformed
 * or invalid credentials (nginx passes only 401/403 through, so malformed is 401 here too);
 * 403 insufficient scope; `throttled` as 401 (default) or 429 with Retry-After; 503 when no
 * decision can be made.
 */
export function authRoute(app: FastifyInstance, service: Service): void {
  const challenge = [`Basic realm="${service.config.realm}", charset="UTF-8"`, `Bearer realm="${service.config.realm}"`];

  const deny = (reply: FastifyReply, status: number, body: Record<string, unknown>) => {
    if (status === 401) reply.header('www-authenticate', challenge);
    if (status === 503) reply.header('retry-after', '5');
    return reply.code(status).header('cache-control', 'no-store').send(body);
  };

  app.route({
    method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
    url: '/auth',
    handler: async (request: FastifyRequest, reply: FastifyReply) => {
      const scopes = pinnedScopes(request.query);
      if (typeof scopes === 'string') return badRequest(reply, 'malformed_request', scopes);
      const credentials = parseAuthorization(request.headers.authorization);
      if (isProblem(credentials)) {
        recordEarlyDenial(service, request, 'auth', credentials.reason, credentials.message);
        return deny(reply, 401, { reason: credentials.reason, message: credentials.message });
      }
      // The direct peer is usually the proxy: it is logged, but not used as the end user's IP
      // (throttling it would throttle everyone behind that proxy).
      const decision: Decision = await service.verifier.verify(credentials, { requiredScopes: scopes, clientIp: request.ip }, 'auth', request.id);
      if (decision.reason === 'throttled') {
        reply.header('retry-after', String(decision.retryAfterSeconds ?? 1));
        return deny(reply, service.config.authThrottledStatus, { reason: decision.reason, retryAfterSeconds: decision.retryAfterSeconds });
      }
      if (!decision.allow || !decision.identity) {
        return deny(reply, decision.status, { reason: decision.reason, missingScopes: decision.missingScopes });
      }
      const id = decision.identity;
      reply.header('x-auth-subject', headerValue(id.subject));
      if (id.username !== undefined) reply.header('x-auth-user', headerValue(id.username));
      reply.header('x-auth-scopes', headerValue(id.scopes.join(' ')));
      reply.header('x-auth-credential', id.credential);
      return reply.code(200).header('cache-control', 'no-store').send({ reason: 'ok' });
    },
  });
}
