import { isIP } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Service } from '../../service.js';
import { SCOPE_TOKEN } from '../../verify/scopes.js';
import { checkPair, MAX_PASSWORD_BYTES, MAX_USERNAME_BYTES } from '../credentials.js';
import { badRequest, recordEarlyDenial } from '../errors.js';
import { decisionJson } from '../render.js';

/** `POST /v1/verify` body. Unknown fields are refused, so a typo (`scope` for `scopes`) cannot silently widen access. */
const verifyRequest = z
  .object({
    username: z.string().max(MAX_USERNAME_BYTES),
    password: z.string().max(MAX_PASSWORD_BYTES),
    scopes: z.array(z.string().regex(SCOPE_TOKEN, 'must be an RFC 6749 scope-token')).max(64).optional(),
    audience: z.string().min(1).max(512).optional(),
    clientIp: z.string().refine((s) => isIP(s) !== 0, 'must be an IP address').optional(),
  })
  .strict();

export function verifyRoute(app: FastifyInstance, service: Service): void {
  app.post('/v1/verify', async (request, reply) => {
    const parsed = verifyRequest.safeParse(request.body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const where = issue.code === 'unrecognized_keys' ? `unknown field(s) ${issue.keys.join(', ')}` : `${issue.path.join('.') || 'body'}: ${issue.message}`;
      return badRequest(reply, 'malformed_request', where);
    }
    const { username, password, scopes = [], audience, clientIp } = parsed.data;
    const problem = checkPair(username, password);
    if (problem) {
      recordEarlyDenial(service, request, 'verify', problem.reason, problem.message);
      return badRequest(reply, problem.reason, problem.message);
    }
    if (audience !== undefined && !service.servesAudience(audience)) {
      return badRequest(reply, 'malformed_request', 'audience is not one this credgate serves');
    }
    const decision = await service.verifier.verify({ kind: 'basic', username, password }, { requiredScopes: scopes, audience, clientIp: clientIp ?? request.ip, endUserIp: clientIp }, 'verify', request.id);
    return reply.code(decision.status === 503 ? 503 : 200).header('cache-control', 'no-store').send(decisionJson(decision));
  });
}
