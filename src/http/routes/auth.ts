import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Service } from '../../service.js';
import { SCOPE_TOKEN } from '../../vocabulary.js';
import { authorizationHeaders, parseAuthorization } from '../credentials.js';
import { isTrustedPeer, readOriginalRequest } from '../originalRequest.js';
import { ALLOW_BODY, allowHeaders } from '../render.js';
import { badRequest } from '../errors.js';
import { NEVER_OVERLOADED, refuseOverloaded, type LoadGauge } from '../loadShedding.js';
import type { Decision } from '../../verify/types.js';

/** Scopes pinned by the location: `?scope=a&scope=b` or `?scope=a b` / `?scope=a,b`. */
export function pinnedScopes(query: unknown): string[] | string {
  const raw = (query as Record<string, unknown> | undefined)?.scope;
  if (raw === undefined) return [];
  const values = (Array.isArray(raw) ? raw : [raw]).flatMap((v) => String(v).split(/[ ,]+/)).filter(Boolean);
  const bad = values.find((s) => !SCOPE_TOKEN.test(s));
  return bad !== undefined ? 'scope query parameter holds a value that is not an RFC 6749 scope-token' : [...new Set(values)];
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
const ENVOY_PREFIX = '/auth/';

/**
 * `/auth` (any method): nginx `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`; and
 * `/auth/<original path>` for Envoy ext_authz (`path_prefix: /auth`). 200 allow with identity
 * headers; 401 with a Basic challenge for missing, malformed or invalid credentials (nginx passes
 * only 401/403 through, so malformed is 401 here too); 403 insufficient scope or denied by the
 * policy; `throttled` as 401 (default) or 429 with Retry-After; 503 when no decision can be made.
 *
 * This adapter only reads the wire format (credentials, forwarded headers, `?scope=`) into a
 * DecisionRequest and renders the Decision: the pipeline (decide/pipeline.ts) decides.
 */
export function authRoute(app: FastifyInstance, service: Service, load: LoadGauge = NEVER_OVERLOADED): void {
  // Basic first: nginx's auth_request passes only the first WWW-Authenticate to the client, and
  // git, curl and mail-era clients answer a Basic challenge.
  const challenge = [`Basic realm="${service.config.realm}", charset="UTF-8"`, `Bearer realm="${service.config.realm}"`];

  const deny = (reply: FastifyReply, status: number, body: Record<string, unknown>) => {
    if (status === 401) reply.header('www-authenticate', challenge);
    if (status === 503) reply.header('retry-after', '5');
    return reply.code(status).header('cache-control', 'no-store').send(body);
  };

  const render = (reply: FastifyReply, decision: Decision): void => {
    if (decision.allow && decision.identity) {
      // The allow, the answer a proxy asks for most, is written to Node's response directly: one
      // writeHead with a header object made once per identity and one end() with the body (Node
      // joins the header block and the body into one chunk). fastify's send path (its hook runner,
      // a header() call per header, the length measured, the body written apart) is per-request
      // work a cached allow does not need (issue #17). The bytes on the wire are the same.
      const headers = allowHeaders(decision.identity);
      reply.hijack();
      reply.raw.writeHead(200, decision.identityToken === undefined ? headers : { [decision.identityToken.header.toLowerCase()]: decision.identityToken.value, ...headers });
      reply.raw.end(ALLOW_BODY);
      return;
    }
    if (decision.reason === 'throttled') {
      reply.header('retry-after', String(decision.retryAfterSeconds ?? 1));
      deny(reply, service.config.authThrottledStatus, { reason: decision.reason, retryAfterSeconds: decision.retryAfterSeconds });
    } else if (decision.reason === 'missing_credentials' || decision.reason === 'malformed_credentials') {
      deny(reply, 401, { reason: decision.reason, message: decision.detail });
    } else {
      deny(reply, decision.status, { reason: decision.reason, missingScopes: decision.missingScopes });
    }
  };

  // Not an async function: a decision made at once (a cached one) is rendered on the same turn,
  // with no promise (fastify takes a handler that answers and returns nothing, or a promise).
  const handle = (request: FastifyRequest, reply: FastifyReply, envoyTarget: string | undefined): Promise<void> | undefined => {
    if (load.cause !== undefined) {
      refuseOverloaded(service, load.cause, request, reply, 'auth');
      return;
    }
    // With Envoy the query string is the original request's, so nothing can be pinned by it.
    const pinned = envoyTarget === undefined ? pinnedScopes(request.query) : [];
    if (typeof pinned === 'string') {
      badRequest(reply, 'malformed_request', pinned);
      return;
    }
    const seen = readOriginalRequest(service.trust, request, envoyTarget);
    const credentials = parseAuthorization(authorizationHeaders(request.raw.rawHeaders));
    const decision = service.pipeline.decide({
      interface: 'auth',
      protocol: 'http',
      credentials,
      original: seen.original,
      pinnedScopes: pinned,
      peer: { address: seen.peer, trusted: seen.trusted },
      reportedClientIp: seen.reportedClientIp,
      peerIsEndUser: service.trust.peersAreEndUsers,
      ambiguous: seen.ambiguous,
      requestId: request.id,
      // An identity token goes to a proxy that passes it on, never to an end user who asked
      // directly (a token names an audience, not the request: it could be shown for another one).
      wantsIdentityToken: seen.trusted || !service.trust.peersAreEndUsers,
    });
    if (decision instanceof Promise) return decision.then((made) => render(reply, made));
    render(reply, decision);
    return undefined;
  };

  app.route({ method: [...METHODS], url: '/auth', handler: (request, reply) => handle(request, reply, undefined) });
  app.route({
    method: [...METHODS],
    url: '/auth/*',
    // Only a trusted proxy (Envoy) can mean anything by a path under /auth; for anyone else it is no
    // route. The original target is the raw request line after the prefix, never the router's
    // decoded parameter (which a second decoding would turn `%252e%252e` into `..`).
    handler: (request, reply) => {
      if (!isTrustedPeer(service.trust, request)) return reply.callNotFound();
      const raw = request.raw.url ?? '';
      return handle(request, reply, raw.startsWith(ENVOY_PREFIX) ? raw.slice(ENVOY_PREFIX.length - 1) : '\u0000not under /auth/');
    },
  });
}
