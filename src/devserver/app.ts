import Fastify from 'fastify';
import type { FastifyError, FastifyInstance } from 'fastify';
import { registerAdminApi } from './admin.js';
import type { AdminOperations } from './admin.js';
import type { DevContext } from './context.js';
import { registerDiscovery } from './discovery.js';
import { registerIntrospectionEndpoint } from './introspection.js';
import { OAuthError, registerFormParser, sendOAuthError } from './params.js';
import { registerTokenEndpoint } from './token-endpoint.js';

const BODY_LIMIT_BYTES = 64 * 1024;

/** The development authorization server's app, apart from listening (so it can be injected). */
export function buildDevApp(ctx: DevContext, ops: AdminOperations, logger: boolean): FastifyInstance {
  const app = Fastify({ logger, bodyLimit: BODY_LIMIT_BYTES, requestTimeout: 10_000 });
  registerFormParser(app);

  app.setErrorHandler((err: FastifyError | OAuthError, request, reply) => {
    if (err instanceof OAuthError) return sendOAuthError(reply, err);
    const status = err.statusCode;
    // Fastify's own 4xx (bad JSON, body too large, unsupported media type) keep their status.
    if (status !== undefined && status >= 400 && status < 500) {
      return sendOAuthError(reply, new OAuthError(status, 'invalid_request', 'The request could not be read'));
    }
    request.log.error({ err }, 'devserver: unexpected error');
    return sendOAuthError(reply, new OAuthError(500, 'server_error', 'Internal error'));
  });
  app.setNotFoundHandler((_request, reply) => sendOAuthError(reply, new OAuthError(404, 'not_found', 'Not found')));

  // For `stats().servingSeconds`; the admin API is left out, so polling /dev/stats does not count itself.
  app.addHook('onResponse', (request, reply, done) => {
    if (!request.url.startsWith('/dev/')) ctx.counters.servingSeconds += reply.elapsedTime / 1000;
    done();
  });

  registerDiscovery(app, ctx);
  registerTokenEndpoint(app, ctx);
  registerIntrospectionEndpoint(app, ctx);
  registerAdminApi(app, ctx, ops);
  return app;
}
