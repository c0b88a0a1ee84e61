import { isIP } from 'node:net';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { z } from 'zod';
import { PROTOCOLS } from '../../policy/schema.js';
import type { Service } from '../../service.js';
import { SCOPE_TOKEN } from '../../vocabulary.js';
import { checkPair, MAX_PASSWORD_BYTES, MAX_USERNAME_BYTES } from '../credentials.js';
import { badRequest } from '../errors.js';
import { isTrustedPeer, plainIp } from '../originalRequest.js';
import { decisionText, JSON_TYPE } from '../render.js';
import { NEVER_OVERLOADED, refuseOverloaded, type LoadGauge } from '../loadShedding.js';
import type { Decision } from '../../verify/types.js';

/**
 * `POST /v1/verify` body. Unknown fields are refused, so a typo (`scope` for `scopes`) cannot
 * silently widen access. `method`, `host`, `uri` (the raw target) and `protocol` describe the
 * original request: with any of them, the policy judges it exactly as on `/auth`.
 */
const verifyRequest = z
  .object({
    username: z.string().max(MAX_USERNAME_BYTES),
    password: z.string().max(MAX_PASSWORD_BYTES),
    scopes: z.array(z.string().regex(SCOPE_TOKEN, 'must be an RFC 6749 scope-token')).max(64).optional(),
    audience: z.string().min(1).max(512).optional(),
    clientIp: z.string().refine((s) => isIP(s) !== 0, 'must be an IP address').optional(),
    method: z.string().regex(/^[A-Za-z]{1,20}$/, 'must be an HTTP method').optional(),
    host: z.string().min(1).max(253).optional(),
    uri: z.string().min(1).max(8192).optional(),
    protocol: z.enum(PROTOCOLS).optional(),
    /** `true`: include the signed identity token the matching rule asks for (`identityToken`) in the answer. */
    identityToken: z.boolean().optional(),
  })
  .strict();

export function verifyRoute(app: FastifyInstance, service: Service, load: LoadGauge = NEVER_OVERLOADED): void {
  const render = (reply: FastifyReply, decision: Decision): FastifyReply => {
    if (decision.reason === 'missing_credentials' || decision.reason === 'malformed_credentials') return badRequest(reply, decision.reason, decision.detail ?? decision.reason);
    return reply.code(decision.status === 503 ? 503 : 200).header('cache-control', 'no-store').type(JSON_TYPE).send(decisionText(decision));
  };

  // Not an async function: a decision made at once (a cached one) is answered on the same turn,
  // with no promise; fastify takes a handler that answers and returns nothing, or a promise.
  app.post('/v1/verify', (request, reply): Promise<FastifyReply> | undefined => {
    if (load.cause !== undefined) {
      refuseOverloaded(service, load.cause, request, reply, 'verify');
      return undefined;
    }
    const parsed = verifyRequest.safeParse(request.body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const where = issue.code === 'unrecognized_keys' ? `unknown field(s) ${issue.keys.join(', ')}` : `${issue.path.join('.') || 'body'}: ${issue.message}`;
      badRequest(reply, 'malformed_request', where);
      return undefined;
    }
    const { username, password, scopes = [], audience, clientIp, method, host, uri, protocol = 'http', identityToken = false } = parsed.data;
    if (audience !== undefined && !service.servesAudience(audience)) {
      badRequest(reply, 'malformed_request', 'audience is not one this credgate serves');
      return undefined;
    }
    const trusted = isTrustedPeer(service.trust, request);
    if (identityToken && !trusted) {
      // A token names the user's audience, not the request it was made for: an end user who could
      // mint one for a request some rule allows could show it to the service for one it denies.
      badRequest(reply, 'malformed_request', 'identityToken is handed only to trusted callers (trustedProxies)');
      return undefined;
    }
    const problem = checkPair(username, password);
    const asksAbout = method !== undefined || host !== undefined || uri !== undefined;
    const decision = service.pipeline.decide({
      interface: 'verify',
      protocol,
      credentials: problem ?? { kind: 'basic', username, password },
      original: asksAbout ? { method, host, target: uri } : undefined,
      pinnedScopes: scopes,
      pinnedAudience: audience,
      peer: { address: plainIp(request.socket.remoteAddress ?? ''), trusted },
      // `clientIp` is believed only from a trusted caller; anyone else is the end user itself.
      reportedClientIp: clientIp,
      peerIsEndUser: true,
      requestId: request.id,
      wantsIdentityToken: identityToken,
    });
    if (decision instanceof Promise) return decision.then((made) => render(reply, made));
    render(reply, decision);
    return undefined;
  });
}
