import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';

/** 400 with a stable reason and a message that names the problem (never the secret). */
export function badRequest(reply: FastifyReply, reason: 'malformed_request' | 'malformed_credentials' | 'missing_credentials', message: string, status = 400) {
  return reply.code(status).header('cache-control', 'no-store').send({ error: 'bad_request', reason, message });
}

/**
 * Every error fastify raises for bad input (unparseable JSON, wrong content type, body too large,
 * poisoned prototype keys) answers its 4xx with a reason; only a real bug is a 500, and then
 * without internal detail.
 */
export function installErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const status = error.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      return badRequest(reply, 'malformed_request', error.code === 'FST_ERR_CTP_BODY_TOO_LARGE' ? 'request body too large' : error.message, status);
    }
    request.log.error({ requestId: request.id, err: error }, 'unhandled error');
    return reply.code(500).send({ error: 'internal_error', message: 'internal error' });
  });
  app.setNotFoundHandler((_request, reply) => reply.code(404).send({ error: 'not_found', message: 'no such route' }));
}
